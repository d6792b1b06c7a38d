"""What make_lora_rank.py and make_learning_curve.py share: three seeds of a run read from their committed summaries,
and drawn as one point with its spread.

A point is the mean of the seeds; its bar reaches the lowest and the highest seed (not a standard deviation: with
three seeds, the range says more plainly how far apart they fell).
"""

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "adapt"
SEEDS = (0, 1, 2)


def report(name: str, seed: int) -> dict:
    """The report.json of docs/results/adapt/<name>_s<seed>."""
    return json.loads((RESULTS / f"{name}_s{seed}" / "report.json").read_text())


def reports(name: str) -> list[dict]:
    """The report.json of each seed of a run."""
    return [report(name, seed) for seed in SEEDS]


def accuracy(reports_: list[dict], split: str) -> list[float]:
    """Accuracy in % on "val" (dev) or "test", one value per seed."""
    return [100 * r[f"{split}_accuracy"] for r in reports_]


def spread(values: list[float]) -> str:
    """'84.17 (83.5-85.0)': the mean, then the lowest and highest seed."""
    return f"{statistics.mean(values):.2f} ({min(values):.1f}-{max(values):.1f})"


def draw(ax, xs: list, points: list[list[float]], fmt: str, label: str, **style) -> None:
    """One line through the means of `points` (one list of seed values per x), bars from the lowest to the highest;
    `style` goes to matplotlib (a color, ...)."""
    means = [statistics.mean(values) for values in points]
    bars = [[m - min(v) for m, v in zip(means, points)], [max(v) - m for m, v in zip(means, points)]]
    ax.errorbar(xs, means, yerr=bars, fmt=fmt, capsize=3, label=label, **style)


def save_on_log2_axis(fig, ax, out: Path, xs: list, ticks: list[str], xlabel: str, title: str,
                      ylabel: str = "accuracy, % (mean, min-max of 3 seeds)") -> None:
    """x on a log2 scale (each size doubles the last) with a tick at each x; the labels; the file."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, ticks)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out.name}")
