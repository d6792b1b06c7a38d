"""5. One training epoch with length-bucketed batches vs random batches padded to their longest review.

Both runs see the same reviews with their real labels (tokenized at max length 512), the same batch size, the
same starting weights and train.py's schedule (10% warmup, then a linear decay to 0: a constant rate would leave
each model where its last few batches pushed it, and the two orders end on different batches); only the batch
order differs (`LengthBucketBatchSampler(bucket=True)` vs `bucket=False`).
The two epochs are interleaved step by step (one bucketed step, then one random step, ...), so that machine load
falls on both alike; each side's time is the sum of its own steps. The padding share is `padding_fraction`: the
part of the (B, T) positions the model computes on that are [PAD].

Faster must not mean worse: with `test` reviews given, each side's model is then evaluated on them, and the row
gives both accuracies with the 95% interval of one accuracy measured on that many reviews (+-1.96 standard errors
of a proportion): a difference well inside it is noise. (--quick trains a tiny random model, which learns
nothing in one small epoch: it gets no accuracy row.)
"""

import copy
import itertools
import math
import time

import numpy as np
import torch

import minibert
from minibert.training.batching import Collator, LengthBucketBatchSampler, padding_fraction
from train_model import linear_warmup_decay

from . import common
from .timing import Row

# --quick: a small encoder with the same kinds of computation (1 layer, 1 head, D=64), so an epoch takes seconds.
# Padding costs it as much as a big model: every op scales with B x T (attention with B x T^2).
TINY = dict(dim=64, n_layers=1, n_heads=1, hidden_dim=256)


def labelled_examples(tokenizer, texts: list[str], labels: np.ndarray, max_length: int) -> list[dict]:
    ids = tokenizer.encode_batch(texts, max_length=max_length)
    return [{"input_ids": x, "labels": int(y)} for x, y in zip(ids, labels)]


@torch.inference_mode()
def accuracy(model: torch.nn.Module, examples: list[dict], collate, batch_size: int = 64) -> float:
    """Share of `examples` whose argmax logit is the label, longest reviews first as train.py evaluates (the
    sampler's evaluation order: least padding; the answer does not depend on the order, the time does)."""
    model.eval()
    lengths = [len(e["input_ids"]) for e in examples]
    correct = 0
    for indices in LengthBucketBatchSampler(lengths, batch_size, bucket=True, shuffle=False):
        batch = collate([examples[i] for i in indices])
        logits = model(batch["input_ids"], batch["attention_mask"])  # (B, C)
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
    return correct / len(examples)


def epoch_rows(tokenizer, train: tuple[list[str], np.ndarray], batch_size: int, max_length: int, tiny: bool,
               test: tuple[list[str], np.ndarray] | None = None) -> list[Row]:
    """`train` and `test`: (texts, labels)."""
    examples = labelled_examples(tokenizer, *train, max_length)
    lengths = np.array([len(e["input_ids"]) for e in examples])
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
        optimizer = common.make_optimizer(m)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(len(sampler), 0.1))
        sides[bucket] = dict(batches=list(sampler), model=m, optimizer=optimizer, schedule=schedule, seconds=0.0)
    for pair in itertools.zip_longest(sides[True]["batches"], sides[False]["batches"]):
        for bucket, indices in zip((True, False), pair):
            if indices is None:
                continue
            side = sides[bucket]
            start = time.perf_counter()
            batch = collate([examples[i] for i in indices])
            common.train_step(side["model"], side["optimizer"], batch)
            side["schedule"].step()
            side["seconds"] += time.perf_counter() - start
    which = "quick: tiny 1-layer D=64 model" if tiny else "all-MiniLM-L6-v2"
    n = len(examples)
    rows = [
        Row(f"epoch {n:,} reviews @{max_length}, batch {batch_size} ({which}): bucketed vs random",
            sides[True]["seconds"], sides[False]["seconds"], "s", "<= 0.67"),
        Row("padding share of that epoch: bucketed vs random", 100 * padding_fraction(sides[True]["batches"], lengths),
            100 * padding_fraction(sides[False]["batches"], lengths), "%", ""),
    ]
    if test is not None and not tiny:
        test_examples = labelled_examples(tokenizer, *test, max_length)
        acc = {bucket: accuracy(side["model"], test_examples, collate) for bucket, side in sides.items()}
        p, m = (acc[True] + acc[False]) / 2, len(test_examples)
        interval = 100 * 1.96 * math.sqrt(p * (1 - p) / m)  # 95% interval of one accuracy on m reviews
        rows.append(Row(f"test accuracy after that epoch ({m:,} test reviews, one accuracy +-{interval:.1f} pts at "
                        f"95%): bucketed vs random", 100 * acc[True], 100 * acc[False], "%", "~1.0"))
    return rows
