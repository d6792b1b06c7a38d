"""Figure for docs/architecture.md: the encoder and its classification head as boxes, with the shapes between them.

    python docs/figures/make_encoder.py       # writes docs/figures/encoder.png, sizes read from all-MiniLM-L6-v2

Each box names the module of minibert that computes it; each arrow carries the tensor's shape (B reviews, T tokens).
The sizes are read from the model's config.json, so the figure shows the model train.py fine-tunes.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from minibert.config import read_config  # noqa: E402
from minibert.paths import minilm_dir  # noqa: E402

OUT = Path(__file__).with_name("encoder.png")


def box(ax, y, text, where, color, height=0.8):
    ax.add_patch(FancyBboxPatch((1.0, y), 6.0, height, boxstyle="round,pad=0.05", facecolor=color, edgecolor="black"))
    ax.text(4.0, y + height / 2 + 0.12, text, ha="center", va="center", fontsize=9.5)
    ax.text(4.0, y + height / 2 - 0.2, where, ha="center", va="center", fontsize=7.5, family="monospace",
            color="dimgray")


def arrow(ax, y_from, y_to, shape):
    ax.annotate("", xy=(4.0, y_to), xytext=(4.0, y_from), arrowprops=dict(arrowstyle="->", lw=1.2))
    ax.text(4.15, (y_from + y_to) / 2, shape, va="center", fontsize=8, family="monospace")


def main(out: Path = OUT) -> None:
    c = read_config(minilm_dir())
    D, F, H, L = c.dim, c.hidden_dim, c.n_heads, c.n_layers
    fig, ax = plt.subplots(figsize=(7, 10))
    ax.set(xlim=(0, 10), ylim=(-0.6, 13.2))
    ax.axis("off")
    ax.text(4.0, 12.9, "input_ids, attention_mask", ha="center", fontsize=10, family="monospace")
    arrow(ax, 12.7, 12.1, "(B, T) ids")
    types = " + token type" if c.type_vocab_size else ""
    box(ax, 11.3, f"Embeddings: word + position{types}, LayerNorm",
        f"minibert/embeddings.py  {c.vocab_size:,} words, {c.max_position_embeddings} positions", "#dbe9f6")
    arrow(ax, 11.2, 10.5, f"(B, T, {D})")
    # the repeated block, framed
    ax.add_patch(FancyBboxPatch((0.5, 5.2), 7.2, 5.15, boxstyle="round,pad=0.1", fill=False, linestyle="--"))
    ax.text(8.0, 7.8, f"x {L}\nblocks", fontsize=12, va="center")
    box(ax, 9.4, f"Multi-head self-attention: {H} heads of {D // H}", "minibert/attention.py", "#fde2c8")
    arrow(ax, 9.3, 8.9, "")
    box(ax, 8.3, "Add (residual) & LayerNorm", "minibert/block.py  Block.forward", "#eeeeee", height=0.5)
    arrow(ax, 8.2, 7.6, f"(B, T, {D})")
    box(ax, 6.8, f"Feed-forward: {D} -> {F} -> {D}, GELU", "minibert/block.py  FeedForward", "#fde2c8")
    arrow(ax, 6.7, 6.3, "")
    box(ax, 5.7, "Add (residual) & LayerNorm", "minibert/block.py  Block.forward", "#eeeeee", height=0.5)
    arrow(ax, 5.1, 4.5, f"(B, T, {D}) hidden states")
    box(ax, 3.7, "Pooling: mean of the real tokens, or [CLS]", "minibert/model.py  Classifier.pool", "#d9f2d9")
    arrow(ax, 3.6, 3.0, f"(B, {D})")
    box(ax, 2.2, f"Head: pre_classifier {D} x {D}, activation, dropout", "minibert/model.py  Classifier.forward",
        "#d9f2d9")
    arrow(ax, 2.1, 1.5, f"(B, {D})")
    box(ax, 0.7, f"classifier {D} x 2", "minibert/model.py  Classifier.forward", "#d9f2d9")
    arrow(ax, 0.6, -0.1, "(B, 2) logits -> softmax -> P(negative), P(positive)")
    ax.set_title("all-MiniLM-L6-v2 as a classifier: the encoder (blue, orange) and the head (green)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}: D={D}, F={F}, H={H}, L={L}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
