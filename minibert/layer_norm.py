"""LayerNorm, and the dtype of the residual stream under autocast.

    LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias        (over the last dimension, D)

Under `torch.autocast(dtype=bfloat16)` the matmuls run in bf16, but autocast computes layer_norm in float32 *and
returns float32* (it is on autocast's float32 list). In a post-LN encoder the norm's output is the residual
stream: every block then adds bf16 sublayer outputs to a float32 stream, and every elementwise kernel that touches
it (dropout, the residual add, the norm and their backward) moves twice the bytes it would in bf16.

The fast path beside it (opt-in, off by default; `minibert.model.set_fast_paths(model, bf16_residual=True)`):
`cast_to_autocast_dtype` casts the norm's output back to autocast's dtype. The norm itself still computes in
float32 (its input is upcast inside the kernel); only what it writes out is rounded to bf16, which is what the
next matmul would do to it anyway. Outside autocast the flag changes nothing (float32 in, float32 out). The
cost is precision of the residual sum: bf16 keeps ~3 significant digits, as every bf16 activation does.
"""

import torch
from torch import nn


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters, same checkpoint keys) with the opt-in bf16 output described above."""

    cast_to_autocast_dtype = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)  # (..., D), float32 under autocast
        if self.cast_to_autocast_dtype and torch.is_autocast_enabled(x.device.type):
            y = y.to(torch.get_autocast_dtype(x.device.type))
        return y
