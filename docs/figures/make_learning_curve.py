"""Figure for docs/adapt.md: test accuracy against the number of training reviews, pretrained against random init.

    python docs/figures/make_learning_curve.py     # writes docs/figures/learning_curve.png, prints one line a point

Both are all-MiniLM-L6-v2's architecture, every weight training, on adapt.md's budget otherwise (128 tokens,
head+tail, one epoch, batch 16, 500 dev and 1,000 test reviews), at 250 to 8,000 training reviews and 3 seeds
each, and every training review (24,500: the other 500 are dev) at one seed, drawn apart; the 1,000-review points
are adapt.md's `full` and `random-minilm` runs. What a point costs is its runs'
training time on one thread of the 2-core AMD EPYC (two runs side by side), fastest to slowest of the three: the
time to train, not to evaluate.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import accuracy, draw, report, reports, save_on_log2_axis, spread  # noqa: E402

SIZES = (250, 500, 1000, 2000, 4000, 8000)
OUT = Path(__file__).with_name("learning_curve.png")
EVERY_REVIEW_SEED = 0  # the run on every training review is long (~35 min on one thread here): one seed of it


def run_name(init: str, n: int | str) -> str:
    """The runs of a point (n: a review count, or "all"): at 1,000 reviews adapt.md's own `full` and
    `random-minilm` rows."""
    if n == 1000:
        return "full" if init == "pretrained" else "random-minilm"
    return f"curve-{'full' if init == 'pretrained' else 'random'}-{n}"


def main(out: Path = OUT) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for init, fmt, color in (("pretrained", "o-", "C0"), ("random", "s--", "C1")):
        points = [reports(run_name(init, n)) for n in SIZES]
        assert all(r["n_train"] == n for n, seeds in zip(SIZES, points) for r in seeds), init
        draw(ax, list(SIZES), [accuracy(seeds, "test") for seeds in points], fmt, f"{init} init", color=color)
        every = report(run_name(init, "all"), EVERY_REVIEW_SEED)
        ax.plot([every["n_train"]], [100 * every["test_accuracy"]], fmt[0], fillstyle="none", color=color,
                label=f"{init} init, every review, one seed")
        for n, seeds in zip(SIZES, points):
            train_s = sorted(r["train_seconds"] for r in seeds)
            print(f"{init:10s} {n:>5,} reviews: test {spread(accuracy(seeds, 'test'))}, "
                  f"training {train_s[0]:.0f}-{train_s[-1]:.0f} s")
        print(f"{init:10s} {every['n_train']:>5,} reviews (all): test {100 * every['test_accuracy']:.2f} (one seed), "
              f"training {every['train_seconds']:.0f} s")
    ax.axhline(50, color="grey", linestyle=":", label="chance")
    ticks = [*SIZES, every["n_train"]]  # every review: the same count for both inits
    save_on_log2_axis(fig, ax, out, ticks, [f"{n:,}" for n in ticks], xlabel="training reviews (one epoch)",
                      title="all-MiniLM-L6-v2 on IMDB: what more reviews buy",
                      ylabel="test accuracy, % (mean, min-max of 3 seeds)")
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
