"""Figure for docs/defaults.md: what `python train.py` does over its run, for the three seeds of the default.

    python docs/figures/make_curves.py        # writes docs/figures/curves.png from the committed run summaries

Left: the training loss (the running mean train.py logs every 10 steps, and at each validation). Right: accuracy on
the 200 development reviews at each of the run's four validations, and on the 2,000 test reviews once, at the end.
The data are the metrics.jsonl files of docs/results/recipe/default-seed{0,1,2}: train.py's own records.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RUNS = [ROOT / "docs" / "results" / "recipe" / f"default-seed{seed}" for seed in (0, 1, 2)]
OUT = Path(__file__).with_name("curves.png")


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def main(out: Path = OUT) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for seed, run in enumerate(RUNS):
        rows = records(run)
        train = [r for r in rows if r["type"] == "train"]
        val = [r for r in rows if r["type"] == "eval" and r["split"] == "val"]
        test = [r for r in rows if r["type"] == "eval" and r["split"] == "test"]
        line, = ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=f"seed {seed}")
        ax_acc.plot([r["step"] for r in val], [100 * r["accuracy"] for r in val], "o-", color=line.get_color(),
                    label=f"seed {seed}, dev")
        ax_acc.plot([r["step"] for r in test], [100 * r["accuracy"] for r in test], "*", markersize=12,
                    color=line.get_color(), label=f"seed {seed}, test")
        print(f"seed {seed}: dev " + ", ".join(f"{100 * r['accuracy']:.1f}" for r in val)
              + f"; test {100 * test[-1]['accuracy']:.2f}%")
    ax_loss.axhline(0.693, color="grey", linestyle=":", label="chance (ln 2)")
    ax_loss.set(xlabel="optimizer step", ylabel="cross-entropy loss", title="Training loss")
    ax_loss.legend()
    ax_acc.set(xlabel="optimizer step", ylabel="accuracy (%)", title="Dev (200 reviews) and test (2,000)")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
