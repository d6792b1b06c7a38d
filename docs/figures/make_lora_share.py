"""Figure for docs/lora.md: the share of trainable parameters under LoRA as the rank r grows.

    python docs/figures/make_lora_share.py        # writes docs/figures/lora_share.png and prints the table

For the distilbert-base-uncased preset and all-MiniLM-L6-v2 (2-label classifiers), LoRA is injected with
lora.inject on the attention query/value projections (the paper's choice and train.py's default) or on every
linear layer of the encoder, the head staying trainable; counts come from lora.trainable_parameters. The models
are built on PyTorch's "meta" device: parameters with shapes but no memory and no values, which is all a count
needs (the pretrained MiniLM weights would not change it).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402

import lora  # noqa: E402
import minibert  # noqa: E402
from minibert.config import read_config  # noqa: E402
from minibert.paths import minilm_dir  # noqa: E402

OUT = Path(__file__).with_name("lora_share.png")
RANKS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
TARGETS = {"q, v": ("q_lin", "v_lin"), "all linear": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")}
CONFIGS = {
    "distilbert-base": minibert.preset("distilbert-base-uncased"),
    "all-MiniLM-L6-v2": read_config(minilm_dir()).with_(num_labels=2),
}


def counts(config, targets, r) -> tuple[int, int]:
    """(trainable, total) of a classifier of `config`, LoRA on `targets` at rank r (None: the head alone)."""
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised for real
        model = minibert.build_classifier(config)
        if r is None:  # head-only training, as train.py --method head
            for name, p in model.named_parameters():
                p.requires_grad_(not name.startswith("encoder."))
        else:
            lora.inject(model, targets=targets, r=r, alpha=2 * r)
    return lora.trainable_parameters(model)


def main() -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (model_name, config), color in zip(CONFIGS.items(), ("tab:blue", "tab:orange")):
        head, total = counts(config, None, None)
        print(f"{model_name}, head only: {head:,} trainable of {total:,} ({100 * head / total:.2f}%)")
        ax.axhline(100 * head / total, color=color, lw=1, ls=":")
    print("\n| model | LoRA on | " + " | ".join(f"r={r}" for r in RANKS) + " |")
    print("|---|---|" + "---:|" * len(RANKS))
    for (model_name, config), color in zip(CONFIGS.items(), ("tab:blue", "tab:orange")):
        for (target_name, targets), style in zip(TARGETS.items(), ("o-", "s--")):
            shares = []
            for r in RANKS:
                trainable, total = counts(config, targets, r)
                shares.append((trainable, total))
            print(f"| {model_name} | {target_name} | "
                  + " | ".join(f"{t:,} ({100 * t / n:.2f}%)" for t, n in shares) + " |")
            ax.plot(RANKS, [100 * t / n for t, n in shares], style, color=color, label=f"{model_name}, {target_name}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(RANKS, [str(r) for r in RANKS])
    ax.set_yticks([0.5, 1, 2, 5, 10, 20, 50], ["0.5", "1", "2", "5", "10", "20", "50"])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel="LoRA rank r", ylabel="trainable parameters (% of all)",
           title="LoRA: trainable share vs rank (dotted: head only)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT, dpi=100)
    print(f"wrote {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
