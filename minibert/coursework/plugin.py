"""The pytest plugin of the coursework: deselect the tests that need an unsolved assignment, report every outcome.

Loaded by tests/conftest.py (`pytest_plugins`), so it belongs to this repository's tests and to no other pytest
run. tests/assignments/needs.json (measured) and `pytest.mark.needs(...)` (declared) say which assignments a test
needs. The grader (grading.py) reads every outcome from the JSON lines this plugin appends to $MINIBERT_COURSEWORK_REPORT.
"""

import json
import os
import re
from pathlib import Path

from .regions import NEEDS_FILE, TESTS, find_regions

REPORT_ENV, KEEP_ENV = "MINIBERT_COURSEWORK_REPORT", "MINIBERT_COURSEWORK_KEEP_ALL"


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
