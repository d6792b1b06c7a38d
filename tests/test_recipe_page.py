"""The results tables of docs/defaults.md, adapt.md, input-format.md and architecture.md are what
docs/make_recipe.py builds from the committed run summaries: a page that drifts from its data fails here."""

import re
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs"))

import make_recipe  # noqa: E402

PAGE = REPO / "docs" / "defaults.md"


@pytest.mark.parametrize("name", ["defaults.md", "adapt.md", "input-format.md", "architecture.md"])
def test_every_table_of_the_page_is_rebuilt_from_its_runs(tmp_path, name):
    """Each `make_recipe.py ... --into docs/PAGE --section S` command printed on the page, run on a copy of the
    page, leaves it byte-identical."""
    page = (REPO / "docs" / name).read_text()
    commands = re.findall(r"python docs/make_recipe\.py (.*?--section [\w-]+)", page.replace("\\\n", " "), re.DOTALL)
    sections = re.findall(r"<!-- results:([\w-]+) -->", page)
    assert sections and sorted(c.split()[-1] for c in commands) == sorted(sections), "every table needs its command"
    copy = tmp_path / name
    copy.write_text(page)
    for command in commands:
        args = [a for a in shlex.split(command) if a not in ("--plot",) and not a.endswith(".png")]
        args = [str(REPO / a) if a.startswith("docs/results/") else a for a in args]
        make_recipe.main([str(copy) if a == f"docs/{name}" else a for a in args])
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


def test_the_lora_rank_figure_and_its_printed_lines_come_from_the_committed_runs(tmp_path, capsys):
    """docs/figures/make_lora_rank.py reads the committed LoRA runs (3 seeds per rank) and prints the lines that
    docs/lora.md shows beside the figure."""
    sys.path.insert(0, str(REPO / "docs" / "figures"))
    import make_lora_rank

    make_lora_rank.main(tmp_path / "lora_rank.png")
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("r=", "full "))]
    assert len(printed) == len(make_lora_rank.RANKS) + 1 and (tmp_path / "lora_rank.png").stat().st_size > 10_000
    page = (REPO / "docs" / "lora.md").read_text().splitlines()
    assert all(line in page for line in printed), printed


def test_the_learning_curve_and_its_printed_lines_come_from_the_committed_runs(tmp_path, capsys):
    """docs/figures/make_learning_curve.py reads 3 seeds per point for both inits (each run trained on the number
    of reviews its point claims), and one seed on every review, and prints the lines docs/adapt.md shows beside
    the figure."""
    sys.path.insert(0, str(REPO / "docs" / "figures"))
    import make_learning_curve

    make_learning_curve.main(tmp_path / "learning_curve.png")
    printed = [line for line in capsys.readouterr().out.splitlines() if " reviews" in line and ": test " in line]
    assert len(printed) == 2 * (len(make_learning_curve.SIZES) + 1)  # and the one-seed run on every review
    page = (REPO / "docs" / "adapt.md").read_text().splitlines()
    assert all(line in page for line in printed), printed
