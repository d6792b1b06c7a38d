"""No file of the repository speaks of how it was made: a reader has only the repository.

Words that name a ticket, a numbered or lettered step of the work, who provided a machine, a file the repository does
not hold, or an absolute path of the machine it was written on, point at context a reader does not have (PHRASES
lists them; the last test shows each one caught). Docs say the
fact instead (what was measured, on which machine, when) and point at tracked files. This test scans every text
file of the repository (git's tracked and untracked-but-not-ignored files) and names each hit as file:line.
"""

import re
from pathlib import Path

import pytest

from minibert.coursework import repo_files

REPO = Path(__file__).resolve().parents[1]
THIS = "tests/test_no_process_words.py"
TEXT = (".py", ".md", ".txt", ".toml", ".json", ".sh", ".ipynb", ".cfg", ".ini", ".yml", ".yaml")

# (pattern, what a reader cannot know). Case-insensitive unless the pattern scopes it: a step's letter is a
# capital, so the verb followed by a lowercase word stays allowed (the last test has the examples either way).
# Each phrase is spelt here in pieces (a one-letter class, two adjacent strings), so that this file, which has to
# hold them, passes a plain-text search for them too.
PHRASES = [
    (r"(?i:\bthe [i]ssue\b)", "a ticket of the work"),
    (r"\b(?i:calls?) [A-J](?:-[A-J])?(?=[\s,.;:)'’]|-|$)", "a device call by its letter"),
    (r"(?i:(?<![a-z])call_[a-j](?![a-z0-9]))", "a device call by its letter, as a key or a file name"),
    (r'(?i:(?<!scope=")\bs[e]ssion\b)', "a working period"),
    (r"(?i:\b(not )?l[e]nt\b)", "a borrowed machine"),
    (r"(?i:FACTS\.md|\bfacts file\b)", "a facts file the repository does not hold"),
    # docs/notebook.ipynb is "the notebook" now; the one it follows is not in the repository
    (r"(?i:\bthe notebook's (split|recipe|numbers?|run)\b|\bseed notebook\b|\boriginal (course )?notebook\b)",
     "a notebook the repository does not hold"),
    (r"/work/", "an absolute path of the machine the repository was written on"),
    (r"\.\./shared", "a folder beside the checkout (only the Makefile, tests/ and .ci/ may name it)"),
]
SHARED_ALLOWED = ("Makefile", "tests/", ".ci/")


def text_files() -> list[str]:
    return [f for f in repo_files(REPO)
            if f != THIS and (f.endswith(TEXT) or Path(f).name == "Makefile" or f.startswith(".ci/"))]


def hits_in(path: str, text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, why in PHRASES:
            if pattern == r"\.\./shared" and path.startswith(SHARED_ALLOWED):
                continue
            if match := re.search(pattern, line):
                found.append(f"{path}:{number}: {match.group(0)!r} ({why}): {line.strip()[:120]}")
    return found


def test_the_patterns_catch_process_words_and_spare_code():
    """Each pattern catches its phrase; ordinary code and prose pass."""
    caught = ["as the " "issue asks", "in c" "all G", "c" "alls G-J", "c" "alls G to J", "C" "all D's job",
              "this s" "ession", "none was l" "ent", "see FACTS.md", "the notebook's split", "the original notebook", "/work/main/x", "--data ../shared/data/imdb",
              "imdb_job_h200_call_g.json", '"call_g": 1']
    spared = ["we call F(x) here", "call a function", "calls A(x)", 'scope="s' 'ession"', "excellent", "an " "issue",
              "calls Adam", "the recall", "github.com/pytorch/pytorch/issues/198333",
              "recall_at_k", "call_graph", "the notebook in docs/"]
    for line in caught:
        assert hits_in("docs/x.md", line), line
    for line in spared:
        assert not hits_in("docs/x.md", line), line
    assert not hits_in("Makefile", "DATA ?= ../shared/data/imdb")
    assert not hits_in("tests/conftest.py", "default: ../shared/data/imdb")


def test_no_file_speaks_of_the_process_that_made_it():
    """No tracked text file names a ticket, a lettered step of the work, a working period, a borrowed machine, an
    absent file or a local path."""
    files = text_files()
    if not files:
        pytest.skip("no repository files found")
    hits = [h for f in files for h in hits_in(f, (REPO / f).read_text(encoding="utf-8", errors="replace"))]
    assert not hits, f"{len(hits)} lines speak of the process, not the project:\n" + "\n".join(hits)
