"""Compare our NF4 reference with bitsandbytes on one tensor, and measure it on a checkpoint from the command line.

    python -m quant.parity path/to/model.safetensors [--blocksize 64]

`compare_with_bnb(w)` quantizes `w` both ways (on w's device) and reports what differs. It knows the three
differences that are bitsandbytes', not ours, and reports them instead of failing:
- CUDA, all-zero blocks: bitsandbytes' CUDA kernel writes code 0 (byte 0x00) where its CPU code and ours write
  code 7 (0x77), the level 0.0 (both dequantize to 0: 0 * absmax 0), and a zero tail block stores absmax 0
  instead of 1e-38 (both measured on an H200). Tolerated on CUDA inside all-zero blocks only.
- CPU dequantization when blocks straddle rows (in_features % 16 == 0 and in_features % blocksize != 0): their
  2-D kernel reads the wrong absmax (quant/bnb.py); we compare against their dequantization of the same bytes
  read as one flat row, which their kernel gets right, and set `bnb_cpu_row_bug`.
- Double quant: their CPU kernel picks a neighbouring 8-bit code for ~0.2% of the absmax (quant/double_quant.py):
  counted in `code_mismatch`, allowed one step, and ours must never be the farther one (on CUDA: 0 measured).
"""

import argparse
from dataclasses import dataclass

import torch

from . import bnb  # first: it quiets bitsandbytes' import-time warning
from bitsandbytes import functional as bnb_functional  # noqa: E402  (isort: skip)

from .blockwise import absmax_scale
from .double_quant import dynamic_map
from .nf4 import NF4State, dequantize_nf4, quantize_nf4


@dataclass
class ParityReport:
    n: int  # values compared
    bytes_differ: int  # packed bytes that differ, not counting the tolerated ones
    zero_block_bytes: int  # CUDA: 0x00 (theirs) vs 0x77 (ours) inside all-zero blocks, tolerated
    absmax_equal: bool  # first-level absmax (without double quant), or offset + nested absmax (with)
    dequant_equal: bool  # dequantize_nf4 and theirs, on the same (their) bytes and state
    bnb_cpu_row_bug: bool  # their 2-D CPU dequantization was replaced by the flat one (see the module docstring)
    # Double quant only. Values are in units of the nested absmax (the codes encode numbers in [-1, 1]).
    code_mismatch: int = 0  # 8-bit absmax codes that differ
    max_code_step: int = 0  # the largest |ours - theirs| among codes whose value is >= 1e-5 in magnitude (*)
    max_extra_error: float = 0.0  # how much farther from the value their code is than ours, at most
    ours_nearer: bool = True  # our code is never farther from the value than theirs
    # (*) Near 0 the dynamic map's codes lie closer together (1e-6 apart) than their kernel's error (up to
    # 3e-5 measured), so there a mismatch can span several codes; max_extra_error bounds those too.

    @property
    def ok(self) -> bool:
        return (self.bytes_differ == 0 and self.absmax_equal and self.dequant_equal and self.max_code_step <= 1
                and self.max_extra_error < 1e-4 and self.ours_nearer)


def _bnb_dequantize(packed: torch.Tensor, state) -> torch.Tensor:
    # force_eager: their odd-width path is torch.compile'd, recompiling for every shape (seconds each).
    with torch.compiler.set_stance("force_eager"):
        return bnb_functional.dequantize_4bit(packed.reshape(-1, 1), bnb.to_bnb_state(state)).reshape(state.shape)


def has_cpu_row_bug(shape: torch.Size, blocksize: int, device: torch.device) -> bool:
    """Whether bitsandbytes' 2-D CPU dequantize kernel mis-indexes this shape (quant/bnb.py)."""
    return device.type == "cpu" and len(shape) >= 2 and shape[-1] % 16 == 0 and shape[-1] % blocksize != 0


def compare_with_bnb(w: torch.Tensor, blocksize: int = 64, double_quant: bool = False) -> ParityReport:
    """Quantize `w` with quantize_nf4 and with bitsandbytes (quant_type="nf4") on w's device; report differences."""
    ours, ours_state = quantize_nf4(w, blocksize, double_quant)
    theirs, theirs_state = bnb.quantize(w, blocksize, double_quant)
    n = w.numel()

    _, absmax = absmax_scale(w, blocksize)  # first-level absmax, (n_blocks,)
    zero_block = absmax <= 1e-38  # all-zero blocks (a zero tail block stores 1e-38)
    differ = ours != theirs
    tolerated = torch.zeros_like(differ)
    if w.is_cuda:
        byte_block = torch.arange(ours.numel(), device=w.device) * 2 // blocksize  # block of each byte's 1st value
        tolerated = differ & (theirs == 0x00) & (ours == 0x77) & zero_block[byte_block]

    if double_quant:
        codes_ours, codes_theirs = ours_state.absmax.int(), theirs_state.absmax.int()
        nested_ours, nested_theirs = ours_state.nested, theirs_state.nested
        absmax_equal = (torch.equal(nested_ours.offset, nested_theirs.offset)
                        and torch.equal(nested_ours.absmax, nested_theirs.absmax))
        scaled, _ = absmax_scale(absmax - nested_ours.offset, nested_ours.blocksize)  # what the codes encode
        code = dynamic_map().to(w.device)
        extra_error = (code[codes_theirs] - scaled).abs() - (code[codes_ours] - scaled).abs()
        step = (codes_ours - codes_theirs).abs()
        step_away_from_0 = step[scaled.abs() >= 1e-5]
        extra = dict(code_mismatch=int((step > 0).sum()),
                     max_code_step=int(step_away_from_0.max()) if step_away_from_0.numel() else 0,
                     max_extra_error=float(extra_error.max()), ours_nearer=bool((extra_error >= 0).all()))
    else:
        same = ours_state.absmax == theirs_state.absmax
        if w.is_cuda:
            same |= zero_block & (theirs_state.absmax == 0)
        absmax_equal, extra = bool(same.all()), {}

    row_bug = has_cpu_row_bug(w.shape, blocksize, w.device)
    flat_state = theirs_state
    if row_bug:  # read their bytes as one row of n values, then give it the real shape
        flat_state = NF4State(absmax=theirs_state.absmax, shape=(n,), dtype=w.dtype, blocksize=blocksize,
                                  nested=theirs_state.nested)
    dequant_theirs = _bnb_dequantize(theirs, flat_state).reshape(w.shape)
    dequant_equal = torch.equal(dequantize_nf4(theirs, theirs_state), dequant_theirs)

    return ParityReport(n=n, bytes_differ=int((differ & ~tolerated).sum()), zero_block_bytes=int(tolerated.sum()),
                        absmax_equal=absmax_equal, dequant_equal=dequant_equal, bnb_cpu_row_bug=row_bug, **extra)


def relative_error(w: torch.Tensor, blocksize: int = 64, quant_type: str = "nf4") -> tuple[float, float]:
    """(||W_hat - W||^2, ||W||^2) for NF4 (ours) or FP4 (bitsandbytes, for comparison)."""
    if quant_type == "nf4":
        w_hat = dequantize_nf4(*quantize_nf4(w, blocksize))
    else:  # bitsandbytes' FP4 (quant_type passed explicitly, like everywhere)
        packed, qs = bnb_functional.quantize_4bit(w, blocksize=blocksize, quant_type="fp4")
        w_hat = bnb_functional.dequantize_4bit(packed, qs)
    return float((w_hat.float() - w.float()).pow(2).sum()), float(w.float().pow(2).sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="a .safetensors file; every 2-D tensor in it is compared")
    parser.add_argument("--blocksize", type=int, default=64, help="NF4 block size (values per absmax)")
    args = parser.parse_args(argv)
    from safetensors.torch import load_file

    matrices = {k: v for k, v in load_file(args.checkpoint).items() if v.ndim == 2 and v.is_floating_point()}
    plain = [compare_with_bnb(w, args.blocksize) for w in matrices.values()]
    double = [compare_with_bnb(w, args.blocksize, double_quant=True) for w in matrices.values()]
    n_absmax = sum(-(-r.n // args.blocksize) for r in double)
    print(f"{len(matrices)} matrices, {sum(r.n for r in plain):,} values, blocksize {args.blocksize}")
    print(f"bit-exact (bytes, absmax, dequantized): {sum(r.ok for r in plain)}/{len(plain)}")
    print(f"double quant: offset + nested absmax exact in {sum(r.absmax_equal for r in double)}/{len(double)}; "
          f"8-bit codes differing: {sum(r.code_mismatch for r in double)}/{n_absmax} "
          f"= {sum(r.code_mismatch for r in double) / n_absmax:.4%}, max step {max(r.max_code_step for r in double)} "
          f"(values >= 1e-5), theirs farther than ours by at most {max(r.max_extra_error for r in double):.1e}, "
          f"ours never farther: {all(r.ours_nearer for r in double)}")
    encoder = [w for k, w in matrices.items() if "encoder" in k] or list(matrices.values())
    for quant_type in ("nf4", "fp4"):
        err, ref = map(sum, zip(*(relative_error(w, args.blocksize, quant_type) for w in encoder)))
        print(f"relative weight error ||W_hat - W|| / ||W|| over {len(encoder)} encoder matrices, "
              f"{quant_type}: {(err / ref) ** 0.5:.4f}")


if __name__ == "__main__":
    main()
