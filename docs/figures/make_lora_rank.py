"""Figure for docs/lora.md: LoRA's rank r against accuracy, 3 seeds each, from committed run summaries.

    python docs/figures/make_lora_rank.py      # writes docs/figures/lora_rank.png and prints one line per rank

The runs are docs/results/adapt/lora-r{1,4,16,64}_s{0,1,2} and lora_s{0,1,2} (r = 8, train.py's default), all with
alpha = 2 r, so the update's scale alpha / r is the same 2 at every rank and only the rank changes. Full
fine-tuning (full_s*) is drawn as a line for reference. Dev is the 500 development reviews each run validated on;
test the 1,000 test reviews.
"""

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "adapt"
RANKS = {1: "lora-r1", 4: "lora-r4", 8: "lora", 16: "lora-r16", 64: "lora-r64"}
OUT = Path(__file__).with_name("lora_rank.png")


def accuracies(name: str) -> tuple[list[float], list[float], list[int]]:
    """(dev, test accuracies in %, trainable parameters) of the three seeds of a candidate."""
    dev, test, trainable = [], [], []
    for seed in (0, 1, 2):
        report = json.loads((RESULTS / f"{name}_s{seed}" / "report.json").read_text())
        dev.append(100 * report["val_accuracy"])
        test.append(100 * report["test_accuracy"])
        trainable.append(report["trainable_params"])
    return dev, test, trainable


def main(out: Path = OUT) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for split, column, marker in (("dev", 0, "o-"), ("test", 1, "s--")):
        means, lows, highs = [], [], []
        for r, name in RANKS.items():
            values = accuracies(name)[column]
            means.append(statistics.mean(values))
            lows.append(means[-1] - min(values))
            highs.append(max(values) - means[-1])
        ax.errorbar(list(RANKS), means, yerr=[lows, highs], fmt=marker, capsize=3, label=f"LoRA, {split}")
    full_dev, full_test, _ = accuracies("full")
    ax.axhline(statistics.mean(full_dev), color="grey", linestyle=":", label="full fine-tuning, dev")
    for r, name in RANKS.items():
        dev, test, trainable = accuracies(name)
        print(f"r={r:<3d} trainable {trainable[0]:>9,}  dev {statistics.mean(dev):.2f} ({min(dev):.1f}-{max(dev):.1f})"
              f"  test {statistics.mean(test):.2f} ({min(test):.1f}-{max(test):.1f})")
    print(f"full   trainable {accuracies('full')[2][0]:>9,}  dev {statistics.mean(full_dev):.2f} "
          f"({min(full_dev):.1f}-{max(full_dev):.1f})  test {statistics.mean(full_test):.2f} "
          f"({min(full_test):.1f}-{max(full_test):.1f})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(RANKS), [str(r) for r in RANKS])
    ax.set(xlabel="LoRA rank r (alpha = 2 r)", ylabel="accuracy, % (mean, min-max of 3 seeds)",
           title="all-MiniLM-L6-v2, LoRA on query and value: rank against accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out.name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
