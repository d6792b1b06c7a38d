"""IMDB reviews -> tokenized train / val / test splits, with token ids cached on disk.

What is here, in the order the data flows:
1. sources: read raw reviews from (a) a folder of train/test parquet or csv files, (b) an extracted `aclImdb/`
   folder, or (c) the Hugging Face hub dataset `scikit-learn/imdb` (online only), each into a `RawSplit`
   (labels up front, texts read only for the rows we use);
2. `TokenizedSplit`, a torch Dataset of token ids stored flat (one int32 array + offsets), with `lengths` for
   bucketing (minibert/training/batching.py) and `labels` (0 = negative, 1 = positive);
3. tokenization with an on-disk cache under $MINIBERT_CACHE (default ~/.cache/minibert), so a second run pays
   only for reading one .npz file (datasets' Arrow copies of local parquet/csv files go there too);
4. `prepare_imdb`, the recipe train.py uses: seeded shuffle, carve val then train, pick a fixed eval_samples
   test reviews; and `tokenize_full_split` for all 25,000 reviews of a split (the benchmark times it).

What is unusual:
- We add [CLS] ... [SEP] to every review. The course recipe tokenized with add_special_tokens=False yet
  classified from the hidden state at position 0, which then is just the review's first word. The classification
  head reads position 0, so position 0 must be [CLS]: the token BERT was pretrained to summarise the sequence
  with. `add_special_tokens=False` stays available to measure what leaving them out costs.
- Bad data raises one exception type, `DataError`, with a message naming the file, column or value at fault.

Tested in tests/test_data.py (bad-data messages, seeded determinism, cache hits, the aclImdb and offline paths).
"""

import hashlib
import itertools
import json
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import datasets
import numpy as np
import torch
from tqdm import tqdm

from minibert.errors import UserError
from minibert.tokenizer import Tokenizer

LABELS = {"negative": 0, "positive": 1}
TEXT_COLUMN, LABEL_COLUMN = "review", "sentiment"
HUB_DATASET = "scikit-learn/imdb"  # 50,000 reviews in one split, as the course recipe uses
HUB_TEST_SEED = 0  # fixed, so the held-out hub test part is the same for every run seed
LOCAL_HINT = ("pass --data FOLDER: a folder with train and test .parquet or .csv files (columns review, sentiment), "
              "or the extracted aclImdb/ folder of the Maas et al. archive")


class DataError(UserError):
    """The data cannot be used as IMDB reviews; the message says which file, column or value and why."""


# ----------------------------------------------------------------------------------------------------------------
# 1. Sources: raw reviews and labels
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class RawSplit:
    """One split of raw reviews. Labels are read up front (cheap); texts only for the rows we tokenize."""

    name: str  # "train" or "test"
    labels: np.ndarray  # (N,) int64, 0 = negative, 1 = positive
    fingerprint: str  # changes whenever the underlying files change; part of the token cache key
    read_texts: Callable[[np.ndarray], list[str]]  # rows -> their review texts

    def __len__(self) -> int:
        return len(self.labels)


def _labels(values, where: str) -> np.ndarray:
    """Map 'negative'/'positive' to 0/1, naming the first value that is neither."""
    unknown = set(values) - LABELS.keys()
    if unknown:
        raise DataError(f"unknown label {sorted(map(repr, unknown))[0]} in column '{LABEL_COLUMN}' of {where}; "
                        f"allowed: {', '.join(map(repr, LABELS))}")
    return np.array([LABELS[v] for v in values], dtype=np.int64)


def _stat_fingerprint(files: list[Path]) -> str:
    """(path, size, mtime) of each file: cheap, and changes whenever a file is replaced or edited."""
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def _from_dataset(name: str, ds: "datasets.Dataset", fingerprint: str, where: str) -> RawSplit:
    """A RawSplit over a `datasets.Dataset` with columns review and sentiment (extra columns are ignored)."""
    missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in ds.column_names]
    if missing:
        raise DataError(f"{where} has no column {missing}; expected '{TEXT_COLUMN}' and '{LABEL_COLUMN}', "
                        f"found {ds.column_names}")
    if len(ds) == 0:
        raise DataError(f"{where} is empty: the {name} split has no rows")

    def read_texts(rows: np.ndarray) -> list[str]:
        texts = ds.select(rows)[TEXT_COLUMN][:]  # [:] reads the column in one go, not row by row
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"row {int(rows[bad])} of {where} has no review text (got {texts[bad]!r})")
        return texts

    return RawSplit(name, _labels(ds[LABEL_COLUMN][:], where), fingerprint, read_texts)


def _split_files(folder: Path, name: str) -> tuple[str, list[Path]]:
    """The files of split `name`: name.parquet, or shards name-*.parquet; else the same in csv."""
    for fmt in ("parquet", "csv"):
        files = sorted(folder.glob(f"{name}.{fmt}")) + sorted(folder.glob(f"{name}-*.{fmt}"))
        if files:
            return fmt, files
    found = sorted(p.name for p in folder.iterdir())[:10]
    raise DataError(f"no {name} file in {folder}: expected {name}.parquet or {name}.csv (or an aclImdb/ folder); "
                    f"found {found}")


def _from_table_folder(folder: Path, cache_dir: Path) -> dict[str, RawSplit]:
    """train/test parquet or csv files with columns review and sentiment."""
    splits = {}
    for name in ("train", "test"):
        fmt, files = _split_files(folder, name)
        where = ", ".join(str(f) for f in files)
        try:  # datasets converts the files to Arrow once and memory-maps them afterwards. split="train" is just
            # datasets' name for "all of data_files", which here are the files of our split `name`.
            ds = datasets.load_dataset(fmt, data_files=[str(f) for f in files], split="train",
                                       cache_dir=str(cache_dir / "datasets"))
        except Exception as err:  # pyarrow / pandas / datasets each raise their own types: one message here
            if "corresponds to no data" in str(err):  # how datasets reports files with a header but no rows
                raise DataError(f"{where} is empty: the {name} split has no rows") from None
            cause = err.__cause__ or err
            raise DataError(f"cannot read {where}: unreadable or corrupt {fmt} file "
                            f"({type(cause).__name__}: {str(cause)[:200]})") from None
        splits[name] = _from_dataset(name, ds, _stat_fingerprint(files), where)
    return splits


def _from_aclimdb(folder: Path) -> dict[str, RawSplit]:
    """The original Stanford release: {train,test}/{pos,neg}/<id>_<rating>.txt, one review a file."""
    splits = {}
    for name in ("train", "test"):
        files, labels = [], []
        for sub, label in (("neg", 0), ("pos", 1)):
            part = sorted((folder / name / sub).glob("*.txt"))
            files += part
            labels += [label] * len(part)
        if not files:
            raise DataError(f"{folder / name} has no reviews: expected pos/*.txt and neg/*.txt")

        def read_texts(rows: np.ndarray, files=files) -> list[str]:
            texts = []
            for i in rows:
                try:
                    texts.append(files[i].read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError) as err:
                    raise DataError(f"cannot read {files[i]}: {type(err).__name__}: {err}") from None
            return texts

        splits[name] = RawSplit(name, np.array(labels, dtype=np.int64), _stat_fingerprint(files), read_texts)
    return splits


def _hub_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    """Offline mode set, or no TCP connection within a few seconds: fail now instead of hanging in retries."""
    flags = (os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if any(flag in {"1", "ON", "YES", "TRUE"} for flag in flags):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _from_hub() -> dict[str, RawSplit]:
    """scikit-learn/imdb from the hub. It has a single split of 50,000 reviews and no test split, so we hold out a
    test part ourselves: a fixed-seed half (25,000, like the real IMDB test split), disjoint from the training pool
    whatever the run seed."""
    if not _hub_reachable():
        raise DataError(f"no --data given and the Hugging Face hub is unreachable (offline), so "
                        f"'{HUB_DATASET}' cannot be downloaded; {LOCAL_HINT}")
    try:
        ds = datasets.load_dataset(HUB_DATASET, split="train")
    except Exception as err:
        raise DataError(f"cannot load '{HUB_DATASET}' from the hub ({type(err).__name__}: {err}); "
                        f"{LOCAL_HINT}") from None
    fingerprint = _stat_fingerprint([Path(f["filename"]) for f in ds.cache_files])
    order = np.random.default_rng(HUB_TEST_SEED).permutation(len(ds))
    held_out = {"test": np.sort(order[: len(ds) // 2]), "train": np.sort(order[len(ds) // 2:])}
    return {name: _from_dataset(name, ds.select(rows), f"{fingerprint}-{name}", f"{HUB_DATASET} ({name} part)")
            for name, rows in held_out.items()}


def load_raw_splits(source: str | Path | None, cache_dir: Path) -> dict[str, RawSplit]:
    """{"train": RawSplit, "test": RawSplit} from a local folder, or from the hub when `source` is None."""
    if source is None or str(source) == HUB_DATASET:
        return _from_hub()
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}; {LOCAL_HINT}")
    for candidate in (folder, folder / "aclImdb"):  # the folder itself, or the folder the archive was extracted in
        if (candidate / "train" / "pos").is_dir():
            return _from_aclimdb(candidate)
    return _from_table_folder(folder, cache_dir)


# ----------------------------------------------------------------------------------------------------------------
# 2. Tokenized splits
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
# 3. Tokenization with an on-disk cache
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
# 4. The recipe
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
                 cache_dir: str | Path | None = None, use_cache: bool = True) -> dict[str, TokenizedSplit]:
    """{"train", "val", "test"} TokenizedSplits, ready for Collator and LengthBucketBatchSampler.

    val (the development split) and train are carved from the real train split: a seeded shuffle, whose first
    `val_samples` reviews are val and the next `train_samples` train ('all': every other review). So a run with more
    training reviews keeps the same val reviews, and recipes are compared on one yardstick. test: the first
    `eval_samples` reviews of one fixed shuffle of the real test split, the same for every seed: a seed changes
    the training, not the exam. `source` is a data folder, or None for the hub (online only).
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

    kwargs = dict(tokenizer=tokenizer, max_len=max_len, add_special_tokens=add_special_tokens,
                  cache_dir=root, use_cache=use_cache)
    pooled = tokenize_rows(raw["train"], pool, **kwargs)  # val and train tokenized in one batch
    return {"train": pooled.select(np.arange(n_val, len(pool))),
            "val": pooled.select(np.arange(n_val)),
            "test": tokenize_rows(raw["test"], test_rows, **kwargs)}


def tokenize_full_split(source: str | Path | None, tokenizer: Tokenizer, split: str = "train", max_len: int = 512,
                        add_special_tokens: bool = True, cache_dir: str | Path | None = None,
                        use_cache: bool = True) -> TokenizedSplit:
    """Every review of one split (25,000 for IMDB), in file order; cached like prepare_imdb's splits."""
    raw = load_raw_splits(source, cache_root(cache_dir))
    if split not in raw:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(raw)}")
    return tokenize_rows(raw[split], np.arange(len(raw[split])), tokenizer, max_len, add_special_tokens,
                         cache_dir, use_cache)
