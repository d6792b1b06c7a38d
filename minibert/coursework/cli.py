"""python -m minibert.coursework student | grade | key: the kit's command line (see the package docstring)."""

import argparse
import json
from pathlib import Path

from minibert.errors import ArgumentParser

from .grading import grade, print_grade
from .regions import CourseworkError, answer_key, assignments, make_copy

DESCRIPTION = "The coursework kit: a student copy of this repository with the solutions cut out, and an autograder."


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m minibert.coursework", description=DESCRIPTION,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("student", help="write a student copy: solution regions replaced by NotImplementedError")
    p.add_argument("out", type=Path, help="a new or empty folder outside this repository")
    p.add_argument("--only", nargs="+", metavar="NAME", help="stub only these assignments (default: all)")
    p.add_argument("--from", dest="src", type=Path, default=Path("."), help="the repository to copy")
    p = sub.add_parser("key", help="write every solution region, with its hint, to one Markdown file (for teachers)")
    p.add_argument("out", type=Path, help="the Markdown file to write")
    p.add_argument("--from", dest="src", type=Path, default=Path("."), help="the complete repository")
    p = sub.add_parser("grade", help="run tests/assignments in each DIR and print the scores (exit 1 unless all pass)")
    p.add_argument("dirs", nargs="*", type=Path, default=[Path(".")], help="repositories or student copies")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON to FILE ('-': to stdout)")
    p.add_argument("--others", nargs="*", metavar="TEST_PATH", help="also run these ordinary tests (none named: "
                   "all), deselecting those that need an unsolved assignment")
    p.add_argument("-v", "--verbose", action="store_true", help="list each failing test with its message")
    p.add_argument("--timeout", type=float, default=600, help="seconds per directory, then its run is killed")
    p.add_argument("--parallel", type=int, default=1, help="directories tested at the same time")
    args = parser.parse_args(argv)

    if args.command == "student":
        stubbed = make_copy(args.src, args.out, set(args.only) if args.only else None)
        print("".join(f"  {r.name:<14} {r.path}:{r.begin + 1}  {r.where}\n" for r in stubbed) + f"{len(stubbed)} "
              f"regions stubbed in {args.out}. Handouts: docs/assignments/. Check your work with\n"
              f"  cd {args.out} && python -m minibert.coursework grade -v")
        return 0
    if args.command == "key":
        if not all(r.solved for a in assignments(args.src) for r in a["regions"]):
            raise CourseworkError(f"{args.src} is a student copy: the key is written from the complete repository")
        args.out.write_text(answer_key(args.src), encoding="utf-8")
        print(f"wrote {args.out}")
        return 0
    others = [] if args.others is None else (args.others or ["tests"])  # tests/assignments is not run twice
    records = grade(args.dirs, others, args.timeout, args.parallel)
    for record in records:
        print_grade(record, args.verbose)
    if args.json:
        text = json.dumps({"results": records}, indent=1)
        print(text) if args.json == "-" else Path(args.json).write_text(text + "\n")
    rows = [row for r in records for row in r["assignments"] + ([r["others"]] if r["others"] else [])]
    return int(any(r["error"] for r in records) or any(row["passed"] < row["total"] for row in rows))
