"""Blockwise absmax quantization with any sorted codebook: the part NF4 (4-bit) and double quant (8-bit) share.

    x (flattened) -> blocks of `blocksize` values -> each block divided by its absmax, so it lies in [-1, 1]
                  -> each value replaced by the index of the nearest codebook entry

One float per block (its absmax) is stored beside the codes; dequantization is `code[index] * absmax`. Small
blocks keep one outlier from crushing the resolution of the whole tensor: it only stretches its own block
(QLoRA, Dettmers et al. 2023, section 2 "Block-wise k-bit Quantization").

What is unusual: every rounding detail below mirrors bitsandbytes 0.50.2 (CPU), because tests/test_nf4.py asserts
our NF4 bytes equal theirs bit for bit (several dtypes, shapes, distributions, exact ties and all-zero blocks):
- the full blocks are scaled by the float32 *reciprocal* `x * (1 / absmax)`, the partial tail block by plain
  division `x / absmax`. The two differ in the last bit for some values, which moves a value lying exactly on a
  midpoint across it;
- an all-zero block divides by 1e-38 instead of 0 (so it codes to the level nearest 0, no NaN); a full zero
  block still stores absmax 0, a partial zero tail block stores 1e-38. Both dequantize to exactly 0;
- "nearest" is decided against the float32 midpoints of neighbouring codebook entries; a value exactly on a
  midpoint goes to the lower entry.
"""

import torch

# Dividing by this instead of 0 keeps an all-zero block finite (1 / 1e-38 = 1e38 still fits a float32).
TINY_ABSMAX = 1e-38


def n_blocks(n: int, blocksize: int) -> int:
    """How many blocks `n` values fill; the last one may be partial."""
    return -(-n // blocksize)


def absmax_scale(x: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale a flat tensor block by block into [-1, 1]. Returns (scaled float32 (n,), absmax float32 (n_blocks,))."""
    x = x.reshape(-1).float()  # fp16/bf16 -> fp32 is exact; all arithmetic below is float32
    n = x.numel()
    n_full = n // blocksize * blocksize
    full = x[:n_full].view(-1, blocksize)  # (n_full_blocks, blocksize)
    absmax = full.abs().amax(dim=1)  # (n_full_blocks,)
    scaled = (full * (1.0 / absmax.clamp(min=TINY_ABSMAX))[:, None]).clamp(-1, 1).reshape(-1)
    if n_full < n:  # the partial tail block: its own absmax, plain division
        tail = x[n_full:]
        tail_absmax = tail.abs().amax().clamp(min=TINY_ABSMAX)
        absmax = torch.cat([absmax, tail_absmax[None]])
        scaled = torch.cat([scaled, (tail / tail_absmax).clamp(-1, 1)])
    return scaled, absmax


def nearest_code(scaled: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of the sorted `code` for each value of `scaled` (int64, same shape).

    The midpoints between neighbours are the decision boundaries. `bucketize` with right=False returns i such
    that midpoint[i-1] < value <= midpoint[i]: a value exactly on midpoint[i] gets index i, the lower neighbour.
    """
    code = code.to(device=scaled.device, dtype=torch.float32)
    midpoints = (code[:-1] + code[1:]) / 2  # float32, as bitsandbytes computes them
    return torch.bucketize(scaled, midpoints)


def scale_back(values: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Inverse of `absmax_scale`: multiply each block of the flat float32 `values` by its absmax (float32)."""
    n = values.numel()
    n_full = n // blocksize * blocksize
    full = (values[:n_full].view(-1, blocksize) * absmax[: n_full // blocksize, None]).reshape(-1)
    if n_full == n:
        return full
    return torch.cat([full, values[n_full:] * absmax[-1]])
