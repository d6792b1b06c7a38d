"""Attention maps: which tokens each head of each layer looks at, recomputed from the formula.

    python -m minibert.viz attention RUN_OR_MODEL_DIR "a review" --out docs/figures/attention.png

For every layer we recompute the attention weights of its H heads,

    weights = softmax(Q K^T / sqrt(Dh) + mask),   Q = x W_q + b_q,  K = x W_k + b_k      (Vaswani et al. 2017, eq. 1)

from the layer's own `q_lin` and `k_lin` and the hidden state `x` entering that layer, with the layer's own
`weights` (the softmax the readable attention path multiplies V by). A forward pre-hook on each
attention module hands us that `x` during one ordinary forward pass; the model files are not changed, and the
model's forward may use torch's fused kernel (SDPA), which never materialises the weights.

What is unusual:
- The weights are recomputed, not read back: a fused kernel has none to read. Calling `q_lin`/`k_lin` (rather than
  reading their `.weight`) keeps this right for a LoRA layer too.
- The figure shows one row of each (T, T) map, the query [CLS] by default: the token whose final vector the
  classifier reads (with `pooling="cls"`). Rows are heads, columns the tokens it attends to.
- Eval mode only: dropout on the attention weights would make the recomputed weights differ from those used.

Tested in tests/test_viz.py: equal (<= 1e-5) to transformers' `output_attentions=True` on tiny random BERT and
DistilBERT models with padding, and the CLI writes a PNG.
"""

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from .attention import MultiHeadSelfAttention, padding_bias
from .checkpoint import load_encoder
from .errors import ArgumentParser, UserError, run_cli
from .model import Classifier, Encoder
from .paths import OFFLINE_MINILM, resolve_model_dir
from .predict import model_folder
from .tokenizer import check_max_length_flag, load_tokenizer


def head_weights(attention: MultiHeadSelfAttention, x: torch.Tensor,
                 attention_mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(Dh) + padding bias) of one attention module; x (B, T, D) -> weights (B, H, T, T)."""
    q = attention.split_heads(attention.q_lin(x))  # (B, H, T, Dh)
    k = attention.split_heads(attention.k_lin(x))  # (B, H, T, Dh)
    bias = None if attention_mask is None else padding_bias(attention_mask, q.dtype)  # (B, 1, 1, T)
    return attention.weights(q, k, bias)  # (B, H, T, T): query i (row) vs key j (column); each row sums to 1


@torch.no_grad()
def attention_weights(model: nn.Module, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The attention weights of every layer and head: (L, B, H, T, T), L = number of layers.

    `model` is an Encoder or a Classifier (its encoder is used), in eval mode.
    """
    encoder = model.encoder if isinstance(model, Classifier) else model
    if not isinstance(encoder, Encoder):
        raise TypeError(f"attention_weights needs a minibert Encoder or Classifier, got {type(model).__name__}")
    if encoder.training:
        raise ValueError("the model is in training mode: call .eval() first (dropout would change the weights)")
    captured = []

    def grab(module, args, kwargs):
        # Block calls attention(x, attention_mask): x is what enters this layer's attention.
        x = args[0]
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        captured.append(head_weights(module, x, mask))

    hooks = [layer.attention.register_forward_pre_hook(grab, with_kwargs=True) for layer in encoder.layers]
    try:
        encoder(input_ids, attention_mask)
    finally:  # a hook left behind would run on every later forward
        for hook in hooks:
            hook.remove()
    return torch.stack(captured)  # (L, B, H, T, T)


def top_tokens(row: torch.Tensor, tokens: list[str], k: int = 3) -> str:
    """'[SEP] 0.41, . 0.12, great 0.08': the k tokens with the largest weight in a (T,) row."""
    values, positions = row.topk(min(k, len(tokens)))
    return ", ".join(f"{tokens[p]} {v:.2f}" for v, p in zip(values.tolist(), positions.tolist()))


def plot_query_attention(weights: torch.Tensor, tokens: list[str], out: Path, query: int = 0,
                         title: str = "", dpi: int = 100) -> None:
    """One panel per layer: an (H, T) image of how much each head's `query` token attends to each token.

    `weights` is one text's (L, H, T, T). All panels share one colour scale, so layers compare directly.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no screen needed
    import matplotlib.pyplot as plt

    L, H, T, _ = weights.shape
    rows = weights[:, :, query, :].numpy()  # (L, H, T)
    fig, axes = plt.subplots(L, 1, figsize=(max(6.0, 0.22 * T + 1.5), L * (0.09 * H + 0.25) + 1.2), sharex=True,
                             squeeze=False, layout="constrained")
    for layer, ax in enumerate(axes[:, 0]):
        image = ax.imshow(rows[layer], aspect="auto", cmap="viridis", vmin=0.0, vmax=float(rows.max()),
                          interpolation="nearest")
        ax.set_yticks([0, H - 1], [1, H], fontsize=7)
        ax.set_ylabel(f"layer {layer + 1}\nhead", fontsize=7)
    axes[-1, 0].set_xticks(range(T), tokens, rotation=90, fontsize=8)
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.01, label="attention weight")
    fig.suptitle(title or f"what {tokens[query]} (position {query}) attends to, per layer and head", fontsize=10)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def resolve(run_or_model: str) -> Path:
    """A run folder (its model/), a model folder, or a known model name such as all-MiniLM-L6-v2."""
    path = Path(run_or_model)
    return model_folder(path) if path.is_dir() else resolve_model_dir(run_or_model)


def attention_command(args) -> None:
    if not args.text.strip():
        raise ValueError("the text is empty: give the review to look at, in quotes")
    folder = resolve(args.model)
    tokenizer = load_tokenizer(folder)
    encoder = load_encoder(folder)  # eval mode; a classifier checkpoint's head is skipped
    batch = tokenizer([args.text], max_length=args.max_length)
    ids = batch["input_ids"][0].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids)
    if not 0 <= args.query < len(tokens):
        raise ValueError(f"--query {args.query} is outside the {len(tokens)} tokens of this text")
    weights = attention_weights(encoder, batch["input_ids"], batch["attention_mask"])[:, 0]  # (L, H, T, T)
    print(f"{len(tokens)} tokens; what {tokens[args.query]} attends to, averaged over the {weights.shape[1]} heads:")
    for layer, mean_row in enumerate(weights[:, :, args.query, :].mean(dim=1)):  # (T,) per layer
        print(f"  layer {layer + 1}: {top_tokens(mean_row, tokens)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_query_attention(weights, tokens, args.out, query=args.query, dpi=args.dpi)
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m minibert.viz", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    attention = commands.add_parser(
        "attention", help="per layer and head, what one token (default [CLS]) attends to in a text",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    attention.add_argument("model", help=f"run folder, model folder, or {OFFLINE_MINILM}")
    attention.add_argument("text", help="the text to look at (quote it)")
    attention.add_argument("--out", type=Path, default=Path("attention.png"), help="PNG file to write")
    attention.add_argument("--max-length", type=int, default=64,
                           help="truncate to this many tokens, [CLS]/[SEP] included (one column each)")
    attention.add_argument("--query", type=int, default=0, help="position of the query token (0 = [CLS])")
    attention.add_argument("--dpi", type=int, default=100, help="resolution of the PNG")
    args = parser.parse_args(argv)
    check_max_length_flag(args.max_length)
    try:
        attention_command(args)
    except (FileNotFoundError, NotADirectoryError, TypeError, ValueError) as err:
        raise UserError(str(err)) from None  # run_cli: one line and exit code 2, no traceback


if __name__ == "__main__":
    sys.exit(run_cli(main))
