"""Putting LoRA into any model: inject by name, freeze the rest, count, merge and unmerge.

`inject(model, targets, r, alpha, ...)` replaces each selected `nn.Linear` by a `LoRALinear` wrapping it, freezes
every parameter, then unfreezes LoRA's A and B and the modules listed in `trainable` (the classification head by
default). It edits the model in place and returns it.

What is unusual here:
- Nothing here knows a model family: modules are chosen by name (rules in lora/select.py). `targets=None`
  picks the query and value projections, as in the LoRA paper's main experiments (Hu et al. 2021, section 7.1:
  adapting W_q and W_v gives the best result for a fixed budget), by the names present:
  DistilBERT `q_lin`/`v_lin`, BERT `query`/`value`, Llama/GPT-style `q_proj`/`v_proj`.
- `trainable=None` keeps the classification head trainable: the top-level modules (children of the root) named
  `pre_classifier`, `classifier` or `score`. A new head starts random, so it must be trained, and saved with the
  adapter (peft issues #577, #876: a reloaded model with a random head). BERT's `pooler` is NOT included: it is
  pretrained, peft's SEQ_CLS task leaves it frozen too (so adapters stay interchangeable), and freezing it costs
  little; pass `trainable=("classifier", "pooler")` to train it. A causal LM has no such head: only A and B train.
- Nothing is recorded on the model: the caller names the same head again to `save_adapter(...,
  modules_to_save=...)`, so what is saved is written where it is decided.
- `merge` / `unmerge` are explicit calls; `merge_and_unload` swaps every LoRA layer for its merged base
  nn.Linear, to export a plain model. Model-level merge checks every layer first, so it merges all or nothing.

Tested against peft 0.21.2 on transformers DistilBERT, BERT and Llama in tests/test_lora.py.
"""

import math

from torch import nn

from .layer import LoRALinear
from .select import check_patterns, is_inside, model_modules, outermost, select

# Query/value projection names by family, tried in order; the first pair whose names are both present wins.
FAMILY_TARGETS = (("q_lin", "v_lin"), ("query", "value"), ("q_proj", "v_proj"))
# Names of classification-head modules kept trainable by default (only as children of the root module).
HEAD_NAMES = ("pre_classifier", "classifier", "score")


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """Every (path, LoRALinear) of the model, in model order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def default_targets(model: nn.Module) -> tuple[str, ...]:
    """The query/value projection names of the model's family (see FAMILY_TARGETS)."""
    last_names = {name.rsplit(".", 1)[-1] for name, _ in model_modules(model)}
    for pair in FAMILY_TARGETS:
        if set(pair) <= last_names:
            return pair
    known = ", ".join("/".join(pair) for pair in FAMILY_TARGETS)
    raise ValueError(f"cannot guess LoRA targets for {type(model).__name__}: none of the name pairs {known} is "
                     "present; pass targets=(...) with the names of the nn.Linear layers to adapt")


def default_heads(model: nn.Module) -> list[str]:
    """The root's children named like a classification head (see HEAD_NAMES); possibly none."""
    return [name for name, _ in model.named_children() if name in HEAD_NAMES]


def inject(model: nn.Module, targets=None, r: int = 8, alpha: float = 16, dropout: float = 0.1, trainable=None,
           rslora: bool = False) -> nn.Module:
    """Wrap the `targets` nn.Linear layers in LoRA, freeze all but LoRA and `trainable`; returns `model`.

    targets:   names or "re:" regexes of nn.Linear modules (None: the family's query/value projections).
    r, alpha:  rank and scale of the update, scaling = alpha / r (alpha / sqrt(r) with rslora=True).
    dropout:   dropout on LoRA's input only (0.1 as in the paper's GPT-2 runs, Hu et al. appendix D).
    trainable: names or "re:" regexes of modules trained fully and saved with the adapter (None: the head).
    Everything is checked before anything changes: on error the model is untouched.
    """
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"LoRA rank r must be a positive integer; got r={r!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < math.inf:  # NaN fails too
        raise ValueError(f"LoRA alpha must be a positive number; got alpha={alpha!r}")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1); got dropout={dropout!r}")
    modules = dict(model_modules(model))

    target_patterns = default_targets(model) if targets is None else check_patterns(targets, "LoRA target")
    target_paths = select(model, target_patterns, "LoRA target")
    for path in target_paths:
        module = modules[path]
        if isinstance(module, LoRALinear):
            raise ValueError(f"LoRA target {path!r} already has LoRA: inject once per layer")
        if not isinstance(module, nn.Linear):
            raise TypeError(f"LoRA target {path!r} is a {type(module).__name__}, not an nn.Linear; "
                            "choose the linear layers inside it (e.g. by their last name)")

    head_paths = default_heads(model) if trainable is None else outermost(select(model, trainable, "trainable module"))
    for head in head_paths:
        for path, _ in lora_layers(model):
            if is_inside(path, head):
                raise ValueError(f"trainable module {head!r} contains the LoRA layer {path!r}: a module is either "
                                 "adapted by LoRA or trained fully, not both")
        for path in target_paths:
            if is_inside(path, head) or is_inside(head, path):
                raise ValueError(f"trainable module {head!r} overlaps the LoRA target {path!r}: a module is either "
                                 "adapted by LoRA or trained fully, not both")

    # All checks passed: now change the model.
    # BEGIN ASSIGNMENT lora_inject: freeze the whole model; put each target's layer inside a LoRALinear, in its parent's attribute; then only LoRA's A and B (unmerged layers) and the head modules train
    model.requires_grad_(False)
    for path in target_paths:
        parent_path, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent_path), child, LoRALinear(modules[path], r, alpha, dropout, rslora))
    for _, layer in lora_layers(model):
        if not layer.merged:
            layer.lora_A.requires_grad_(True)
            layer.lora_B.requires_grad_(True)
    for head in head_paths:
        model.get_submodule(head).requires_grad_(True)
    # END ASSIGNMENT
    return model


def parameter_count(param: nn.Parameter) -> int:
    """Number of weights a parameter stands for.

    A 4-bit parameter (bitsandbytes' Params4bit, recognised by its `quant_state` and integer storage, without
    importing bitsandbytes) packs two weights per stored byte, so it counts `numel * element_size * 2`.
    """
    if getattr(param, "quant_state", None) is not None and not param.is_floating_point():
        return param.numel() * param.element_size() * 2
    return param.numel()


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared parameters count once, 4-bit ones as the weights they hold."""
    params = list(model.parameters())  # de-duplicated by nn.Module
    return sum(parameter_count(p) for p in params if p.requires_grad), sum(parameter_count(p) for p in params)


def format_trainable(model: nn.Module) -> str:
    """'trainable: 739,586 of 67,102,466 (1.10%)' (DistilBERT-base, r=8 on q,v + head): train.py prints it."""
    trainable, total = trainable_parameters(model)
    share = 100.0 * trainable / total if total else 0.0
    return f"trainable: {trainable:,} of {total:,} ({share:.2f}%)"


def merge(model: nn.Module) -> nn.Module:
    """Fold every unmerged LoRA layer into its base weight; all or nothing (each base is checked first)."""
    pending = [layer for _, layer in lora_layers(model) if not layer.merged]
    for layer in pending:
        layer.check_mergeable()
    for layer in pending:
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Take every merged LoRA update back out of its base weight."""
    for _, layer in lora_layers(model):
        if layer.merged:
            layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then replace each LoRA layer by its base nn.Linear (now holding W + scaling B A): a plain model.

    The adapter is gone afterwards (A and B are dropped); the merged base weights keep requires_grad=False.
    """
    merge(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.base_layer)
    return model
