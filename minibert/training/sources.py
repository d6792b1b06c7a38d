"""Where IMDB reviews come from: raw reviews and labels, before any tokenizer sees them.

Three sources, each read into one `RawSplit` per split (labels up front, texts read only for the rows we use):
(a) a folder of train/test parquet or csv files (columns review, sentiment), (b) an extracted `aclImdb/` folder
of the Maas et al. archive, (c) the Hugging Face hub dataset `scikit-learn/imdb` (online only). `load_raw_splits`
picks the one a `--data` value names. Bad data raises one exception type, `DataError`, with a message naming the
file, column or value at fault. minibert/training/data.py tokenizes what these return.

Tested in tests/test_data.py (bad-data messages, the aclImdb and offline paths).
"""

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import datasets
import numpy as np

from minibert.errors import UserError

LABELS = {"negative": 0, "positive": 1}
TEXT_COLUMN, LABEL_COLUMN = "review", "sentiment"
HUB_DATASET = "scikit-learn/imdb"  # 50,000 reviews in one split, as the course recipe uses
HUB_TEST_SEED = 0  # fixed, so the held-out hub test part is the same for every run seed
LOCAL_HINT = ("pass --data FOLDER: a folder with train and test .parquet or .csv files (columns review, sentiment), "
              "or the extracted aclImdb/ folder of the Maas et al. archive")


class DataError(UserError):
    """The data cannot be used as IMDB reviews; the message says which file, column or value and why."""


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
