"""Saving and loading a LoRA adapter in peft's on-disk format, so adapters move between us and peft both ways.

An adapter folder holds two files, exactly as peft 0.21.2 writes and reads them:

    adapter_config.json          {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": [...],
                                  "modules_to_save": ["pre_classifier", "classifier"], "task_type": "SEQ_CLS", ...}
    adapter_model.safetensors    base_model.model.<module path>.lora_A.weight     (r, in)
                                 base_model.model.<module path>.lora_B.weight     (out, r)
                                 base_model.model.<head path>.weight / .bias      the trained head, whole

What is unusual here:
- peft keeps a trained head as a copy inside a wrapper (`classifier.modules_to_save.default.weight`) but saves it
  under the plain module key (`base_model.model.classifier.weight`), without the adapter name; so do we. A head
  saved with the adapter is what makes a reloaded classifier predict like the trained one (peft #577, #876).
- We write `target_modules` as the exact module paths that carry LoRA (peft matches a list entry equal to the
  path exactly), and `modules_to_save` as the exact head paths.
- Loading trusts the tensor file, not the name patterns of the config: every `<path>.lora_A.weight` names a
  module that gets LoRA, every other key names a parameter of a head. So an adapter written by peft loads
  without re-implementing peft's (suffix-based) matching rules.
- Our module paths may differ from the ones in the checkpoint (a from-scratch model's
  `encoder.layers.0.attention.q_lin` is `distilbert.transformer.layer.0.attention.q_lin` in transformers).
  `module_name_map` (a function or a dict) turns OUR path into the checkpoint's; pass the same map to save and to
  load: loading inverts it by applying it to every module of the model.
- Loading checks everything first (modules exist, are nn.Linear, shapes agree, config is plain LoRA, base model
  name) and raises one error listing the problems; on error the model is untouched.

Tested by round trips with peft 0.21.2 (`PeftModel.from_pretrained`, `save_pretrained`) in tests/test_lora.py.
"""

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .inject import lora_layers
from .layer import LoRALinear
from .select import close_names, model_modules

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."  # peft's prefix: PeftModel.base_model (LoraModel) .model (the wrapped model)
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")
# peft options beyond plain LoRA (variants that change the forward pass or the file's keys). An adapter that sets
# any of them to something else is refused rather than misread; we write these plain values into our configs.
PLAIN_LORA = {"use_dora": False, "fan_in_fan_out": False, "bias": "none", "lora_bias": False, "rank_pattern": {},
              "alpha_pattern": {}, "use_qalora": False, "layer_replication": None, "trainable_token_indices": None,
              "target_parameters": None, "alora_invocation_tokens": None, "arrow_config": None, "use_bdlora": None,
              "kasa_config": None, "monteclora_config": None}

# peft initialisations that subtract their starting A @ B from the base weights (PiSSA and "pissa_niter_N", CorDA and
# its variants, OLoRA, LoRA-GA; peft's own list for weight conversion) or replace the base by a quantized residual
# (LoftQ): an adapter trained from one fits only that changed base. The others (True, "gaussian", "eva",
# "orthogonal", "mica") start from the base as it is. Matched as peft matches them: by prefix, in any case.
CONVERTIBLE_INITS = ("pissa", "corda", "olora", "lora_ga")

ModuleNameMap = Callable[[str], str] | Mapping[str, str] | None


def _renamer(module_name_map: ModuleNameMap) -> Callable[[str], str | None]:
    """Our module path -> the checkpoint's, or None for a module the map does not name (it raised KeyError).

    No map: names are kept. A dict maps exact paths and keeps the others. A function may raise KeyError for modules
    it does not know (e.g. a map that only knows the modules a transformers checkpoint has).
    """
    if module_name_map is None:
        return lambda path: path
    if isinstance(module_name_map, Mapping):
        return lambda path: module_name_map.get(path, path)

    def rename(path: str) -> str | None:
        try:
            return module_name_map(path)
        except KeyError:
            return None
    return rename


def _shared(layers: list[tuple[str, LoRALinear]], name: str, get: Callable[[LoRALinear], object]):
    """The one value of a setting that all LoRA layers share (a peft config holds a single r, alpha, ...)."""
    values = {get(layer) for _, layer in layers}
    if len(values) != 1:
        raise ValueError(f"LoRA layers disagree on {name} ({sorted(values)}); adapter_config.json holds one value")
    return values.pop()


def save_adapter(model: nn.Module, directory, module_name_map: ModuleNameMap = None,
                 base_model_name_or_path: str | None = None, task_type: str | None = None,
                 modules_to_save=None) -> Path:
    """Write the model's LoRA weights and trained head as a peft adapter folder; returns the folder.

    module_name_map: our module path -> the checkpoint's (see the module docstring).
    base_model_name_or_path: recorded in the config (default: the model's `name_or_path`, if it has one).
    task_type: peft's task, e.g. "SEQ_CLS" (default: "SEQ_CLS" when a head is saved, else none).
    modules_to_save: exact paths of fully trained modules to save (default: `model.lora_modules_to_save`, which
    `inject` sets to the trained head).
    Everything is checked before the folder is written.
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA layers: call lora.inject(model, ...) first")
    to_checkpoint = _renamer(module_name_map)

    def rename(path: str) -> str:
        name = to_checkpoint(path)
        if not name:
            raise ValueError(f"module_name_map gives no checkpoint name for our module {path!r}")
        return name

    heads = list(getattr(model, "lora_modules_to_save", ()) if modules_to_save is None else modules_to_save)
    known = dict(model_modules(model))
    for head in heads:
        if head not in known or not head:
            raise ValueError(f"module to save {head!r} is not a module path of {type(model).__name__}"
                             f" (close names: {', '.join(close_names(head, known)) or 'none'})")
        if any(path == head or path.startswith(head + ".") for path, _ in layers):
            raise ValueError(f"module to save {head!r} holds LoRA layers; save heads and LoRA layers separately")

    tensors: dict[str, torch.Tensor] = {}
    for path, layer in layers:
        tensors[f"{PREFIX}{rename(path)}.lora_A.weight"] = layer.lora_A.weight  # (r, in)
        tensors[f"{PREFIX}{rename(path)}.lora_B.weight"] = layer.lora_B.weight  # (out, r)
    for head in heads:
        for key, value in known[head].state_dict().items():  # params and persistent buffers, as peft saves
            owner, _, attribute = f"{head}.{key}".rpartition(".")
            tensors[f"{PREFIX}{rename(owner)}.{attribute}"] = value
    if len(tensors) != 2 * len(layers) + sum(len(known[h].state_dict()) for h in heads):
        raise ValueError("module_name_map sends two of our modules to the same checkpoint name")
    # safetensors wants contiguous CPU tensors that share no memory.
    tensors = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in tensors.items()}

    if base_model_name_or_path is None:
        base_model_name_or_path = getattr(model, "name_or_path", None) or None  # transformers models have one
    config = {
        "peft_type": "LORA",
        "task_type": task_type if task_type is not None else ("SEQ_CLS" if heads else None),
        "base_model_name_or_path": None if base_model_name_or_path is None else str(base_model_name_or_path),
        "r": _shared(layers, "r", lambda layer: layer.r),
        "lora_alpha": _shared(layers, "alpha", lambda layer: layer.alpha),
        "use_rslora": _shared(layers, "rslora", lambda layer: layer.rslora),
        "lora_dropout": _shared(layers, "dropout", lambda layer: layer.dropout.p),
        "target_modules": [rename(path) for path, _ in layers],
        "modules_to_save": [rename(head) for head in heads] or None,
        "init_lora_weights": True,
        "inference_mode": True,
        **PLAIN_LORA,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt"})  # "pt": the tag peft/transformers read
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def read_adapter_config(directory) -> dict:
    """adapter_config.json of a plain-LoRA peft adapter, validated (clear errors for anything else)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file() or not (Path(directory) / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"no adapter at {directory}: expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    config = json.loads(path.read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{path} is a {config.get('peft_type')!r} adapter; only LoRA adapters can be loaded")
    for option, plain in PLAIN_LORA.items():
        if config.get(option) not in (None, plain):
            raise ValueError(f"{path} sets {option}={config[option]!r}; this minimal LoRA supports only "
                             f"{option}={plain!r}")
    init = config.get("init_lora_weights")
    changed = f"{path} was trained from init_lora_weights={init!r}, which also changes the base model's weights: its " \
              "A and B fit only that changed base, not the original one."
    if isinstance(init, str) and init.lower().startswith(CONVERTIBLE_INITS):
        raise ValueError(f"{changed} Save it from peft with save_pretrained(..., path_initial_model_for_weight_"
                         "conversion=<the initial adapter>), which turns it into plain LoRA on the original base, and "
                         "load that.")
    if isinstance(init, str) and init.lower() == "loftq":
        raise ValueError(f"{changed} LoftQ replaces the base by a quantized residual: use the adapter with the base "
                         "model peft's LoftQ initialisation saved, in peft.")
    return config


def _same_base(ours: str, theirs: str) -> bool:
    """Same model name, or two paths to the same folder."""
    if Path(ours).is_dir() and Path(theirs).is_dir():
        return Path(ours).resolve() == Path(theirs).resolve()
    return ours.rstrip("/") == theirs.rstrip("/")


def _sort_keys(tensors: dict[str, torch.Tensor], model: nn.Module, module_name_map: ModuleNameMap):
    """Split the file's keys into LoRA pairs and head tensors, addressed by OUR module paths.

    Returns (lora: {path: {"lora_A": A, "lora_B": B}}, head: [(owner path, attribute, tensor)], problems).
    """
    rename = _renamer(module_name_map)
    ours: dict[str, list[str]] = {}  # checkpoint module path -> our module paths (one, unless the map is wrong)
    for path, _ in model_modules(model):
        theirs = rename(path) if path else ""
        if theirs is not None:
            ours.setdefault(theirs, []).append(path)

    lora: dict[str, dict[str, torch.Tensor]] = {}
    head: list[tuple[str, str, torch.Tensor]] = []
    problems: list[str] = []
    for key, value in tensors.items():
        if not key.startswith(PREFIX):
            problems.append(f"{key}: not a peft LoRA key (expected the prefix {PREFIX!r})")
            continue
        key = key[len(PREFIX):]
        suffix = next((s for s in LORA_SUFFIXES if key.endswith(s)), None)
        if suffix is None and ".lora_" in key:
            problems.append(f"{key}: a LoRA variant tensor this minimal LoRA does not support")
            continue
        if suffix:  # "<module>.lora_A.weight" -> ("<module>", "lora_A")
            owner, attribute = key[: -len(suffix)], suffix.split(".")[1]
        else:  # "<head module>.weight" -> ("<head module>", "weight")
            owner, _, attribute = key.rpartition(".")
        if owner not in ours:
            hint = close_names(owner, ours)
            problems.append(f"{owner}: no such module in {type(model).__name__}"
                            + (f" (close names: {', '.join(hint)})" if hint else ""))
        elif len(ours[owner]) > 1:
            problems.append(f"{owner}: module_name_map sends several of our modules there: {ours[owner]}")
        elif suffix:
            lora.setdefault(ours[owner][0], {})[attribute] = value
        else:
            head.append((ours[owner][0], attribute, value))
    return lora, head, problems


def _check(config: dict, lora: dict, head: list, modules: dict[str, nn.Module]) -> list[str]:
    """Everything that would make the adapter not fit the model, as one message per problem."""
    problems = []
    r, alpha, dropout = config.get("r"), config.get("lora_alpha", 8), config.get("lora_dropout", 0.0)
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        problems.append(f"{CONFIG_NAME} has r={r!r}; expected a positive integer")
    if not isinstance(alpha, (int, float)) or alpha <= 0 or not isinstance(dropout, (int, float)) \
            or not 0 <= dropout < 1:
        problems.append(f"{CONFIG_NAME} has lora_alpha={alpha!r}, lora_dropout={dropout!r}; expected alpha > 0 "
                        "and dropout in [0, 1)")
    if not lora:
        problems.append(f"{WEIGHTS_NAME} holds no lora_A / lora_B weights")
    for path, pair in lora.items():
        module = modules[path]
        if set(pair) != {"lora_A", "lora_B"}:
            problems.append(f"{path}: the adapter holds {sorted(pair)} but LoRA needs both lora_A and lora_B")
        elif not isinstance(module, nn.Linear | LoRALinear):
            problems.append(f"{path}: the adapter puts LoRA on a {type(module).__name__}, not an nn.Linear")
        elif isinstance(module, LoRALinear) and module.merged:
            problems.append(f"{path}: its LoRA is merged; unmerge the model before loading new LoRA weights")
        elif isinstance(module, LoRALinear) and module.r != r:
            problems.append(f"{path}: already has LoRA of rank {module.r}, the adapter's is r={r}; load it into the "
                            "model without LoRA")
        else:
            for name, want in (("lora_A", (r, module.in_features)), ("lora_B", (module.out_features, r))):
                if tuple(pair[name].shape) != want:  # A (r, in), B (out, r)
                    problems.append(f"{path}.{name}.weight: shape {tuple(pair[name].shape)} in the adapter, "
                                    f"{want} expected for r={r} on this model")
    for path, attribute, value in head:
        target = _tensor_of(modules[path], attribute)
        if target is None:
            problems.append(f"{path}.{attribute}: no such parameter or buffer in the model")
        elif target.shape != value.shape:
            problems.append(f"{path}.{attribute}: shape {tuple(value.shape)} in the adapter, "
                            f"{tuple(target.shape)} in the model")
    return problems


def _tensor_of(module: nn.Module, attribute: str) -> torch.Tensor | None:
    """The module's own parameter or buffer of that name (not a submodule's), or None."""
    if attribute in module._parameters:
        return module._parameters[attribute]
    return module._buffers.get(attribute)


def load_adapter(model: nn.Module, directory, module_name_map: ModuleNameMap = None,
                 base_model_name_or_path: str | None = None, is_trainable: bool = False) -> nn.Module:
    """Put a peft LoRA adapter (and its saved head) into `model`; returns `model`, untouched on any error.

    Modules named in the adapter get LoRA (or, if they already have LoRA, new A and B values). The base model is
    frozen; with is_trainable=True, LoRA and the loaded head stay trainable (to continue training), as in peft.
    module_name_map: our module path -> the checkpoint's, the same map given to save_adapter.
    base_model_name_or_path: if given, must equal the adapter's recorded base model (when it records one).
    """
    config = read_adapter_config(directory)
    recorded = config.get("base_model_name_or_path")
    if base_model_name_or_path is not None and recorded and not _same_base(str(base_model_name_or_path), recorded):
        raise ValueError(f"adapter at {directory} was trained on {recorded!r}, not on {base_model_name_or_path!r}")
    modules = dict(model_modules(model))
    lora, head, problems = _sort_keys(load_file(Path(directory) / WEIGHTS_NAME), model, module_name_map)
    problems += _check(config, lora, head, modules)
    if problems:
        listed = "\n  ".join(problems[:12]) + (f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else "")
        raise ValueError(f"adapter at {directory} does not fit {type(model).__name__} (nothing was changed):\n  "
                         f"{listed}")

    # Everything checked: now change the model.
    r, alpha, dropout = config["r"], config.get("lora_alpha", 8), config.get("lora_dropout", 0.0)  # 8: peft's
    rslora = bool(config.get("use_rslora", False))
    model.requires_grad_(False)
    with torch.no_grad():
        for path, pair in lora.items():
            layer = modules[path]
            if not isinstance(layer, LoRALinear):
                layer = LoRALinear(layer, r, alpha, dropout, rslora)
                parent_path, _, child = path.rpartition(".")
                setattr(model.get_submodule(parent_path), child, layer)
            layer.alpha, layer.rslora, layer.dropout.p = alpha, rslora, dropout
            layer.lora_A.weight.copy_(pair["lora_A"])
            layer.lora_B.weight.copy_(pair["lora_B"])
            layer.lora_A.requires_grad_(is_trainable)
            layer.lora_B.requires_grad_(is_trainable)
        for path, attribute, value in head:
            target = _tensor_of(modules[path], attribute)
            target.copy_(value)
            if isinstance(target, nn.Parameter):
                target.requires_grad_(is_trainable)
    loaded_heads = {path for path, _, _ in head}
    model.lora_modules_to_save = tuple(path for path in modules if path in loaded_heads)  # in model order
    return model
