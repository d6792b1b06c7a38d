"""Figures for docs/nf4.md: the 16 NF4 levels, and NF4's error on real all-MiniLM-L6-v2 weights.

    python docs/figures/make_nf4.py        # writes docs/figures/nf4_levels.png and nf4_error.png, prints errors

nf4_levels.png, left: the table quant.nf4.NF4_LEVELS next to QLoRA's construction from normal quantiles
(quant.nf4.levels_from_normal_quantiles) and a uniform grid of 16 levels. Right: where the block-scaled weights of
all-MiniLM-L6-v2's encoder fall (w / absmax of its block of 64), with the levels drawn over them.
nf4_error.png: the error W_hat - W of every weight of those matrices, NF4 (quant.nf4.quantize_nf4 then
dequantize_nf4) against the same blockwise absmax scheme (quant.blockwise) with two evenly spaced grids: 16 levels
from -1 to 1 (no level at 0), and int4's 15 levels (-7..7)/7 (a 0, one code unused). All 4 bits, block 64: only
the codebook differs.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import minibert  # noqa: E402
from quant.blockwise import absmax_scale, nearest_code, scale_back  # noqa: E402
from quant.nf4 import NF4_LEVELS, dequantize_nf4, levels_from_normal_quantiles, quantize_nf4  # noqa: E402

HERE = Path(__file__).parent
BLOCKSIZE = 64
UNIFORM = torch.linspace(-1, 1, 16)  # 16 evenly spaced levels: the same 4 bits, no knowledge of the distribution
INT4 = torch.arange(-7, 8) / 7  # symmetric int4 absmax: 15 evenly spaced levels with an exact 0 (one code unused)


def encoder_matrices() -> dict[str, torch.Tensor]:
    """Every weight matrix inside all-MiniLM-L6-v2's 6 blocks (q, k, v, out, lin1, lin2): 36 matrices."""
    encoder = minibert.load_encoder("all-MiniLM-L6-v2")
    return {name: p.detach() for name, p in encoder.layers.named_parameters() if p.dim() == 2}


def grid_roundtrip(w: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Blockwise absmax quantization to an evenly spaced grid and back (NF4's recipe with another codebook)."""
    scaled, absmax = absmax_scale(w, BLOCKSIZE)  # (n,) in [-1, 1], (n_blocks,)
    return scale_back(grid[nearest_code(scaled, grid)], absmax, BLOCKSIZE).view(w.shape)


def plot_levels(scaled: torch.Tensor) -> None:
    quantile_levels = levels_from_normal_quantiles()
    fig, (ax_lv, ax_hist) = plt.subplots(1, 2, figsize=(11, 4))
    codes = range(16)
    ax_lv.plot(codes, UNIFORM, "s--", color="gray", mfc="none", label="uniform grid, 16 levels")
    ax_lv.plot(codes, quantile_levels, "o", ms=10, mfc="none", color="tab:orange",
               label="normal quantiles (QLoRA construction)")
    ax_lv.plot(codes, NF4_LEVELS, "x", color="tab:blue", label="NF4_LEVELS (table, float32)")
    ax_lv.axhline(0, color="black", lw=0.5)
    ax_lv.set(xlabel="4-bit code", ylabel="level (times the block's absmax)", xticks=list(codes),
              title=f"NF4 levels; table vs construction: max |diff| "
                    f"{(NF4_LEVELS.double() - quantile_levels).abs().max():.1e}")
    ax_lv.legend(fontsize=8)

    ax_hist.hist(scaled.numpy(), bins=400, density=True, color="tab:blue", alpha=0.6)
    for level in NF4_LEVELS.tolist():
        ax_hist.axvline(level, color="tab:blue", lw=0.8)
    ax_hist.plot(UNIFORM, torch.zeros(16), "|", ms=14, color="gray", label="uniform grid")
    ax_hist.set(xlabel="w / absmax of its block of 64", ylabel="density", xlim=(-1.05, 1.05),
                title="MiniLM encoder weights, block-scaled (lines: NF4)")
    ax_hist.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "nf4_levels.png", dpi=100)
    plt.close(fig)


def main() -> None:
    matrices = encoder_matrices()
    flat = torch.cat([w.reshape(-1) for w in matrices.values()])
    nf4_err, uni_err, int4_err, scaled = [], [], [], []
    for w in matrices.values():
        nf4_err.append((dequantize_nf4(*quantize_nf4(w, BLOCKSIZE)) - w).reshape(-1))
        uni_err.append((grid_roundtrip(w, UNIFORM) - w).reshape(-1))
        int4_err.append((grid_roundtrip(w, INT4) - w).reshape(-1))
        scaled.append(absmax_scale(w, BLOCKSIZE)[0])
    nf4_err, uni_err, int4_err, scaled = map(torch.cat, (nf4_err, uni_err, int4_err, scaled))
    print(f"{len(matrices)} matrices, {flat.numel():,} weights, blocks of {BLOCKSIZE}")
    for name, err in (("NF4", nf4_err), ("uniform 16", uni_err), ("int4 (-7..7)/7", int4_err)):
        print(f"  {name:<14} relative error ||W_hat - W|| / ||W|| = {err.norm() / flat.norm():.4f}, "
              f"mean |error| = {err.abs().mean():.2e}, max |error| = {err.abs().max():.2e}")
    print(f"  share of block-scaled weights within [-0.5, 0.5]: {(scaled.abs() <= 0.5).float().mean():.1%}")

    plot_levels(scaled)
    absmax = torch.cat([absmax_scale(w, BLOCKSIZE)[1].repeat_interleave(BLOCKSIZE)[:w.numel()]
                        for w in matrices.values()])  # (n,): each weight's block absmax
    fig, (ax_code, ax_w) = plt.subplots(1, 2, figsize=(11, 4))
    bins = torch.linspace(-0.15, 0.15, 121).numpy()
    ax_code.hist((uni_err / absmax).numpy(), bins=bins, histtype="step", color="gray", label="uniform, 16 levels")
    ax_code.hist((int4_err / absmax).numpy(), bins=bins, histtype="step", color="tab:green", ls="--",
                 label="int4, 15 levels with 0")
    ax_code.hist((nf4_err / absmax).numpy(), bins=bins, histtype="step", color="tab:blue", lw=1.5, label="NF4")
    ax_code.set(xlabel="(W_hat - W) / absmax of the block", ylabel="number of weights",
                title="rounding error in block units")
    ax_code.legend(fontsize=8)
    limit = float(uni_err.abs().max())
    bins = torch.linspace(-limit, limit, 201).numpy()
    ax_w.hist(uni_err.numpy(), bins=bins, histtype="step", color="gray",
              label=f"uniform, 16 levels: relative error {uni_err.norm() / flat.norm():.3f}")
    ax_w.hist(int4_err.numpy(), bins=bins, histtype="step", color="tab:green", ls="--",
              label=f"int4, 15 levels with 0: relative error {int4_err.norm() / flat.norm():.3f}")
    ax_w.hist(nf4_err.numpy(), bins=bins, histtype="step", color="tab:blue", lw=1.5,
              label=f"NF4: relative error {nf4_err.norm() / flat.norm():.3f}")
    ax_w.set_yscale("log")
    ax_w.set(xlabel="W_hat - W (weight units)", ylabel="number of weights (log)",
             title=f"in weight units ({flat.numel():,} weights)")
    ax_w.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(HERE / "nf4_error.png", dpi=100)
    plt.close(fig)
    print(f"wrote {os.path.relpath(HERE / 'nf4_levels.png')} and {os.path.relpath(HERE / 'nf4_error.png')}")


if __name__ == "__main__":
    main()
