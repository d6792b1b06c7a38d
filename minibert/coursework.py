"""The coursework kit: a student copy of this repository with the solutions cut out, and an autograder.

    python -m minibert.coursework student OUT_DIR [--only NAME ...]   a copy whose solution regions raise
    python -m minibert.coursework grade [DIR ...] [--json FILE] [-v]  run each assignment's tests, print the scores
    python -m minibert.coursework key OUT.md                           every solution region in one file, for teachers

A solution region is the code between two comment lines, indented like that code (a hint is required):
    `# BEGIN ASSIGNMENT <name>: <hint>`  ...  `# END ASSIGNMENT`
A name may mark several regions (LoRA's forward and merge). In a student copy each body becomes `raise
NotImplementedError("<name>: <hint>")`, markers kept. Assignment NN is graded by tests/assignments/test_NN_<name>.py,
which exercises only its own regions: everything else is outside any region or comes from a reference library.
The handouts are docs/assignments/NN-<name>.md; the teacher pack (model answers, rubric) is docs/teacher/, which
a student copy leaves out.

What is unusual:
- "The other tests pass" in a student copy. Most ordinary tests run several regions at once (a parity test runs
  attention, block and head). tests/assignments/needs.json says which assignments each test needs; it is measured,
  not guessed, by tests/assignments/measure_needs.py (each assignment stubbed in a temporary copy, the suite run,
  the new failures recorded), or declared by a test (`pytest.mark.needs("attention", ...)`). This module is also a
  pytest plugin (`-p minibert.coursework`): it deselects every test that needs a stub; solving brings them back.
- Grading many directories (a class's copies; the checks in tests/test_coursework.py): `grade` imports torch,
  transformers and bitsandbytes once, then forks one child per directory, which drops this repository's modules
  and imports the directory's own: a directory costs its tests, not ~15 s of imports each.
"""

import argparse
import contextlib
import importlib
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from minibert.errors import ArgumentParser, UserError, run_cli

HERE = Path(__file__).resolve().parents[1]  # the repository this module was loaded from
TESTS = "tests/assignments"
NEEDS_FILE = f"{TESTS}/needs.json"
TEACHER = "docs/teacher"  # the model answers: never in a student copy
STUB = "raise NotImplementedError("
BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN ASSIGNMENT\b(?P<rest>.*)$")
END = re.compile(r"^(?P<indent>[ \t]*)# END ASSIGNMENT\b(?P<rest>.*)$")
HEAD = re.compile(r"^ (?P<name>[a-z][a-z0-9_]*): (?P<hint>\S.*?)\s*$")
DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async def|def|class) (?P<name>\w+)")
SKIP_DIRS = {".git", ".venv", "venv", "runs", "__pycache__", ".pytest_cache", ".cache", "build", "dist"}
REPORT_ENV, KEEP_ENV = "MINIBERT_COURSEWORK_REPORT", "MINIBERT_COURSEWORK_KEEP_ALL"
WARM = ("torch", "tokenizers", "datasets", "matplotlib.pyplot", "transformers", "bitsandbytes", "pytest",
        "transformers.models.distilbert.modeling_distilbert", "transformers.models.bert.modeling_bert")
RANK = {"deselected": 0, "unsolved": 1, "passed": 2, "skipped": 3, "failed": 4, "error": 5}  # worst report wins


class CourseworkError(UserError):  # bad markers, an unknown assignment, a copy into a non-empty folder
    pass


@dataclass
class Region:
    path: str  # relative to the repository root
    name: str
    hint: str
    begin: int  # 0-based line of the BEGIN marker
    end: int  # 0-based line of the END marker
    where: str  # the enclosing Class.function, for people
    solved: bool  # False while the body is still the stub


# ---- regions: find them, cut them out ----------------------------------------------------------------------

def parse_regions(text: str, path: str) -> list[Region]:
    lines, regions, start = text.splitlines(), [], None
    for i, line in enumerate(lines):
        if m := BEGIN.match(line):
            if start is not None:
                raise CourseworkError(f"{path}:{i + 1}: BEGIN ASSIGNMENT inside the region opened at line {start + 1}")
            if not HEAD.match(m["rest"]):
                raise CourseworkError(f"{path}:{i + 1}: write the marker as '# BEGIN ASSIGNMENT <name>: <hint>'")
            start = i
        elif m := END.match(line):
            if start is None:
                raise CourseworkError(f"{path}:{i + 1}: END ASSIGNMENT without a BEGIN")
            if m["indent"] != BEGIN.match(lines[start])["indent"] or m["rest"].strip():
                raise CourseworkError(f"{path}:{i + 1}: END ASSIGNMENT must be alone and indented like its BEGIN")
            code = [s.strip() for s in lines[start + 1:i] if s.strip() and not s.strip().startswith("#")]
            if not code:
                raise CourseworkError(f"{path}:{start + 1}: the region has no code")
            head = HEAD.match(BEGIN.match(lines[start])["rest"])
            regions.append(Region(path, head["name"], head["hint"], start, i, enclosing(lines, start),
                                  solved=not any(s.startswith(STUB) for s in code)))
            start = None
    if start is not None:
        raise CourseworkError(f"{path}:{start + 1}: BEGIN ASSIGNMENT is never closed by END ASSIGNMENT")
    return regions


def enclosing(lines: list[str], i: int) -> str:
    """'Class.function' around line i: the nearest def above it, then each class further out."""
    names, indent = [], len(lines[i]) - len(lines[i].lstrip())
    for line in reversed(lines[:i]):
        if (m := DEF.match(line)) and len(m["indent"]) < indent:
            names.insert(0, m["name"])
            indent = len(m["indent"])
    return ".".join(names) or "<module>"


def stub(text: str, path: str, names: set[str] | None = None) -> str:
    """`text` with the body of each region of the assignments in `names` (all when None) replaced by its stub."""
    lines = text.splitlines(keepends=True)
    for r in reversed(parse_regions(text, path)):
        if names is None or r.name in names:
            indent = BEGIN.match(lines[r.begin])["indent"]
            lines[r.begin + 1:r.end] = [f"{indent}{STUB}{json.dumps(f'{r.name}: {r.hint}', ensure_ascii=False)})\n"]
    return "".join(lines)


def repo_files(root: Path) -> list[str]:
    """The repository's files: git's tracked and untracked-but-not-ignored ones; outside git, a filtered walk."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout.decode()
        return sorted(f for f in out.split("\0") if f and (root / f).is_file())
    except (OSError, subprocess.CalledProcessError):  # e.g. a student copy
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix != ".pyc"
                      and not any(d in SKIP_DIRS or d.endswith(".egg-info") for d in p.relative_to(root).parts[:-1]))


def find_regions(root: Path, files: list[str] | None = None) -> list[Region]:
    """Every region in the repository's Python files outside tests/."""
    found = []
    for f in repo_files(root) if files is None else files:
        if f.endswith(".py") and not f.startswith("tests/"):
            text = (root / f).read_text(encoding="utf-8")
            if "# BEGIN ASSIGNMENT" in text or "# END ASSIGNMENT" in text:
                found += parse_regions(text, f)
    return found


def assignments(root: Path) -> list[dict]:
    """[{number, name, tests, regions}], one per tests/assignments/test_NN_<name>.py, in order."""
    if not (root / TESTS).is_dir():  # grading such a folder would score nothing and look like success
        raise CourseworkError(f"{root}: not a minibert repository or student copy (no {TESTS}/ folder in it)")
    regions, found = find_regions(root), []
    for test in sorted((root / TESTS).glob("test_[0-9][0-9]_*.py")):
        number, name = int(test.stem[5:7]), test.stem[8:]
        mine = [r for r in regions if r.name == name]
        if not mine:
            raise CourseworkError(f"{TESTS}/{test.name} grades '{name}', but no '# BEGIN ASSIGNMENT {name}:' exists")
        found.append(dict(number=number, name=name, tests=f"{TESTS}/{test.name}", regions=mine))
    if orphans := sorted({r.name for r in regions} - {a["name"] for a in found}):
        raise CourseworkError(f"regions {orphans} have no test file {TESTS}/test_NN_<name>.py")
    return found


def make_copy(src: Path, out: Path, names: set[str] | None = None) -> list[Region]:
    """Copy the repository `src` to `out`, stubbing the regions of the assignments in `names` (None: all)."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if out == src or src in out.parents:
        raise CourseworkError(f"the copy must go outside the repository, not into {out}")
    if out.exists() and any(out.iterdir()):
        raise CourseworkError(f"{out} exists and is not empty")
    known = {a["name"] for a in assignments(src)}
    if names is not None and names - known:
        raise CourseworkError(f"unknown assignments {sorted(names - known)}; known: {sorted(known)}")
    files = [f for f in repo_files(src) if not f.startswith(TEACHER + "/")]
    with_regions = {r.path for r in find_regions(src, files)}
    for f in files:
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        if f in with_regions:
            (out / f).write_text(stub((src / f).read_text(encoding="utf-8"), f, names), encoding="utf-8")
        else:
            shutil.copy2(src / f, out / f)
    return [r for r in find_regions(out) if not r.solved]


def answer_key(src: Path) -> str:
    """Markdown: for each assignment, each of its regions as the complete repository solves it, with its hint."""
    parts = ["# Solutions of the coursework, region by region\n\nWritten by `python -m minibert.coursework key`; "
             "the code is the repository's own, so it is the code the tests pass on.\n"]
    for a in assignments(src):
        parts.append(f"\n## {a['number']:02d} {a['name']} (graded by {a['tests']})\n")
        for r in a["regions"]:
            lines = (src / r.path).read_text(encoding="utf-8").splitlines()[r.begin + 1:r.end]
            indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
            code = "\n".join(line[indent:] for line in lines)
            parts.append(f"\n### {r.path}:{r.begin + 1} `{r.where}`\n\nHint: {r.hint}\n\n```python\n{code}\n```\n")
    return "".join(parts)


# ---- the pytest plugin: deselect tests that need an unsolved assignment, report every outcome --------------

def base_id(nodeid: str) -> str:
    """A test's id without its parameters: needs are recorded per test function."""
    return re.sub(r"\[.*\]$", "", nodeid)


def load_needs(root: Path) -> dict:
    path = root / NEEDS_FILE
    return json.loads(path.read_text()) if path.is_file() else {"modules": [], "needs": {}}


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*assignments): coursework assignments this test needs "
                                       "(minibert/coursework.py); deselected while one of them is unsolved")


def pytest_report_header(config):
    if unsolved := sorted({r.name for r in find_regions(Path(config.rootpath)) if not r.solved}):
        return f"coursework: unsolved {', '.join(unsolved)}: the tests that need them are deselected"


def pytest_collection_modifyitems(config, items):
    root = Path(config.rootpath)
    unsolved = {r.name for r in find_regions(root) if not r.solved}
    if not unsolved or os.environ.get(KEEP_ENV) == "1":
        return
    table, keep, drop = load_needs(root), [], []
    for item in items:
        needs = set(table["needs"].get(base_id(item.nodeid), ()))
        needs |= {name for mark in item.iter_markers("needs") for name in mark.args}
        # Assignment tests always run: they are the grade.
        item.coursework_unsolved = bool(needs & unsolved) and not item.nodeid.startswith(TESTS + "/")
        (drop if item.coursework_unsolved else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    unmeasured = {i.nodeid.split("::")[0] for i in keep if not i.nodeid.startswith(TESTS + "/")}
    if unmeasured := sorted(unmeasured - set(table["modules"])):
        config.pluginmanager.get_plugin("terminalreporter").write_line(f"coursework: needs never measured, these may "
                                                                       f"fail: {', '.join(unmeasured)}")


def _report(record: dict) -> None:
    if path := os.environ.get(REPORT_ENV):
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _message(report) -> str:
    if isinstance(report.longrepr, tuple):  # a skip: (file, line, reason)
        return str(report.longrepr[2])
    text = getattr(getattr(report.longrepr, "reprcrash", None), "message", None) or str(report.longrepr or "")
    return (text.strip().splitlines() or [""])[0]


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":  # a failed setup or teardown fails the test too
        outcome = "error" if report.when != "call" and report.failed else report.outcome
        _report({"test": report.nodeid, "outcome": outcome, "message": _message(report)})


def pytest_collectreport(report):
    if report.failed:
        _report({"test": report.nodeid, "outcome": "error", "message": "collection failed: " + _message(report)})


def pytest_deselected(items):
    for item in items:  # by us (needs an unsolved assignment), or by -m / -k
        unsolved = getattr(item, "coursework_unsolved", False)
        _report({"test": item.nodeid, "outcome": "unsolved" if unsolved else "deselected", "message": ""})


# ---- running pytest in many directories: warm imports, one forked child each -------------------------------

def warm() -> None:
    """Import the heavy third-party libraries once, before forking, so that every child starts with them."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        for name in WARM:
            with contextlib.suppress(Exception):  # only a speed-up: a child imports what it needs anyway
                importlib.import_module(name)


def _child(root: str, args: list[str], env: dict, log: str) -> None:
    """In the child: forget this repository's own modules, enter `root`, run pytest there, exit with its code."""
    os.dup2(fd := os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1), os.dup2(fd, 2)
    own = {p.stem for p in HERE.glob("*.py")} | {p.name for p in HERE.iterdir() if (p / "__init__.py").is_file()}
    for name in list(sys.modules):
        if (top := name.split(".")[0]) in own or top == "conftest" or top.startswith("test_"):
            del sys.modules[name]
    sys.path[:] = [root] + [p for p in sys.path if p and Path(p).resolve() != HERE]
    os.chdir(root)
    os.environ.update(env)
    # A grader started in the background ignores Ctrl-C, and so would every process the tests start (train.py).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = importlib.import_module("pytest").main(args)
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(int(code))


def run_pytest(jobs: list[tuple[Path, list[str], bool]], timeout: float = 600, parallel: int = 1,
               fork: bool = True) -> list[dict]:
    """pytest once per job (root, args, keep_all: deselect nothing). Per job: {"tests": {nodeid: {outcome,
    message}}, "log": pytest's output, "error": None, or why the run ended abnormally}."""
    fork = fork and hasattr(os, "fork")  # elsewhere: a fresh interpreter per job ("spawn")
    if fork:
        warm()
    tmp = Path(tempfile.mkdtemp(prefix="coursework-"))
    data = Path(os.environ.get("MINIBERT_DATA", HERE.parent / "shared" / "data" / "imdb")).resolve()
    running, results = {}, [None] * len(jobs)
    for i, (root, args, keep_all) in enumerate(jobs):
        env = {REPORT_ENV: str(tmp / f"{i}.jsonl"), KEEP_ENV: str(int(keep_all)), "HF_HUB_OFFLINE": "1",
               "MINIBERT_DATA": str(data)}  # a copy elsewhere does not find the data next to itself
        proc = multiprocessing.get_context("fork" if fork else "spawn").Process(
            target=_child, args=(str(root), ["-q", "-p", "minibert.coursework", *args], env, str(tmp / f"{i}.log")))
        proc.start()
        proc.started, proc.timed_out, running[i] = time.monotonic(), False, proc
        while len(running) >= parallel or (i == len(jobs) - 1 and running):
            for j, p in list(running.items()):
                p.join(0.05)
                if p.exitcode is None and time.monotonic() - p.started > timeout:
                    p.kill(), p.join(5)
                    p.timed_out = True
                if p.exitcode is not None:
                    results[j] = _collect(tmp / str(j), running.pop(j))
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def _collect(stem: Path, proc) -> dict:
    tests, report, log = {}, stem.with_suffix(".jsonl"), stem.with_suffix(".log")
    for line in report.read_text().splitlines() if report.is_file() else []:
        r = json.loads(line)
        if r["test"] not in tests or RANK[r["outcome"]] > RANK[tests[r["test"]]["outcome"]]:
            tests[r["test"]] = {"outcome": r["outcome"], "message": r["message"]}
    # pytest's exit codes 0: all passed, 1: some failed, 5: nothing collected; anything else is trouble.
    error = "timed out" if proc.timed_out else None if proc.exitcode in (0, 1, 5) else f"exit code {proc.exitcode}"
    return {"tests": tests, "log": log.read_text(errors="replace") if log.is_file() else "", "error": error}


# ---- grading ---------------------------------------------------------------------------------------------------

def tally(tests: dict) -> dict:
    """passed / total over the tests that ran; `unsolved`: how many were deselected as needing a stubbed region."""
    ran = {t: r for t, r in tests.items() if r["outcome"] not in ("deselected", "unsolved")}
    return dict(passed=sum(r["outcome"] == "passed" for r in ran.values()), total=len(ran),
                unsolved=sum(r["outcome"] == "unsolved" for r in tests.values()),
                failures=[dict(test=t, **r) for t, r in ran.items() if r["outcome"] != "passed"])


def grade(roots: list[Path], others: list[str] = (), timeout: float = 600, parallel: int = 1,
          fork: bool = True) -> list[dict]:
    """Run tests/assignments (and the ordinary tests `others`) in each root: one score record per root."""
    roots = [Path(r).resolve() for r in roots]
    plans, records = [assignments(root) for root in roots], []  # first: a copy with broken markers fails here
    for root, plan, run in zip(roots, plans, run_pytest([(r, [TESTS, *others], False) for r in roots], timeout,
                                                        parallel, fork)):
        rows = [dict(number=a["number"], name=a["name"], solved=all(r.solved for r in a["regions"]),
                     regions=list(dict.fromkeys(f"{r.path}:{r.where}" for r in a["regions"])),
                     **tally({t: r for t, r in run["tests"].items() if t.split("::")[0] == a["tests"]}))
                for a in plan]
        rest = {t: r for t, r in run["tests"].items() if not t.startswith(TESTS + "/")}
        # Each assignment weighs the same in the score, however many tests it has.
        score = sum(r["passed"] / r["total"] for r in rows if r["total"]) / len(rows) if rows else 0.0
        records.append(dict(dir=str(root), assignments=rows, others=tally(rest) if others else None, score=score,
                            complete=sum(r["total"] > 0 and r["passed"] == r["total"] for r in rows),
                            error=run["error"], log_tail=run["log"][-3000:] if run["error"] else None))
    return records


def print_grade(record: dict, verbose: bool = False) -> None:
    rows = [(f"{a['number']:02d}  {a['name']}", a, ", ".join(a["regions"])) for a in record["assignments"]]
    if (o := record["others"]) is not None:
        rows.append(("    other tests", o, f"({o['unsolved']} deselected: they need an unsolved assignment)"))
    print(f"\n{record['dir']}\n  {'assignment':<22}{'passed':>6} / total  graded code")
    for label, row, note in rows:
        print(f"  {label:<22}{row['passed']:>6} / {row['total']:<5}  {note}")
        for f in row["failures"] if verbose else ():
            print(f"        {f['outcome']}: {f['test'].split('/')[-1]}: {f['message'][:150]}")
    print(f"  score: {100 * record['score']:.0f}% ({record['complete']} of {len(record['assignments'])} assignments "
          "complete; each assignment weighs its passed / total)")
    if record["error"]:
        print(f"  error: {record['error']}; the end of pytest's output:\n{record['log_tail']}")


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m minibert.coursework", description=__doc__.split("\n\n")[0],
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


if __name__ == "__main__":
    sys.exit(run_cli(main))
