"""minibert.training.data and .batching: sources, bad-data messages, seeded splits, the token cache, batching.

Tiny csv / parquet / aclImdb trees are written into tmp_path; each review there is "row <i>", so decoding a
tokenized example tells which source row it came from. Real IMDB is used for one end-to-end split and for the
padding measurement (bucketed vs random batches on the first 2,000 train reviews at max_len 512).
"""

import csv
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from minibert.training import data, sources
from minibert.training.batching import Collator, LengthBucketBatchSampler, padding_fraction
from minibert.training.data import prepare_imdb, tokenize_full_split
from minibert.training.sources import DataError
from minibert.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_tokenizer(minilm_dir)


class CountingTokenizer:
    """Wraps a Tokenizer and counts encode_batch calls: a cache hit must make none."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    @property
    def fingerprint(self):
        return self.inner.fingerprint

    @property
    def truncation(self):
        return self.inner.truncation

    def encode_batch(self, *args, **kwargs):
        self.calls += 1
        return self.inner.encode_batch(*args, **kwargs)


def rows(n, start=0):
    """n reviews "row <i>" with label positive for even i."""
    return [(f"row {i}", "positive" if i % 2 == 0 else "negative") for i in range(start, start + n)]


def write_split(folder, name, records, fmt="csv", columns=("review", "sentiment")):
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with open(folder / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(records)
    else:
        table = pa.table({c: [r[k] for r in records] for k, c in enumerate(columns)})
        pq.write_table(table, folder / f"{name}.parquet")


def make_folder(tmp_path, n_train=50, n_test=30, fmt="csv"):
    folder = tmp_path / "imdb"
    write_split(folder, "train", rows(n_train), fmt)
    write_split(folder, "test", rows(n_test, start=1000), fmt)
    return folder


def source_rows(tokenizer, split):
    """The source row number of each example, decoded from its "row <i>" text."""
    return [int(tokenizer.backend.decode(split[i]["input_ids"].tolist()).split()[-1]) for i in range(len(split))]


def prepare(folder, tokenizer, tmp_path, **kwargs):
    kwargs = {"max_len": 16, "train_samples": 30, "val_samples": 10, "eval_samples": 20, **kwargs}
    return prepare_imdb(folder, tokenizer, cache_dir=tmp_path / "cache", **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Bad data: one DataError, one message per case
# ---------------------------------------------------------------------------------------------------------------

def test_missing_column_names_the_columns_found(tmp_path, tokenizer):
    """A file without review/sentiment columns is refused, naming the columns it has."""
    folder = make_folder(tmp_path)
    write_split(folder, "train", [("great", 1)], columns=("text", "label"))
    with pytest.raises(DataError, match=r"no column \['review', 'sentiment'\].*found \['text', 'label'\]"):
        prepare(folder, tokenizer, tmp_path)


def test_unknown_label_shows_value_and_allowed(tmp_path, tokenizer):
    """A label other than negative/positive is refused, showing it and the allowed values."""
    folder = make_folder(tmp_path, fmt="parquet")
    write_split(folder, "test", rows(5) + [("meh", "neutral")], fmt="parquet")
    with pytest.raises(DataError, match=r"unknown label 'neutral'.*test.parquet.*allowed: 'negative', 'positive'"):
        prepare(folder, tokenizer, tmp_path)


def test_empty_split(tmp_path, tokenizer):
    """A train file with a header and no rows is refused as empty."""
    folder = make_folder(tmp_path)
    write_split(folder, "train", [])
    with pytest.raises(DataError, match=r"train.csv is empty"):
        prepare(folder, tokenizer, tmp_path)


def test_corrupt_file_is_named(tmp_path, tokenizer):
    """A file that is not parquet is refused with its path in the message."""
    folder = make_folder(tmp_path, fmt="parquet")
    (folder / "train.parquet").write_bytes(b"this is not a parquet file")
    with pytest.raises(DataError, match=r"cannot read .*train.parquet: unreadable or corrupt parquet"):
        prepare(folder, tokenizer, tmp_path)


def test_folder_without_split_files(tmp_path, tokenizer):
    """A folder with no train/test files, or no folder at all, says what it expected."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"no train file in .*empty: expected train.parquet or train.csv.*notes.txt"):
        prepare(tmp_path / "empty", tokenizer, tmp_path)
    with pytest.raises(DataError, match="data folder not found"):
        prepare(tmp_path / "nowhere", tokenizer, tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"train_samples": 0}, "train_samples must be a positive integer or 'all'"),
    ({"eval_samples": "many"}, "eval_samples must be a positive integer or 'all'"),
    ({"val_samples": -1}, "val_samples must be a positive integer"),
    ({"val_samples": 50}, "val_samples=50 leaves none of the 50 train-split reviews for training"),
    ({"val_samples": "all"}, "val_samples=50 leaves none of the 50 train-split reviews for training"),
])
def test_bad_arguments(tmp_path, tokenizer, kwargs, message):
    """Impossible sample counts are refused with a message naming the argument."""
    with pytest.raises(DataError, match=message):
        prepare(make_folder(tmp_path), tokenizer, tmp_path, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Splits: labels, sizes, seeds
# ---------------------------------------------------------------------------------------------------------------

def test_labels_sizes_and_disjoint_splits(tmp_path, tokenizer):
    """negative -> 0, positive -> 1; 30 train and 10 val rows; 20 test rows from the test file; train/val disjoint."""
    splits = prepare(make_folder(tmp_path), tokenizer, tmp_path)
    assert {k: len(v) for k, v in splits.items()} == {"train": 30, "val": 10, "test": 20}
    seen = {name: source_rows(tokenizer, split) for name, split in splits.items()}
    for name, split in splits.items():
        assert split.labels.tolist() == [int(i % 2 == 0) for i in seen[name]]  # even rows are positive
        assert [split[i]["labels"] for i in range(len(split))] == split.labels.tolist()
    assert not set(seen["train"]) & set(seen["val"])
    assert all(i < 50 for i in seen["train"] + seen["val"]) and all(i >= 1000 for i in seen["test"])
    assert len(set(seen["test"])) == 20


def test_same_seed_same_rows_other_seed_other_rows(tmp_path, tokenizer):
    """The train and val rows are a function of the seed (equal for equal seeds, different otherwise); the test
    rows are the same for every seed."""
    folder = make_folder(tmp_path)
    def pick(seed):
        return {k: source_rows(tokenizer, v) for k, v in prepare(folder, tokenizer, tmp_path, seed=seed).items()}

    first, again, other = pick(0), pick(0), pick(1)
    assert first == again
    assert first["train"] != other["train"] and first["val"] != other["val"]
    assert first["test"] == other["test"]


def test_more_training_reviews_keep_the_same_val_reviews(tmp_path, tokenizer):
    """val is carved before train: more training reviews add to train only, the val rows stay the same, in order."""
    folder = make_folder(tmp_path)
    small = prepare(folder, tokenizer, tmp_path, train_samples=10)
    large = prepare(folder, tokenizer, tmp_path, train_samples="all")
    assert source_rows(tokenizer, small["val"]) == source_rows(tokenizer, large["val"])
    assert len(small["train"]) == 10 and len(large["train"]) == 40
    assert source_rows(tokenizer, large["train"])[:10] == source_rows(tokenizer, small["train"])


def test_all_samples(tmp_path, tokenizer):
    """'all' / None take every review: 50 train reviews split 40/10, all 30 test reviews."""
    splits = prepare(make_folder(tmp_path), tokenizer, tmp_path, train_samples="all", eval_samples=None)
    assert {k: len(v) for k, v in splits.items()} == {"train": 40, "val": 10, "test": 30}
    assert sorted(source_rows(tokenizer, splits["test"])) == list(range(1000, 1030))


def test_real_imdb_split(imdb_dir, tokenizer, tmp_path):
    """On real IMDB: sizes, both labels present, [CLS] first and [SEP] last, nothing longer than max_len."""
    splits = prepare_imdb(imdb_dir, tokenizer, max_len=64, train_samples=160, val_samples=40, eval_samples=100,
                          cache_dir=tmp_path)
    assert {k: len(v) for k, v in splits.items()} == {"train": 160, "val": 40, "test": 100}
    for split in splits.values():
        assert set(split.labels.tolist()) == {0, 1}
        assert split.lengths.max() == 64 and split.lengths.min() > 2
        assert split[0]["input_ids"][0] == tokenizer.cls_id and split[0]["input_ids"][-1] == tokenizer.sep_id
    plain = prepare_imdb(imdb_dir, tokenizer, max_len=64, train_samples=160, val_samples=40, eval_samples=100,
                         cache_dir=tmp_path, add_special_tokens=False)
    assert plain["train"][0]["input_ids"][0] != tokenizer.cls_id


def test_eval_max_len_cuts_only_val_and_test(imdb_dir, tokenizer, tmp_path):
    """Training reviews are cut at max_len, val and test at eval_max_len; the same reviews, in the same order, as
    a run with one length for all, and the training reviews identical to that run's."""
    kwargs = dict(train_samples=160, val_samples=40, eval_samples=100, cache_dir=tmp_path)
    one = prepare_imdb(imdb_dir, tokenizer, max_len=64, **kwargs)
    two = prepare_imdb(imdb_dir, tokenizer, max_len=64, eval_max_len=128, **kwargs)
    assert two["train"].lengths.max() == 64 and np.array_equal(two["train"].ids, one["train"].ids)
    for name in ("val", "test"):
        assert two[name].lengths.max() == 128  # some reviews are longer than 64 tokens: they keep more
        assert np.array_equal(two[name].labels, one[name].labels)
        for i in range(len(one[name])):  # a review under 64 tokens reads the same; a longer one, a longer window
            short, long = one[name][i]["input_ids"], two[name][i]["input_ids"]
            assert len(long) >= len(short) and (len(short) < 64) == (len(long) == len(short))


# ---------------------------------------------------------------------------------------------------------------
# Other sources: aclImdb folder, the hub (offline and faked)
# ---------------------------------------------------------------------------------------------------------------

def test_aclimdb_folder(tmp_path, tokenizer):
    """An extracted aclImdb/ tree (pos/neg folders of .txt files) is read with pos -> 1, neg -> 0."""
    for split, offset in (("train", 0), ("test", 1000)):
        for i in range(offset, offset + 12):
            sub = "pos" if i % 2 == 0 else "neg"
            (tmp_path / "aclImdb" / split / sub).mkdir(parents=True, exist_ok=True)
            (tmp_path / "aclImdb" / split / sub / f"{i}_7.txt").write_text(f"row {i}")
    splits = prepare_imdb(tmp_path, tokenizer, max_len=16, train_samples=8, val_samples=2, eval_samples="all",
                          cache_dir=tmp_path / "cache")
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "val": 2, "test": 12}
    for split in splits.values():
        assert split.labels.tolist() == [int(i % 2 == 0) for i in source_rows(tokenizer, split)]


def test_offline_without_data_fails_fast_with_hint(monkeypatch, tokenizer, tmp_path):
    """No --data and no hub (offline flag, or no connection) fails at once and says how to point at local data."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"unreachable.*pass --data FOLDER: a folder with train and test .parquet or .csv files"):
        prepare_imdb(None, tokenizer, cache_dir=tmp_path)
    assert time.perf_counter() - start < 2

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(sources.socket, "create_connection", no_network)
    with pytest.raises(DataError, match=r"pass --data FOLDER"):
        prepare_imdb(None, tokenizer, cache_dir=tmp_path)


def test_hub_source_holds_out_a_disjoint_test_part(monkeypatch, tokenizer, tmp_path):
    """scikit-learn/imdb has one split: half is held out as test, disjoint from the training pool."""
    import datasets

    fake = datasets.Dataset.from_dict({"review": [f"row {i}" for i in range(60)],
                                       "sentiment": [("positive", "negative")[i % 2] for i in range(60)]})
    monkeypatch.setattr(sources, "_hub_reachable", lambda: True)
    monkeypatch.setattr(sources.datasets, "load_dataset", lambda name, split: fake)
    splits = prepare_imdb(None, tokenizer, max_len=16, train_samples="all", val_samples=5, eval_samples="all",
                          cache_dir=tmp_path)
    train = source_rows(tokenizer, splits["train"]) + source_rows(tokenizer, splits["val"])
    test = source_rows(tokenizer, splits["test"])
    assert len(train) == len(test) == 30 and sorted(train + test) == list(range(60))


# ---------------------------------------------------------------------------------------------------------------
# The token cache
# ---------------------------------------------------------------------------------------------------------------

def test_second_prepare_is_served_from_cache(tmp_path, tokenizer):
    """A second identical call makes no tokenizer call and returns identical ids; a changed key tokenizes again."""
    folder = make_folder(tmp_path)
    counting = CountingTokenizer(tokenizer)
    first = prepare(folder, counting, tmp_path)
    assert counting.calls == 2  # train pool and test, each in one batch
    second = prepare(folder, counting, tmp_path)
    assert counting.calls == 2 and all(s.from_cache for s in second.values())
    for name in first:
        assert np.array_equal(first[name].ids, second[name].ids)
        assert np.array_equal(first[name].labels, second[name].labels)
    assert not list((tmp_path / "cache" / "tokens").glob("*.tmp"))  # atomic writes leave no temp files

    prepare(folder, counting, tmp_path, max_len=8)  # another max_len: a new key
    assert counting.calls == 4
    os.utime(folder / "test.csv", ns=(1, 1))  # the test file changed: only test is tokenized again
    prepare(folder, counting, tmp_path, max_len=8)
    assert counting.calls == 5


def test_full_split_cache_serves_subsets(tmp_path, tokenizer):
    """After tokenize_full_split, prepare_imdb's subsets come from it, and a corrupt cache file is rebuilt."""
    folder = make_folder(tmp_path)
    counting = CountingTokenizer(tokenizer)
    full = tokenize_full_split(folder, counting, max_len=16, cache_dir=tmp_path / "cache")
    assert len(full) == 50 and source_rows(tokenizer, full) == list(range(50)) and counting.calls == 1
    splits = prepare(folder, counting, tmp_path)
    assert counting.calls == 2 and splits["train"].from_cache  # only test was tokenized
    for path in (tmp_path / "cache" / "tokens").glob("*.npz"):
        path.write_bytes(b"garbage")
    again = prepare(folder, counting, tmp_path)
    assert counting.calls == 4 and np.array_equal(again["train"].ids, splits["train"].ids)


# ---------------------------------------------------------------------------------------------------------------
# Collation and batching
# ---------------------------------------------------------------------------------------------------------------

def test_collator_pads_to_longest():
    """Collator pads on the right to the longest example, with mask 1 on real tokens and 0 on padding."""
    batch = Collator(pad_id=0)([{"input_ids": [101, 5, 102], "labels": 1},
                                {"input_ids": torch.tensor([101, 102]), "labels": 0}])
    assert batch["input_ids"].tolist() == [[101, 5, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]
    assert all(t.dtype == torch.long for t in batch.values())


def epoch(sampler, e, start_batch=0):
    sampler.set_epoch(e, start_batch=start_batch)
    return list(sampler)


@pytest.mark.parametrize("n", [1, 7, 33, 250])
@pytest.mark.parametrize("batch_size", [1, 3, 8, 32])
@pytest.mark.parametrize("bucket", [True, False])
def test_every_example_once_per_epoch(n, batch_size, bucket):
    """Each index appears exactly once per epoch, batches are full but the last, len() matches the batches."""
    lengths = np.random.default_rng(n).integers(3, 512, size=n)
    sampler = LengthBucketBatchSampler(lengths, batch_size, seed=1, bucket=bucket, chunk_batches=2)
    for e in range(2):
        batches = epoch(sampler, e)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert len(batches) == len(sampler) and sum(len(b) < batch_size for b in batches) <= 1
    dropped = epoch(LengthBucketBatchSampler(lengths, batch_size, bucket=bucket, drop_last=True), 0)
    assert all(len(b) == batch_size for b in dropped)
    assert len({i for b in dropped for i in b}) == n // batch_size * batch_size


def test_order_is_a_function_of_seed_and_epoch():
    """Same (seed, epoch) gives the same batches; another epoch or seed gives another order."""
    lengths = np.random.default_rng(0).integers(3, 512, size=300)
    a, b = LengthBucketBatchSampler(lengths, 16, seed=3), LengthBucketBatchSampler(lengths, 16, seed=3)
    assert epoch(a, 5) == epoch(b, 5)
    longest = [lengths[batch].max() for batch in epoch(a, 5)]  # one chunk of 300, sorted: the batch order is
    assert longest != sorted(longest, reverse=True)  # what makes the sequence of lengths random
    assert epoch(a, 5) != epoch(a, 6)
    assert epoch(a, 5) != epoch(LengthBucketBatchSampler(lengths, 16, seed=4), 5)


def test_start_batch_resumes_the_same_epoch():
    """set_epoch(e, start_batch=k) yields exactly the tail of epoch e after its first k batches."""
    lengths = np.random.default_rng(0).integers(3, 512, size=100)
    sampler = LengthBucketBatchSampler(lengths, 8, seed=2)
    full = epoch(sampler, 3)
    assert epoch(sampler, 3, start_batch=5) == full[5:] and len(sampler) == len(full) - 5
    assert epoch(sampler, 3, start_batch=len(full)) == []
    with pytest.raises(ValueError, match="start_batch must be in"):
        sampler.set_epoch(3, start_batch=len(full) + 1)


@pytest.mark.parametrize("n, batch_size", [(100, 8), (97, 10), (5, 4)])
def test_replicas_cover_everything_with_equal_counts(n, batch_size):
    """With num_replicas=2 the ranks run as many batches each and together cover every example."""
    lengths = np.random.default_rng(0).integers(3, 512, size=n)
    ranks = [epoch(LengthBucketBatchSampler(lengths, batch_size, seed=0, num_replicas=2, rank=r), 1) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    assert {i for batches in ranks for b in batches for i in b} == set(range(n))
    single = epoch(LengthBucketBatchSampler(lengths, batch_size, seed=0), 1)
    assert sum(map(len, ranks)) - len(single) in (0, 1)  # at most one repeated batch as padding


def test_eval_order_is_length_sorted_or_plain():
    """shuffle=False: bucket=True gives longest-first batches, bucket=False the dataset order."""
    lengths = np.random.default_rng(0).integers(3, 512, size=50)
    flat = [i for b in epoch(LengthBucketBatchSampler(lengths, 8, shuffle=False), 0) for i in b]
    assert list(lengths[flat]) == sorted(lengths, reverse=True)
    plain = epoch(LengthBucketBatchSampler(lengths, 8, shuffle=False, bucket=False), 0)
    assert [i for b in plain for i in b] == list(range(50))


def test_bucketing_cuts_padding_on_real_imdb(imdb_dir, tokenizer, tmp_path):
    """On the first 2,000 IMDB train reviews at max_len 512, bucketed batches pad < 5%, random batches > 20%."""
    texts = pq.read_table(imdb_dir / "train.parquet", columns=["review"]).column("review").to_pylist()[:2000]
    lengths = [len(ids) for ids in tokenizer.encode_batch(texts, max_length=512)]
    bucketed = padding_fraction(epoch(LengthBucketBatchSampler(lengths, 32, seed=0, bucket=True), 0), lengths)
    random = padding_fraction(epoch(LengthBucketBatchSampler(lengths, 32, seed=0, bucket=False), 0), lengths)
    print(f"padding fraction, batch 32: bucketed {bucketed:.4f}, random {random:.4f}")
    assert bucketed < 0.05 and random > 0.2


def test_dataloader_end_to_end(tmp_path, tokenizer):
    """A DataLoader over a TokenizedSplit with the sampler and Collator yields (B, T) batches starting with [CLS]."""
    split = prepare(make_folder(tmp_path), tokenizer, tmp_path)["train"]
    sampler = LengthBucketBatchSampler(split.lengths, 8, seed=0)
    loader = torch.utils.data.DataLoader(split, batch_sampler=sampler, collate_fn=Collator(tokenizer.pad_id))
    batches = list(loader)
    assert len(batches) == len(loader) == 4 and sum(len(b["labels"]) for b in batches) == 30
    for b, indices in zip(batches, list(sampler)):
        assert b["input_ids"].shape == b["attention_mask"].shape and (b["input_ids"][:, 0] == tokenizer.cls_id).all()
        assert b["attention_mask"].sum(1).tolist() == split.lengths[indices].tolist()
        assert b["input_ids"].shape[1] == split.lengths[indices].max()
