"""The coursework kit (minibert/coursework/): markers, student copies, the grader, the needs plugin.

The end-to-end claims run on this repository with one `grade` call over nine directories (the grader imports torch,
transformers and bitsandbytes once and forks a child per directory): the complete repository, a student copy, and
one copy per assignment with only that assignment stubbed. Each runs tests/assignments plus OTHERS, a few cheap
ordinary tests chosen to need different assignments. The whole ordinary suite per region takes about an hour, so
it is not rerun here: tests/assignments/measure_needs.py measured it into tests/assignments/needs.json, and
`test_needs_table_covers_every_test_module` only checks that the table is complete.
"""

import json
import re
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from minibert.coursework import (NEEDS_FILE, TEACHER, CourseworkError, answer_key, assignments, find_regions, main,
                                 make_copy, parse_regions, repo_files, stub)

REPO = Path(__file__).resolve().parents[1]
NAMES = [a["name"] for a in assignments(REPO)]
# These tests check the complete repository: in a student copy they are deselected until everything is solved.
pytestmark = pytest.mark.needs(*NAMES)

# Cheap ordinary tests with different needs (measured, in needs.json): none, none, collate, attention + block,
# block + head, nf4.
OTHERS = ["tests/test_data.py::test_order_is_a_function_of_seed_and_epoch",
          "tests/test_checkpoint.py::test_missing_weights_are_all_named",
          "tests/test_data.py::test_collator_pads_to_longest",
          "tests/test_model_parity.py::test_all_padding_row_gives_no_nan",
          "tests/test_model_parity.py::test_random_distilbert_export_round_trip",
          "tests/test_nf4.py::test_packing_layout"]

SAMPLE = '''class Layer:
    def forward(self, x):
        y = x + 1
        # BEGIN ASSIGNMENT double: twice the input, "quoted"
        y = 2 * y
        # END ASSIGNMENT
        return y


def helper(v):
    # BEGIN ASSIGNMENT double: a second region of the same assignment
    return v * 2
    # END ASSIGNMENT
'''


def test_regions_parse_and_stub():
    """Regions are found with their name, hint and function; a stub replaces only the body and keeps the markers."""
    regions = parse_regions(SAMPLE, "sample.py")
    assert [(r.name, r.hint, r.where, r.solved) for r in regions] == [
        ("double", 'twice the input, "quoted"', "Layer.forward", True),
        ("double", "a second region of the same assignment", "helper", True)]
    stubbed = stub(SAMPLE, "sample.py")
    assert 'raise NotImplementedError("double: twice the input, \\"quoted\\"")' in stubbed
    assert "y = 2 * y" not in stubbed and "return v * 2" not in stubbed
    assert stubbed.count("# BEGIN ASSIGNMENT") == 2 and stubbed.count("# END ASSIGNMENT") == 2
    assert [r.solved for r in parse_regions(stubbed, "sample.py")] == [False, False]
    assert stub(SAMPLE, "sample.py", names={"other"}) == SAMPLE
    compile(stubbed, "sample.py", "exec")


@pytest.mark.parametrize("text, message", [
    ("    # BEGIN ASSIGNMENT a: hint\n    x = 1\n", "never closed"),
    ("x = 1\n# END ASSIGNMENT\n", "without a BEGIN"),
    ("# BEGIN ASSIGNMENT a: h\n# BEGIN ASSIGNMENT b: h\nx = 1\n# END ASSIGNMENT\n", "inside the region"),
    ("# BEGIN ASSIGNMENT a\nx = 1\n# END ASSIGNMENT\n", "<name>: <hint>"),
    ("    # BEGIN ASSIGNMENT a: h\n    x = 1\n# END ASSIGNMENT\n", "indented like its BEGIN"),
    ("# BEGIN ASSIGNMENT a: h\n# only a comment\n# END ASSIGNMENT\n", "no code"),
])
def test_bad_markers_raise_one_clear_error(text, message):
    """A malformed region is refused with a CourseworkError naming the file, the line and the problem."""
    with pytest.raises(CourseworkError, match=message) as err:
        parse_regions(text, "bad.py")
    assert str(err.value).startswith("bad.py:")


def test_every_assignment_has_regions_tests_and_a_handout():
    """Each assignment has solved regions in the source, a test file, and docs/assignments/NN-<name>.md."""
    found = assignments(REPO)
    assert [a["number"] for a in found] == list(range(1, len(found) + 1))
    for a in found:
        assert a["regions"] and all(r.solved for r in a["regions"]), a["name"]
        assert (REPO / "docs" / "assignments" / f"{a['number']:02d}-{a['name'].replace('_', '-')}.md").is_file()


def test_student_copy_compiles_and_holds_no_solution(tmp_path):
    """A student copy has every repository file, all regions stubbed, valid Python, and none of the solution lines."""
    stubbed = make_copy(REPO, tmp_path / "student")
    assert {(r.path, r.name) for r in stubbed} == {(r.path, a["name"]) for a in assignments(REPO) for r in a["regions"]}
    copied = sorted(p.relative_to(tmp_path / "student").as_posix() for p in (tmp_path / "student").rglob("*")
                    if p.is_file())
    assert copied == [f for f in repo_files(REPO) if not f.startswith(TEACHER + "/")]  # the model answers stay out
    assert any(f.startswith(TEACHER + "/") for f in repo_files(REPO))
    for f in copied:
        if f.endswith(".py"):
            py_compile.compile(str(tmp_path / "student" / f), cfile=str(tmp_path / "pyc"), doraise=True)
    attention = (tmp_path / "student" / "minibert" / "attention.py").read_text()
    assert "softmax(dim=-1)" not in attention and 'raise NotImplementedError("attention: ' in attention


# Lines a solution shares with ordinary code around it: plumbing, not the idea an assignment asks for.
PLUMBING = {
    'logits = model(batch["input_ids"], batch.get("attention_mask"))',  # the model's forward, as in evaluate
    "for _, layer in lora_layers(model):",  # a loop over the LoRA layers, as in merge and unmerge
}


def code_line(line: str) -> str:
    """A line without its comment and without any whitespace: what is left to compare."""
    return re.sub(r"\s", "", re.split(r"\s#\s", line)[0])


def test_no_solution_line_is_left_anywhere_in_a_student_copy(tmp_path):
    """Each solution line of 30 characters or more (whitespace and comments aside) appears in no file of a student
    copy: not in another module, a benchmark, a doc page, a script, the notebook or a test."""
    solutions, plumbing = {}, {code_line(line) for line in PLUMBING}
    for region in find_regions(REPO):
        for line in (REPO / region.path).read_text().splitlines()[region.begin + 1:region.end]:
            if len(code_line(line)) >= 30 and code_line(line) not in plumbing:
                solutions[code_line(line)] = f"{region.name} ({region.path}:{region.where})"
    assert len(solutions) > 40
    make_copy(REPO, tmp_path / "student")
    leaks = []
    for f in repo_files(tmp_path / "student"):
        try:
            text = (tmp_path / "student" / f).read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a figure
            continue
        for number, line in enumerate(text.splitlines(), 1):
            code = code_line(line)
            leaks += [f"{f}:{number} holds the solution of {where}: {line.strip()[:80]}"
                      for solution, where in solutions.items() if solution in code]
    assert not leaks, "\n".join(leaks)


def test_the_key_holds_every_solution_and_refuses_a_student_copy(tmp_path):
    """`key` writes each region's solution under its assignment; from a student copy it refuses (nothing to show)."""
    key = answer_key(REPO)
    for a in assignments(REPO):
        assert f"## {a['number']:02d} {a['name']} " in key
        for region in a["regions"]:
            solution = [line.strip() for line in (REPO / region.path).read_text().splitlines()[region.begin + 1:region.end]]
            assert f"{region.path}:{region.begin + 1} `{region.where}`" in key
            assert all(line in key for line in solution if line)
    make_copy(REPO, tmp_path / "student", {"collate"})
    with pytest.raises(CourseworkError, match="student copy"):
        main(["key", str(tmp_path / "key.md"), "--from", str(tmp_path / "student")])
    assert not (tmp_path / "key.md").exists()


def test_copy_refuses_bad_targets(tmp_path):
    """A copy into the repository, into a non-empty folder, or of an unknown assignment is refused."""
    with pytest.raises(CourseworkError, match="outside the repository"):
        make_copy(REPO, REPO / "student")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(CourseworkError, match="not empty"):
        make_copy(REPO, tmp_path / "full")
    with pytest.raises(CourseworkError, match="unknown assignments"):
        make_copy(REPO, tmp_path / "new", {"no_such_assignment"})


def test_needs_table_covers_every_test_module():
    """needs.json was measured for every ordinary test module and names only real assignments."""
    table = json.loads((REPO / NEEDS_FILE).read_text())
    modules = {f"tests/{p.name}" for p in (REPO / "tests").glob("test_*.py")} - {"tests/test_coursework.py"}
    assert modules <= set(table["modules"]), f"not measured: {sorted(modules - set(table['modules']))}"
    assert {name for needs in table["needs"].values() for name in needs} <= set(NAMES)
    for test in OTHERS:  # the claims below depend on these needs
        assert test.split("::")[0] in table["modules"]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Scores of the complete repository, a student copy, and each one-assignment-removed copy (one grade call)."""
    root = tmp_path_factory.mktemp("coursework")
    dirs = {"complete": REPO, "student": root / "student"}
    make_copy(REPO, dirs["student"])
    for name in NAMES:
        dirs[name] = root / f"without-{name}"
        make_copy(REPO, dirs[name], {name})
    out = root / "grades.json"
    proc = subprocess.run([sys.executable, "-m", "minibert.coursework", "grade", *map(str, dirs.values()),
                           "--json", str(out), "--parallel", "2", "--others", *OTHERS],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    records = json.loads(out.read_text())["results"]
    assert not [r["error"] for r in records if r["error"]], proc.stdout[-3000:]
    return dict(zip(dirs, records))


def rows(record) -> dict:
    return {a["name"]: a for a in record["assignments"]}


def test_complete_repository_scores_100_percent(graded):
    """In the repository every assignment test passes, and so does every chosen ordinary test (none deselected)."""
    record = graded["complete"]
    assert record["score"] == 1.0 and record["complete"] == len(NAMES)
    assert all(a["total"] > 0 and a["passed"] == a["total"] for a in record["assignments"])
    assert record["others"]["passed"] == record["others"]["total"] == len(OTHERS)


def test_student_copy_fails_every_assignment_test_and_passes_the_rest(graded):
    """In a student copy every assignment test fails on its own stub; the other tests that still run all pass."""
    record = graded["student"]
    for name, a in rows(record).items():
        assert a["total"] > 0 and a["passed"] == 0, name
        assert all(f["message"].startswith(f"NotImplementedError: {name}: ") for f in a["failures"]), a["failures"]
    others = record["others"]
    assert others["total"] > 0 and others["passed"] == others["total"], others["failures"]
    assert others["unsolved"] > 0  # and those needing an unsolved assignment were deselected, not failed
    assert record["score"] == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_removing_one_region_fails_exactly_its_assignment(graded, name):
    """With one assignment's regions stubbed, exactly that assignment's tests fail; every other test passes."""
    record = graded[name]
    for other, a in rows(record).items():
        if other == name:
            assert a["total"] > 0 and a["passed"] == 0, other
            assert all(f["message"].startswith(f"NotImplementedError: {name}: ") for f in a["failures"])
        else:
            assert a["passed"] == a["total"] > 0, (other, a["failures"])
    assert record["others"]["passed"] == record["others"]["total"], record["others"]["failures"]
