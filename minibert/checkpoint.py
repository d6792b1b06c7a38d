"""Checkpoint I/O: Hugging Face folders (config.json + model.safetensors) <-> minibert modules, by an explicit map.

Our module tree names every layer once, the DistilBERT way; each family's checkpoint spells them its own way:

| minibert (Classifier)               | DistilBERT checkpoint                           | BERT checkpoint                               |
|-------------------------------------|-------------------------------------------------|-----------------------------------------------|
| encoder.embeddings.word_embeddings  | distilbert.embeddings.word_embeddings           | bert.embeddings.word_embeddings               |
| encoder.layers.{i}.attention.q_lin  | distilbert.transformer.layer.{i}.attention.q_lin | bert.encoder.layer.{i}.attention.self.query  |
| encoder.layers.{i}.sa_layer_norm    | ...transformer.layer.{i}.sa_layer_norm          | ...encoder.layer.{i}.attention.output.LayerNorm |
| pre_classifier                      | pre_classifier                                  | bert.pooler.dense                             |

A checkpoint of the bare encoder (`DistilBertModel`, `BertModel`, all-MiniLM-L6-v2) has the same keys without the
`distilbert.` / `bert.` prefix. Loading checks every key: missing, unexpected and mis-shaped tensors are all named
in one error, because a wrong checkpoint should fail here, not as 50% accuracy an hour later.

We read only safetensors: a `.bin` file is a Python pickle, and unpickling runs arbitrary code.
"""

import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .config import Config, read_config, write_config
from .model import Classifier, Encoder
from .paths import resolve_model_dir

log = logging.getLogger("minibert")

WEIGHTS = "model.safetensors"
BASE_PREFIX = {"distilbert": "distilbert.", "bert": "bert."}

# Module paths, ours -> theirs, relative to the encoder. `{i}` is the layer index.
EMBEDDING_NAMES = {
    "embeddings.word_embeddings": "embeddings.word_embeddings",
    "embeddings.position_embeddings": "embeddings.position_embeddings",
    "embeddings.token_type_embeddings": "embeddings.token_type_embeddings",  # BERT only
    "embeddings.LayerNorm": "embeddings.LayerNorm",
}
LAYER_NAMES = {
    "distilbert": {
        "attention.q_lin": "transformer.layer.{i}.attention.q_lin",
        "attention.k_lin": "transformer.layer.{i}.attention.k_lin",
        "attention.v_lin": "transformer.layer.{i}.attention.v_lin",
        "attention.out_lin": "transformer.layer.{i}.attention.out_lin",
        "sa_layer_norm": "transformer.layer.{i}.sa_layer_norm",
        "ffn.lin1": "transformer.layer.{i}.ffn.lin1",
        "ffn.lin2": "transformer.layer.{i}.ffn.lin2",
        "output_layer_norm": "transformer.layer.{i}.output_layer_norm",
    },
    "bert": {
        "attention.q_lin": "encoder.layer.{i}.attention.self.query",
        "attention.k_lin": "encoder.layer.{i}.attention.self.key",
        "attention.v_lin": "encoder.layer.{i}.attention.self.value",
        "attention.out_lin": "encoder.layer.{i}.attention.output.dense",
        "sa_layer_norm": "encoder.layer.{i}.attention.output.LayerNorm",
        "ffn.lin1": "encoder.layer.{i}.intermediate.dense",
        "ffn.lin2": "encoder.layer.{i}.output.dense",
        "output_layer_norm": "encoder.layer.{i}.output.LayerNorm",
    },
}
# Relative to the classifier: BERT's pretrained pooler sits inside the base model, hence the prefix.
HEAD_NAMES = {
    "distilbert": {"pre_classifier": "pre_classifier", "classifier": "classifier"},
    "bert": {"pre_classifier": "bert.pooler.dense", "classifier": "classifier"},
}
# Pretraining leftovers a fine-tuning checkpoint may carry; not part of a classifier, skipped on purpose.
IGNORED = ("embeddings.position_ids", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "cls.")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: the message names every offending tensor."""


def module_map(config: Config) -> dict[str, str]:
    """Every module of a `Classifier`: our path -> its path in the family's *ForSequenceClassification."""
    prefix = BASE_PREFIX[config.family]
    names = {f"encoder.{ours}": prefix + theirs for ours, theirs in EMBEDDING_NAMES.items()}
    if config.type_vocab_size == 0:
        del names["encoder.embeddings.token_type_embeddings"]
    for i in range(config.n_layers):
        for ours, theirs in LAYER_NAMES[config.family].items():
            names[f"encoder.layers.{i}.{ours}"] = prefix + theirs.format(i=i)
    names.update(HEAD_NAMES[config.family])
    return names


def hf_module_name(ours: str, config: Config) -> str:
    """Our module path -> the checkpoint's (e.g. for peft adapter keys). Raises KeyError for unknown paths."""
    return module_map(config)[ours]


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


def load_into(model: nn.Module, tensors: dict[str, torch.Tensor], config: Config, prefix: str = "") -> list[str]:
    """Copy checkpoint `tensors` into `model`; returns our keys that were absent and left freshly initialised.

    The head may be absent (a bare encoder checkpoint): it keeps its random init, as transformers does.
    Anything else absent, left over, or of the wrong shape is an error.
    """
    base = BASE_PREFIX[config.family]
    tensors = {modern_name(k): v for k, v in tensors.items()}
    if not any(k.startswith(base) for k in tensors):  # a bare encoder: give it the prefix it would have
        tensors = {base + k: v for k, v in tensors.items()}
    wanted = parameter_map(model, config, prefix)
    head = tuple(HEAD_NAMES[config.family].values())
    missing, new_head, mismatched = [], [], []
    state = model.state_dict()
    for ours, theirs in wanted.items():
        if theirs not in tensors:
            (new_head if theirs.startswith(head) else missing).append(f"{theirs} (ours: {ours})")
        elif tensors[theirs].shape != state[ours].shape:
            mismatched.append(f"{theirs}: checkpoint {tuple(tensors[theirs].shape)} "
                              f"vs model {tuple(state[ours].shape)}")
    used = set(wanted.values())
    leftover = [k for k in tensors if k not in used and not k.removeprefix(base).startswith(IGNORED)]
    if prefix:  # loading an encoder alone: a classifier checkpoint's head is expected, not unexpected
        leftover = [k for k in leftover if not k.startswith(head)]
    problems = [f"missing: {missing}"] * bool(missing) + [f"unexpected: {leftover}"] * bool(leftover)
    problems += [f"shape mismatch: {mismatched}"] * bool(mismatched)
    if problems:
        raise CheckpointError("checkpoint does not fit the model -- " + "; ".join(problems))
    with torch.no_grad():
        for ours, theirs in wanted.items():
            if theirs in tensors:
                state[ours].copy_(tensors[theirs])
    if new_head:
        log.info("not in the checkpoint, freshly initialised: %s", ", ".join(new_head))
    return new_head


def _folder_and_config(path, **overrides) -> tuple[Path, Config]:
    folder = resolve_model_dir(path)
    return folder, read_config(folder).with_(**overrides)


def load_encoder(path, **overrides) -> Encoder:
    """A pretrained encoder: `forward(input_ids, attention_mask)` -> last hidden state (B, T, D)."""
    folder, config = _folder_and_config(path, **overrides)
    tensors = read_tensors(weights_file(folder))
    encoder = Encoder(config)
    load_into(encoder, tensors, config, prefix="encoder.")
    return encoder.eval()


def load_classifier(path, num_labels: int | None = None, **overrides) -> Classifier:
    """A classifier: `forward(input_ids, attention_mask)` -> logits (B, num_labels).

    `num_labels`: None keeps the checkpoint's own (config.json's id2label; 2 when it names none). From a bare
    encoder checkpoint the head is new (BERT: the pretrained pooler is kept, the classifier is new); from a
    classifier checkpoint its head must have `num_labels` outputs. `overrides` set Config fields
    (e.g. pooling="mean", attention="math", dropout=0.0, labels=("negative", "positive")).
    """
    folder = resolve_model_dir(path)
    config = read_config(folder)
    if num_labels is not None and num_labels != config.num_labels:  # a new head: the saved names do not apply
        overrides = {"labels": (), **overrides, "num_labels": num_labels}
    config = config.with_(**overrides)
    tensors = read_tensors(weights_file(folder))
    model = Classifier(config)
    load_into(model, tensors, config)
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
