"""Saving and loading a LoRA adapter in peft's on-disk format, so adapters move between us and peft both ways.

An adapter folder holds two files, exactly as peft 0.21.2 writes and reads them:

    adapter_config.json          {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": [...],
                                  "modules_to_save": ["pre_classifier", "classifier"], "task_type": "SEQ_CLS", ...}
    adapter_model.safetensors    base_model.model.<module path>.lora_A.weight     (r, in)
                                 base_model.model.<module path>.lora_B.weight     (out, r)
                                 base_model.model.<head path>.weight / .bias      the trained head, whole

What is unusual here:
- Names. peft addresses modules by their path in the transformers model it wrapped. A model whose own paths differ
  (a from-scratch `encoder.layers.0.attention.q_lin` is `distilbert.transformer.layer.0.attention.q_lin` there)
  says so with one method, which save and load call by themselves:

      model.hf_module_name(path: str) -> str    # our path -> the checkpoint's; KeyError if the checkpoint has none

  `module_name_map=`, a function of the same shape, stands in for it on a model without one. Loading inverts the
  names by applying them to every module of the model.
- The head is named by the caller (`modules_to_save=`, no default): a head left out of the file is what makes a
  reloaded classifier predict at random (peft #577, #876). peft keeps a trained head as a copy inside a wrapper
  but saves it under the plain module key, without the adapter name; so do we.
- Loading is all or nothing: every tensor is checked (adapter_checks.py) before any weight changes.

Tested by round trips with peft 0.21.2 (`PeftModel.from_pretrained`, `save_pretrained`) in tests/test_lora_adapter.py
and tests/test_lora_minibert.py.
"""

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .adapter_checks import (
    CONFIG_NAME, PLAIN_LORA, PREFIX, WEIGHTS_NAME, AdapterError, place_tensor, read_adapter_config, same_base,
)
from .inject import inject, lora_layers
from .layer import LoRALinear
from .select import close_names, is_inside, model_modules


def checkpoint_names(model: nn.Module, module_name_map: Callable[[str], str] | None = None) -> dict[str, str]:
    """Our module path -> the checkpoint's, for every module (but the root) that has one (see the module docstring)."""
    rename = module_name_map or getattr(model, "hf_module_name", None) or (lambda path: path)
    names = {}
    for path in (path for path, _ in model_modules(model) if path):
        try:
            names[path] = rename(path)
        except KeyError:  # a module the checkpoint does not have (a container, a dropout)
            continue
    if len(set(names.values())) != len(names):
        raise AdapterError(f"the module names of {type(model).__name__} send two modules to one checkpoint name")
    return names


def save_adapter(model: nn.Module, directory, *, modules_to_save: Sequence[str],
                 module_name_map: Callable[[str], str] | None = None, base_model_name_or_path: str | None = None,
                 task_type: str | None = None) -> Path:
    """Write the model's LoRA weights and its trained head as a peft adapter folder; returns the folder.

    modules_to_save: exact paths of the modules trained fully, e.g. ("pre_classifier", "classifier"); () for none.
    module_name_map: our module path -> the checkpoint's, for a model without `hf_module_name`.
    base_model_name_or_path: recorded in the config (default: the model's `name_or_path`, if it has one).
    task_type: peft's task (default: "SEQ_CLS" when a head is saved, else none).
    """
    layers = lora_layers(model)
    if not layers:
        raise AdapterError(f"{type(model).__name__} has no LoRA layers: call lora.inject(model, ...) first")
    heads = [modules_to_save] if isinstance(modules_to_save, str) else list(modules_to_save)
    modules, names = dict(model_modules(model)), checkpoint_names(model, module_name_map)
    for head in heads:
        if head not in modules or not head:
            raise AdapterError(f"module to save {head!r} is not a module path of {type(model).__name__}"
                               f" (close names: {', '.join(close_names(head, modules)) or 'none'})")
        if any(is_inside(path, head) for path, _ in layers):
            raise AdapterError(f"module to save {head!r} holds LoRA layers; a module is adapted or trained, not both")

    def rename(path: str) -> str:
        if path not in names:
            raise AdapterError(f"{type(model).__name__} gives no checkpoint name for its module {path!r}")
        return names[path]

    tensors = {}
    for path, layer in layers:
        tensors[f"{PREFIX}{rename(path)}.lora_A.weight"] = layer.lora_A.weight  # (r, in)
        tensors[f"{PREFIX}{rename(path)}.lora_B.weight"] = layer.lora_B.weight  # (out, r)
    for head in heads:
        for key, value in modules[head].state_dict().items():  # params and persistent buffers, as peft saves
            owner, _, attribute = f"{head}.{key}".rpartition(".")
            tensors[f"{PREFIX}{rename(owner)}.{attribute}"] = value
    # safetensors wants contiguous CPU tensors that share no memory.
    tensors = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in tensors.items()}

    settings = {(layer.r, layer.alpha, layer.rslora, layer.dropout.p) for _, layer in layers}
    if len(settings) != 1:  # adapter_config.json holds one value of each
        raise AdapterError(f"LoRA layers differ in (r, alpha, rslora, dropout): {sorted(settings)}")
    (r, alpha, rslora, dropout), = settings
    if base_model_name_or_path is None:
        base_model_name_or_path = getattr(model, "name_or_path", None) or None  # transformers models have one
    config = {
        "peft_type": "LORA", "task_type": task_type or ("SEQ_CLS" if heads else None),
        "base_model_name_or_path": None if base_model_name_or_path is None else str(base_model_name_or_path),
        "r": r, "lora_alpha": alpha, "use_rslora": rslora, "lora_dropout": dropout,
        "target_modules": [rename(path) for path, _ in layers], "modules_to_save": [rename(h) for h in heads] or None,
        "init_lora_weights": True, "inference_mode": True, **PLAIN_LORA,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt"})  # "pt": the tag peft/transformers read
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def load_adapter(model: nn.Module, directory, module_name_map: Callable[[str], str] | None = None,
                 base_model_name_or_path: str | None = None, is_trainable: bool = False) -> nn.Module:
    """Put a peft LoRA adapter (and its saved head) into `model`; returns `model`, unchanged on any AdapterError.

    Modules named in the adapter get LoRA (or, if they already have LoRA, new A and B values). The base model is
    frozen; with is_trainable=True, LoRA and the loaded head stay trainable (to continue training), as in peft.
    module_name_map: our module path -> the checkpoint's, for a model without `hf_module_name`.
    base_model_name_or_path: if given, must equal the adapter's recorded base model (when it records one).
    """
    config = read_adapter_config(directory)
    recorded = config.get("base_model_name_or_path")
    if base_model_name_or_path is not None and recorded and not same_base(str(base_model_name_or_path), recorded):
        raise AdapterError(f"adapter at {directory} was trained on {recorded!r}, not on {base_model_name_or_path!r}")
    weights = Path(directory) / WEIGHTS_NAME
    try:
        tensors = load_file(weights)
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise AdapterError(f"cannot read {weights} as safetensors: {err}") from None
    ours = {theirs: path for path, theirs in checkpoint_names(model, module_name_map).items()}
    modules = dict(model_modules(model))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    heads: list[tuple[torch.Tensor, torch.Tensor]] = []  # (the model's tensor, the file's)
    try:
        for key, value in tensors.items():
            path, attribute, target = place_tensor(key, value, config, ours, modules)
            if target is None:
                pairs.setdefault(path, {})[attribute] = value
            else:
                heads.append((target, value))
        if not pairs:
            raise AdapterError("no lora_A / lora_B weights")
        for path, pair in pairs.items():
            if len(pair) != 2:
                raise AdapterError(f"{path}: {', '.join(pair)} alone; LoRA needs both lora_A and lora_B")
    except AdapterError as err:
        raise AdapterError(f"{weights}: {err}; the model is unchanged") from None

    # Everything checked: now change the model.
    r, alpha, dropout, rslora = config["r"], config["lora_alpha"], config["lora_dropout"], config["use_rslora"]
    if missing := tuple(path for path in pairs if not isinstance(modules[path], LoRALinear)):
        inject(model, targets=missing, r=r, alpha=alpha, dropout=dropout, trainable=(), rslora=rslora)
    model.requires_grad_(False)
    with torch.no_grad():
        for path, pair in pairs.items():
            layer = model.get_submodule(path)
            layer.alpha, layer.rslora, layer.dropout.p = alpha, rslora, dropout
            layer.lora_A.weight.copy_(pair["lora_A"])
            layer.lora_B.weight.copy_(pair["lora_B"])
            layer.lora_A.requires_grad_(is_trainable)
            layer.lora_B.requires_grad_(is_trainable)
        for target, value in heads:
            target.copy_(value)
            if isinstance(target, nn.Parameter):
                target.requires_grad_(is_trainable)
    return model
