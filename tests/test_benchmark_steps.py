"""The benchmark's own training steps (benchmarks/common.py) train like the plain step they are timed against.

A faster step is only worth timing if it computes the same update. On CPU: clipping inside the fused AdamW kernel
(`clip_in_adamw`), or compiling clipping and AdamW together (`compiled_update`), gives the weights of
clip_grad_norm_ followed by AdamW. On a GPU (`-m gpu`): replaying the whole
step (forward, backward, clipping, AdamW) from one CUDA graph gives the weights of the same steps run eagerly,
compiled or not.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

import minibert
from benchmarks import common
from minibert.model import compile_model

VOCAB = 1100  # common.random_batch draws token ids from 1000 up
TINY = dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)


def tiny_model(device: str = "cpu") -> minibert.Classifier:
    """No dropout: two runs of the same steps must then compute the same numbers."""
    torch.manual_seed(0)
    config = minibert.Config(**TINY, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
    return minibert.build_classifier(config).to(device).train()


def tiny_batch(device: str = "cpu") -> dict:
    return common.random_batch(8, 16, vocab_size=VOCAB, device=device, padded=True)


def grad_norm(model: torch.nn.Module, batch: dict) -> float:
    model = copy.deepcopy(model)
    F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["labels"]).backward()
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, **tolerance) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=name, **tolerance)


def test_clipping_inside_adamw_gives_the_weights_of_clip_grad_norm():
    """Three steps, each with a gradient norm above max_norm, so that the rescale is at work in every one."""
    plain, folded = tiny_model(), tiny_model()
    batch = tiny_batch()
    max_norm = 0.1
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    opt_folded = torch.optim.AdamW(folded.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    for _ in range(3):
        norm = grad_norm(plain, batch)
        assert norm > max_norm, f"gradient norm {norm:.3f}: clipping would do nothing and prove nothing"
        common.train_step(plain, opt_plain, batch, max_norm=max_norm)
        common.train_step(folded, opt_folded, batch, max_norm=max_norm, clip_in_optimizer=True)
    assert_same_weights(plain, folded, atol=1e-6, rtol=1e-5)
    assert not torch.equal(plain.classifier.weight, tiny_model().classifier.weight)  # the steps did train


def test_clipping_and_adamw_compiled_as_one_graph_give_the_weights_of_the_eager_step():
    """torch.compile runs here for real (~20 s on 2 CPU cores), on the foreach path the GPU takes. One graph, no
    break: were Optimizer.step called inside, its graph breaks would leave the rescale as a pass of its own."""
    from torch._dynamo.utils import counters

    plain, compiled = tiny_model(), tiny_model()
    batch = tiny_batch()
    max_norm = 0.1
    assert grad_norm(plain, batch) > max_norm  # clipping at work
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=5e-5, weight_decay=0.01, foreach=True)
    opt_compiled = common.make_optimizer(compiled, fused=False)
    update = common.compiled_update(opt_compiled, list(compiled.parameters()), max_norm)
    counters.clear()
    for _ in range(3):
        common.train_step(plain, opt_plain, batch, max_norm=max_norm)
        common.train_step(compiled, opt_compiled, batch, max_norm=max_norm, update=update)
    assert_same_weights(plain, compiled, atol=1e-6, rtol=1e-5)
    assert not torch.equal(plain.classifier.weight, tiny_model().classifier.weight)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


@pytest.mark.gpu
@pytest.mark.parametrize("compiled, options", [(False, {}), (False, {"clip_in_optimizer": True}),
                                               (True, {"clip_in_optimizer": True}), (True, {"compile_update": True})])
def test_a_whole_step_graph_trains_like_eager_steps(compiled, options):
    """Recording runs 3 warm-up steps; after 2 replays the weights are those of 5 eager steps, with clipping at
    work in each. `compiled`: both sides torch.compile'd, so the graph records inductor's kernels, as in the MFU
    candidates."""
    eager = tiny_model("cuda")
    graphed = copy.deepcopy(eager)
    batch = tiny_batch("cuda")
    max_norm = 0.1
    assert grad_norm(eager, batch) > max_norm
    if compiled:
        eager, graphed = compile_model(eager, dynamic=False), compile_model(graphed, dynamic=False)
    replay = common.whole_step_graph(graphed, batch, warmup=3, max_norm=max_norm, **options)
    replay()
    replay()
    optimizer = common.make_optimizer(eager)
    for _ in range(5):
        common.train_step(eager, optimizer, batch, max_norm=max_norm)
    torch.cuda.synchronize()
    assert_same_weights(eager, graphed, atol=1e-5, rtol=1e-4)
    assert not torch.equal(eager.classifier.weight, tiny_model("cuda").classifier.weight)
