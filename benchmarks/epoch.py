"""5. One training epoch with length-bucketed batches vs random batches padded to their longest review.

Both runs see the same reviews (tokenized at max length 512), the same batch size and the same starting
weights; only the batch order differs (`LengthBucketBatchSampler(bucket=True)` vs `bucket=False`). The two
epochs are interleaved step by step (one bucketed step, then one random step, ...), so that machine load falls
on both alike; each side's time is the sum of its own steps. The padding share is `padding_fraction`: the part
of the (B, T) positions the model computes on that are [PAD].
"""

import copy
import itertools
import time

import numpy as np
import torch

import minibert
from minibert.batching import Collator, LengthBucketBatchSampler, padding_fraction

from . import common
from .timing import Row

# --quick: a small encoder with the same kinds of computation (1 layer, 1 head, D=64), so an epoch takes seconds.
# Padding costs it as much as a big model: every op scales with B x T (attention with B x T^2).
TINY = dict(dim=64, n_layers=1, n_heads=1, hidden_dim=256)


def epoch_rows(tokenizer, texts: list[str], batch_size: int, max_length: int, tiny: bool) -> list[Row]:
    ids = tokenizer.encode_batch(texts, max_length=max_length)
    lengths = np.array([len(x) for x in ids])
    examples = [{"input_ids": x, "labels": i % 2} for i, x in enumerate(ids)]
    collate = Collator(tokenizer.pad_id)
    if tiny:
        torch.manual_seed(0)
        model = minibert.build_classifier(minibert.preset(common.DISTILBERT).with_(**TINY))
    else:
        model = common.build_ours(common.MINILM)
    sides = {}
    for bucket in (True, False):
        sampler = LengthBucketBatchSampler(lengths, batch_size, seed=0, bucket=bucket, shuffle=True)
        m = copy.deepcopy(model).train()
        sides[bucket] = dict(batches=list(sampler), model=m, optimizer=common.make_optimizer(m), seconds=0.0)
    for pair in itertools.zip_longest(sides[True]["batches"], sides[False]["batches"]):
        for bucket, indices in zip((True, False), pair):
            if indices is None:
                continue
            side = sides[bucket]
            start = time.perf_counter()
            batch = collate([examples[i] for i in indices])
            common.train_step(side["model"], side["optimizer"], batch)
            side["seconds"] += time.perf_counter() - start
    which = "quick: tiny 1-layer D=64 model" if tiny else "all-MiniLM-L6-v2"
    n = len(texts)
    return [
        Row(f"epoch {n:,} reviews @{max_length}, batch {batch_size} ({which}): bucketed vs random",
            sides[True]["seconds"], sides[False]["seconds"], "s", "<= 0.67"),
        Row("padding share of that epoch: bucketed vs random", 100 * padding_fraction(sides[True]["batches"], lengths),
            100 * padding_fraction(sides[False]["batches"], lengths), "%", ""),
    ]
