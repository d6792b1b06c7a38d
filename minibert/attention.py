"""Multi-head self-attention with a padding mask, written twice: the formula to read, and torch's fused kernel.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(Dh) + mask) V          (Vaswani et al. 2017, eq. 1)

Each of the H heads attends with its own Dh = D / H slice of the projections; the heads' outputs are
concatenated and mixed by `out_lin`. Both paths (`attention="math"` and `"sdpa"`) use the same four
`nn.Linear`s, named as in DistilBERT's checkpoint (`q_lin`, `k_lin`, `v_lin`, `out_lin`) so that LoRA targets
and checkpoint keys read the same here as in transformers and peft.

The padding mask: a padded position must receive no attention. We add a large negative bias to its score
before the softmax. transformers uses the dtype's most negative finite number, not -inf: a row where every
key is padding then gets uniform weights instead of NaN (0/0). We do the same.

Parity with transformers' eager and sdpa attention: tests/test_model_parity.py.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) mask of 1 = real token, 0 = padding  ->  (B, 1, 1, T) additive bias: 0 or the dtype's minimum.

    The two singleton dimensions broadcast over heads and over query positions: every query sees the same
    keys masked.
    """
    bias = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
    return bias  # (B, 1, 1, T)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.q_lin = nn.Linear(config.dim, config.dim)
        self.k_lin = nn.Linear(config.dim, config.dim)
        self.v_lin = nn.Linear(config.dim, config.dim)
        self.out_lin = nn.Linear(config.dim, config.dim)
        self.attention_dropout = config.attention_dropout
        self.use_sdpa = config.attention == "sdpa"

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                queries: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). `queries` (B, Tq, D): only these positions ask (their outputs come back,
        (B, Tq, D)); every position of x still answers as a key and a value. Used by Block.first_token."""
        queries = x if queries is None else queries
        B, Tq, D = queries.shape  # x: (B, T, D); queries: (B, Tq, D), Tq = T unless a few positions ask
        q = self.split_heads(self.q_lin(queries))  # (B, H, Tq, Dh)
        k = self.split_heads(self.k_lin(x))  # (B, H, T, Dh)
        v = self.split_heads(self.v_lin(x))  # (B, H, T, Dh)
        bias = None if attention_mask is None else padding_bias(attention_mask, q.dtype)  # (B, 1, 1, T)
        dropout = self.attention_dropout if self.training else 0.0

        if self.use_sdpa:
            # The same formula in one fused kernel (flash / memory-efficient / C++ math, chosen by torch).
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)  # (B, H, Tq, Dh)
        else:
            context = self.attend(q, k, v, bias, dropout)  # (B, H, Tq, Dh)

        context = context.transpose(1, 2).reshape(B, Tq, D)  # heads side by side again: (B, Tq, D)
        return self.out_lin(context)  # (B, Tq, D)

    def weights(self, q, k, bias) -> torch.Tensor:
        """softmax(Q K^T / sqrt(Dh) + bias): how much each query attends to each key (minibert.viz draws them)."""
        # BEGIN ASSIGNMENT attention: eq. 1 of the module docstring up to its softmax, normalised over the keys, with the padding bias (None: no padding) in the scores; (B, H, Tq, Dh), (B, H, T, Dh) -> (B, H, Tq, T)
        scores = q @ k.transpose(-2, -1) * self.head_dim**-0.5  # (B, H, Tq, T): query i vs key j
        if bias is not None:
            scores = scores + bias  # padded keys -> dtype min -> weight 0 after softmax
        return scores.softmax(dim=-1)  # (B, H, Tq, T): each row sums to 1
        # END ASSIGNMENT

    def attend(self, q, k, v, bias, dropout: float) -> torch.Tensor:
        """softmax(Q K^T / sqrt(Dh) + bias) V, spelled out."""
        # BEGIN ASSIGNMENT attention: the rest of eq. 1: the weights (dropped out with p=dropout, 0.0 in eval mode) average the values; -> (B, H, Tq, Dh)
        weights = F.dropout(self.weights(q, k, bias), p=dropout, training=dropout > 0)  # (B, H, Tq, T)
        return weights @ v  # (B, H, Tq, Dh): weighted average of the values
        # END ASSIGNMENT
