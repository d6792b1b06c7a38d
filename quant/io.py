"""Save a 4-bit model to one safetensors file and load it back without re-quantizing anything.

File layout (one format for both backends):

    <layer>.weight.packed          uint8 (ceil(out * in / 2),)   the NF4 codes, two per byte
    <layer>.weight.absmax          float32 (n_blocks,), or uint8 codes with double quant
    <layer>.weight.nested_absmax   float32                       only with double quant
    <layer>.weight.nested_offset   float32 ()                    only with double quant
    <layer>.bias, every other parameter and buffer: as in model.state_dict()
    metadata["quant"]              JSON: per 4-bit layer its shape, dtype, blocksize, quant_type, double_quant,
                                   backend and compute_dtype

Loading needs the model's skeleton (the same architecture, float, e.g. freshly built from its config): each
layer named in the metadata must be an nn.Linear of that shape there, and is replaced by a 4-bit layer built
from the stored bytes. Every other key is copied in; a missing or unexpected key is an error that names it.

safetensors refuses two names for one tensor (tied weights, e.g. an LM head sharing the embedding): each
extra name is stored once in metadata["aliases"] and re-pointed at load.
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .double_quant import DoubleQuantState
from .linear import NF4Linear
from .model import _replace, is_4bit_layer, layer_state
from .nf4 import NF4State

FORMAT = "quant-nf4/1"
_DTYPES = {str(d): d for d in (torch.float32, torch.bfloat16, torch.float16)}


def _inside(key: str, layers) -> bool:
    """Whether a state_dict key belongs to one of the 4-bit layers (they have no submodules)."""
    return key.rpartition(".")[0] in layers or any(key.startswith(f"{name}.") for name in layers)


def save_4bit(model: nn.Module, path: str | Path) -> None:
    """Write the model's 4-bit layers (codes + quant state) and all its other tensors to `path`."""
    tensors, layers = {}, {}
    for name, layer in model.named_modules():
        if not is_4bit_layer(layer):
            continue
        packed, state = layer_state(layer)
        tensors[f"{name}.weight.packed"] = packed.reshape(-1)
        tensors[f"{name}.weight.absmax"] = state.absmax
        if state.nested is not None:
            tensors[f"{name}.weight.nested_absmax"] = state.nested.absmax
            tensors[f"{name}.weight.nested_offset"] = state.nested.offset.reshape(())
        layers[name] = {"shape": list(state.shape), "dtype": str(state.dtype), "blocksize": state.blocksize,
                        "quant_type": state.quant_type, "double_quant": state.nested is not None,
                        "backend": "reference" if isinstance(layer, NF4Linear) else "bnb",
                        "compute_dtype": str(layer.compute_dtype or torch.float32)}
    if not layers:
        raise ValueError("save_4bit: the model has no 4-bit layers (use safetensors' save_model for a float model)")

    aliases, first_name = {}, {}  # a tied tensor is stored under its first name
    for key, t in model.state_dict().items():
        if _inside(key, layers) and not key.endswith(".bias"):
            continue  # the 4-bit weight and bitsandbytes' own quant-state entries: written above in our format
        ident = (t.device, t.data_ptr(), t.dtype, tuple(t.shape))
        if ident in first_name:
            aliases[key] = first_name[ident]
            continue
        first_name[ident] = key
        tensors[key] = t
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": FORMAT, "quant": json.dumps(layers),
                                            "aliases": json.dumps(aliases)})


def load_4bit(model: nn.Module, path: str | Path, backend: str | None = None) -> nn.Module:
    """Load a file written by save_4bit into the float skeleton `model` (in place); returns model.

    backend: "bnb" or "reference" for every layer; None uses the backend each layer was saved with.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a 4-bit model saved by quant.save_4bit (format {meta.get('format')!r})")
        stored = {key: f.get_tensor(key) for key in f.keys()}
    layers, aliases = json.loads(meta["quant"]), json.loads(meta["aliases"])

    # Everything is checked before anything is replaced: a file that does not fit leaves the model as it was.
    for name, info in layers.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{path}: 4-bit layer {name!r} does not exist in this model") from None
        if not isinstance(linear, nn.Linear) or list(linear.weight.shape) != info["shape"]:
            raise ValueError(f"{path}: {name!r} must be an nn.Linear of shape {info['shape']} in the model, got "
                             f"{type(linear).__name__} {list(getattr(linear, 'weight', torch.empty(0)).shape)}")
        if (f"{name}.bias" in stored) != (linear.bias is not None):
            raise ValueError(f"{path}: {name!r} has bias={f'{name}.bias' in stored} in the file, "
                             f"{linear.bias is not None} in the model")
        if (backend or info["backend"]) == "bnb":
            from .bnb import check_cpu_shape
            check_cpu_shape(info["shape"][1], info["blocksize"], linear.weight.device)
    targets = {k: v for k, v in model.state_dict().items() if not _inside(k, layers)}  # the float tensors
    for alias, source in aliases.items():
        if alias in targets:
            stored[alias] = stored[source]
    float_stored = {k for k in stored if not _inside(k, layers)}
    missing, unexpected = sorted(set(targets) - float_stored), sorted(float_stored - set(targets))
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, target in targets.items():
        if target.shape != stored[key].shape:
            raise ValueError(f"{path}: {key} has shape {tuple(stored[key].shape)}, the model {tuple(target.shape)}")

    for name, info in layers.items():
        linear = model.get_submodule(name)
        device = linear.weight.device
        nested = None
        if info["double_quant"]:
            nested = DoubleQuantState(absmax=stored[f"{name}.weight.nested_absmax"].to(device),
                                      offset=stored[f"{name}.weight.nested_offset"].to(device))
        state = NF4State(absmax=stored[f"{name}.weight.absmax"].to(device), shape=info["shape"],
                         dtype=_DTYPES[info["dtype"]], blocksize=info["blocksize"], nested=nested)
        packed = stored[f"{name}.weight.packed"].to(device)
        bias = stored[f"{name}.bias"].to(device) if f"{name}.bias" in stored else None
        compute_dtype = _DTYPES[info["compute_dtype"]]
        if (backend or info["backend"]) == "reference":
            layer = NF4Linear(packed, state, bias, compute_dtype)
        else:
            from .bnb import make_linear4bit
            layer = make_linear4bit(packed, state, bias, compute_dtype)
        layer.train(linear.training)
        _replace(model, name, layer)
    with torch.no_grad():
        for key, target in targets.items():
            target.copy_(stored[key])
    return model
