"""Figures of a run: loss and accuracy curves from metrics.jsonl, and the confusion matrix of the test set."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no screen needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(train: list[dict], val: list[dict], out: Path) -> None:
    """Left: training loss per logged step and validation loss at each validation. Right: validation accuracy.

    `train` and `val` are metrics.jsonl records (see minibert/training/runfolder.py)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([m["step"] for m in train], [m["loss"] for m in train], label="train (running mean)")
    ax_loss.plot([m["step"] for m in val], [m["loss"] for m in val], "o-", label="validation")
    ax_loss.set(xlabel="optimizer step", ylabel="cross-entropy loss", title="Loss")
    ax_loss.legend()
    ax_acc.plot([m["step"] for m in val], [100 * m["accuracy"] for m in val], "o-", color="tab:green")
    ax_acc.set(xlabel="optimizer step", ylabel="accuracy (%)", title="Validation accuracy")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], labels: list[str], out: Path, title: str = "Test set") -> None:
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(confusion, cmap="Blues")
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=12)
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
