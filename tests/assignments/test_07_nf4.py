"""Assignment 07, NF4: 4-bit NormalFloat quantization, blockwise, two codes per byte, as QLoRA stores weights.

Graded code: quant/nf4.py `levels_from_normal_quantiles`, `pack`, `unpack`, and the core lines of `quantize_nf4`
and `dequantize_nf4` (region `nf4`). The blockwise helpers of quant/blockwise.py (absmax scaling, nearest level,
scaling back) are given. The reference is bitsandbytes (quant_type="nf4", CPU): its levels, its bytes, its block
absmax and its dequantized values, on small tensors. Docs: docs/assignments/07-nf4.md.
"""

import logging

import pytest
import torch

from quant.nf4 import NF4_LEVELS, NF4State, dequantize_nf4, levels_from_normal_quantiles, pack, quantize_nf4, unpack

# bitsandbytes warns at import about an optional CPU kernel package that nothing here uses.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
from bitsandbytes import functional as bnb  # noqa: E402

# Shapes whose rows hold whole blocks of 64 (bitsandbytes' CPU dequantize assumes so), and awkward ones for
# quantizing: a partial last block, an odd number of values (the last byte holds one code).
SHAPES = [(4, 64), (2, 128), (3, 50), (7,), (1, 1)]


def theirs(w: torch.Tensor):
    packed, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4")  # bitsandbytes' default is fp4
    return packed, state


def test_levels_are_the_normal_quantiles():
    """The QLoRA construction (8 upper and 7 lower N(0,1) quantiles, and 0, scaled to [-1, 1]) gives bitsandbytes'
    16 NF4 levels to within 2e-7."""
    levels = levels_from_normal_quantiles()
    assert levels.shape == (16,)
    assert (levels - bnb.get_4bit_type("nf4", device="cpu").double()).abs().max() < 2e-7


def test_pack_puts_the_first_code_in_the_high_nibble():
    """Codes [a, b, c, d, e] pack to bytes [ab, cd, e7]: two codes per byte, an odd length padded with code 7."""
    packed = pack(torch.tensor([0xA, 0x3, 0x7, 0xF, 0x1]))
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [0xA3, 0x7F, 0x17]


@pytest.mark.parametrize("n", [1, 2, 7, 64, 101])
def test_unpack_inverts_pack(n):
    """unpack(pack(codes), n) gives the n codes back, for even and odd n."""
    codes = torch.randint(0, 16, (n,))
    assert unpack(pack(codes), n).tolist() == codes.tolist()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_matches_bitsandbytes(shape, dtype):
    """quantize_nf4 writes the same bytes and the same per-block absmax as bitsandbytes."""
    w = torch.randn(shape).to(dtype)
    packed, state = quantize_nf4(w, blocksize=64)
    their_packed, their_state = theirs(w)
    assert torch.equal(packed, their_packed.view(-1))
    assert torch.equal(state.absmax, their_state.absmax)
    assert state.shape == w.shape and state.dtype == dtype


@pytest.mark.parametrize("shape", [(4, 64), (2, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantize_matches_bitsandbytes(shape, dtype):
    """dequantize_nf4 of bitsandbytes' own bytes and absmax equals bitsandbytes' dequantize_4bit, in w's dtype."""
    w = torch.randn(shape).to(dtype)
    their_packed, their_state = theirs(w)
    state = NF4State(absmax=their_state.absmax, shape=w.shape, dtype=dtype, blocksize=64)
    ours = dequantize_nf4(their_packed.view(-1), state)
    assert ours.shape == w.shape and ours.dtype == dtype
    assert torch.equal(ours, bnb.dequantize_4bit(their_packed, their_state))


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_error_is_within_half_a_level_gap(shape):
    """Each dequantized value lies within half the widest gap between NF4 levels (0.152), times its block's absmax."""
    w = torch.randn(shape)
    packed, state = quantize_nf4(w, blocksize=64)
    w_hat = dequantize_nf4(packed, state)
    bound = (NF4_LEVELS[1:] - NF4_LEVELS[:-1]).max() / 2  # 0.152, between the two lowest levels
    flat, err = w.reshape(-1), (w_hat - w).abs().reshape(-1)
    for i in range(0, flat.numel(), 64):
        assert err[i:i + 64].max() <= bound * flat[i:i + 64].abs().max() + 1e-6


def test_zero_block_stays_exactly_zero():
    """A block of zeros quantizes to code 7 (the level 0.0) and dequantizes to exact zeros, with no NaN."""
    w = torch.cat([torch.zeros(64), torch.randn(64)])
    packed, state = quantize_nf4(w, blocksize=64)
    assert torch.equal(packed, theirs(w)[0].view(-1))
    assert packed[:32].tolist() == [0x77] * 32
    w_hat = dequantize_nf4(packed, state)
    assert torch.equal(w_hat[:64], torch.zeros(64)) and torch.isfinite(w_hat).all()
