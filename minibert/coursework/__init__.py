"""The coursework kit: a student copy of this repository with the solutions cut out, and an autograder.

    regions.py   the solution regions: find them, cut them out (a student copy), write them out (the answer key)
    plugin.py    the pytest plugin: deselect the tests that need an unsolved assignment, report every outcome
    grading.py   pytest in many directories at once (warm imports, one forked child each), and the scores
    cli.py       python -m minibert.coursework student | grade | key

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
  the new failures recorded), or declared by a test (`pytest.mark.needs("attention", ...)`). plugin.py is a
  pytest plugin (`-p minibert.coursework.plugin`, loaded by tests/conftest.py): it deselects every test that
  needs a stub; solving brings them back.
- Grading many directories (a class's copies; the checks in tests/test_coursework.py): `grade` imports torch,
  transformers and bitsandbytes once, then forks one child per directory, which drops this repository's modules
  and imports the directory's own: a directory costs its tests, not ~15 s of imports each.
"""

from .cli import main
from .grading import grade, run_pytest, tally
from .plugin import base_id, load_needs
from .regions import (NEEDS_FILE, TEACHER, TESTS, CourseworkError, Region, answer_key, assignments, find_regions,
                      make_copy, parse_regions, repo_files, stub)

__all__ = ["NEEDS_FILE", "TEACHER", "TESTS", "CourseworkError", "Region", "answer_key", "assignments", "base_id",
           "find_regions", "grade", "load_needs", "main", "make_copy", "parse_regions", "repo_files", "run_pytest",
           "stub", "tally"]
