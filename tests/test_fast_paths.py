"""The opt-in speed options (minibert.model.set_cls_only, compile_model) compute what the readable path computes.

Each test builds a tiny random minibert model, copies it, switches the option on in the copy, and compares the two
on the same batch in eval mode (<= 1e-5), or their gradients with dropout off. No transformers needed:
the readable path itself is pinned to transformers by tests/test_model_parity.py.
"""

import copy

import pytest
import torch

import minibert
from minibert.model import compile_model, set_cls_only

TINY = dict(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=40)
CONFIGS = {
    "distilbert-sdpa": minibert.Config(**TINY),
    "distilbert-math": minibert.Config(**TINY, attention="math"),
    "bert-sdpa": minibert.Config(**TINY, family="bert", type_vocab_size=2, activation="gelu"),
}


def perturbed(config: minibert.Config) -> minibert.Classifier:
    """A random classifier with every parameter nudged (zero biases would hide a bias taken from the wrong slot)."""
    model = minibert.build_classifier(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def padded_batch(lengths=(12, 1, 5, 12)):
    T = max(lengths)
    ids = torch.randint(1, 100, (len(lengths), T))
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


@pytest.mark.parametrize("name", CONFIGS)
def test_first_token_only_matches_readable_path(name):
    """A [CLS] classifier whose last layer computes position 0 only gives the same logits on a padded batch; the
    encoder then returns one position, (B, 1, D), equal to position 0 of the full last hidden state."""
    ours = perturbed(CONFIGS[name])
    fast = set_cls_only(copy.deepcopy(ours))
    ids, mask = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(fast(ids, mask), ours(ids, mask), atol=1e-5, rtol=0)
        first = fast.encoder(ids, mask, first_token_only=True)
        assert first.shape == (4, 1, 32)
        torch.testing.assert_close(first, ours.encoder(ids, mask)[:, :1], atol=1e-5, rtol=0)


def test_first_token_only_refuses_what_reads_other_positions():
    """Mean pooling reads every position of the last layer, and a bare encoder's caller may too: both refused."""
    mean = minibert.build_classifier(CONFIGS["distilbert-sdpa"].with_(pooling="mean"))
    with pytest.raises(ValueError, match="pooling='cls'.*'mean'"):
        set_cls_only(mean)
    with pytest.raises(ValueError, match="needs a minibert Classifier inside Encoder"):
        set_cls_only(perturbed(CONFIGS["distilbert-sdpa"]).encoder)


def test_cls_only_gradients_match():
    """With dropout off, every parameter's gradient equals the readable path's (<= 1e-5): the outputs a [CLS] head
    ignores carried no gradient, so computing only position 0 changes none."""
    config = CONFIGS["distilbert-sdpa"].with_(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
    ours = perturbed(config).train()
    fast = set_cls_only(copy.deepcopy(ours)).train()
    ids, mask = padded_batch()
    labels = torch.tensor([0, 1, 1, 0])
    for model in (ours, fast):
        torch.nn.functional.cross_entropy(model(ids, mask), labels).backward()
    fast_params = dict(fast.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(fast_params[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_cls_only_keeps_parameter_names_is_off_by_default_and_turns_off():
    """The option adds no parameter (checkpoint and LoRA names unchanged), is off unless asked for, and
    `set_cls_only(model, False)` gives the readable path back."""
    ours = perturbed(CONFIGS["bert-sdpa"])
    assert not ours.first_token_only
    fast = set_cls_only(copy.deepcopy(ours))
    assert fast.first_token_only and list(fast.state_dict()) == list(ours.state_dict())
    assert not set_cls_only(fast, False).first_token_only


def test_compile_model_is_in_place(monkeypatch):
    """compile_model compiles in place with dynamic shapes: the same module comes back, so keys get no `_orig_mod.`.

    nn.Module.compile is replaced by a recorder: compiling for real costs a minute on 2 CPU cores (train.py's
    --compile runs the compiled model).
    """
    ours = perturbed(CONFIGS["distilbert-sdpa"])
    calls = []
    monkeypatch.setattr(ours, "compile", lambda **options: calls.append(options))
    assert compile_model(ours) is ours
    assert calls == [{"dynamic": True}]
    with pytest.raises(TypeError, match="needs an nn.Module"):
        compile_model(lambda x: x)
