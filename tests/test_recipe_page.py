"""docs/defaults.md's tables are what docs/make_recipe.py builds from the committed run summaries: a page that
drifts from its data fails here."""

import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs"))

import make_recipe  # noqa: E402

PAGE = REPO / "docs" / "defaults.md"


def test_every_table_of_the_defaults_page_is_rebuilt_from_its_runs(tmp_path):
    """Each `make_recipe.py ... --into docs/defaults.md --section S` command printed on the page, run on a copy of
    the page, leaves it byte-identical."""
    page = PAGE.read_text()
    commands = re.findall(r"python docs/make_recipe\.py (.*?--section \w+)", page.replace("\\\n", " "), re.DOTALL)
    sections = re.findall(r"<!-- results:(\w+) -->", page)
    assert sorted(c.split()[-1] for c in commands) == sorted(sections), "every table needs its command on the page"
    copy = tmp_path / "defaults.md"
    copy.write_text(page)
    for command in commands:
        args = [a for a in shlex.split(command) if a not in ("--plot",) and not a.endswith(".png")]
        args = [str(REPO / a) if a.startswith("docs/results/") else a for a in args]
        make_recipe.main([str(copy) if a == "docs/defaults.md" else a for a in args])
    assert copy.read_text() == page


def test_the_curves_figure_and_its_printed_lines_come_from_the_default_runs(tmp_path, capsys):
    """docs/figures/make_curves.py draws from the three default runs' metrics.jsonl, and the lines it prints are
    the ones pasted under the figure on the page."""
    sys.path.insert(0, str(REPO / "docs" / "figures"))
    import make_curves

    make_curves.main(tmp_path / "curves.png")
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("seed ")]
    assert len(printed) == 3 and (tmp_path / "curves.png").stat().st_size > 10_000
    page = PAGE.read_text()
    assert all(line in page.splitlines() for line in printed), printed
