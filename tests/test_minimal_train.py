"""docs/minimal_train.py, the loop a student reads first: it learns, and it stays short enough to read at once."""

import ast
import importlib.util

from conftest import REPO

PATH = REPO / "docs" / "minimal_train.py"


def load_minimal():
    spec = importlib.util.spec_from_file_location("minimal_train", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_minimal_loop_learns_imdb(imdb_dir, tmp_path, monkeypatch):
    """One epoch on 300 reviews at 128 tokens: well above the 50% of a coin, on test reviews it never saw."""
    monkeypatch.setenv("MINIBERT_CACHE", str(tmp_path))  # the token cache goes to a throwaway folder
    result = load_minimal().train_minimal(imdb_dir, train_samples=300)
    assert len(result["losses"]) == 38  # ceil(300 / 8) steps
    assert sum(result["losses"][-5:]) / 5 < sum(result["losses"][:5]) / 5  # the loss falls
    assert result["test_accuracy"] > 0.75
    assert result["dev_accuracy"] > 0.70  # 100 dev reviews: a coarser yardstick


def test_minimal_loop_fits_on_a_screen():
    """The functions a student reads (batching, evaluation, the loop) hold at most 40 lines of code together."""
    tree = ast.parse(PATH.read_text())
    lines = PATH.read_text().splitlines()
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert [f.name for f in functions] == ["batches", "accuracy", "train_minimal"]
    docstrings = {f.body[0].lineno for f in functions if isinstance(f.body[0], ast.Expr)}
    code = [line for f in functions for n, line in enumerate(lines[f.lineno - 1:f.end_lineno], f.lineno)
            if line.strip() and not line.strip().startswith("#") and n not in docstrings]
    assert len(code) <= 40, f"{len(code)} lines"
