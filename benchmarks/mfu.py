"""Model FLOP utilisation (MFU): the share of a GPU's matrix throughput that a training step turns into model FLOPs.

MFU = model FLOPs of one step / step time / a peak. Both the FLOPs and the peak are conventions. The goal (>= 45%
for distilbert-base at 32 x 512 on an H200) is set in transformers' FLOP count against 790 TFLOP/s, so the goal rows
use those.

FLOPs of one training step (forward + backward = 3 x forward; a multiply-add = 2 FLOPs):
    6 * N * B * T                  N = every parameter outside the embedding tables (nn.Embedding): the number
                                   transformers' `num_parameters(exclude_embeddings=True)` gives, and the one its
                                   Trainer's `floating_point_ops` multiplies by 6 x tokens; the blocks and the head
  + 12 * n_layers * B * T^2 * D    attention: Q K^T and weights @ V, 2 * T^2 * D each per layer forward, x 3
The reference step (transformers, 19.6 ms on one H200, stated as 240 TFLOP/s "counting 6 x non-embedding params x
tokens + attention") is 240 TFLOP/s in this count (239.9; 4.70 TFLOP a step), 237 with the head left out
(tests/test_mfu.py): that statement is, most likely, this count. It is
generous: the head reads one token a row ([CLS]) but is counted for all T. The FLOPs a step really performs are the
blocks' (`blocks_only=True`: 4.64 TFLOP, 1.24% fewer; the head's one token a row is left out as negligible), and
the rows show both.

Peaks (bf16, dense tensor cores):
- "~790 TFLOP/s" for the H200, what one large bf16 matmul reaches there: the goal's denominator on an H200;
- the one measured in the same run (`matmul_tflops`): the goal's denominator on any other GPU;
- the data sheet's, which no real matmul reaches (989 TFLOP/s for the H100 SXM and the H200).

`python -m benchmarks.mfu RESULTS.json ...` recounts the distilbert-base 32 x 512 step rows of recorded bench.py
results in both counts, against the goal's peak and against the peak measured in each run.
"""

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from minibert.errors import UserError, run_cli

from . import common

# Dense bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets (without sparsity), matched as substrings of the
# device name: first match wins, so a longer name comes before its prefix.
SPEC_PEAK_BF16 = (("H100 PCIe", 756.0), ("GH200", 989.4), ("H100", 989.4), ("H200", 989.4), ("H800", 989.4),
                  ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0))
# The goal's own figure, for the H200 the reference was measured on; the GH200 and the lower-power H200 NVL are
# other machines.
ISSUE_PEAK_BF16 = (("GH200", None), ("H200 NVL", None), ("H200", 790.0))
GOAL = ">= 45%"
TRANSFORMERS_COUNT, BLOCKS_COUNT = "transformers' FLOP count", "the blocks' FLOPs only"  # named in every row that uses one


@dataclass(frozen=True)
class Peak:
    """A denominator for MFU: what it is (printed in the row's name), TFLOP/s, and the goal if it is the goal's."""

    label: str
    tflops: float
    goal: str = ""


def spec_peak(device_name: str) -> float | None:
    return next((peak for key, peak in SPEC_PEAK_BF16 if key in device_name), None)


def goal_peak(device_name: str) -> float | None:
    return next((peak for key, peak in ISSUE_PEAK_BF16 if key in device_name), None)


def peaks(device_name: str, measured: float) -> list[Peak]:
    """The goal's peak first: 790 TFLOP/s on an H200, the measured one elsewhere; then the others."""
    goal, spec = goal_peak(device_name), spec_peak(device_name)
    found = [Peak(f"the goal's {goal:.0f} TFLOP/s peak", goal, GOAL)] if goal else []
    found.append(Peak(f"measured matmul peak {measured:.0f} TFLOP/s", measured, "" if goal else GOAL))
    if spec:
        found.append(Peak(f"{spec:.0f} TFLOP/s spec peak", spec))
    return found


def matmul_tflops(n: int = 8192, repeats: int = 10, trials: int = 5) -> float:
    """What one large bf16 matmul reaches on this GPU: a realistic ceiling for MFU. The best of `trials` timings of
    `repeats` matmuls each: a ceiling is the best the chip does (one timing read 780 to 808 TFLOP/s on the same
    H200 on 2026-11-26, and the MFU row moved with it)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(trials):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12)
    return best


def utilisation(flops: float, seconds: float, peak_tflops: float) -> float:
    """MFU in percent: the TFLOP/s that `flops` done in `seconds` reach, as a share of `peak_tflops`."""
    return 100 * flops / seconds / 1e12 / peak_tflops


def non_embedding_params(model: nn.Module) -> int:
    """Every parameter (each shared one once) outside the nn.Embedding tables, whose lookups do no multiply-adds."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return sum(p.numel() for p in model.parameters() if id(p) not in tables)


def step_flops(model, batch_size: int, seq_len: int, blocks_only: bool = False) -> float:
    """6 N B T + 12 L B T^2 D (module docstring) for a minibert classifier; `blocks_only`: N = the blocks' alone."""
    config = model.config
    n = (sum(p.numel() for p in model.encoder.layers.parameters()) if blocks_only
         else non_embedding_params(model))
    return 6 * n * batch_size * seq_len + 12 * config.n_layers * batch_size * seq_len**2 * config.dim


# --- recounting recorded results ---------------------------------------------------------------------------------

STEP_ROW = re.compile(r"CUDA train step distilbert-base 32x512 bf16: (?P<name>.+) vs transformers sdpa"
                      r"(?P<attention> \[\w+ attention\])?")
MEASURED = re.compile(r"vs measured matmul peak (?P<tflops>\d+) TFLOP/s")


def recorded_runs(path: Path) -> list[tuple[str, list[dict]]]:
    """(run label, rows) of a bench.py --json file, or of each run of a file that gathers several ({"runs": ...});
    none for another kind of file (a train.py report, say)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read it as bench.py --json results ({err})") from None
    if isinstance(data, dict) and "runs" in data:
        return [(f"{path.name} {run.get('call', '')}{run.get('process', '')}".strip(), run["rows"])
                for run in data["runs"]]
    return [(path.name, data["rows"])] if isinstance(data, dict) and "rows" in data else []


def recount(paths: list[Path]) -> list[str]:
    """One line per distilbert-base 32 x 512 step row: ms, TFLOP/s and MFU in both counts; then transformers'
    step beside it (the same row's reference) in transformers' count."""
    with torch.device("meta"):  # the count needs the parameters' shapes, not their values
        model = common.build_ours(common.DISTILBERT, "meta", pretrained=False)
    full, blocks = step_flops(model, 32, 512), step_flops(model, 32, 512, blocks_only=True)
    goal = goal_peak("H200")
    found, skipped = [], []  # found: (run, candidate, row, the run's measured peak)
    for path in paths:
        before = len(found)
        for label, rows in recorded_runs(path):
            measured = next((float(m["tflops"]) for row in rows if (m := MEASURED.search(row["name"]))), None)
            found += [(label, m["name"] + (m["attention"] or ""), row, measured) for row in rows
                      if (m := STEP_ROW.fullmatch(row["name"])) and row["unit"] == "ms"]
        if len(found) == before:
            skipped.append(path.name)
    runs = max((len(label) for label, *_ in found), default=0)  # column widths
    names = max((len(name) for _, name, *_ in found), default=0)
    lines = [f"one step: {full / 1e12:.4f} TFLOP (transformers' count), {blocks / 1e12:.4f} TFLOP (blocks only); "
             f"MFU of the goal's {goal:.0f} TFLOP/s (MFU/790) and of the matmul peak timed in that run (MFU/run)",
             f"{'run':<{runs}} {'candidate':<{names}} {'ms':>6} {'TFLOP/s':>7} {'MFU/790':>7} {'MFU/run':>7} "
             f"{'blocks TFLOP/s':>14} {'MFU/790':>7} | {'transformers':>12} {'MFU/790':>7}"]
    for label, name, row, measured in found:
        seconds, reference = row["minibert"] / 1e3, row["reference"] / 1e3
        of_run = f"{utilisation(full, seconds, measured):6.2f}%" if measured else "-"
        lines.append(f"{label:<{runs}} {name:<{names}} {row['minibert']:6.2f} {full / seconds / 1e12:7.1f} "
                     f"{utilisation(full, seconds, goal):6.2f}% {of_run:>7} {blocks / seconds / 1e12:14.1f} "
                     f"{utilisation(blocks, seconds, goal):6.2f}% | "
                     f"{row['reference']:9.2f} ms {utilisation(full, reference, goal):6.2f}%")
    if skipped:
        lines.append(f"(no distilbert-base 32x512 step rows in: {', '.join(skipped)})")
    return lines


def main(argv: list[str] | None = None) -> None:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        raise UserError("usage: python -m benchmarks.mfu RESULTS.json [...]  (bench.py --json files, e.g. "
                        "docs/results/)")
    print("\n".join(recount([Path(arg) for arg in paths])))


if __name__ == "__main__":
    sys.exit(run_cli(main))
