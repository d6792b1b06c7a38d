"""IMDB reviews -> tokenized train / val / test splits, with token ids cached on disk.

What is here, in the order the data flows (the raw reviews come from minibert/training/sources.py):
1. `TokenizedSplit`, a torch Dataset of token ids stored flat (one int32 array + offsets), with `lengths` for
   bucketing (minibert/training/batching.py) and `labels` (0 = negative, 1 = positive);
2. tokenization with an on-disk cache under $MINIBERT_CACHE (default ~/.cache/minibert), so a second run pays
   only for reading one .npz file (datasets' Arrow copies of local parquet/csv files go there too);
3. `prepare_imdb`, the recipe train.py uses: seeded shuffle, carve val then train, pick a fixed eval_samples
   test reviews; and `tokenize_full_split` for all 25,000 reviews of a split (the benchmark times it).

What is unusual:
- We add [CLS] ... [SEP] to every review. The course recipe tokenized with add_special_tokens=False yet
  classified from the hidden state at position 0, which then is just the review's first word. The classification
  head reads position 0, so position 0 must be [CLS]: the token BERT was pretrained to summarise the sequence
  with. `add_special_tokens=False` stays available to measure what leaving them out costs.
- Bad data raises one exception type, `DataError` (sources.py), with a message naming the file, column or value.

Tested in tests/test_data.py (bad-data messages, seeded determinism, cache hits, the aclImdb and offline paths).
"""

import hashlib
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from minibert.tokenizer import Tokenizer
from minibert.training.sources import DataError, RawSplit, load_raw_splits

# ----------------------------------------------------------------------------------------------------------------
# 1. Tokenized splits
# ----------------------------------------------------------------------------------------------------------------

class TokenizedSplit(torch.utils.data.Dataset):
    """Token ids of N reviews stored flat: review i is ids[offsets[i]:offsets[i + 1]].

    One int32 array instead of N Python lists: 25,000 reviews at 512 tokens fit in ~25 MB, load in milliseconds,
    and save to a single .npz file (never a pickle).
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray, from_cache: bool = False):
        self.ids, self.offsets, self.labels = ids, offsets, labels
        self.from_cache = from_cache  # True when served from the on-disk cache (no tokenizer call)

    @property
    def lengths(self) -> np.ndarray:
        """Token count of each review, [CLS]/[SEP] included: what bucketing sorts by."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        ids = self.ids[self.offsets[i]:self.offsets[i + 1]]
        return {"input_ids": torch.from_numpy(ids.astype(np.int64)), "labels": int(self.labels[i])}

    def select(self, rows) -> "TokenizedSplit":
        """A new split holding the given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        parts = [self.ids[self.offsets[r]:self.offsets[r + 1]] for r in rows]
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return TokenizedSplit(ids, offsets, self.labels[rows], self.from_cache)


# ----------------------------------------------------------------------------------------------------------------
# 2. Tokenization with an on-disk cache
# ----------------------------------------------------------------------------------------------------------------

def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where caches live: `cache_dir`, else $MINIBERT_CACHE, else ~/.cache/minibert."""
    return Path(cache_dir or os.environ.get("MINIBERT_CACHE") or "~/.cache/minibert").expanduser()


def _cache_file(root: Path, raw: RawSplit, rows: np.ndarray, tokenizer: Tokenizer, max_len: int,
                specials: bool) -> Path:
    """Every input that changes the ids is in the key: data files, tokenizer, max_len, the part of a long review
    kept, specials, which rows."""
    key = {"data": raw.fingerprint, "tokenizer": tokenizer.fingerprint, "max_len": max_len,
           "truncation": tokenizer.truncation, "add_special_tokens": specials,
           "rows": hashlib.sha256(rows.astype(np.int64).tobytes()).hexdigest()}
    return root / "tokens" / f"{raw.name}-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]}.npz"


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over each array's name, dtype, shape and bytes: a torn or edited cache file no longer matches."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, a.shape]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write the arrays and their sha256 to a temporary file, then rename: a crash (or a second process) never
    sees a half-written file, and _load_cached can tell a file damaged later."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, sha256=np.array(_digest(arrays)), **arrays)
        os.replace(tmp, path)
    except OSError as err:  # a full disk or a read-only folder: the user's to fix, so one line, no traceback
        raise DataError(f"cannot write the token cache in {path.parent} ({err.strerror or err}); free space there "
                        "or set MINIBERT_CACHE to a folder with room") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # already gone after os.replace; a partial file otherwise


def _read_checked(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, offsets) of a cache file; ValueError saying why when it cannot be trusted."""
    names = ("ids", "offsets", "sha256")
    try:
        with np.load(path) as f:  # allow_pickle stays False
            arrays = {name: f[name] for name in names if name in f.files}
    except Exception as err:  # a torn zip raises zipfile, OSError, EOFError or ValueError errors, by where it ends
        raise ValueError(f"unreadable: {type(err).__name__}: {err}") from None
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ValueError(f"no {missing} array")
    stored = str(arrays.pop("sha256"))
    if stored != _digest(arrays):
        raise ValueError("sha256 mismatch")
    return arrays["ids"], arrays["offsets"]


def _load_cached(path: Path, labels: np.ndarray) -> TokenizedSplit | None:
    """The cached split at `path`, or None when there is none or it fails its check (then it is deleted)."""
    if not path.is_file():
        return None
    try:
        ids, offsets = _read_checked(path)
        if len(offsets) != len(labels) + 1:
            raise ValueError(f"{len(offsets) - 1} reviews, expected {len(labels)}")
    except ValueError as err:
        print(f"notice: token cache {path} failed its check ({err}); deleting it and tokenizing again",
              file=sys.stderr)
        path.unlink(missing_ok=True)
        return None
    return TokenizedSplit(ids, offsets, labels, from_cache=True)


def tokenize_rows(raw: RawSplit, rows, tokenizer: Tokenizer, max_len: int, add_special_tokens: bool = True,
                  cache_dir: str | Path | None = None, use_cache: bool = True, chunk: int = 2048) -> TokenizedSplit:
    """Tokenize `raw`'s reviews at `rows` (in that order), or read them from the cache."""
    rows = np.asarray(rows, dtype=np.int64)
    everything = np.arange(len(raw))
    if len(rows) == len(raw) and not np.array_equal(rows, everything):
        # All rows, shuffled: tokenize (or load) in file order, so the full-split cache entry serves every seed.
        return tokenize_rows(raw, everything, tokenizer, max_len, add_special_tokens, cache_dir, use_cache).select(rows)
    root = cache_root(cache_dir)
    path = _cache_file(root, raw, rows, tokenizer, max_len, add_special_tokens)
    if use_cache:
        hit = _load_cached(path, raw.labels[rows])
        if hit is None:  # a cached full split holds every subset of it
            full = _load_cached(_cache_file(root, raw, everything, tokenizer, max_len, add_special_tokens), raw.labels)
            hit = full.select(rows) if full is not None else None
        if hit is not None:
            return hit

    encoded = []
    for start in tqdm(range(0, len(rows), chunk), desc=f"tokenizing {raw.name}", unit="chunk",
                      disable=len(rows) <= 4 * chunk, leave=False):
        texts = raw.read_texts(rows[start:start + chunk])  # only the reviews we use, a chunk at a time
        encoded += tokenizer.encode_batch(texts, max_length=max_len, add_special_tokens=add_special_tokens)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int32, count=int(offsets[-1]))
    if use_cache:
        _save_atomic(path, ids=ids, offsets=offsets)
    return TokenizedSplit(ids, offsets, raw.labels[rows])


# ----------------------------------------------------------------------------------------------------------------
# 3. The recipe
# ----------------------------------------------------------------------------------------------------------------

TEST_SEED = 0  # the test subset's shuffle, fixed: every run, whatever its seed, is scored on the same reviews


def _count(value, name: str) -> int | None:
    """train_samples / val_samples / eval_samples: a positive int, or None / 'all' for everything."""
    if value is None or (isinstance(value, str) and value.lower() == "all"):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a positive integer or 'all', got {value!r}") from None
    if n < 1:
        raise DataError(f"{name} must be a positive integer or 'all', got {value!r}")
    return n


def prepare_imdb(source: str | Path | None, tokenizer: Tokenizer, max_len: int = 256, train_samples=2000,
                 val_samples=500, eval_samples=2000, seed: int = 0, add_special_tokens: bool = True,
                 cache_dir: str | Path | None = None, use_cache: bool = True,
                 eval_max_len: int | None = None) -> dict[str, TokenizedSplit]:
    """{"train", "val", "test"} TokenizedSplits, ready for Collator and LengthBucketBatchSampler.

    val (the development split) and train are carved from the real train split: a seeded shuffle, whose first
    `val_samples` reviews are val and the next `train_samples` train ('all': every other review). So a run with more
    training reviews keeps the same val reviews, and recipes are compared on one yardstick. test: the first
    `eval_samples` reviews of one fixed shuffle of the real test split, the same for every seed: a seed changes
    the training, not the exam. `source` is a data folder, or None for the hub (online only).
    Training reviews are cut to `max_len` tokens, val and test to `eval_max_len` (None: `max_len` too): a model
    trained on shorter windows still reads a whole long review at test, and that costs evaluation time only.
    """
    train_samples, eval_samples = _count(train_samples, "train_samples"), _count(eval_samples, "eval_samples")
    n_val = _count(val_samples, "val_samples")
    root = cache_root(cache_dir)
    raw = load_raw_splits(source, root)

    # Two independent seeded streams, so changing eval_samples never changes which reviews are trained on.
    pool = np.random.default_rng([seed, 0]).permutation(len(raw["train"]))
    n_val = len(pool) if n_val is None else n_val
    if len(pool) - n_val < 1:
        raise DataError(f"val_samples={n_val} leaves none of the {len(pool)} train-split reviews for training")
    pool = pool[:n_val + train_samples] if train_samples is not None else pool
    test_rows = np.random.default_rng([TEST_SEED, 1]).permutation(len(raw["test"]))[:eval_samples]

    eval_max_len = max_len if eval_max_len is None else eval_max_len
    kwargs = dict(tokenizer=tokenizer, add_special_tokens=add_special_tokens, cache_dir=root, use_cache=use_cache)
    if eval_max_len == max_len:  # val and train tokenized in one batch
        pooled = tokenize_rows(raw["train"], pool, max_len=max_len, **kwargs)
        train, val = pooled.select(np.arange(n_val, len(pool))), pooled.select(np.arange(n_val))
    else:
        train = tokenize_rows(raw["train"], pool[n_val:], max_len=max_len, **kwargs)
        val = tokenize_rows(raw["train"], pool[:n_val], max_len=eval_max_len, **kwargs)
    return {"train": train, "val": val, "test": tokenize_rows(raw["test"], test_rows, max_len=eval_max_len, **kwargs)}


def tokenize_full_split(source: str | Path | None, tokenizer: Tokenizer, split: str = "train", max_len: int = 512,
                        add_special_tokens: bool = True, cache_dir: str | Path | None = None,
                        use_cache: bool = True) -> TokenizedSplit:
    """Every review of one split (25,000 for IMDB), in file order; cached like prepare_imdb's splits."""
    raw = load_raw_splits(source, cache_root(cache_dir))
    if split not in raw:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(raw)}")
    return tokenize_rows(raw[split], np.arange(len(raw[split])), tokenizer, max_len, add_special_tokens,
                         cache_dir, use_cache)
