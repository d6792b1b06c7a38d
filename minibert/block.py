"""One Transformer encoder block: attention, then feed-forward, each wrapped as LayerNorm(x + sublayer(x)).

    h   = LayerNorm(x + Dropout(Attention(x)))          `sa_layer_norm`
    out = LayerNorm(h + Dropout(W2 GELU(W1 h)))         `output_layer_norm`

This is the *post*-LayerNorm arrangement of the original Transformer and of BERT/DistilBERT: the norm comes
after the residual sum. (GPT-2 and Llama normalise *before* each sublayer, which trains more stably when deep;
a checkpoint fixes which one you must use.) The GELU is the exact erf form: BERT's checkpoints were trained with
it, and the tanh approximation moves outputs by ~1e-4, enough to fail a 1e-5 parity test.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadSelfAttention
from .config import Config

ACTIVATIONS = {
    "gelu": F.gelu,  # exact: x * Phi(x), with Phi the standard normal CDF
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class FeedForward(nn.Module):
    """Position-wise: the same two-layer MLP applied to every token independently, D -> F -> D."""

    def __init__(self, config: Config):
        super().__init__()
        self.lin1 = nn.Linear(config.dim, config.hidden_dim)
        self.lin2 = nn.Linear(config.hidden_dim, config.dim)
        self.activation = ACTIVATIONS[config.activation]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN ASSIGNMENT block: the position-wise feed-forward network (Vaswani et al. 2017, eq. 2) with the config's activation, dropout on its output; (B, T, D) -> (B, T, D)
        h = self.activation(self.lin1(x))  # (B, T, F)
        return self.dropout(self.lin2(h))  # (B, T, D)
        # END ASSIGNMENT


class Block(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.attention = MultiHeadSelfAttention(config)
        # BERT drops out the attention output before the residual sum (BertSelfOutput); DistilBERT does not.
        # Only training is affected: in eval mode dropout is the identity either way.
        self.dropout = nn.Dropout(config.dropout) if config.family == "bert" else nn.Identity()
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # BEGIN ASSIGNMENT block: the post-LN block of the module docstring: attention, then the feed-forward network, each joining its input on the residual path before its norm
        residual = x  # (B, T, D)
        h = self.sa_layer_norm(residual + self.dropout(self.attention(x, attention_mask)))  # (B, T, D)
        return self.output_layer_norm(h + self.ffn(h))  # (B, T, D)
        # END ASSIGNMENT

    def first_token(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output at position 0 only, (B, 1, D): what a [CLS] classifier reads from its last layer.

        Every position still serves as a key and a value, but the query, the residual sums, both norms and the
        feed-forward run on one token instead of T: the same numbers at position 0 for ~1/6 of the block's work."""
        # BEGIN ASSIGNMENT block: what forward computes, with position 0 the only query (MultiHeadSelfAttention.forward's `queries`); -> (B, 1, D)
        first = x[:, :1]  # (B, 1, D)
        h = self.sa_layer_norm(first + self.dropout(self.attention(x, attention_mask, queries=first)))  # (B, 1, D)
        return self.output_layer_norm(h + self.ffn(h))  # (B, 1, D)
        # END ASSIGNMENT
