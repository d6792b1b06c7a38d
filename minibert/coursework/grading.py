"""Grading: pytest in many directories at once, and a score per directory.

`grade` imports torch, transformers and bitsandbytes once (`warm`), then forks one child per directory, which drops
this repository's modules and imports the directory's own: a directory costs its tests, not ~15 s of imports each.
"""

import contextlib
import importlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .plugin import KEEP_ENV, REPORT_ENV
from .regions import TESTS, assignments

HERE = Path(__file__).resolve().parents[2]  # the repository this module was loaded from
WARM = ("torch", "tokenizers", "datasets", "matplotlib.pyplot", "transformers", "bitsandbytes", "pytest",
        "transformers.models.distilbert.modeling_distilbert", "transformers.models.bert.modeling_bert")
RANK = {"deselected": 0, "unsolved": 1, "passed": 2, "skipped": 3, "failed": 4, "error": 5}  # worst report wins


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
    # A relative data folder would name another place from inside each directory: pass it on absolute.
    data = {"MINIBERT_DATA": str(Path(os.environ["MINIBERT_DATA"]).resolve())} if "MINIBERT_DATA" in os.environ else {}
    running, results = {}, [None] * len(jobs)
    for i, (root, args, keep_all) in enumerate(jobs):
        env = {REPORT_ENV: str(tmp / f"{i}.jsonl"), KEEP_ENV: str(int(keep_all)), "HF_HUB_OFFLINE": "1", **data}
        proc = multiprocessing.get_context("fork" if fork else "spawn").Process(
            target=_child, args=(str(root), ["-q", "-p", "minibert.coursework.plugin", *args], env, str(tmp / f"{i}.log")))
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
