"""The bridge to bitsandbytes: its NF4 quantizer, its Linear4bit layer, and its QuantState <-> our NF4State.

Importing this module imports bitsandbytes (~4 s); the rest of quant/ only does so when the "bnb" backend is used.

What is unusual (bitsandbytes 0.50.2, measured on this project's CPU machine):
- bitsandbytes defaults to FP4 (quant_type="fp4") in quantize_4bit, Params4bit and Linear4bit: every call here
  passes quant_type="nf4" explicitly.
- Its CPU `dequantize_4bit` kernel (AVX-512 path, taken when in_features % 16 == 0) reads the absmax of row r at
  r * (in_features // blocksize): it assumes every row starts a new block. When blocksize does not divide
  in_features, blocks straddle rows and the dequantized weights (and Linear4bit's output) are silently wrong
  (relative weight error ~0.2 instead of ~0.09). `check_cpu_shape` refuses that case; our own dequantize_nf4
  indexes blocks over the flat tensor and is right for every shape.
- On CPUs with AVX512-BF16, Linear4bit's eval-mode forward repacks the weight into a CPU-only layout with bf16
  absmax and computes in bf16, whatever compute_dtype says (measured here: slower and less accurate than fp32).
  We turn that path off per layer (`support_avx512bf16_for_cpu = False`) so compute_dtype holds and the weight
  stays in the standard layout that saving and dequantizing read.
- Linear4bit.forward casts its own bias to the input's dtype in place (`bias.data = bias.data.to(x.dtype)`), so
  a bias can change dtype after the first forward. It is frozen in QLoRA, so this costs nothing but surprise.
"""

import logging

import torch

# bitsandbytes logs a warning at import on AVX512-BF16 CPUs when the optional `kernels` package is missing; it is
# about the CPU bf16 inference path that we switch off (see above), so it would only confuse.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

import bitsandbytes  # noqa: E402
from bitsandbytes.functional import QuantState, create_dynamic_map, get_4bit_type  # noqa: E402
from bitsandbytes.nn import Linear4bit, Params4bit  # noqa: E402

from .double_quant import DoubleQuantState  # noqa: E402
from .nf4 import BLOCKSIZES, NF4State, check_blocksize  # noqa: E402

QUANT_TYPE = "nf4"  # bitsandbytes' default is "fp4": always pass this


def quantize(w: torch.Tensor, blocksize: int = 64, double_quant: bool = False) -> tuple[torch.Tensor, NF4State]:
    """bitsandbytes' NF4 quantizer, returned in our format: (packed uint8 (ceil(n/2),), NF4State)."""
    check_blocksize(blocksize)
    packed, quant_state = bitsandbytes.functional.quantize_4bit(
        w.contiguous(), blocksize=blocksize, compress_statistics=double_quant, quant_type=QUANT_TYPE)
    return packed.view(-1), from_bnb_state(quant_state)


def from_bnb_state(qs: QuantState) -> NF4State:
    """bitsandbytes QuantState -> NF4State (shares the tensors)."""
    if qs.quant_type != QUANT_TYPE:
        raise ValueError(f"expected an NF4 quant state, got quant_type={qs.quant_type!r}")
    if getattr(qs, "packing_format_for_cpu", False):
        raise ValueError("this Linear4bit was repacked by bitsandbytes' CPU bf16 inference kernel (absmax rounded to "
                         "bf16); build 4-bit layers with quant.quantize_model, which keeps the standard layout")
    nested = None
    if qs.nested:
        nested = DoubleQuantState(absmax=qs.state2.absmax, offset=qs.offset, blocksize=qs.state2.blocksize)
    return NF4State(absmax=qs.absmax, shape=qs.shape, dtype=qs.dtype, blocksize=qs.blocksize, nested=nested)


def to_bnb_state(state: NF4State) -> QuantState:
    """NF4State -> bitsandbytes QuantState on the absmax's device (shares the tensors)."""
    device = state.absmax.device
    state2, offset = None, None
    if state.nested is not None:
        state2 = QuantState(absmax=state.nested.absmax, code=create_dynamic_map().to(device),
                            blocksize=state.nested.blocksize, dtype=torch.float32)
        offset = state.nested.offset
    return QuantState(absmax=state.absmax, shape=state.shape, code=get_4bit_type(QUANT_TYPE, device=device),
                      blocksize=state.blocksize, quant_type=QUANT_TYPE, dtype=state.dtype, offset=offset,
                      state2=state2)


def check_cpu_shape(in_features: int, blocksize: int, device: torch.device) -> None:
    """Refuse the shapes that bitsandbytes' CPU dequantize kernel gets wrong (see the module docstring)."""
    if device.type == "cpu" and in_features % 16 == 0 and in_features % blocksize != 0:
        ok = [b for b in BLOCKSIZES if in_features % b == 0]
        raise ValueError(
            f"bitsandbytes' CPU 4-bit kernel dequantizes wrongly when blocksize ({blocksize}) does not divide "
            f"in_features ({in_features}); use a blocksize in {ok} or backend='reference'")


def make_linear4bit(packed: torch.Tensor, state: NF4State, bias: torch.Tensor | None,
                    compute_dtype: torch.dtype) -> Linear4bit:
    """A bitsandbytes Linear4bit holding these packed NF4 bytes as they are (nothing is re-quantized)."""
    out_features, in_features = state.shape
    check_cpu_shape(in_features, state.blocksize, packed.device)
    # device="meta": skip allocating and initializing a float weight we are about to replace.
    layer = Linear4bit(in_features, out_features, bias=bias is not None, compute_dtype=compute_dtype,
                       compress_statistics=state.nested is not None, quant_type=QUANT_TYPE, device="meta")
    quant_state = to_bnb_state(state)
    # bnb_quantized=True: Params4bit quantizes on its first .to(device) unless told the data already is 4-bit.
    layer.weight = Params4bit(packed.reshape(-1, 1), requires_grad=False, quant_state=quant_state,
                              blocksize=state.blocksize, compress_statistics=state.nested is not None,
                              quant_type=QUANT_TYPE, quant_storage=torch.uint8, module=layer, bnb_quantized=True)
    layer.quant_state = quant_state
    if bias is not None:
        layer.bias = torch.nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
    layer.support_avx512bf16_for_cpu = False  # keep compute_dtype and the standard layout (module docstring)
    return layer


def linear4bit_state(layer: Linear4bit) -> tuple[torch.Tensor, NF4State]:
    """(packed uint8 (ceil(n/2),), NF4State) of a Linear4bit's weight."""
    return layer.weight.data.view(-1), from_bnb_state(layer.weight.quant_state)
