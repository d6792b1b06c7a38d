"""Quantize a whole model: swap its nn.Linear layers for 4-bit ones, undo it, and count the bytes.

    quantize_model(model)      every nn.Linear (except the head) -> bitsandbytes Linear4bit (NF4), in place
    dequantize_model(model)    every 4-bit layer -> a float nn.Linear holding W_hat (a copy), in place
    count_bytes(model)         parameters and bytes as the model is now (quantize_model reports before/after)

Works on any nn.Module. Only layers whose type is exactly nn.Linear are quantized: a subclass may read its
`.weight` directly (MultiheadAttention's out_proj does), which a 4-bit layer no longer has as a float matrix.

The classification head is never quantized: it is new and trained, and a 4-bit layer has no float weight to
train (peft issue #1720: a change in transformers' layer replacement once quantized DistilBERT's classifier).
`skip` matches whole components of a module's dotted name: "classifier" skips `classifier` and
`head.classifier` but not `my_classifier_proj`.

Why `dequantize_model` exists: merging a LoRA update into a 4-bit base would re-quantize W + BA to 4 bits and
round most of the small update away (peft issue #2321). Dequantize first; merge into the float copy.
Tested in tests/test_quant_model.py (all-MiniLM-L6-v2, a tiny Llama, both backends).
"""

import sys
from dataclasses import dataclass

import torch
from torch import nn

from .linear import NF4Linear
from .nf4 import DTYPES, check_blocksize, dequantize_nf4

DEFAULT_SKIP = ("classifier", "pre_classifier", "score", "lm_head")
BACKENDS = ("bnb", "reference")


def is_4bit_layer(module: nn.Module) -> bool:
    """True for our NF4Linear and bitsandbytes' Linear4bit."""
    if isinstance(module, NF4Linear):
        return True
    # A Linear4bit can only exist if bitsandbytes was imported: don't pay its import time to find out.
    bnb_nn = sys.modules.get("bitsandbytes.nn")
    return bnb_nn is not None and isinstance(module, bnb_nn.Linear4bit)


def layer_state(layer: nn.Module):
    """(packed uint8, NF4State) of a 4-bit layer of either backend."""
    if isinstance(layer, NF4Linear):
        return layer.weight.data, layer.quant_state
    from .bnb import linear4bit_state
    return linear4bit_state(layer)


def matches(name: str, skip: tuple[str, ...]) -> bool:
    """Whether a dotted module name has a component in `skip` ("bert.pooler.dense" -> bert, pooler, dense)."""
    return any(part in skip for part in name.split("."))


def check_compute_dtype(compute_dtype: torch.dtype, device: torch.device) -> None:
    """Refuse a compute dtype the 4-bit matmul can't run in on this device."""
    if compute_dtype not in DTYPES:
        raise ValueError(f"compute_dtype must be one of {DTYPES}, got {compute_dtype}")
    # On CPU, bitsandbytes 0.50.2 runs float32, bfloat16 and float16 compute alike (measured).
    if device.type == "cuda" and compute_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"compute_dtype bfloat16 is not supported by this GPU ({device}); "
                         "use torch.float16 or torch.float32")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


@dataclass
class MemoryReport:
    """Bytes of the model's tensors; the 4-bit layers counted as codes + absmax (+ nested absmax and offset).

    The constant codebooks (16 NF4 levels, the 256-entry dynamic map) are not counted.
    """

    quantized_layers: int
    quantized_weights: int  # parameters in the quantized weight matrices
    quantized_bytes_before: int  # those matrices in their float dtype
    quantized_bytes_after: int  # their packed codes + absmax (+ nested state)
    total_params: int  # every parameter of the model, a 4-bit matrix counted as the weights it holds
    total_bytes_before: int
    total_bytes_after: int

    @property
    def bytes_per_quantized_weight(self) -> float:
        return self.quantized_bytes_after / max(self.quantized_weights, 1)

    def __str__(self) -> str:
        mib, q, total = 2**20, max(self.quantized_weights, 1), self.total_params
        return "\n".join([
            f"quantized layers : {self.quantized_layers} ({self.quantized_weights:,} weights)",
            f"  their weights  : {self.quantized_bytes_before / mib:8.2f} MiB -> "
            f"{self.quantized_bytes_after / mib:8.2f}"
            f" MiB  ({self.quantized_bytes_before / q:.4f} -> {self.quantized_bytes_after / q:.4f} bytes/weight)",
            f"whole model      : {self.total_bytes_before / mib:8.2f} MiB -> {self.total_bytes_after / mib:8.2f}"
            f" MiB  ({self.total_bytes_before / total:.4f} -> {self.total_bytes_after / total:.4f} bytes/param)",
        ])


def _4bit_storage(layer: nn.Module) -> int:
    packed, state = layer_state(layer)
    nbytes = packed.numel() * packed.element_size() + state.absmax.numel() * state.absmax.element_size()
    if state.nested is not None:
        nbytes += state.nested.absmax.numel() * 4 + 4  # nested absmax + offset, float32
    return nbytes


def count_bytes(model: nn.Module) -> tuple[int, int, int, int]:
    """(total params, total bytes, params in 4-bit layers' weights, bytes of those weights) as the model is now.

    Tied tensors count once. Buffers count in bytes but not as parameters.
    """
    seen, total_params, total_bytes, q_params, q_bytes = set(), 0, 0, 0, 0
    for module in model.modules():
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        if is_4bit_layer(module):
            weights = module.in_features * module.out_features
            storage = _4bit_storage(module)
            total_params, total_bytes, q_params, q_bytes = (total_params + weights, total_bytes + storage,
                                                            q_params + weights, q_bytes + storage)
            tensors = [(n, t) for n, t in tensors if n == "bias"]  # the rest is counted in `storage`
        for tname, t in tensors:
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            total_bytes += t.numel() * t.element_size()
            if isinstance(t, nn.Parameter):
                total_params += t.numel()
    return total_params, total_bytes, q_params, q_bytes


def quantize_model(model: nn.Module, skip: tuple[str, ...] | None = None, compute_dtype: torch.dtype = torch.float32,
                   double_quant: bool = False, blocksize: int = 64, backend: str = "bnb",
                   verbose: bool = False) -> MemoryReport:
    """Replace every nn.Linear of `model` (in place, on its own device) by a 4-bit NF4 layer; return the bytes saved.

    backend="bnb": bitsandbytes' Linear4bit (fast kernels on CUDA; CPU works too). backend="reference": our
    NF4Linear, which dequantizes in plain torch every forward (slow, for learning). Both hold identical bytes.
    skip: module name components kept in full precision (None: DEFAULT_SKIP, the usual heads); each name given must
    be a component of some module's name, so that a typo cannot quietly quantize the head.
    """
    if skip is None:
        skip = DEFAULT_SKIP
    elif unknown := [s for s in skip if not any(matches(name, (s,)) for name, _ in model.named_modules())]:
        raise ValueError(f"skip {unknown} names no module of {type(model).__name__}: a module is skipped when a "
                         "component of its dotted name (e.g. 'classifier' in 'bert.classifier') is in skip")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_blocksize(blocksize)
    already = [name for name, m in model.named_modules() if is_4bit_layer(m)]
    if already:
        raise ValueError(f"model already holds 4-bit layers ({', '.join(already[:3])}...): quantize a float model, "
                         "or call quant.dequantize_model first")
    # An adapter (LoRA here or in peft) wraps its layer as `base_layer` and adds small nn.Linear layers of its own,
    # which this would quantize and freeze too: the adapters must come after quantizing (QLoRA's order)
    wrapped = [name for name, m in model.named_modules() if isinstance(getattr(m, "base_layer", None), nn.Module)]
    if wrapped:
        raise ValueError(f"model holds adapter layers ({', '.join(wrapped[:3])}...): quantize first, then add the "
                         "adapters (QLoRA: quant.quantize_model, then lora.inject), or merge them in first")
    targets = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear and not matches(name, skip)]
    if not targets:
        raise ValueError(f"nothing to quantize: the model has no nn.Linear outside skip={skip}")
    for name, linear in targets:
        check_compute_dtype(compute_dtype, linear.weight.device)
        if linear.weight.dtype not in DTYPES:
            raise TypeError(f"{name}: weight dtype {linear.weight.dtype} can't be quantized; NF4 takes {DTYPES}")
        if not torch.isfinite(linear.weight).all():
            raise ValueError(f"{name}: weight holds NaN or inf; each NF4 block is scaled by its absmax, which would "
                             "be too: load finite weights")
        if backend == "bnb":
            from .bnb import check_cpu_shape
            check_cpu_shape(linear.in_features, blocksize, linear.weight.device)

    before = count_bytes(model)
    for name, linear in targets:
        if backend == "reference":
            layer = NF4Linear.from_linear(linear, blocksize, double_quant, compute_dtype)
        else:
            from . import bnb
            packed, state = bnb.quantize(linear.weight.detach(), blocksize, double_quant)
            layer = bnb.make_linear4bit(packed, state, linear.bias, compute_dtype)
        layer.train(linear.training)
        _replace(model, name, layer)
    after = count_bytes(model)
    report = MemoryReport(quantized_layers=len(targets), quantized_weights=after[2],
                          quantized_bytes_before=sum(m.weight.numel() * m.weight.element_size() for _, m in targets),
                          quantized_bytes_after=after[3], total_params=before[0], total_bytes_before=before[1],
                          total_bytes_after=after[1])
    if verbose:
        print(report)
    return report


def dequantize_model(model: nn.Module) -> nn.Module:
    """Replace every 4-bit layer (in place) by a float nn.Linear holding a copy of its dequantized weight W_hat.

    The new weight is frozen (the 4-bit one was); the bias keeps its requires_grad. Returns `model`.
    """
    layers = [(name, m) for name, m in model.named_modules() if is_4bit_layer(m)]
    if not layers:
        raise ValueError("dequantize_model: the model has no 4-bit layers")
    for name, layer in layers:
        packed, state = layer_state(layer)
        # Our dequantizer, for both backends: bit-exact with bitsandbytes and right for every shape.
        w_hat = dequantize_nf4(packed, state)  # (out, in), a new tensor
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                           device="meta", dtype=state.dtype)
        linear.weight = nn.Parameter(w_hat, requires_grad=False)
        if layer.bias is not None:
            linear.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=layer.bias.requires_grad)
        linear.train(layer.training)
        _replace(model, name, linear)
    return model
