"""Assignment 01, collation: `Collator` turns tokenized reviews of different lengths into one padded batch.

Graded code: minibert/training/batching.py `Collator.__call__` (region `collate`). Checked on hand-made examples and
against the reference, the `tokenizers` library's own batch padding of real reviews: same ids, same attention mask.
Nothing else in minibert runs here. Docs: docs/assignments/01-collate.md.
"""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from minibert.training.batching import Collator


def test_pads_on_the_right_to_the_longest():
    """Shorter examples are filled with pad_id on the right, up to the longest example of the batch."""
    batch = Collator(pad_id=0)([{"input_ids": [101, 7, 8, 102], "labels": 1},
                                {"input_ids": [101, 102], "labels": 0},
                                {"input_ids": [101, 9, 102], "labels": 1}])
    assert batch["input_ids"].tolist() == [[101, 7, 8, 102], [101, 102, 0, 0], [101, 9, 102, 0]]


def test_attention_mask_marks_real_tokens():
    """The mask is 1 on every real token and 0 on every padding position, row by row."""
    batch = Collator(pad_id=0)([{"input_ids": [5, 6, 7], "labels": 0}, {"input_ids": [5], "labels": 1}])
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_padding_uses_the_given_pad_id():
    """The padding value is the tokenizer's pad id, not a hard-coded 0 (a real token may have id 0)."""
    batch = Collator(pad_id=3)([{"input_ids": [0, 1], "labels": 0}, {"input_ids": [0], "labels": 1}])
    assert batch["input_ids"].tolist() == [[0, 1], [0, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_shapes_and_dtypes():
    """input_ids and attention_mask are (B, T) LongTensors with T the longest example; labels is a (B,) LongTensor."""
    batch = Collator(pad_id=0)([{"input_ids": list(range(1, 1 + n)), "labels": n % 2} for n in (4, 9, 2, 9, 1)])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (5, 9)
    assert batch["labels"].shape == (5,) and batch["labels"].tolist() == [0, 1, 0, 1, 1]
    assert all(t.dtype == torch.long for t in batch.values())


def test_accepts_lists_arrays_tensors_and_numpy_labels():
    """Token ids may come as a list, a numpy array or a tensor; labels as int, bool or numpy integer."""
    batch = Collator(pad_id=0)([{"input_ids": [1, 2, 3], "labels": True},
                                {"input_ids": np.array([4, 5], dtype=np.int32), "labels": np.int64(0)},
                                {"input_ids": torch.tensor([6]), "labels": 1}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 0], [6, 0, 0]]
    assert batch["labels"].tolist() == [1, 0, 1]
    assert all(t.dtype == torch.long for t in batch.values())


def test_equal_lengths_need_no_padding():
    """A batch whose examples all have the same length comes out unpadded, with an all-ones mask."""
    batch = Collator(pad_id=0)([{"input_ids": [1, 2], "labels": 0}, {"input_ids": [3, 4], "labels": 1}])
    assert batch["input_ids"].tolist() == [[1, 2], [3, 4]]
    assert bool(batch["attention_mask"].all())


@pytest.fixture(scope="module")
def wordpiece(minilm_dir):
    """all-MiniLM-L6-v2's tokenizer, with the truncation and padding its tokenizer.json ships with turned off."""
    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def test_matches_the_tokenizers_library_padding(wordpiece):
    """Collating unpadded encodings gives exactly the ids and mask that `tokenizers` produces when it pads itself."""
    reviews = ["A wonderful film.", "Terrible. I walked out after twenty minutes and never looked back.", "Meh",
               "The acting was fine, the plot was not."]
    pad_id = wordpiece.token_to_id("[PAD]")
    unpadded = wordpiece.encode_batch(reviews)
    ours = Collator(pad_id)([{"input_ids": e.ids, "labels": i % 2} for i, e in enumerate(unpadded)])
    wordpiece.enable_padding(pad_id=pad_id, pad_token="[PAD]")  # pads every batch to its longest, on the right
    try:
        theirs = wordpiece.encode_batch(reviews)
    finally:
        wordpiece.no_padding()
    assert ours["input_ids"].tolist() == [e.ids for e in theirs]
    assert ours["attention_mask"].tolist() == [e.attention_mask for e in theirs]
