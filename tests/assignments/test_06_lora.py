"""Assignment 06, LoRA: a frozen linear layer plus a trainable low-rank update, and merging it into the weight.

Graded code: lora/layer.py `LoRALinear.forward`, `delta_weight`, and the weight updates in `merge` / `unmerge`
(region `lora`). The layer wraps a plain nn.Linear; the reference is the formula of Hu et al. (2021),
    y = W x + b + scaling * B A dropout(x),   scaling = alpha / r  (alpha / sqrt(r) with rsLoRA),
written out in each test. Docs: docs/assignments/06-lora.md.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from lora.layer import LoRALinear

IN, OUT, R, ALPHA = 6, 5, 3, 6.0


def make(rslora: bool = False, dropout: float = 0.0, base_dtype=torch.float32) -> LoRALinear:
    """A LoRA layer on a random nn.Linear, with B random instead of zero so that the update is visible."""
    layer = LoRALinear(nn.Linear(IN, OUT, dtype=base_dtype), r=R, alpha=ALPHA, dropout=dropout, rslora=rslora)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    return layer


def formula(layer: LoRALinear, x: torch.Tensor, scaling: float) -> torch.Tensor:
    W, b = layer.base_layer.weight.float(), layer.base_layer.bias.float()
    A, B = layer.lora_A.weight, layer.lora_B.weight  # (r, in), (out, r)
    return x.float() @ W.T + b + scaling * (x.float() @ A.T @ B.T)


def test_fresh_layer_equals_its_base():
    """With B = 0 at initialisation, the layer computes exactly what the base layer computes."""
    layer = LoRALinear(nn.Linear(IN, OUT), r=R, alpha=ALPHA)
    x = torch.randn(4, IN)
    assert torch.equal(layer(x), layer.base_layer(x))


@pytest.mark.parametrize("rslora", [False, True])
def test_forward_is_base_plus_scaled_low_rank_update(rslora):
    """forward(x) = W x + b + scaling * B A x on a (2, 4, in) input, scaling alpha/r or alpha/sqrt(r)."""
    layer = make(rslora=rslora)
    x = torch.randn(2, 4, IN)
    scaling = ALPHA / math.sqrt(R) if rslora else ALPHA / R
    out = layer(x)
    assert out.shape == (2, 4, OUT)
    assert_close(out, formula(layer, x, scaling), atol=1e-5, rtol=1e-5)


def test_dropout_acts_on_the_lora_input_only():
    """In training mode dropout is applied to x on the LoRA branch only; the base path sees the whole x."""
    layer = make(dropout=0.5).train()
    x = torch.randn(8, IN)
    torch.manual_seed(3)
    out = layer(x)
    torch.manual_seed(3)
    dropped = F.dropout(x, 0.5, training=True)
    expected = layer.base_layer(x) + (ALPHA / R) * (dropped @ layer.lora_A.weight.T @ layer.lora_B.weight.T)
    assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_gradients_reach_A_and_B_as_in_the_formula():
    """A and B receive the gradients of the formula; so does the input."""
    layer = make()
    x = torch.randn(4, IN, requires_grad=True)
    g = torch.randn(4, OUT)
    (layer(x) * g).sum().backward()
    A = layer.lora_A.weight.detach().clone().requires_grad_()
    B = layer.lora_B.weight.detach().clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    W, b = layer.base_layer.weight.detach(), layer.base_layer.bias.detach()
    ((x2 @ W.T + b + (ALPHA / R) * (x2 @ A.T @ B.T)) * g).sum().backward()
    assert_close(layer.lora_A.weight.grad, A.grad, atol=1e-5, rtol=1e-5)
    assert_close(layer.lora_B.weight.grad, B.grad, atol=1e-5, rtol=1e-5)
    assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)


def test_bf16_base_returns_bf16_with_a_float32_update():
    """On a bf16 base the LoRA branch runs in float32 (A, B's dtype) and the sum comes back in bf16."""
    layer = make(base_dtype=torch.bfloat16)
    x = torch.randn(4, IN, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    update = (ALPHA / R) * (x.float() @ layer.lora_A.weight.T @ layer.lora_B.weight.T)
    assert_close(out, (layer.base_layer(x).float() + update).to(torch.bfloat16))


def test_delta_weight_is_scaling_times_B_A():
    """delta_weight() is the (out, in) float32 matrix scaling * B @ A."""
    layer = make()
    delta = layer.delta_weight()
    assert delta.shape == (OUT, IN) and delta.dtype == torch.float32
    assert_close(delta, (ALPHA / R) * layer.lora_B.weight @ layer.lora_A.weight)


def test_merge_folds_the_update_into_W_and_keeps_the_output():
    """merge() sets W <- W + scaling * B A; afterwards the output is unchanged and is the base layer's alone."""
    layer = make()
    x = torch.randn(4, IN)
    before = layer(x).detach()
    W = layer.base_layer.weight.detach().clone()
    layer.merge()
    assert_close(layer.base_layer.weight, W + (ALPHA / R) * layer.lora_B.weight @ layer.lora_A.weight)
    assert_close(layer(x), before, atol=1e-5, rtol=1e-5)
    assert torch.equal(layer(x), layer.base_layer(x))  # no second update on top of the merged weight


def test_unmerge_restores_W():
    """unmerge() after merge() gives back the original weight (up to float rounding) and the same output."""
    layer = make()
    x = torch.randn(4, IN)
    W = layer.base_layer.weight.detach().clone()
    before = layer(x).detach()
    layer.merge()
    layer.unmerge()
    assert_close(layer.base_layer.weight, W, atol=1e-6, rtol=1e-6)
    assert_close(layer(x), before, atol=1e-5, rtol=1e-5)
