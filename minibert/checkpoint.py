"""Checkpoint I/O: Hugging Face folders (config.json + model.safetensors) <-> minibert modules, by an explicit map.

Our module names and the checkpoint's differ by family (DistilBERT's `transformer.layer.0.attention.q_lin`,
BERT's `encoder.layer.0.attention.self.query`); the table that maps them is in hf_names.py. Loading checks every
key: missing, unexpected and mis-shaped tensors are all named in one error, because a wrong checkpoint should fail
here, not as 50% accuracy an hour later. Each tensor we copy must also be floating point (an int tensor would be
cast to float without a word, a NaN would only surface as a NaN loss) and finite; config.json is checked key by key
in config.py. `check_tokenizer_fits` refuses a tokenizer whose ids would index past the embedding table.
Pinned by tests/test_checkpoint.py and tests/test_refusals_on_load.py.

We read only safetensors: a `.bin` file is a Python pickle, and unpickling runs arbitrary code.
"""

import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

# CheckpointError lives beside read_config, which raises it too; callers import it from here.
from .config import CheckpointError, Config, read_config, write_config
# hf_module_name is imported from here by callers that name modules for checkpoints.
from .hf_names import BASE_PREFIX, HEAD_NAMES, hf_module_name, module_map  # noqa: F401
from .model import Classifier, Encoder
from .paths import resolve_model_dir

log = logging.getLogger("minibert")

WEIGHTS = "model.safetensors"
# Pretraining leftovers a fine-tuning checkpoint may carry; not part of a classifier, skipped on purpose.
IGNORED = ("embeddings.position_ids", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "cls.")


def parameter_map(model: nn.Module, config: Config, prefix: str = "") -> dict[str, str]:
    """Our state_dict keys -> checkpoint keys. `prefix` is where `model` sits in a Classifier ("encoder.")."""
    modules = module_map(config)
    out = {}
    for key in model.state_dict():
        module, _, param = (prefix + key).rpartition(".")
        out[key] = f"{modules[module]}.{param}"
    return out


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------

def weights_file(folder: Path) -> Path:
    path = folder / WEIGHTS
    if path.is_file():
        return path
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
    if pickles:
        raise CheckpointError(
            f"{folder} holds only {pickles}: PyTorch pickles, which minibert never loads (unpickling runs arbitrary "
            "code). Convert it once to safetensors, e.g. with transformers: "
            "`AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`."
        )
    raise FileNotFoundError(f"no {WEIGHTS} in {folder}")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        raise CheckpointError(f"{path} is a PyTorch pickle; minibert reads only .safetensors (see weights_file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:
        raise CheckpointError(f"cannot read {path} as safetensors: {err}") from None


# Old BERT checkpoints (bert-base-uncased's own) still call LayerNorm's weight and bias gamma and beta
OLD_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def modern_name(key: str) -> str:
    for old, new in OLD_SUFFIXES.items():
        if key.endswith(old):
            return key.removesuffix(old) + new
    return key


def _not_floating(tensors: dict[str, torch.Tensor], keys) -> list[str]:
    return [f"{k} ({tensors[k].dtype})" for k in keys if not tensors[k].is_floating_point()]


def _not_finite(tensors: dict[str, torch.Tensor], keys) -> list[str]:
    counts = {k: int((~torch.isfinite(tensors[k])).sum()) for k in keys if tensors[k].is_floating_point()}
    return [f"{k} ({n} NaN or inf)" for k, n in counts.items() if n]


def _mis_shaped(tensors: dict[str, torch.Tensor], state: dict, wanted: dict[str, str]) -> list[str]:
    return [f"{theirs}: checkpoint {tuple(tensors[theirs].shape)} vs model {tuple(state[ours].shape)}"
            for ours, theirs in wanted.items() if theirs in tensors and tensors[theirs].shape != state[ours].shape]


def load_into(model: nn.Module, tensors: dict[str, torch.Tensor], config: Config, prefix: str = "",
              source: str = "checkpoint") -> list[str]:
    """Copy checkpoint `tensors` into `model`; returns our keys that were absent and left freshly initialised.

    The head may be absent (a bare encoder checkpoint): it keeps its random init, as transformers does.
    Anything else absent, left over, of the wrong shape, not floating point or not finite is an error that
    names `source` (the file) and every such key.
    """
    base = BASE_PREFIX[config.family]
    tensors = {modern_name(k): v for k, v in tensors.items()}
    if not any(k.startswith(base) for k in tensors):  # a bare encoder: give it the prefix it would have
        tensors = {base + k: v for k, v in tensors.items()}
    wanted = parameter_map(model, config, prefix)
    head = tuple(HEAD_NAMES[config.family].values())
    missing, new_head = [], []
    for ours, theirs in wanted.items():
        if theirs not in tensors:
            (new_head if theirs.startswith(head) else missing).append(f"{theirs} (ours: {ours})")
    used = set(wanted.values())
    leftover = [k for k in tensors if k not in used and not k.removeprefix(base).startswith(IGNORED)]
    if prefix:  # loading an encoder alone: a classifier checkpoint's head is expected, not unexpected
        leftover = [k for k in leftover if not k.startswith(head)]
    present = [k for k in wanted.values() if k in tensors]
    state = model.state_dict()
    checks = {"missing": missing, "unexpected": leftover, "shape mismatch": _mis_shaped(tensors, state, wanted),
              "not floating point": _not_floating(tensors, present), "not finite": _not_finite(tensors, present)}
    problems = [f"{what}: {keys}" for what, keys in checks.items() if keys]
    if problems:
        raise CheckpointError(f"{source} does not fit the model -- " + "; ".join(problems))
    with torch.no_grad():
        for ours, theirs in wanted.items():
            if theirs in tensors:
                state[ours].copy_(tensors[theirs])
    if new_head:
        log.info("not in the checkpoint, freshly initialised: %s", ", ".join(new_head))
    return new_head


def check_tokenizer_fits(tokenizer, config: Config, where: str = "the model") -> None:
    """Refuse a tokenizer with more ids than the model has embedding rows: its largest ids would index past the
    table (an IndexError mid-epoch on CPU, a device-side assert on CUDA)."""
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {tokenizer.vocab_size} ids but {where} has {config.vocab_size} embedding rows "
            "(config.json key 'vocab_size'); use the tokenizer saved with the model")


def _folder_and_config(path, **overrides) -> tuple[Path, Config]:
    folder = resolve_model_dir(path)
    return folder, read_config(folder).with_(**overrides)


def load_encoder(path, **overrides) -> Encoder:
    """A pretrained encoder: `forward(input_ids, attention_mask)` -> last hidden state (B, T, D)."""
    folder, config = _folder_and_config(path, **overrides)
    path = weights_file(folder)
    encoder = Encoder(config)
    load_into(encoder, read_tensors(path), config, prefix="encoder.", source=str(path))
    return encoder.eval()


def load_classifier(path, num_labels: int | None = None, **overrides) -> Classifier:
    """A classifier: `forward(input_ids, attention_mask)` -> logits (B, num_labels).

    `num_labels`: None keeps the checkpoint's own (config.json's id2label; 2 when it names none). From a bare
    encoder checkpoint the head is new (BERT: the checkpoint's pooler is kept, the classifier is new); from a
    classifier checkpoint its head must have `num_labels` outputs. `overrides` set Config fields
    (e.g. pooling="mean", attention="math", dropout=0.0, labels=("negative", "positive")).
    """
    folder = resolve_model_dir(path)
    config = read_config(folder)
    if num_labels is not None and num_labels != config.num_labels:  # a new head: the saved names do not apply
        overrides = {"labels": (), **overrides, "num_labels": num_labels}
    config = config.with_(**overrides)
    path = weights_file(folder)
    model = Classifier(config)
    load_into(model, read_tensors(path), config, source=str(path))
    return model.eval()


def build_classifier(config: Config) -> Classifier:
    """A randomly initialised classifier (BERT's init), e.g. from `minibert.config.preset(...)`."""
    return Classifier(config)


# --------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------

def save_pretrained(model: Classifier, folder) -> Path:
    """Write `model` so that `transformers.AutoModelForSequenceClassification.from_pretrained(folder)` loads it.

    With `pooling="mean"` transformers would still read the first token: the logits then differ, so we warn.
    """
    folder = Path(folder)
    config = model.config
    # Only a plain float model has Hugging Face's layout: adapters and 4-bit weights have other tensors
    modules = module_map(config)
    foreign = [k for k, v in model.state_dict().items()
               if k.rpartition(".")[0] not in modules or not v.is_floating_point()]
    if foreign:
        raise CheckpointError(
            f"save_pretrained writes a plain float model; these tensors have no place in its layout: {foreign[:4]}"
            f"{' ...' if len(foreign) > 4 else ''}. Fold adapters in first (lora.merge_and_unload) and "
            "dequantize 4-bit layers (quant.dequantize_model), or save those with lora.save_adapter / quant.save_4bit")
    names = parameter_map(model, config)
    folder.mkdir(parents=True, exist_ok=True)
    if config.pooling != "cls":
        log.warning("pooling=%r: transformers' heads read the first token, so its logits will differ", config.pooling)
    tensors = {names[k]: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    write_config(config, folder)
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})  # "pt": transformers checks this tag
    tmp.replace(folder / WEIGHTS)  # atomic: a crash never leaves half a file under the real name
    return folder
