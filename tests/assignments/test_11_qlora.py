"""Assignment 11, QLoRA: a 4-bit linear layer, and a 4-bit model made ready to train adapters.

Graded code: quant/linear.py `NF4Linear.forward` and quant/kbit.py `prepare_for_kbit_training` (region `qlora`).
The references are bitsandbytes' `Linear4bit` holding the very same bytes, and peft's
`prepare_model_for_kbit_training` on the same 4-bit tiny Llama (no download). The NF4 codes themselves come from
bitsandbytes here (quantize and dequantize are patched to its functions), so this assignment does not wait on 07.
Docs: docs/assignments/11-qlora.md.
"""

import copy
import logging

import pytest
import torch
import transformers as hf
from peft import prepare_model_for_kbit_training
from torch import nn
from torch.testing import assert_close
from torch.utils.checkpoint import checkpoint

# bitsandbytes warns at import about an optional CPU kernel package that nothing here uses.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
from bitsandbytes import functional as bnb_functional  # noqa: E402

import quant  # noqa: E402
import quant.linear  # noqa: E402
from quant import bnb  # noqa: E402
from quant.linear import NF4Linear  # noqa: E402

IN, OUT = 128, 48  # in_features a multiple of the block size: bitsandbytes' CPU kernel needs whole blocks per row


@pytest.fixture(autouse=True)
def bitsandbytes_codes(monkeypatch):
    """NF4Linear quantizes and dequantizes with bitsandbytes' functions instead of quant/nf4.py's."""
    def dequantize(packed, state):
        return bnb_functional.dequantize_4bit(packed.reshape(-1, 1), quant_state=bnb.to_bnb_state(state))

    monkeypatch.setattr(quant.linear, "quantize_nf4", lambda w, blocksize, double_quant: bnb.quantize(
        w, blocksize, double_quant))
    monkeypatch.setattr(quant.linear, "dequantize_nf4", dequantize)


def pair(compute_dtype=torch.float32, bias=True, double_quant=False):
    """(ours, theirs): our NF4Linear of a random nn.Linear, and bitsandbytes' Linear4bit on the same bytes."""
    torch.manual_seed(0)
    linear = nn.Linear(IN, OUT, bias=bias)
    ours = NF4Linear.from_linear(linear, blocksize=64, double_quant=double_quant, compute_dtype=compute_dtype)
    theirs = bnb.make_linear4bit(ours.weight.data, ours.quant_state, linear.bias, compute_dtype)
    return ours, theirs


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("double_quant", [False, True])
def test_outputs_equal_linear4bit_on_the_same_bytes(compute_dtype, bias, double_quant):
    """(..., in) -> (..., out) in the input's dtype, equal to Linear4bit's output; fp32 and bf16 compute."""
    ours, theirs = pair(compute_dtype, bias, double_quant)
    x = torch.randn(3, 5, IN)
    with torch.no_grad():
        got, expected = ours(x), theirs(x)
    assert got.shape == (3, 5, OUT) and got.dtype == x.dtype
    tolerance = 1e-5 if compute_dtype == torch.float32 else 2e-2
    assert_close(got, expected.to(x.dtype), atol=tolerance, rtol=tolerance)


def test_bf16_input_gives_bf16_output():
    """The layer computes in its compute dtype (fp32 here) and answers in the dtype it was given."""
    ours, theirs = pair(torch.float32)
    x = torch.randn(4, IN, dtype=torch.bfloat16)
    with torch.no_grad():
        got = ours(x)
    assert got.dtype == torch.bfloat16
    assert_close(got.float(), theirs(x.float()), atol=3e-2, rtol=3e-2)


def test_the_weight_is_rebuilt_from_its_codes_at_every_call():
    """The layer keeps no float copy of W: change the codes and the next output changes with them."""
    ours, _ = pair()
    x = torch.randn(2, IN)
    with torch.no_grad():
        before = ours(x)
        ours.weight.data.fill_(0x77)  # every weight the code 7, NF4's exact zero
        after = ours(x)
    assert not torch.allclose(before, after)
    assert_close(after, ours.bias.detach().expand(2, OUT), atol=1e-6, rtol=0)


def test_gradients_reach_the_input_and_the_bias_not_the_codes():
    """Backward gives the input and the bias Linear4bit's gradients; the packed codes have none (uint8, frozen)."""
    ours, theirs = pair()
    x1 = torch.randn(6, IN, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    g = torch.randn(6, OUT)
    (ours(x1) * g).sum().backward()
    (theirs(x2) * g).sum().backward()
    assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    assert_close(ours.bias.grad, theirs.bias.grad, atol=1e-5, rtol=1e-5)
    assert ours.weight.grad is None and not ours.weight.requires_grad


# ---- prepare_for_kbit_training ----------------------------------------------------------------------------------

def llama_4bit() -> nn.Module:
    """A tiny random Llama in bf16, its linear layers (not lm_head) 4-bit NF4 through bitsandbytes."""
    torch.manual_seed(0)
    model = hf.LlamaForCausalLM(hf.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    model = model.to(torch.bfloat16)
    quant.quantize_model(model, skip=("lm_head",), compute_dtype=torch.bfloat16)  # in place
    return model


def dtypes_and_trainable(model: nn.Module) -> dict[str, tuple]:
    return {name: (p.dtype, p.requires_grad) for name, p in model.named_parameters()}


def test_matches_peft_on_a_4bit_llama():
    """Frozen everywhere, every bf16 leftover (embeddings, norms, lm_head) now fp32, the 4-bit codes untouched:
    parameter by parameter what peft's prepare_model_for_kbit_training leaves."""
    ours = llama_4bit()
    theirs = copy.deepcopy(ours)
    codes = {name: p.detach().clone() for name, p in ours.named_parameters() if p.dtype == torch.uint8}
    quant.prepare_for_kbit_training(ours, head=(), use_gradient_checkpointing=False)
    prepare_model_for_kbit_training(theirs, use_gradient_checkpointing=False)
    assert dtypes_and_trainable(ours) == dtypes_and_trainable(theirs)
    assert {dtype for dtype, _ in dtypes_and_trainable(ours).values()} == {torch.float32, torch.uint8}
    for name, p in ours.named_parameters():
        if name in codes:
            assert torch.equal(p, codes[name]), name


class Classifier(nn.Module):
    """Embedding -> a block of two linear layers and a LayerNorm -> a classification head."""

    def __init__(self):
        super().__init__()
        self.embeddings = nn.Embedding(50, 64, dtype=torch.bfloat16)
        self.lin1 = nn.Linear(64, 128, dtype=torch.bfloat16)
        self.norm = nn.LayerNorm(128, dtype=torch.bfloat16)
        self.lin2 = nn.Linear(128, 64, dtype=torch.bfloat16)
        self.classifier = nn.Linear(64, 2, dtype=torch.bfloat16)

    def block(self, h):
        return self.lin2(torch.relu(self.norm(self.lin1(h))))

    def forward(self, ids, checkpointed=False):
        h = self.embeddings(ids)  # (B, T, D)
        h = checkpoint(self.block, h, use_reentrant=True) if checkpointed else self.block(h)
        return self.classifier(h.float().mean(1))  # (B, 2)


def test_the_head_trains_in_fp32_and_the_base_is_frozen():
    """The head's parameters train, in fp32; everything else is frozen; the 4-bit weights stay uint8."""
    model = Classifier()
    quant.quantize_model(model, compute_dtype=torch.bfloat16)  # in place; the head is never quantized
    quant.prepare_for_kbit_training(model, head=("classifier",), use_gradient_checkpointing=False)
    trainable = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight": torch.float32, "classifier.bias": torch.float32}
    assert model.lin1.weight.dtype == model.lin2.weight.dtype == torch.uint8
    assert model.norm.weight.dtype == model.embeddings.weight.dtype == torch.float32


def test_gradients_reach_trainable_weights_inside_a_reentrant_checkpoint():
    """With use_gradient_checkpointing the embeddings' output requires grad, so a trainable weight inside a
    reentrant checkpoint gets its gradient (without it, none); preparing twice adds one hook, not two."""
    model = Classifier()
    quant.quantize_model(model, compute_dtype=torch.bfloat16)  # in place; the head is never quantized
    ids = torch.randint(0, 50, (3, 7))
    quant.prepare_for_kbit_training(model, head=("classifier",))
    quant.prepare_for_kbit_training(model, head=("classifier",))
    assert len(model.embeddings._forward_hooks) == 1
    adapter = model.lin2.bias  # stands in for LoRA's A and B inside the block
    adapter.requires_grad_(True)
    model(ids, checkpointed=True).sum().backward()
    assert adapter.grad is not None and adapter.grad.abs().sum() > 0
