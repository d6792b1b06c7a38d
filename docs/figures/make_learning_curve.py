"""Figure for docs/adapt.md: test accuracy against the number of training reviews, pretrained against random init.

    python docs/figures/make_learning_curve.py     # writes docs/figures/learning_curve.png, prints one line a point

Both are all-MiniLM-L6-v2's architecture, every weight training, on adapt.md's budget otherwise (128 tokens,
head+tail, one epoch, batch 16, 500 dev and 1,000 test reviews), at 250, 500, 1,000 and 2,000 training reviews and
3 seeds each; the 1,000-review points are adapt.md's `full` and `random-minilm` runs. What a point costs is its
runs' training time on one thread of the 2-core AMD EPYC (two runs side by side): the time to train, not to
evaluate.
"""

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "adapt"
SIZES = (250, 500, 1000, 2000)
OUT = Path(__file__).with_name("learning_curve.png")


def folder(init: str, n: int, seed: int) -> Path:
    if n == 1000:  # adapt.md's runs
        return RESULTS / (f"full_s{seed}" if init == "pretrained" else f"random-minilm_s{seed}")
    return RESULTS / f"curve-{'full' if init == 'pretrained' else 'random'}-{n}_s{seed}"


def point(init: str, n: int) -> dict:
    reports = [json.loads((folder(init, n, seed) / "report.json").read_text()) for seed in (0, 1, 2)]
    assert all(r["n_train"] == n for r in reports), (init, n)
    test = [100 * r["test_accuracy"] for r in reports]
    return {"test": test, "mean": statistics.mean(test), "train_s": statistics.mean(r["train_seconds"] for r in reports)}


def main(out: Path = OUT) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for init, marker in (("pretrained", "o-"), ("random", "s--")):
        points = [point(init, n) for n in SIZES]
        ax.errorbar(SIZES, [p["mean"] for p in points],
                    yerr=[[p["mean"] - min(p["test"]) for p in points], [max(p["test"]) - p["mean"] for p in points]],
                    fmt=marker, capsize=3, label=f"{init} init")
        for n, p in zip(SIZES, points):
            print(f"{init:10s} {n:>5,} reviews: test {p['mean']:.2f} ({min(p['test']):.1f}-{max(p['test']):.1f}), "
                  f"training {p['train_s']:.0f} s")
    ax.axhline(50, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(SIZES, [f"{n:,}" for n in SIZES])
    ax.set(xlabel="training reviews (one epoch)", ylabel="test accuracy, % (mean, min-max of 3 seeds)",
           title="all-MiniLM-L6-v2 on IMDB: what more reviews buy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out.name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
