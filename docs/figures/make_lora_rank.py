"""Figure for docs/lora.md: LoRA's rank r against accuracy, 3 seeds each, from committed run summaries.

    python docs/figures/make_lora_rank.py      # writes docs/figures/lora_rank.png and prints one line per rank

The runs are docs/results/adapt/lora-r{1,4,16,64}_s{0,1,2} and lora_s{0,1,2} (r = 8, train.py's default), all with
alpha = 2 r, so the update's scale alpha / r is the same 2 at every rank and only the rank changes. Full
fine-tuning (full_s*) is drawn as a line for reference. Dev is the 500 development reviews each run validated on;
test the 1,000 test reviews.
"""

import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import accuracy, draw, reports, save_on_log2_axis, spread  # noqa: E402

RANKS = {1: "lora-r1", 4: "lora-r4", 8: "lora", 16: "lora-r16", 64: "lora-r64"}
OUT = Path(__file__).with_name("lora_rank.png")


def main(out: Path = OUT) -> None:
    runs = {r: reports(name) for r, name in RANKS.items()}
    full = reports("full")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for split, fmt in (("val", "o-"), ("test", "s--")):
        draw(ax, list(RANKS), [accuracy(runs[r], split) for r in RANKS], fmt, f"LoRA, {split.replace('val', 'dev')}")
    ax.axhline(statistics.mean(accuracy(full, "val")), color="grey", linestyle=":", label="full fine-tuning, dev")
    for r, seeds in [*runs.items(), ("full", full)]:
        name = f"r={r:<3d}" if r != "full" else "full  "
        print(f"{name} trainable {seeds[0]['trainable_params']:>9,}  dev {spread(accuracy(seeds, 'val'))}"
              f"  test {spread(accuracy(seeds, 'test'))}")
    save_on_log2_axis(fig, ax, out, list(RANKS), [str(r) for r in RANKS], xlabel="LoRA rank r (alpha = 2 r)",
                      title="all-MiniLM-L6-v2, LoRA on query and value: rank against accuracy")
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
