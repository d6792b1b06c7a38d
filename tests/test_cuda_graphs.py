"""CUDA graphs for training (minibert/training/cuda_graphs.py) and the padding that keeps their shapes few.

On CPU: PadToMultiple's padding is only padding (the model's output is unchanged), and the graph runner refuses
what it cannot do, with a message. On a GPU (`-m gpu`): a replayed step computes the eager step's loss and
gradients, gradients accumulate across replays instead of being overwritten, dropout draws fresh masks on every
replay, and one graph is recorded per shape, no more.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

import minibert
from minibert.training.batching import Collator, PadToMultiple
from minibert.training.cuda_graphs import ShapeGraphs, keep_grads

TINY = dict(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)
gpu = pytest.mark.gpu


def examples(lengths):
    return [{"input_ids": list(range(1, n + 1)), "labels": n % 2} for n in lengths]


def test_pad_to_multiple_rounds_the_width_up_and_caps_it():
    """Widths become multiples of 8, never beyond max_len, and never shorter than the longest review."""
    collate = PadToMultiple(Collator(pad_id=0), multiple=8, pad_id=0, max_len=20)
    assert collate(examples([3, 5]))["input_ids"].shape == (2, 8)
    assert collate(examples([8]))["input_ids"].shape == (1, 8)
    assert collate(examples([9, 2]))["input_ids"].shape == (2, 16)
    assert collate(examples([17]))["input_ids"].shape == (1, 20)  # capped at max_len
    assert collate(examples([23]))["input_ids"].shape == (1, 23)  # already longer than max_len: left as is
    batch = collate(examples([3, 5]))
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, 5]  # the new positions are padding
    assert (batch["input_ids"][:, 5:] == 0).all()
    with pytest.raises(ValueError, match="multiple"):
        PadToMultiple(Collator(pad_id=0), multiple=0, pad_id=0)


def test_extra_padding_does_not_change_the_logits():
    """Rounding the width up only adds masked positions: the logits stay those of the tight batch."""
    torch.manual_seed(0)
    model = minibert.build_classifier(minibert.Config(**TINY)).eval()
    batch_examples = examples([3, 11, 7])
    tight = Collator(pad_id=0)(batch_examples)
    wide = PadToMultiple(Collator(pad_id=0), multiple=32, pad_id=0)(batch_examples)
    assert wide["input_ids"].shape[1] == 32
    torch.testing.assert_close(model(wide["input_ids"], wide["attention_mask"]),
                               model(tight["input_ids"], tight["attention_mask"]), atol=1e-5, rtol=1e-5)


def test_graphs_refuse_a_cpu_model():
    with pytest.raises(ValueError, match="CUDA"):
        ShapeGraphs(minibert.build_classifier(minibert.Config(**TINY)))


def test_train_pads_batches_only_when_asked():
    """--pad-multiple resolves to 1 (no rounding) by default and is kept when given; run_config.json records it."""
    from train_config import parse_args, resolve

    assert resolve(parse_args(["--device", "cpu"])).pad_multiple == 1
    assert resolve(parse_args(["--device", "cpu", "--pad-multiple", "8"])).pad_multiple == 8


def test_train_keeps_an_all_ones_mask_only_for_cuda_graphs():
    """Eager training drops a mask without padding (SDPA may then use its flash kernel); with CUDA graphs it is
    kept, so padded and unpadded batches of one width replay one recorded graph."""
    import train_loop

    full, padded = Collator(pad_id=0)(examples([4, 4])), Collator(pad_id=0)(examples([4, 2]))
    assert "attention_mask" not in train_loop.to_device(full, "cpu")
    assert "attention_mask" in train_loop.to_device(padded, "cpu")
    assert train_loop.to_device(full, "cpu", keep_mask=True)["attention_mask"].tolist() == [[1] * 4] * 2


def test_train_refuses_cuda_graphs_on_cpu():
    """--cuda-graphs on a CPU run stops before any work, saying why."""
    from minibert.errors import UserError
    from train_config import parse_args, resolve

    with pytest.raises(UserError, match="--cuda-graphs needs --device cuda"):
        resolve(parse_args(["--device", "cpu", "--cuda-graphs"]))


# ---------------------------------------------------------------------------------------------------------------
# On a GPU
# ---------------------------------------------------------------------------------------------------------------

def cuda_model(dropout: float) -> minibert.Classifier:
    torch.manual_seed(0)
    config = minibert.Config(**TINY, dropout=dropout, attention_dropout=dropout, seq_classif_dropout=dropout)
    return minibert.build_classifier(config).cuda().train()


def cuda_batch(B=4, T=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1:, T // 2:] = 0
    labels = torch.randint(0, 2, (B,), generator=g)
    return ids.cuda(), mask.cuda(), labels.cuda()


def loss_and_grads(forward, model, batch):
    ids, mask, labels = batch
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = forward(ids, mask)
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@gpu
def test_a_replayed_step_equals_the_eager_step():
    """Without dropout, forward + backward replayed from the graph give the eager loss and every gradient."""
    eager = cuda_model(dropout=0.0)
    graphed = copy.deepcopy(eager)
    runner = ShapeGraphs(graphed)
    keep_grads(graphed)
    for seed in range(3):  # the first call records, the next ones replay on new data
        batch = cuda_batch(seed=seed)
        eager.zero_grad(set_to_none=True)
        graphed.zero_grad(set_to_none=False)
        loss_e, grads_e = loss_and_grads(eager, eager, batch)
        loss_g, grads_g = loss_and_grads(runner, graphed, batch)
        torch.testing.assert_close(loss_g, loss_e, atol=1e-3, rtol=1e-3)
        for name in grads_e:
            torch.testing.assert_close(grads_g[name], grads_e[name], atol=1e-3, rtol=1e-2, msg=name)
    assert len(runner.graphs) == 1


@gpu
def test_gradients_accumulate_across_replays():
    """Two backward replays without zeroing add up (2x one step's gradient): .grad is ours, not the graph's buffer."""
    model = cuda_model(dropout=0.0)
    runner = ShapeGraphs(model)
    keep_grads(model)
    batch = cuda_batch()
    _, once = loss_and_grads(runner, model, batch)
    _, twice = loss_and_grads(runner, model, batch)
    for name in once:
        torch.testing.assert_close(twice[name], 2 * once[name], atol=1e-4, rtol=1e-3, msg=name)


@gpu
def test_one_graph_per_shape_and_fresh_dropout_each_replay():
    """Shapes (B, T, mask or not) each get one recording; with dropout, two replays of one batch differ."""
    model = cuda_model(dropout=0.1)
    runner = ShapeGraphs(model, max_graphs=3)
    ids, mask, _ = cuda_batch(T=16)
    first = runner(ids, mask).detach().clone()
    second = runner(ids, mask).detach().clone()
    assert not torch.equal(first, second)  # new dropout masks
    runner(ids, None)
    runner(*cuda_batch(T=32)[:2])
    runner(*cuda_batch(T=48)[:2])  # a 4th shape beyond max_graphs=3: runs eagerly, not recorded
    assert len(runner.graphs) == 3
    model.eval()
    with pytest.raises(RuntimeError, match="evaluate"):
        runner(ids, mask)
