"""The opt-in fast paths (minibert.model.set_fast_paths, compile_model) compute what the readable path computes.

Each test builds a tiny random minibert model, copies it, switches the fast path on in the copy, and compares
the two on the same batch in eval mode (<= 1e-5), or their gradients with dropout off. No transformers needed:
the readable path itself is pinned to transformers by tests/test_model_parity.py.
"""

import copy

import pytest
import torch

import lora
import minibert
from minibert.model import compile_model, set_fast_paths

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
def test_fused_qkv_matches_readable_path(name):
    """One concatenated Q/K/V matmul gives the same logits as three separate projections, on a padded batch."""
    ours = perturbed(CONFIGS[name])
    fast = set_fast_paths(copy.deepcopy(ours), fused_qkv=True)
    assert all(layer.attention.can_fuse() for layer in fast.encoder.layers)
    ids, mask = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(fast(ids, mask), ours(ids, mask), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_skip_full_mask_matches_readable_path(name):
    """Without padding, dropping the all-ones mask changes nothing; with padding, the mask is still applied."""
    ours = perturbed(CONFIGS[name])
    fast = set_fast_paths(copy.deepcopy(ours), skip_full_mask=True)
    ids, mask = padded_batch(lengths=(12, 12, 12))
    padded_ids, padded_mask = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(fast.encoder(ids, mask), ours.encoder(ids, mask), atol=1e-5, rtol=0)
        torch.testing.assert_close(fast(padded_ids, padded_mask), ours(padded_ids, padded_mask), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_bf16_residual_is_a_no_op_in_float32_and_bf16_under_autocast(name):
    """Without autocast the flag changes nothing (float32 in and out). Under bf16 autocast every LayerNorm writes
    bf16 instead of float32, and the logits stay those of the readable path within bf16 rounding."""
    from minibert.layer_norm import LayerNorm

    ours = perturbed(CONFIGS[name])
    fast = set_fast_paths(copy.deepcopy(ours), bf16_residual=True)
    ids, mask = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(fast(ids, mask), ours(ids, mask), atol=0, rtol=0)
        dtypes = {"ours": set(), "fast": set()}
        for key, model in (("ours", ours), ("fast", fast)):
            for m in model.modules():
                if isinstance(m, LayerNorm):
                    m.register_forward_hook(lambda mod, args, out, key=key: dtypes[key].add(out.dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast_logits, our_logits = fast(ids, mask), ours(ids, mask)
    assert dtypes == {"ours": {torch.float32}, "fast": {torch.bfloat16}}
    torch.testing.assert_close(fast_logits.float(), our_logits.float(), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("name", CONFIGS)
def test_first_token_only_matches_readable_path(name):
    """A [CLS] classifier whose last layer computes position 0 only gives the same logits on a padded batch; the
    encoder then returns one position, (B, 1, D), equal to position 0 of the full last hidden state."""
    ours = perturbed(CONFIGS[name])
    fast = set_fast_paths(copy.deepcopy(ours), first_token_only=True)
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
        set_fast_paths(mean, first_token_only=True)
    with pytest.raises(ValueError, match="needs a minibert Classifier inside Encoder"):
        set_fast_paths(perturbed(CONFIGS["distilbert-sdpa"]).encoder, first_token_only=True)


def test_fast_paths_gradients_match():
    """With dropout off, every parameter's gradient through the fast paths equals the readable path's (<= 1e-5):
    the outputs a [CLS] head ignores carried no gradient, so computing only position 0 changes none."""
    config = CONFIGS["distilbert-sdpa"].with_(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
    ours = perturbed(config).train()
    fast = set_fast_paths(copy.deepcopy(ours), fused_qkv=True, skip_full_mask=True, first_token_only=True).train()
    ids, mask = padded_batch()
    labels = torch.tensor([0, 1, 1, 0])
    for model in (ours, fast):
        torch.nn.functional.cross_entropy(model(ids, mask), labels).backward()
    fast_params = dict(fast.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(fast_params[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_fused_qkv_falls_back_under_lora():
    """After lora.inject on q_lin/v_lin the fused path is skipped, so LoRA's update still counts."""
    ours = lora.inject(perturbed(CONFIGS["distilbert-sdpa"]), targets=("q_lin", "v_lin"), r=2, alpha=4, dropout=0.0)
    with torch.no_grad():
        for _, layer in lora.lora_layers(ours):
            layer.lora_B.weight.normal_()  # a non-zero update: the fused weights would miss it
    fast = set_fast_paths(copy.deepcopy(ours), fused_qkv=True).eval()
    assert not any(layer.attention.can_fuse() for layer in fast.encoder.layers)
    ids, mask = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(fast(ids, mask), ours.eval()(ids, mask), atol=1e-5, rtol=0)


def test_fast_paths_keep_parameter_names_and_default_off():
    """The fast paths add no parameter (checkpoint and LoRA names unchanged) and are off unless asked for."""
    ours = perturbed(CONFIGS["bert-sdpa"])
    assert not ours.encoder.skip_full_mask and not ours.encoder.layers[0].attention.fused_qkv
    assert not ours.encoder.layers[0].sa_layer_norm.cast_to_autocast_dtype and not ours.first_token_only
    fast = set_fast_paths(copy.deepcopy(ours), fused_qkv=True, skip_full_mask=True, bf16_residual=True,
                          first_token_only=True)
    assert list(fast.state_dict()) == list(ours.state_dict())


def test_set_fast_paths_needs_an_encoder():
    """A module without a minibert Encoder inside is refused with a message naming it."""
    with pytest.raises(ValueError, match="no minibert Encoder inside Linear"):
        set_fast_paths(torch.nn.Linear(2, 2), fused_qkv=True)


def test_compile_model_is_in_place(monkeypatch):
    """compile_model compiles in place with dynamic shapes: the same module comes back, so keys get no `_orig_mod.`.

    nn.Module.compile is replaced by a recorder: compiling for real costs a minute on 2 CPU cores (bench.py's CUDA
    rows run the compiled model).
    """
    ours = perturbed(CONFIGS["distilbert-sdpa"])
    calls = []
    monkeypatch.setattr(ours, "compile", lambda **options: calls.append(options))
    assert compile_model(ours) is ours
    assert calls == [{"dynamic": True}]
    with pytest.raises(TypeError, match="needs an nn.Module"):
        compile_model(lambda x: x)
