"""Assignment 05, the training step: forward, loss, backward over micro-batches, then clip, step, schedule, zero.

Graded code: train_loop.py `train_step` (region `training_step`). It runs on a tiny plain nn.Module (a bag of
embeddings, not minibert) with a plain collate function, so no other assignment is involved; the reference is a
hand-written step on one big batch. SGD without momentum is used so that a parameter's change is its gradient
times the learning rate, which makes the gradient itself visible. Docs: docs/assignments/05-training-step.md.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import train_loop
from train_config import RunConfig

V, D, C, T, N = 20, 8, 2, 6, 8  # vocab, width, classes, tokens per example, examples


class BagOfEmbeddings(nn.Module):
    """logits = W mean(embeddings of the real tokens) + b: small, but with the classifier's call signature."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.out = nn.Linear(D, C)

    def forward(self, input_ids, attention_mask=None):
        if attention_mask is None:  # train_loop.to_device drops a mask without padding
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask[:, :, None].float()  # (B, T, 1)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)  # (B, D)
        return self.out(pooled)  # (B, C)


def collate(examples):
    """Fixed-length examples -> a batch, with the keys train_step reads."""
    input_ids = torch.stack([e["input_ids"] for e in examples])  # (B, T)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "labels": torch.tensor([e["labels"] for e in examples])}


@pytest.fixture
def dataset():
    return [{"input_ids": torch.randint(0, V, (T,)), "labels": i % C} for i in range(N)]


def setup(lr=0.5):
    """A model, plain SGD and a decaying schedule (lr / (1 + step)), built the same every time."""
    torch.manual_seed(0)
    model = BagOfEmbeddings()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    return model, optimizer, schedule


def reference_step(model, optimizer, schedule, examples, clip):
    """The step written out on one batch holding every example: mean loss, backward, clip, step, schedule, zero."""
    batch = collate(examples)
    loss = F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["labels"])
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def assert_same_parameters(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert_close(p, q, atol=1e-6, rtol=1e-5, msg=f"parameter {name}")


@pytest.mark.parametrize("clip", [0.0, 100.0])
def test_one_batch_matches_the_reference_step(dataset, clip):
    """One micro-batch: the same update and the same returned loss (the batch mean) as the reference step."""
    ours, optimizer, schedule = setup()
    theirs, ref_optimizer, ref_schedule = setup()
    loss = train_loop.train_step(ours, optimizer, schedule, [[0, 1, 2, 3]], dataset, collate,
                            RunConfig(device="cpu", clip=clip))
    ref_loss = reference_step(theirs, ref_optimizer, ref_schedule, dataset[:4], clip)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-6)
    assert_same_parameters(ours, theirs)


def test_accumulated_micro_batches_equal_one_big_batch(dataset):
    """Uneven micro-batches [2, 3, 1] give the update and loss of one batch of 6: each review weighs the same."""
    ours, optimizer, schedule = setup()
    theirs, ref_optimizer, ref_schedule = setup()
    loss = train_loop.train_step(ours, optimizer, schedule, [[0, 1], [2, 3, 4], [5]], dataset, collate,
                            RunConfig(device="cpu", clip=0.0))
    ref_loss = reference_step(theirs, ref_optimizer, ref_schedule, dataset[:6], 0.0)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-6)
    assert_same_parameters(ours, theirs)


def test_gradient_norm_is_clipped(dataset):
    """With clip c below the gradient norm, the SGD update (lr 1) has norm c: the whole gradient was rescaled."""
    ours, optimizer, schedule = setup(lr=1.0)
    before = [p.detach().clone() for p in ours.parameters()]
    train_loop.train_step(ours, optimizer, schedule, [[0, 1, 2, 3]], dataset, collate,
                     RunConfig(device="cpu", clip=1e-3))
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(ours.parameters(), before)])
    assert change.norm().item() == pytest.approx(1e-3, rel=1e-4)


def test_schedule_steps_and_gradients_are_cleared(dataset):
    """After the step the schedule has advanced once (the lr changed) and no gradient is left behind."""
    ours, optimizer, schedule = setup()
    train_loop.train_step(ours, optimizer, schedule, [[0, 1], [2, 3]], dataset, collate,
                     RunConfig(device="cpu", clip=1.0))
    assert schedule.last_epoch == 1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 / 2)
    assert all(p.grad is None or not p.grad.any() for p in ours.parameters())


def test_frozen_parameters_do_not_change(dataset):
    """Parameters with requires_grad=False are left exactly as they were."""
    ours, optimizer, schedule = setup()
    ours.embed.weight.requires_grad_(False)
    frozen = ours.embed.weight.detach().clone()
    out_before = ours.out.weight.detach().clone()
    train_loop.train_step(ours, optimizer, schedule, [[0, 1, 2]], dataset, collate, RunConfig(device="cpu"))
    assert torch.equal(ours.embed.weight, frozen)
    assert not torch.equal(ours.out.weight, out_before)
