"""Measure which ordinary tests need which coursework assignment, into tests/assignments/needs.json.

    python tests/assignments/measure_needs.py                      # every ordinary test module (slow: ~1 h, 2 cores)
    python tests/assignments/measure_needs.py tests/test_data.py   # only these, merged into the existing table

How: for each assignment, a temporary copy of the repository with only that assignment's regions stubbed
(minibert/coursework/regions.py `make_copy`), and the tests run there with nothing deselected; one more untouched copy is
the baseline. A test needs the assignments whose stubbing made it fail. A test failing in the baseline is listed,
and gets only the needs its failure messages name ("NotImplementedError: <name>: ..."): re-measure it once fixed. tests/test_coursework.py declares its needs itself (every assignment: it
checks the complete repository), so it is not measured. The table is read by the coursework pytest plugin, which
deselects, in a student copy, the tests that need an unsolved assignment.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from minibert.coursework import NEEDS_FILE, TESTS, assignments, base_id, load_needs, make_copy, run_pytest  # noqa: E402

EVERYTHING = ["tests", f"--ignore={TESTS}", "--ignore=tests/test_coursework.py"]


def measure(src: Path, paths: list[str], timeout: float, parallel: int) -> dict:
    """Run `paths` in the baseline and in one copy per assignment; merge the new table into NEEDS_FILE."""
    names = [a["name"] for a in assignments(src)]
    scenarios = [("baseline", set())] + [(name, {name}) for name in names]
    tmp = Path(tempfile.mkdtemp(prefix="coursework-measure-"))
    try:
        for label, stubbed in scenarios:
            make_copy(src, tmp / label, stubbed)
        runs = run_pytest([(tmp / label, paths, True) for label, _ in scenarios], timeout, parallel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for (label, _), run in zip(scenarios, runs):
        if run["error"]:
            raise SystemExit(f"measuring '{label}': {run['error']}\n{run['log'][-3000:]}")
    baseline = runs[0]["tests"]
    failing = sorted(t for t, r in baseline.items() if r["outcome"] in ("failed", "error"))
    measured = {t.split("::")[0] for t in baseline}
    old = load_needs(src)
    needs = {t: set(n) for t, n in old["needs"].items() if t.split("::")[0] not in measured}
    for (label, _), run in zip(scenarios[1:], runs[1:]):
        for t, r in run["tests"].items():
            # A test failing in the baseline counts only when its failure names this assignment's stub.
            if r["outcome"] in ("failed", "error") and (t not in failing or f"Error: {label}: " in r["message"]):
                needs.setdefault(base_id(t), set()).add(label)
    table = {"how": "python tests/assignments/measure_needs.py: each assignment's regions stubbed in a temporary "
                    "copy, the tests run there; a test needs the assignments whose stubbing made it fail",
             "modules": sorted(set(old["modules"]) | measured),
             "failing_in_baseline": failing,
             "needs": {t: sorted(n, key=names.index) for t, n in sorted(needs.items())}}
    (src / NEEDS_FILE).write_text(json.dumps(table, indent=1) + "\n")
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("paths", nargs="*", help="test files to measure (default: every ordinary test)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per copy before its run is killed")
    parser.add_argument("--parallel", type=int, default=1, help="copies tested at the same time")
    args = parser.parse_args(argv)
    table = measure(ROOT, args.paths or EVERYTHING, args.timeout, args.parallel)
    counts = {name: sum(name in n for n in table["needs"].values()) for name in [a["name"] for a in assignments(ROOT)]}
    print(f"wrote {NEEDS_FILE}: {len(table['needs'])} tests need an assignment; per assignment: {counts}")
    for t in table["failing_in_baseline"]:
        print(f"  failing even in the untouched copy (left out): {t}")


if __name__ == "__main__":
    main()
