"""Double quantization: store the NF4 block scales (absmax) in 8 bits instead of 32.

With block 64, one float32 absmax per 64 weights costs 32/64 = 0.5 bit per weight, as much as 1/8 of the 4-bit
codes themselves. QLoRA (Dettmers et al. 2023, section 3 "Double Quantization") quantizes those scales a second
time, which brings the overhead to 8/64 + 32/(64*256) = 0.127 bit per weight:

    absmax (fp32, one per 64 weights)
      - offset                      the mean of all absmax: every absmax is > 0, so without centring half of a
                                    signed 8-bit code would go unused
      -> blocks of 256 -> 8-bit codes of bitsandbytes' "dynamic" map, one fp32 nested absmax per 256 absmax

    absmax_hat = dynamic_map[code] * nested_absmax[block] + offset

The dynamic map (Dettmers 2015, "8-Bit Approximations for Parallelism in Deep Learning") is a tiny float format:
a sign, then a decade 10^-6 ... 10^0 picked by the exponent bits, then evenly spaced steps in [0.1, 1] inside
that decade, more steps for larger decades. It covers six orders of magnitude with 256 codes.

What is unusual: our 8-bit codes are the exact nearest entries (float32 midpoints, ties to the lower code).
bitsandbytes' compiled CPU kernel does not always pick the nearest: for a value within ~3e-5 of a midpoint it
can take the farther neighbour, 0.19% of the codes on all-MiniLM-L6-v2 (`python -m quant.parity`); its CUDA
kernel matched ours on every code (measured on an H200). The offset and the nested absmax match exactly.
tests/test_nf4.py asserts their codes are ours or a neighbour (for values >= 1e-5; nearer 0 the map's codes lie
closer together than that error) and that ours is never the farther one.
"""

from dataclasses import dataclass

import torch

from .blockwise import absmax_scale, nearest_code, scale_back

NESTED_BLOCKSIZE = 256  # bitsandbytes' (and QLoRA's) block for the absmax values


def dynamic_map(max_exponent_bits: int = 7) -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map: 256 sorted float32 values in [-0.993, 1] (tested equal to theirs).

    Decade e = 0 .. max_exponent_bits-1 covers [0.1, 1] * 10^(e - 6) with 2^e evenly spaced values (the centres of
    2^e equal bins): the smallest magnitudes get a single value, the decade up to 1 gets 64. Each comes with its
    negative; 0 and 1 are added to make 2 * 127 + 2 = 256.
    """
    values = [torch.zeros(1), torch.ones(1)]
    for e in range(max_exponent_bits):
        edges = torch.linspace(0.1, 1, 2**e + 1, dtype=torch.float32)  # 2^e bins in [0.1, 1]
        centres = (edges[:-1] + edges[1:]) / 2 * 10.0 ** (e - (max_exponent_bits - 1))
        values += [centres, -centres]
    return torch.cat(values).sort().values


@dataclass
class DoubleQuantState:
    """What it takes to turn the 8-bit absmax codes back into float32 absmax values."""

    absmax: torch.Tensor  # (ceil(n_blocks / 256),) float32: the absmax of each block of 256 centred absmax values
    offset: torch.Tensor  # () float32: the mean of the first-level absmax, subtracted before coding
    blocksize: int = NESTED_BLOCKSIZE


def compress_absmax(absmax: torch.Tensor, blocksize: int = NESTED_BLOCKSIZE) -> tuple[torch.Tensor, DoubleQuantState]:
    """float32 absmax (n_blocks,) -> (uint8 codes (n_blocks,), DoubleQuantState)."""
    offset = absmax.mean()  # the same reduction bitsandbytes uses, so the float32 sum is rounded the same way
    scaled, nested_absmax = absmax_scale(absmax - offset, blocksize)
    codes = nearest_code(scaled, dynamic_map()).to(torch.uint8)
    return codes, DoubleQuantState(absmax=nested_absmax, offset=offset, blocksize=blocksize)


def expand_absmax(codes: torch.Tensor, state: DoubleQuantState) -> torch.Tensor:
    """uint8 codes (n_blocks,) -> float32 absmax (n_blocks,): dynamic_map[code] * nested_absmax + offset."""
    values = dynamic_map().to(codes.device)[codes.long()]
    return scale_back(values, state.absmax, state.blocksize) + state.offset
