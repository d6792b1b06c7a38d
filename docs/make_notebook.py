"""Execute docs/notebook.ipynb and write it back with its outputs, so every number it shows comes from a run.

    MINIBERT_DATA=<imdb> HF_HUB_OFFLINE=1 python docs/make_notebook.py    # without MINIBERT_DATA: IMDB from the hub

About two minutes on 2 CPU cores. Its cells seed every random draw, so a rerun on the same machine prints the same
numbers (timings aside). tests/test_notebook.py runs `execute` on a copy and checks what it printed.
"""

import argparse
import os
import sys
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent / "notebook.ipynb"
# Progress bars (datasets, tqdm) print timings, which would change the outputs at every run
QUIET = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def execute(source: Path = NOTEBOOK, target: Path | None = None, timeout_s: int = 600) -> nbformat.NotebookNode:
    """Run every cell of `source` in a fresh kernel working in docs/, and write the result to `target` (default:
    `source`). A cell that fails raises nbclient's CellExecutionError, naming the cell."""
    notebook = nbformat.read(source, as_version=4)
    # No kernel folders: "python3" is then ipykernel's own spec, which runs this interpreter (sys.executable),
    # never another Python that a kernel installed for the user points to.
    kernel = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = NotebookClient(notebook, km=kernel, timeout=timeout_s, record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    env = {**os.environ, **QUIET}
    if env.get("MINIBERT_DATA"):  # the kernel works in docs/, so a folder named from elsewhere must be absolute
        env["MINIBERT_DATA"] = str(Path(env["MINIBERT_DATA"]).expanduser().resolve())
    client.execute(env=env)
    nbformat.write(notebook, target or source)
    return notebook


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Execute docs/notebook.ipynb and write it with its outputs.")
    parser.add_argument("--out", type=Path, help="where to write the executed copy (default: over the notebook)")
    args = parser.parse_args()
    execute(target=args.out)
    print(f"wrote {args.out or NOTEBOOK}")
