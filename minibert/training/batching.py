"""From tokenized reviews to batches: dynamic padding (`Collator`) and the batch order (`LengthBucketBatchSampler`).

Shapes: B batch, T tokens (the longest review of the batch, never a fixed 512).

What is unusual:
- Length bucketing. IMDB reviews run from ~10 to 512+ tokens; a random batch is padded to its longest review, so
  ~40% of the positions a model computes on are [PAD]. The sampler sorts reviews by length inside large shuffled
  chunks (50 batches' worth), cuts batches there, then shuffles the batch order: each batch holds reviews of
  similar length (a few % padding) while the order in which the model sees them stays random.
- The order is a pure function of (seed, epoch): `set_epoch(epoch, start_batch=k)` replays exactly the epoch a
  crashed run was in and skips its first k batches without collating them, for bitwise-exact resume.
- `num_replicas`/`rank` give each torchrun process every num_replicas-th batch of the same epoch order; a short
  last round is padded by repeating batches from the start, as torch's DistributedSampler pads samples, so every
  rank runs the same number of steps (an uneven count would hang the gradient all-reduce).

Tested in tests/test_data.py: every example exactly once per epoch, same (seed, epoch) -> same order, resume,
replica coverage, and on real IMDB lengths bucketed padding far below random batching's.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


class Collator:
    """Examples {"input_ids": 1-D ids, "labels": int} -> LongTensors input_ids, attention_mask (B, T), labels (B,)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[dict]) -> dict:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        # BEGIN ASSIGNMENT collate: the three long tensors of the docstring: every row as long as the batch's longest example, and a mask that tells real tokens from padding
        ids = [torch.as_tensor(e["input_ids"], dtype=torch.long) for e in examples]
        T = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), T), self.pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(ids), T), dtype=torch.long)  # (B, T): 1 = real token, 0 = [PAD]
        for row, x in enumerate(ids):  # right padding: position 0 stays [CLS]
            input_ids[row, :len(x)] = x
            attention_mask[row, :len(x)] = 1
        labels = torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long)  # (B,)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        # END ASSIGNMENT


class PadToMultiple:
    """Wraps a collator: pads each batch on the right to a multiple of `multiple` tokens (at most `max_len`).

    Trades a little padding for few distinct shapes: with T rounded up to a multiple of 32, reviews cut at 256
    tokens give 8 batch widths instead of up to 256. That is what CUDA graphs need (one recording per shape,
    minibert/training/cuda_graphs.py), and what lets tensor cores work on aligned matrices. The added positions are
    padding like any other: [PAD] ids, mask 0.
    """

    def __init__(self, collate, multiple: int, pad_id: int, max_len: int | None = None):
        if multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {multiple}")
        self.collate, self.multiple, self.pad_id, self.max_len = collate, multiple, pad_id, max_len

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collate(examples)
        B, T = batch["input_ids"].shape
        padded_T = -(-T // self.multiple) * self.multiple  # round up
        if self.max_len is not None:
            padded_T = max(T, min(padded_T, self.max_len))
        extra = padded_T - T
        if extra == 0:
            return batch
        return {**batch,
                "input_ids": F.pad(batch["input_ids"], (0, extra), value=self.pad_id),  # (B, padded_T)
                "attention_mask": F.pad(batch["attention_mask"], (0, extra), value=0)}  # (B, padded_T)


class LengthBucketBatchSampler(torch.utils.data.Sampler):
    """Yields lists of dataset indices, one list a batch. Use as `DataLoader(ds, batch_sampler=..., collate_fn=...)`.

    shuffle=True,  bucket=True:  training with length bucketing (see the module docstring).
    shuffle=True,  bucket=False: plain random batches (a seeded shuffle, cut every batch_size).
    shuffle=False, bucket=True:  evaluation, longest reviews first (least padding; a memory error shows at once).
    shuffle=False, bucket=False: evaluation in dataset order.
    Call `set_epoch(epoch)` before each epoch, as with DistributedSampler; `len()` is the number of batches the
    next iteration yields on this rank (after skipping `start_batch`); `batches_per_epoch` ignores the skip.
    """

    def __init__(self, lengths, batch_size: int, seed: int = 0, bucket: bool = True, shuffle: bool = True,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0, chunk_batches: int = 50):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        if chunk_batches < 1:
            raise ValueError(f"chunk_batches must be >= 1, got {chunk_batches}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size, self.seed, self.bucket, self.shuffle = batch_size, seed, bucket, shuffle
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.chunk = chunk_batches * batch_size  # a multiple of batch_size: no batch straddles two chunks
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Fix the order to epoch `epoch`'s, and start the next iteration at this rank's batch `start_batch`."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch must be in [0, {self.batches_per_epoch}], got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_batches(self) -> list[np.ndarray]:
        """All batches of the current epoch, before the split across replicas."""
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])  # the whole order derives from (seed, epoch) alone
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            # Sort by length, longest first, within each chunk (the whole set when not shuffling). The stable sort
            # keeps the random order among equal lengths, so ties do not always batch together the same way.
            span = self.chunk if self.shuffle else max(n, 1)
            order = np.concatenate([
                part[np.argsort(-self.lengths[part], kind="stable")] for part in np.split(order, range(span, n, span))
            ]) if n else order
        batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle and self.bucket:  # random batch order, or long batches would all come first
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    @property
    def batches_per_epoch(self) -> int:
        """Batches one rank runs per epoch (the same on every rank)."""
        n = len(self.lengths)
        n_batches = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return math.ceil(n_batches / self.num_replicas)

    def __iter__(self):
        batches = self.epoch_batches()
        per_rank = self.batches_per_epoch
        if batches:
            # Pad to a multiple of num_replicas by repeating batches from the start of the epoch.
            batches = (batches * math.ceil(per_rank * self.num_replicas / len(batches)))[:per_rank * self.num_replicas]
        mine = batches[self.rank::self.num_replicas]
        for batch in mine[self.start_batch:]:
            yield batch.tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


def padding_fraction(batches, lengths) -> float:
    """The share of positions in the padded (B, T) batches that are [PAD]: 1 - real tokens / (B * T) summed."""
    lengths = np.asarray(lengths)
    real = padded = 0
    for batch in batches:
        batch_lengths = lengths[np.asarray(batch, dtype=np.int64)]
        real += int(batch_lengths.sum())
        padded += len(batch_lengths) * int(batch_lengths.max(initial=0))
    return 1 - real / padded if padded else 0.0
