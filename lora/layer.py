"""The LoRA layer: a frozen nn.Linear plus a trainable low-rank update `(alpha / r) B A`.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685) freezes a
pretrained weight W and learns its change as a product of two thin matrices:

            x (..., in)
            |
      +-----+-----------------------+
      |                             |
      v                             v
  +-------+                    dropout(x)
  |   W   |  frozen                 |
  | (out, |  (the base             v
  |  in)  |   nn.Linear,      +-----------+
  | + b   |   any subclass)   |     A     |  (r, in)   Kaiming-uniform, a=sqrt(5)
  +-------+                   +-----------+
      |                             |  (..., r)
      |                             v
      |                       +-----------+
      |                       |     B     |  (out, r)  zeros  ->  B A = 0 at step 0
      |                       +-----------+
      |                             |  (..., out)  * scaling
      v                             v
      +------------> (+) <----------+
                      |
                 y (..., out)      y = W x + b + scaling * B A dropout(x)

- scaling = alpha / r (paper section 4.1: "we scale dW x by alpha / r ... we simply set alpha to the first r we
  try and do not tune it", so re-tuning the learning rate is not needed when r changes). With `rslora=True`,
  scaling = alpha / sqrt(r) (Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with
  LoRA", arXiv:2312.03732): with alpha / r, larger ranks learn slower; alpha / sqrt(r) keeps them stable.
- r is the rank of the update (paper section 7.2: a very small r, even 1 to 8, suffices for W_q and W_v).
- B = 0 makes an injected model start exactly equal to its base (paper section 4.1). The paper draws A from a
  Gaussian; its code (loralib) and peft use Kaiming-uniform with a=sqrt(5) (nn.Linear's own default), and so do
  we, drawing in peft's order, so that under the same seed our A equals peft's bit for bit.

What is unusual here:
- The base is any `nn.Linear`, including subclasses whose weight is not a float matrix (bitsandbytes'
  `Linear4bit` stores 4-bit codes): QLoRA is this same layer on a 4-bit base. We only ever call the base, and
  read its `in_features` / `out_features`, never the shape of its weight.
- The LoRA path runs in the dtype of A and B (float32 by default, even on a bf16 or 4-bit base: small updates
  would round away in bf16), and the sum is returned in the base output's dtype, as peft does.
- `merge()` folds the update into W, after which `forward` is just the base layer (no adapter overhead);
  `unmerge()` subtracts the same product again. Both are explicit calls, never side effects of `eval()`.
  Merging refuses a base that is not a plain float `nn.Linear`: re-quantizing a 4-bit weight would silently
  lose the update (peft issue #2321). Dequantize the base first.
- Parameter names follow peft (`base_layer`, `lora_A`, `lora_B`), so adapter files use peft's key names.

Tested against peft 0.21.2 (outputs, every gradient, init under the same seed) in tests/test_lora.py.
"""

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """`base(x) + scaling * lora_B(lora_A(dropout(x)))`, with `base` frozen (see the module docstring)."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"LoRA wraps an nn.Linear (or a subclass of it); got {type(base_layer).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"LoRA rank r must be a positive integer; got r={r!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1); got {dropout!r}")
        self.base_layer = base_layer
        self.r, self.alpha, self.rslora = r, alpha, rslora
        self.dropout = nn.Dropout(dropout)
        # A and B are built as nn.Linear (like peft), so their keys are `lora_A.weight` / `lora_B.weight`. Their
        # construction draws from the RNG and is then overwritten: we keep it so the RNG stream matches peft's.
        device = base_layer.weight.device
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False, device=device, dtype=dtype)   # (r, in)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False, device=device, dtype=dtype)  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.merged = False
        self.train(base_layer.training)  # a layer injected into an eval() model must not start dropping out

    @property
    def scaling(self) -> float:
        """alpha / r (Hu et al. section 4.1), or alpha / sqrt(r) for rsLoRA (Kalajdzievski 2023)."""
        return self.alpha / math.sqrt(self.r) if self.rslora else self.alpha / self.r

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN ASSIGNMENT lora: the frozen layer's output plus the scaled low-rank update of the module docstring (dropout on the update's input); the update in A's dtype, the sum in the base output's; once merged, W holds the update
        result = self.base_layer(x)  # (..., out)
        if self.merged:  # the update already lives in W
            return result
        x = self.dropout(x).to(self.lora_A.weight.dtype)
        update = self.lora_B(self.lora_A(x)) * self.scaling  # (..., in) -> (..., r) -> (..., out)
        return (result + update).to(result.dtype)
        # END ASSIGNMENT

    def delta_weight(self) -> torch.Tensor:
        """The update `scaling * B A` as an (out, in) float32 matrix (float32 so bf16 A/B do not lose bits)."""
        # BEGIN ASSIGNMENT lora: the update as the one (out, in) matrix W would gain, in float32
        return (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling  # (out, r) @ (r, in)
        # END ASSIGNMENT

    def check_mergeable(self) -> None:
        """Raise (changing nothing) unless the base weight is a floating-point matrix of a plain nn.Linear."""
        weight = self.base_layer.weight
        if type(self.base_layer) is not nn.Linear or not weight.is_floating_point():
            raise TypeError(
                f"cannot merge LoRA into a {type(self.base_layer).__name__} base (weight dtype {weight.dtype}): "
                "merging needs a plain nn.Linear with a floating-point weight. Dequantize the base first; merging "
                "into a quantized weight would re-quantize it and lose the update (peft #2321)")

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + scaling * B A; afterwards forward() is the base layer alone (so A and B get no gradient)."""
        if self.merged:
            raise RuntimeError("this LoRA layer is already merged; unmerge() it first")
        self.check_mergeable()
        # BEGIN ASSIGNMENT lora: fold the update into the base weight, in place, in W's dtype
        weight = self.base_layer.weight
        weight += self.delta_weight().to(weight.dtype)
        # END ASSIGNMENT
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - scaling * B A: the exact inverse of merge(), up to float rounding."""
        if not self.merged:
            raise RuntimeError("this LoRA layer is not merged; there is nothing to unmerge")
        # BEGIN ASSIGNMENT lora: take the update back out of the base weight, in place
        weight = self.base_layer.weight
        weight -= self.delta_weight().to(weight.dtype)
        # END ASSIGNMENT
        self.merged = False

    def extra_repr(self) -> str:
        kind = "rsLoRA" if self.rslora else "LoRA"
        return f"{kind}: r={self.r}, alpha={self.alpha}, scaling={self.scaling:.4g}, merged={self.merged}"
