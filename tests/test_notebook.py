"""docs/notebook.ipynb runs headless from top to bottom and shows what its text says it shows.

The notebook is executed in a fresh kernel (nbclient), on a copy, so the committed outputs stay as they are; then
its printed lines are read back: the pretrained encoder learns, random init on the same architecture does not, and
the 4-bit decoder with LoRA has 4-bit layers, few trainable weights and a falling loss. About two minutes on 2 CPU
cores. `python docs/make_notebook.py` regenerates the committed outputs the same way.
"""

import importlib.util
import json
import re

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _make_notebook():
    spec = importlib.util.spec_from_file_location("make_notebook", REPO / "docs" / "make_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def printed(notebook) -> str:
    """Everything the notebook's code cells wrote to stdout, in order."""
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.get("outputs", []) if output.get("name") == "stdout")


def errors(notebook) -> list[str]:
    return [f"{output['ename']}: {output['evalue']}" for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if output.get("output_type") == "error"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def executed(imdb_dir, tmp_path_factory, monkeypatch_module):
    """The notebook run once for the whole module, on a copy, reading IMDB from the test data."""
    monkeypatch_module.setenv("MINIBERT_DATA", str(imdb_dir))
    target = tmp_path_factory.mktemp("notebook") / "notebook.ipynb"
    return _make_notebook().execute(target=target, timeout_s=600)


def test_every_cell_runs(executed):
    assert errors(executed) == []
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert code_cells and all(cell.get("execution_count") for cell in code_cells)


def test_pretrained_learns_and_random_init_does_not(executed):
    text = printed(executed)
    pretrained = re.search(r"pretrained, fine-tuned on 256 reviews: dev ([\d.]+)%, test ([\d.]+)%", text)
    random_init = re.search(r"random init:\s+dev ([\d.]+)%, test ([\d.]+)%", text)
    assert pretrained and random_init, text
    dev, test = map(float, pretrained.groups())
    assert dev > 65 and test > 65
    assert test > float(random_init.group(2)) + 10


def test_predictions_are_the_obvious_ones(executed):
    lines = printed(executed).splitlines()
    assert any(line.startswith("positive") and "best films" in line for line in lines)
    assert any(line.startswith("negative") and "waste of two hours" in line for line in lines)


def test_qlora_cell_trains_adapters_on_a_4bit_decoder(executed):
    text = printed(executed)
    layers = re.search(r"4-bit layers: (\d+); trainable ([\d,]+) of ([\d,]+) parameters", text)
    loss = re.search(r"loss ([\d.]+) -> ([\d.]+) over (\d+) steps", text)
    assert layers and loss, text
    trainable, total = (int(n.replace(",", "")) for n in layers.group(2, 3))
    assert int(layers.group(1)) > 0 and 0 < trainable < total / 10
    assert float(loss.group(2)) < float(loss.group(1))


def test_committed_notebook_shows_its_outputs():
    """The notebook in docs/ was committed executed: a reader on GitHub sees every output without running it."""
    notebook = json.loads((REPO / "docs" / "notebook.ipynb").read_text())
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code_cells and all(cell["outputs"] for cell in code_cells)
    assert not any(output.get("output_type") == "error" for cell in code_cells for output in cell["outputs"])
    # Nothing on stderr: no warning that names a path of the machine that executed it
    assert [output for cell in code_cells for output in cell["outputs"] if output.get("name") == "stderr"] == []
