"""Assignment 02, attention: `attend` computes softmax(Q K^T / sqrt(Dh) + bias) V with dropout on the weights.

Graded code: minibert/attention.py `MultiHeadSelfAttention.attend` (region `attention`). The reference is torch's
fused kernel, F.scaled_dot_product_attention, on random Q, K, V with a padding bias; the bias itself comes from
`padding_bias`, which is given. Shapes: B batch, H heads, T tokens, Dh head dim. Docs: docs/assignments/02-attention.md.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minibert.attention import MultiHeadSelfAttention, padding_bias
from minibert.config import Config

B, H, T, Dh = 3, 4, 7, 8
LENGTHS = (7, 3, 1)  # one full row, one mostly padding, one with a single real token


@pytest.fixture
def module():
    """An attention layer with the explicit formula selected (D = H * Dh = 32), in eval mode."""
    config = Config(vocab_size=50, dim=H * Dh, n_layers=1, n_heads=H, hidden_dim=64, attention="math")
    return MultiHeadSelfAttention(config).eval()


@pytest.fixture
def qkv():
    return [torch.randn(B, H, T, Dh) for _ in range(3)]  # each (B, H, T, Dh)


@pytest.fixture
def mask():
    return (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).long()  # (B, T): 1 = real, 0 = padding


def test_matches_sdpa_without_mask(module, qkv):
    """Without a mask, attend equals torch's scaled_dot_product_attention and keeps the (B, H, T, Dh) shape."""
    ours = module.attend(*qkv, None, 0.0)
    assert ours.shape == (B, H, T, Dh)
    assert_close(ours, F.scaled_dot_product_attention(*qkv), atol=1e-6, rtol=1e-5)


def test_matches_sdpa_with_padding_bias(module, qkv, mask):
    """With the additive padding bias, attend equals scaled_dot_product_attention given the same bias."""
    bias = padding_bias(mask, torch.float32)  # (B, 1, 1, T)
    assert_close(module.attend(*qkv, bias, 0.0), F.scaled_dot_product_attention(*qkv, attn_mask=bias),
                 atol=1e-6, rtol=1e-5)


def test_padded_keys_get_no_weight(module, qkv, mask):
    """Changing the values at padded key positions changes no output: padding receives zero attention weight."""
    q, k, v = qkv
    bias = padding_bias(mask, torch.float32)
    other_v = torch.where(mask[:, None, :, None].bool(), v, torch.randn_like(v) * 100)
    other_k = torch.where(mask[:, None, :, None].bool(), k, torch.randn_like(k) * 100)
    assert_close(module.attend(q, other_k, other_v, bias, 0.0), module.attend(q, k, v, bias, 0.0))


def test_all_padding_row_gives_uniform_weights_not_nan(module, qkv):
    """A row whose keys are all padding averages the values uniformly (finite), as transformers does, instead of NaN."""
    q, k, v = qkv
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1] = 0
    out = module.attend(q, k, v, padding_bias(mask, torch.float32), 0.0)
    assert torch.isfinite(out).all()
    assert_close(out[1], v[1].mean(dim=-2, keepdim=True).expand(H, T, Dh), atol=1e-6, rtol=1e-5)


def test_gradients_match_sdpa(module, qkv, mask):
    """The gradients with respect to Q, K and V equal those through scaled_dot_product_attention."""
    bias = padding_bias(mask, torch.float32)
    ours = [x.clone().requires_grad_() for x in qkv]
    theirs = [x.clone().requires_grad_() for x in qkv]
    g = torch.randn(B, H, T, Dh)
    (module.attend(*ours, bias, 0.0) * g).sum().backward()
    (F.scaled_dot_product_attention(*theirs, attn_mask=bias) * g).sum().backward()
    for name, a, b in zip("qkv", ours, theirs):
        assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=f"gradient of {name}")


def test_dropout_acts_on_the_weights(module, qkv):
    """Dropout p > 0 is random (seeded by torch), p = 1 drops every weight (output 0), p = 0 is deterministic."""
    torch.manual_seed(1)
    a = module.attend(*qkv, None, 0.5)
    torch.manual_seed(1)
    b = module.attend(*qkv, None, 0.5)
    torch.manual_seed(2)
    c = module.attend(*qkv, None, 0.5)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a, module.attend(*qkv, None, 0.0))
    assert torch.equal(module.attend(*qkv, None, 1.0), torch.zeros(B, H, T, Dh))


def test_whole_layer_math_path_equals_sdpa_path(module, mask):
    """The full layer with attention="math" (which calls attend) equals the same layer on the fused kernel."""
    x = torch.randn(B, T, H * Dh)  # (B, T, D)
    ours = module(x, mask)
    module.use_sdpa = True  # same weights, torch's kernel instead of attend
    assert_close(ours, module(x, mask), atol=1e-5, rtol=1e-4)
