"""Solution regions: the code between `# BEGIN ASSIGNMENT <name>: <hint>` and `# END ASSIGNMENT`.

Find them (`find_regions`, `assignments`: one per tests/assignments/test_NN_<name>.py), cut them out (`stub`,
`make_copy`: a student copy, the teacher pack left out) and write them out (`answer_key`).
"""

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from minibert.errors import UserError

TESTS = "tests/assignments"
NEEDS_FILE = f"{TESTS}/needs.json"
TEACHER = "docs/teacher"  # the model answers: never in a student copy
STUB = "raise NotImplementedError("
BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN ASSIGNMENT\b(?P<rest>.*)$")
END = re.compile(r"^(?P<indent>[ \t]*)# END ASSIGNMENT\b(?P<rest>.*)$")
HEAD = re.compile(r"^ (?P<name>[a-z][a-z0-9_]*): (?P<hint>\S.*?)\s*$")
DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async def|def|class) (?P<name>\w+)")
SKIP_DIRS = {".git", ".venv", "venv", "runs", "__pycache__", ".pytest_cache", ".cache", "build", "dist"}


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
