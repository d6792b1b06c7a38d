"""What a peft adapter folder may hold to load here, and why anything else is refused (AdapterError, one line).

The config (`read_adapter_config`). We read only plain LoRA: one r, one alpha, A and B on nn.Linear layers,
nothing else changed in the base. Each other option is refused by name, because loading it as plain LoRA would
compute something else without any error:
- variants that change the forward pass or the file's keys (DoRA, per-layer ranks, LoRA on biases, ...): PLAIN_LORA;
- initialisations that also change the base weights (PiSSA, OLoRA, CorDA, LoRA-GA subtract their starting A @ B
  from W; LoftQ replaces W by a quantized residual): their A and B fit only that changed base.

The tensors (`place_tensor`, one key at a time, all before load_adapter changes anything): lora_A / lora_B of a
module the config's `target_modules` names, and whole tensors of a module its `modules_to_save` names, matched by
peft's rules; each floating (or of the model's own integer dtype), finite, and of the model's shape. Anything else,
a base weight above all, is refused: an adapter file can never overwrite the model it is loaded into.

Pinned by tests/test_lora_adapter.py: one refusal per variant and per bad tensor, the model bit-identical after.
"""

import json
import math
import re
from pathlib import Path

import torch
from torch import nn

from .layer import LoRALinear
from .select import close_names

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."  # peft's prefix: PeftModel.base_model (LoraModel) .model (the wrapped model)
LORA_KEYS = {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B"}

# peft options beyond plain LoRA, with their plain value; we write these plain values into our configs.
PLAIN_LORA = {"use_dora": False, "fan_in_fan_out": False, "bias": "none", "lora_bias": False, "rank_pattern": {},
              "alpha_pattern": {}, "use_qalora": False, "layer_replication": None, "trainable_token_indices": None,
              "target_parameters": None, "alora_invocation_tokens": None, "arrow_config": None, "use_bdlora": None,
              "kasa_config": None, "monteclora_config": None}

# Initialisations that change the base, matched as peft matches them: by prefix, in any case ("pissa_niter_16",
# "corda_kpm"). peft's own list for weight conversion. The others (True, "gaussian", "eva", "orthogonal", "mica")
# start A and B elsewhere but leave the base as it is, so their adapters load.
CONVERTIBLE_INITS = ("pissa", "corda", "olora", "lora_ga")


class AdapterError(ValueError):
    """An adapter folder, or a save request, that does not fit: the one-line message names the file, key or option."""


def read_adapter_config(directory) -> dict:
    """adapter_config.json of a plain-LoRA peft adapter, validated; AdapterError for anything else."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file() or not (Path(directory) / WEIGHTS_NAME).is_file():
        raise AdapterError(f"no adapter at {directory}: expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path} is not JSON: {err}") from None
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{path} is a {config.get('peft_type')!r} adapter; only LoRA adapters can be loaded")
    for option, plain in PLAIN_LORA.items():
        if config.get(option) not in (None, plain):
            raise AdapterError(f"{path} sets {option}={config[option]!r}; this minimal LoRA supports only "
                               f"{option}={plain!r}")
    r, alpha, dropout = config.get("r"), config.get("lora_alpha", 8), config.get("lora_dropout", 0.0)  # 8: peft's
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise AdapterError(f"{path} has r={r!r}; expected a positive integer")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:  # NaN too
        raise AdapterError(f"{path} has lora_alpha={alpha!r}; expected a positive number")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise AdapterError(f"{path} has lora_dropout={dropout!r}; expected a number in [0, 1)")
    for key, regex_too in (("target_modules", True), ("modules_to_save", False)):  # as peft's LoraConfig types them
        names = config.get(key)
        if not (names is None or regex_too and isinstance(names, str) or isinstance(names, list) and all(
                isinstance(name, str) for name in names)):
            raise AdapterError(f"{path} has {key}={names!r}; expected a list of module names"
                               f"{', a regex string' if regex_too else ''} or null")

    init = config.get("init_lora_weights")
    changed = f"{path} was trained from init_lora_weights={init!r}, which also changes the base model's weights: its " \
              "A and B fit only that changed base, not the original one."
    if isinstance(init, str) and init.lower().startswith(CONVERTIBLE_INITS):
        raise AdapterError(f"{changed} Save it from peft with save_pretrained(..., path_initial_model_for_weight_"
                           "conversion=<the initial adapter>), which turns it into plain LoRA on the original base, "
                           "and load that.")
    if isinstance(init, str) and init.lower() == "loftq":
        raise AdapterError(f"{changed} LoftQ replaces the base by a quantized residual: use the adapter with the base "
                           "model peft's LoftQ initialisation saved, in peft.")
    return {**config, "lora_alpha": alpha, "lora_dropout": dropout, "use_rslora": bool(config.get("use_rslora"))}


def _is_target(path: str, target_modules) -> bool:
    """peft's rule: a string is a regex that matches the whole path; a list entry is the path or its last parts."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, path) is not None
    return any(path == name or path.endswith("." + name) for name in target_modules or ())


def _is_saved(path: str, modules_to_save) -> bool:
    """peft's rule: the module, or one it lies inside, has a path that ends with a listed name."""
    parts = path.split(".")
    return any(".".join(parts[:i]).endswith(name) for i in range(1, len(parts) + 1) for name in modules_to_save or ())


def place_tensor(key: str, value: torch.Tensor, config: dict, ours: dict[str, str], modules: dict[str, nn.Module]):
    """Where one tensor of the file goes: (our module path, "lora_A" | "lora_B" | a tensor name, the model's
    tensor it replaces, or None for LoRA). `ours`: checkpoint module path -> ours. AdapterError names the key."""
    name = key.removeprefix(PREFIX)
    suffix = next((s for s in LORA_KEYS if name.endswith(s)), None)
    if name == key or (suffix is None and ".lora_" in name):
        raise AdapterError(f"{key}: not a key of plain LoRA in peft's format")
    if suffix:  # "<module>.lora_A.weight" -> ("<module>", "lora_A")
        theirs, attribute = name.removesuffix(suffix), LORA_KEYS[suffix]
        if not _is_target(theirs, config.get("target_modules")):
            raise AdapterError(f"{key}: LoRA on {theirs!r}, which the config's target_modules does not name")
    else:  # "<head module>.weight" -> ("<head module>", "weight")
        theirs, _, attribute = name.rpartition(".")
        if not _is_saved(theirs, config.get("modules_to_save")):
            raise AdapterError(f"{key}: a tensor of the base model, not of a module in the config's modules_to_save")
    if theirs not in ours:
        hint = close_names(theirs, ours)
        raise AdapterError(f"{key}: no module {theirs!r} in this model"
                           + (f" (close names: {', '.join(hint)})" if hint else ""))
    module, r = modules[ours[theirs]], config["r"]
    if suffix:
        if not isinstance(module, nn.Linear | LoRALinear):
            raise AdapterError(f"{key}: LoRA on a {type(module).__name__}, not an nn.Linear")
        if isinstance(module, LoRALinear) and (module.merged or module.r != r):
            raise AdapterError(f"{key}: the model's LoRA there is merged or of rank {module.r}, the adapter's is "
                               f"r={r}; load it into an unmerged model without other LoRA")
        target = None
        shape = (r, module.in_features) if attribute == "lora_A" else (module.out_features, r)  # A (r, in), B (out, r)
    else:
        target = module._parameters.get(attribute, module._buffers.get(attribute))  # its own, not a submodule's
        if target is None:
            raise AdapterError(f"{key}: {ours[theirs]!r} has no parameter or buffer {attribute!r}")
        shape = tuple(target.shape)
    if target is None or target.is_floating_point():
        if not value.is_floating_point():
            raise AdapterError(f"{key}: dtype {value.dtype}; a floating dtype expected")
    elif value.dtype != target.dtype:  # an integer buffer (a step counter) keeps its exact dtype
        raise AdapterError(f"{key}: dtype {value.dtype}; {target.dtype} expected")
    if tuple(value.shape) != shape:
        raise AdapterError(f"{key}: shape {tuple(value.shape)} in the adapter, {shape} expected")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise AdapterError(f"{key}: holds NaN or inf")
    return ours[theirs], attribute, target


def same_base(ours: str, theirs: str) -> bool:
    """Same model name, or two paths to the same folder."""
    if Path(ours).is_dir() and Path(theirs).is_dir():
        return Path(ours).resolve() == Path(theirs).resolve()
    return ours.rstrip("/") == theirs.rstrip("/")
