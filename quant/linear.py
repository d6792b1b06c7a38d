"""NF4Linear: our own 4-bit linear layer, the `backend="reference"` twin of bitsandbytes' Linear4bit.

    y = x W_hat^T + b,    W_hat = dequantize_nf4(packed, state)   rebuilt in every forward, then a plain matmul

It is slow on purpose: nothing is fused, so the reader sees the whole 4-bit layer in a few lines. What it holds:
`weight` is the packed uint8 codes (a frozen Parameter, as in Linear4bit, so LoRA code that wraps any nn.Linear
subclass works on it and code that needs a float weight refuses it), the block absmax are buffers (the 8-bit codes
plus the nested absmax and offset with double quant), the bias stays float (trainable unless it was frozen).

What is unusual: it subclasses nn.Linear (for `isinstance` checks) but its `weight` is not a float matrix; call
`dequantize()` for that. `model.to(dtype)` would also cast the float32 absmax buffers, so cast a model *before*
quantizing it. Tested in tests/test_quant_model.py: outputs equal Linear4bit's on the same bytes.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .double_quant import DoubleQuantState
from .nf4 import NF4State, dequantize_nf4, quantize_nf4


class NF4Linear(nn.Linear):
    def __init__(self, packed: torch.Tensor, state: NF4State, bias: torch.Tensor | None = None,
                 compute_dtype: torch.dtype = torch.float32):
        if len(state.shape) != 2:
            raise ValueError(f"NF4Linear needs a 2-D (out_features, in_features) weight, got {tuple(state.shape)}")
        out_features, in_features = state.shape
        # device="meta": skip allocating and initializing a float weight we are about to replace.
        super().__init__(in_features, out_features, bias=bias is not None, device="meta")
        self.weight = nn.Parameter(packed, requires_grad=False)  # (ceil(out * in / 2),) uint8: frozen by nature
        if bias is not None:
            self.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)  # frozen stays frozen
        self.register_buffer("absmax", state.absmax)
        if state.nested is not None:
            self.register_buffer("nested_absmax", state.nested.absmax)
            self.register_buffer("nested_offset", state.nested.offset)
        self.blocksize = state.blocksize
        self.weight_dtype = state.dtype
        self.double_quant = state.nested is not None
        self.compute_dtype = compute_dtype

    @classmethod
    def from_linear(cls, linear: nn.Linear, blocksize: int = 64, double_quant: bool = False,
                    compute_dtype: torch.dtype = torch.float32) -> "NF4Linear":
        """Quantize a float nn.Linear (its weight is read, not changed)."""
        packed, state = quantize_nf4(linear.weight.detach(), blocksize=blocksize, double_quant=double_quant)
        return cls(packed, state, bias=linear.bias, compute_dtype=compute_dtype)

    @property
    def quant_state(self) -> NF4State:
        """The NF4State of the weight (views of this layer's buffers)."""
        nested = None
        if self.double_quant:
            nested = DoubleQuantState(absmax=self.nested_absmax.float(), offset=self.nested_offset.float())
        absmax = self.absmax if self.double_quant else self.absmax.float()  # uint8 codes stay uint8
        return NF4State(absmax=absmax, shape=(self.out_features, self.in_features), dtype=self.weight_dtype,
                        blocksize=self.blocksize, nested=nested)

    def dequantize(self) -> torch.Tensor:
        """The float weight W_hat (out_features, in_features) in the original dtype: a new tensor."""
        return dequantize_nf4(self.weight.data, self.quant_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN ASSIGNMENT qlora: the float weight back from its 4-bit codes (dequantize), a plain linear map in compute_dtype (the bias too, if any), the result in the input's dtype
        w = self.dequantize().to(self.compute_dtype)  # (out, in)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return F.linear(x.to(self.compute_dtype), w, bias).to(x.dtype)  # (..., out), in the input's dtype
        # END ASSIGNMENT

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"nf4 blocksize={self.blocksize}, double_quant={self.double_quant}, compute_dtype={self.compute_dtype}")
