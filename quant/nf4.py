"""NF4 (4-bit NormalFloat) quantization in plain torch, written to be read; bit-exact with bitsandbytes.

    w (any shape) -> flatten -> blocks of 64 -> divide by the block's absmax -> nearest of 16 NF4 levels
                  -> two 4-bit codes per byte                         (+ one float32 absmax per block)

The 16 levels. Trained weights are roughly normal, so QLoRA (Dettmers et al. 2023, section 3 and appendix)
places the levels at quantiles of N(0, 1): each level then stands for about the same share of the weights.
Quantile q(p) = Phi^-1(p) is infinite at p = 1, so the outermost level sits at p = 0.9677083
~= 1 - (1/30 + 1/32) / 2, halfway between the centres of the outermost of 15 and of 16 equal-probability bins.
NF4 is asymmetric so that 0 is a level (padding and exact zeros stay exactly 0): 8 quantiles of the upper half
(above the median), 7 of the lower half, and 0; all divided by the largest, so the levels span [-1, 1].
`levels_from_normal_quantiles` computes this; it lands within 2e-7 of the table (1-2 float32 ulps), so the
table below stores the full-precision float32 values bitsandbytes uses: a rounded table (4 decimals) moves
midpoints and breaks bit-exactness.

Packing: code i of the flat tensor goes to byte i // 2; the first of each pair takes the high nibble.

    codes   [ a ][ b ][ c ][ d ][ e ]         e.g. a=0xA b=0x3 c=0x7 d=0xF e=0x1
    bytes   [ a b ][ c d ][ e 7 ]             ->   0xA3  0x7F  0x17
              hi lo                           an odd length is padded with code 7 (the level 0.0)

bitsandbytes always defaults to FP4 (quant_type="fp4"); anything that calls it passes quant_type="nf4".
Tested against bitsandbytes.functional.quantize_4bit / dequantize_4bit in tests/test_nf4.py.
"""

from dataclasses import dataclass, field

import torch

from .blockwise import absmax_scale, n_blocks, nearest_code, scale_back
from .double_quant import DoubleQuantState, compress_absmax, expand_absmax

# Sorted; index = the 4-bit code. Exact 0 at code 7, -1 at code 0, 1 at code 15.
NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=torch.float32)
ZERO_CODE = 7  # the code of level 0.0: pads an odd length
NF4_OFFSET = 0.9677083  # probability of the outermost quantile (see the module docstring)
# The block sizes bitsandbytes' quantize_4bit accepts; we accept the same so both backends agree.
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def levels_from_normal_quantiles(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The QLoRA construction of the 16 NF4 levels, in float64 (compare with NF4_LEVELS)."""
    # BEGIN ASSIGNMENT nf4: 8 N(0,1) quantiles above 0 (p: offset -> 0.5), 7 below, and 0; divided by the largest
    def normal_quantile(p: torch.Tensor) -> torch.Tensor:  # Phi^-1(p) = sqrt(2) * erfinv(2p - 1)
        return 2**0.5 * torch.special.erfinv(2 * p - 1)

    upper = normal_quantile(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])  # 8 levels > 0
    lower = -normal_quantile(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])  # 7 levels < 0
    levels = torch.cat([lower, torch.zeros(1, dtype=torch.float64), upper]).sort().values
    return levels / levels.max()
    # END ASSIGNMENT


@dataclass
class NF4State:
    """Everything besides the packed codes that dequantization needs."""

    absmax: torch.Tensor  # (n_blocks,) float32; with double quant: uint8 codes of the absmax (see `nested`)
    shape: torch.Size  # the original tensor's shape
    dtype: torch.dtype  # the original tensor's dtype (dequantization returns it)
    blocksize: int = 64
    nested: DoubleQuantState | None = None  # set when the absmax are double-quantized
    quant_type: str = field(default="nf4")

    def __post_init__(self):
        self.shape = torch.Size(self.shape)  # accept a tuple; numel() needs a Size

    def block_absmax(self) -> torch.Tensor:
        """The float32 absmax of every block, expanding the 8-bit codes first when double-quantized."""
        return self.absmax if self.nested is None else expand_absmax(self.absmax, self.nested)


def check_blocksize(blocksize: int) -> None:
    if blocksize not in BLOCKSIZES:
        raise ValueError(f"blocksize {blocksize} is not supported; bitsandbytes NF4 supports {BLOCKSIZES}")


def pack(codes: torch.Tensor) -> torch.Tensor:
    """(n,) codes 0..15 -> (ceil(n / 2),) uint8, first code of each pair in the high nibble."""
    # BEGIN ASSIGNMENT nf4: two codes per uint8, the first in the high nibble; an odd length ends with ZERO_CODE
    codes = codes.to(torch.uint8)
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_full((1,), ZERO_CODE)])
    return (codes[0::2] << 4) | codes[1::2]
    # END ASSIGNMENT


def unpack(packed: torch.Tensor, n: int) -> torch.Tensor:
    """(ceil(n / 2),) uint8 -> (n,) int64 codes; drops the padding code of an odd length."""
    # BEGIN ASSIGNMENT nf4: each byte -> its high nibble, then its low one; the first n codes, as int64
    high, low = packed >> 4, packed & 0x0F
    return torch.stack([high, low], dim=1).reshape(-1)[:n].long()  # (n_bytes, 2) -> (2 * n_bytes,)
    # END ASSIGNMENT


def quantize_nf4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = False) -> tuple[torch.Tensor, NF4State]:
    """Quantize `w` (float32/bfloat16/float16, any shape, any device) to NF4: (packed uint8 (ceil(n/2),), NF4State).

    A size that is not a multiple of `blocksize` is fine: the last, partial block gets its own absmax (as in
    bitsandbytes), so nothing is padded except the final nibble of an odd length.
    """
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        got = w.dtype if isinstance(w, torch.Tensor) else type(w).__name__
        raise TypeError(f"quantize_nf4 needs a floating-point tensor, got {got}")
    if w.dtype not in DTYPES:
        raise TypeError(f"quantize_nf4 supports {DTYPES} (as bitsandbytes does), got {w.dtype}")
    if w.numel() == 0:
        raise ValueError("quantize_nf4 got an empty tensor")
    if not torch.isfinite(w).all():
        raise ValueError("quantize_nf4 got NaN or inf: each block is scaled by its absmax, which would be too")
    check_blocksize(blocksize)

    # BEGIN ASSIGNMENT nf4: scale each block by its absmax (absmax_scale), then the nearest level's code (nearest_code)
    scaled, absmax = absmax_scale(w, blocksize)  # (n,), (n_blocks,)
    codes = nearest_code(scaled, NF4_LEVELS)  # (n,) 0..15
    # END ASSIGNMENT
    state = NF4State(absmax=absmax, shape=w.shape, dtype=w.dtype, blocksize=blocksize)
    if double_quant:
        state.absmax, state.nested = compress_absmax(absmax)
    return pack(codes), state


def dequantize_nf4(packed: torch.Tensor, state: NF4State) -> torch.Tensor:
    """Inverse of quantize_nf4: a tensor of `state.shape` and `state.dtype` on packed's device.

    level[code] * absmax is computed in float32 and rounded once to the target dtype, as bitsandbytes does.
    """
    n = state.shape.numel()
    if packed.dtype != torch.uint8 or packed.numel() != (n + 1) // 2:
        raise ValueError(f"packed must be uint8 with {(n + 1) // 2} bytes for shape {tuple(state.shape)}, "
                         f"got {packed.dtype} with {packed.numel()}")
    if state.absmax.numel() != n_blocks(n, state.blocksize):
        raise ValueError(f"state has {state.absmax.numel()} absmax values, expected {n_blocks(n, state.blocksize)} "
                         f"for {n} values in blocks of {state.blocksize}")
    # BEGIN ASSIGNMENT nf4: level of each code times its block's absmax (scale_back), in state.dtype and state.shape
    values = NF4_LEVELS.to(packed.device)[unpack(packed.reshape(-1), n)]  # (n,) float32 in [-1, 1]
    return scale_back(values, state.block_absmax(), state.blocksize).to(state.dtype).view(state.shape)
    # END ASSIGNMENT
