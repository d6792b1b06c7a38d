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

Loading checks every stored tensor against the layout above (dtype and shape from the layer's metadata), and
every float tensor for NaN and inf, before anything is replaced: a file that does not fit raises QuantError
naming the file and key, and leaves the model as it was. Pinned by tests/test_refusals_on_load.py.
"""

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .double_quant import NESTED_BLOCKSIZE, DoubleQuantState
from .errors import QuantError
from .linear import NF4Linear
from .model import _replace, is_4bit_layer, layer_state
from .nf4 import BLOCKSIZES, NF4State

FORMAT = "quant-nf4/1"
_DTYPES = {str(d): d for d in (torch.float32, torch.bfloat16, torch.float16)}
BACKENDS = ("reference", "bnb")


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
        raise QuantError("save_4bit: the model has no 4-bit layers (use safetensors' save_model for a float model)")

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


# --------------------------------------------------------------------------------------------------------
# Loading: read, check everything, then replace
# --------------------------------------------------------------------------------------------------------

def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a file written by save_4bit."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise QuantError(f"{path} is not a 4-bit model saved by quant.save_4bit "
                                 f"(format {meta.get('format')!r})")
            return meta, {key: f.get_tensor(key) for key in f.keys()}
    except QuantError:
        raise
    except Exception as err:  # safetensors reports a torn or foreign file in its own words
        raise QuantError(f"cannot read {path} as safetensors ({err}); save it again with quant.save_4bit") from None


def _metadata_json(meta: dict, key: str, path: Path) -> dict:
    try:
        value = json.loads(meta[key])
    except (KeyError, json.JSONDecodeError):
        raise QuantError(f"{path}: metadata[{key!r}] is missing or not JSON; save the model again") from None
    if not isinstance(value, dict):
        raise QuantError(f"{path}: metadata[{key!r}] must be a JSON object, got {type(value).__name__}")
    return value


def _check_layer_info(name: str, info, path: Path) -> None:
    """The metadata of one 4-bit layer: the keys load_4bit reads, each of the kind it needs."""
    checks = {
        "shape": lambda v: isinstance(v, list) and len(v) == 2 and all(type(n) is int and n > 0 for n in v),
        "dtype": lambda v: v in _DTYPES, "compute_dtype": lambda v: v in _DTYPES,
        "blocksize": lambda v: type(v) is int and v in BLOCKSIZES, "quant_type": lambda v: v == "nf4",
        "double_quant": lambda v: isinstance(v, bool), "backend": lambda v: v in BACKENDS,
    }
    if not isinstance(info, dict):
        raise QuantError(f"{path}: metadata['quant'][{name!r}] must be an object, got {info!r}")
    found = {key: info.get(key) for key, ok in checks.items() if key not in info or not ok(info[key])}
    if found:
        raise QuantError(f"{path}: metadata['quant'][{name!r}] has missing or invalid {found}; "
                         "the file is not save_4bit's, save the model again")


def _expected_layout(info: dict) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """Suffix -> (dtype, shape) of each stored tensor of one 4-bit layer (the table in the module docstring)."""
    numel = math.prod(info["shape"])
    n_blocks = math.ceil(numel / info["blocksize"])
    layout = {".weight.packed": (torch.uint8, (math.ceil(numel / 2),))}
    if info["double_quant"]:
        layout[".weight.absmax"] = (torch.uint8, (n_blocks,))
        layout[".weight.nested_absmax"] = (torch.float32, (math.ceil(n_blocks / NESTED_BLOCKSIZE),))
        layout[".weight.nested_offset"] = (torch.float32, ())
    else:
        layout[".weight.absmax"] = (torch.float32, (n_blocks,))
    return layout


def _check_layer_tensors(name: str, info: dict, stored: dict[str, torch.Tensor], path: Path) -> None:
    for suffix, (dtype, shape) in _expected_layout(info).items():
        key = name + suffix
        if key not in stored:
            raise QuantError(f"{path}: {key} is missing; the file is incomplete, save the model again")
        t = stored[key]
        if t.dtype != dtype or tuple(t.shape) != shape:
            raise QuantError(f"{path}: {key} is {t.dtype} {tuple(t.shape)}, a 4-bit layer of shape {info['shape']} "
                             f"stores {dtype} {shape}; the file is not save_4bit's, save the model again")


def _check_into_model(model: nn.Module, name: str, info: dict, stored: dict, path: Path, backend) -> None:
    """The skeleton has a plain Linear of the stored shape, with a bias exactly where the file has one."""
    try:
        linear = model.get_submodule(name)
    except AttributeError:
        raise QuantError(f"{path}: 4-bit layer {name!r} does not exist in this model") from None
    if not isinstance(linear, nn.Linear) or list(linear.weight.shape) != info["shape"]:
        raise QuantError(f"{path}: {name!r} must be an nn.Linear of shape {info['shape']} in the model, got "
                         f"{type(linear).__name__} {list(getattr(linear, 'weight', torch.empty(0)).shape)}")
    if (f"{name}.bias" in stored) != (linear.bias is not None):
        raise QuantError(f"{path}: {name!r} has bias={f'{name}.bias' in stored} in the file, "
                         f"{linear.bias is not None} in the model")
    if (backend or info["backend"]) == "bnb":
        from .bnb import check_cpu_shape
        check_cpu_shape(info["shape"][1], info["blocksize"], linear.weight.device)


def _check_plain_tensors(targets: dict[str, torch.Tensor], stored: dict, path: Path) -> None:
    """Biases, norms, embeddings: the model's shape, a float where the model has a float (an int would be cast
    to float without a word)."""
    for key, target in targets.items():
        if target.shape != stored[key].shape:
            raise QuantError(f"{path}: {key} has shape {tuple(stored[key].shape)}, the model {tuple(target.shape)}")
        if target.is_floating_point() and not stored[key].is_floating_point():
            raise QuantError(f"{path}: {key} is {stored[key].dtype}, the model holds floats there; "
                             "the file is not save_4bit's, save the model again")


def _check_finite(stored: dict[str, torch.Tensor], path: Path) -> None:
    bad = [k for k, t in stored.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise QuantError(f"{path}: {bad[:5]} hold NaN or inf values; the file is damaged, save the model again")


def load_4bit(model: nn.Module, path: str | Path, backend: str | None = None) -> nn.Module:
    """Load a file written by save_4bit into the float skeleton `model` (in place); returns model.

    backend: "bnb" or "reference" for every layer; None uses the backend each layer was saved with.
    """
    meta, stored = _read(path)
    layers, aliases = _metadata_json(meta, "quant", path), _metadata_json(meta, "aliases", path)

    # Everything is checked before anything is replaced: a file that does not fit leaves the model as it was.
    for name, info in layers.items():
        _check_layer_info(name, info, path)
        _check_layer_tensors(name, info, stored, path)
        _check_into_model(model, name, info, stored, path, backend)
    targets = {k: v for k, v in model.state_dict().items() if not _inside(k, layers)}  # the float tensors
    for alias, source in aliases.items():
        if alias in targets and source in stored:
            stored[alias] = stored[source]
    float_stored = {k for k in stored if not _inside(k, layers)}
    missing, unexpected = sorted(set(targets) - float_stored), sorted(float_stored - set(targets))
    if missing or unexpected:
        raise QuantError(f"{path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    _check_plain_tensors(targets, stored, path)
    _check_finite(stored, path)

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
