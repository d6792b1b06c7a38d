"""The one configuration of a DistilBERT-style encoder, and its translation to and from Hugging Face config.json.

Field names follow DistilBERT's (`dim`, `n_layers`, `n_heads`, `hidden_dim`, ...), the smallest of the two
vocabularies. A BERT config.json maps onto the same fields: BERT and DistilBERT share the encoder block; they
differ in three places, all captured here:

| field              | DistilBERT                  | BERT                                  |
|--------------------|-----------------------------|---------------------------------------|
| `type_vocab_size`  | 0 (no token-type table)     | 2 (sentence A / sentence B)           |
| `family`           | head = pre_classifier, ReLU | head = pooler (pretrained), tanh      |
| `layer_norm_eps`   | always 1e-12 (hard-coded)   | read from config.json (1e-12 in BERT) |

`read_config` checks config.json key by key before building a Config (`check_hf_config`): each key of the kind
it must hold (JSON's `true` is no layer count, `2.0` no head count), the hidden size divisible by the heads, a
pad id inside the vocabulary. A file that fails raises CheckpointError naming the file and key; pinned by
tests/test_refusals_on_load.py.
"""

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .errors import UserError

FAMILIES = ("distilbert", "bert")
ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh")
POOLINGS = ("cls", "mean")
ATTENTIONS = ("sdpa", "math")


class CheckpointError(UserError):
    """A model folder that does not fit: config.json or a weight that is wrong; the message names file and key.

    Defined here, beside the reader of config.json, because checkpoint.py (its usual home) imports this module.
    """


@dataclass(frozen=True)
class Config:
    vocab_size: int = 30522
    dim: int = 768  # D, hidden size
    n_layers: int = 6
    n_heads: int = 12  # H; head dim Dh = dim / n_heads
    hidden_dim: int = 3072  # F, feed-forward inner size (4 * dim)
    max_position_embeddings: int = 512
    dropout: float = 0.1  # after embeddings, attention output and FFN
    attention_dropout: float = 0.1  # on the attention weights
    seq_classif_dropout: float = 0.2  # DistilBERT's head uses 0.2, not 0.1 (its published config)
    activation: str = "gelu"  # the exact erf GELU: the tanh approximation fails parity at 1e-5
    layer_norm_eps: float = 1e-12  # BERT's value, kept by DistilBERT; far below torch's 1e-5 default
    sinusoidal_pos_embds: bool = False  # fixed sin/cos table (Vaswani et al.) instead of learned positions
    type_vocab_size: int = 0  # 0: DistilBERT (no token types); 2: BERT
    pad_token_id: int = 0
    family: str = "distilbert"  # which classification head: see the module docstring
    pooling: str = "cls"  # "cls": the first token, as both HF heads do; "mean": average over real tokens
    num_labels: int = 2  # C
    labels: tuple[str, ...] = ()  # the classes' names, by logit index (config.json's id2label); () = LABEL_i
    initializer_range: float = 0.02  # std of the normal init of weights (BERT's choice)
    attention: str = "sdpa"  # "sdpa": torch's fused kernel (default, fast); "math": the explicit formula

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(self.labels))  # a JSON list too; frozen, so set it this way
        problems = []
        if self.family not in FAMILIES:
            problems.append(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.attention not in ATTENTIONS:
            problems.append(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.dim % self.n_heads:
            problems.append(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.sinusoidal_pos_embds and self.dim % 2:
            problems.append(f"sinusoidal positions need an even dim, got {self.dim}")
        if min(self.vocab_size, self.dim, self.n_layers, self.n_heads, self.hidden_dim,
               self.max_position_embeddings, self.num_labels) <= 0:
            problems.append("sizes and num_labels must be positive")
        if self.family == "distilbert" and (self.type_vocab_size or self.layer_norm_eps != 1e-12):
            # transformers' DistilBERT has no token-type table and hard-codes eps; config.json could not say either
            problems.append(f"a distilbert config has type_vocab_size=0 and layer_norm_eps=1e-12, got "
                            f"{self.type_vocab_size} and {self.layer_norm_eps}")
        if self.labels and len(self.labels) != self.num_labels:
            problems.append(f"{len(self.labels)} label names for num_labels={self.num_labels}")
        if problems:
            raise ValueError("invalid minibert Config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def with_(self, **changes) -> "Config":
        """A copy with some fields changed (the config is frozen so a model never sees it change under it)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Config fields: {sorted(unknown)}")
        return cls(**d)


# distilbert-base-uncased's published config.json, so `--init random` needs no download.
PRESETS = {
    "distilbert-base-uncased": Config(),
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------------------
# Hugging Face config.json <-> Config
# ---------------------------------------------------------------------------------------------------------

def from_hf(hf: dict) -> Config:
    """Read a Hugging Face config.json dict of model_type "distilbert" or "bert"."""
    model_type = hf.get("model_type")
    num_labels = len(hf["id2label"]) if "id2label" in hf else hf.get("num_labels", 2)
    names = tuple(hf.get("id2label", {}).get(str(i), f"LABEL_{i}") for i in range(num_labels))
    common = dict(
        vocab_size=hf["vocab_size"],
        max_position_embeddings=hf["max_position_embeddings"],
        pad_token_id=hf.get("pad_token_id", 0) or 0,
        num_labels=num_labels,
        labels=() if names == tuple(f"LABEL_{i}" for i in range(num_labels)) else names,  # transformers' defaults
        initializer_range=hf.get("initializer_range", 0.02),
        family=model_type,
    )
    if model_type == "distilbert":
        return Config(
            dim=hf["dim"], n_layers=hf["n_layers"], n_heads=hf["n_heads"], hidden_dim=hf["hidden_dim"],
            dropout=hf["dropout"], attention_dropout=hf["attention_dropout"],
            seq_classif_dropout=hf.get("seq_classif_dropout", 0.2), activation=hf.get("activation", "gelu"),
            sinusoidal_pos_embds=hf.get("sinusoidal_pos_embds", False), type_vocab_size=0,
            layer_norm_eps=1e-12,  # DistilBERT hard-codes it; its config.json has no such field
            **common,
        )
    if model_type == "bert":
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, got {hf['position_embedding_type']!r}")
        classifier_dropout = hf.get("classifier_dropout")
        return Config(
            dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"],
            hidden_dim=hf["intermediate_size"], dropout=hf["hidden_dropout_prob"],
            attention_dropout=hf["attention_probs_dropout_prob"],
            # BertForSequenceClassification falls back to hidden_dropout_prob when classifier_dropout is null
            seq_classif_dropout=hf["hidden_dropout_prob"] if classifier_dropout is None else classifier_dropout,
            activation=hf.get("hidden_act", "gelu"), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            type_vocab_size=hf.get("type_vocab_size", 2),
            **common,
        )
    raise ValueError(f"unknown model_type {model_type!r} in config.json; minibert reads 'distilbert' and 'bert'")


def to_hf(config: Config, with_head: bool = True) -> dict:
    """The config.json that transformers reads back into the same architecture."""
    c = config
    names = c.labels or tuple(f"LABEL_{i}" for i in range(c.num_labels))
    labels = {"id2label": {str(i): name for i, name in enumerate(names)},
              "label2id": {name: i for i, name in enumerate(names)}}
    if c.family == "distilbert":
        hf = dict(
            model_type="distilbert",
            architectures=["DistilBertForSequenceClassification" if with_head else "DistilBertModel"],
            vocab_size=c.vocab_size, dim=c.dim, n_layers=c.n_layers, n_heads=c.n_heads, hidden_dim=c.hidden_dim,
            max_position_embeddings=c.max_position_embeddings, dropout=c.dropout,
            attention_dropout=c.attention_dropout, seq_classif_dropout=c.seq_classif_dropout,
            activation=c.activation, sinusoidal_pos_embds=c.sinusoidal_pos_embds,
        )
    else:
        hf = dict(
            model_type="bert", architectures=["BertForSequenceClassification" if with_head else "BertModel"],
            vocab_size=c.vocab_size, hidden_size=c.dim, num_hidden_layers=c.n_layers,
            num_attention_heads=c.n_heads, intermediate_size=c.hidden_dim,
            max_position_embeddings=c.max_position_embeddings, hidden_dropout_prob=c.dropout,
            attention_probs_dropout_prob=c.attention_dropout, classifier_dropout=c.seq_classif_dropout,
            hidden_act=c.activation, layer_norm_eps=c.layer_norm_eps, type_vocab_size=c.type_vocab_size,
            position_embedding_type="absolute",
        )
    hf.update(pad_token_id=c.pad_token_id, initializer_range=c.initializer_range, **labels)
    # minibert-only choices travel in the same file; transformers ignores unknown keys.
    hf["minibert"] = {"pooling": c.pooling, "attention": c.attention}
    return hf


# config.json keys each family's reader uses, and what kind of value each must hold. JSON's `true` is an int to
# Python, so a flag where a size belongs would build a 1-layer model: the kinds refuse bools for numbers.
REQUIRED = {
    "distilbert": ("vocab_size", "max_position_embeddings", "dim", "n_layers", "n_heads", "hidden_dim", "dropout",
                   "attention_dropout"),
    "bert": ("vocab_size", "max_position_embeddings", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "hidden_dropout_prob", "attention_probs_dropout_prob"),
}
KEY_KINDS = {
    "distilbert": {"vocab_size": "size", "max_position_embeddings": "size", "dim": "size", "n_layers": "size",
                   "n_heads": "size", "hidden_dim": "size", "dropout": "fraction", "attention_dropout": "fraction",
                   "seq_classif_dropout": "fraction", "activation": "name", "sinusoidal_pos_embds": "flag",
                   "pad_token_id": "index", "initializer_range": "positive", "num_labels": "size"},
    "bert": {"vocab_size": "size", "max_position_embeddings": "size", "hidden_size": "size",
             "num_hidden_layers": "size", "num_attention_heads": "size", "intermediate_size": "size",
             "hidden_dropout_prob": "fraction", "attention_probs_dropout_prob": "fraction",
             "classifier_dropout": "fraction", "hidden_act": "name", "layer_norm_eps": "positive",
             "type_vocab_size": "index", "pad_token_id": "index", "initializer_range": "positive",
             "position_embedding_type": "name", "num_labels": "size"},
}
NULLABLE = {"pad_token_id", "classifier_dropout"}  # transformers writes null for these: "none" / "use the default"
HEADS_KEYS = {"distilbert": ("dim", "n_heads"), "bert": ("hidden_size", "num_attention_heads")}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


KINDS = {  # kind -> (test, what the value must be)
    "size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "index": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "fraction": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "positive": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "name": (lambda v: isinstance(v, str), "a string"),
}


def _read_json(path: Path) -> dict:
    try:
        hf = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); restore it from the model's source") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path} holds a JSON {type(hf).__name__}, not an object of config keys")
    return hf


def _check_model_type(hf: dict, path: Path) -> str:
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise CheckpointError(f"{path}: unknown model_type {model_type!r} in config.json; minibert reads "
                              f"'distilbert' and 'bert'")
    return model_type


def _check_required(hf: dict, path: Path, family: str) -> None:
    missing = [key for key in REQUIRED[family] if key not in hf]
    if missing:
        raise CheckpointError(f"{path}: no key {missing} (a {family} config.json needs it); restore the file")


def _check_kinds(hf: dict, path: Path, family: str) -> None:
    for key, kind in KEY_KINDS[family].items():
        if key not in hf or (hf[key] is None and key in NULLABLE):
            continue
        test, wanted = KINDS[kind]
        if not test(hf[key]):
            raise CheckpointError(f"{path}: key {key!r} must be {wanted}, got {hf[key]!r} "
                                  f"({type(hf[key]).__name__}); fix it in config.json")


def _check_heads(hf: dict, path: Path, family: str) -> None:
    dim, heads = HEADS_KEYS[family]
    if hf[dim] % hf[heads]:
        raise CheckpointError(f"{path}: key {dim!r} ({hf[dim]}) must be divisible by {heads!r} ({hf[heads]})")


def _check_pad_id(hf: dict, path: Path) -> None:
    pad = hf.get("pad_token_id")
    if pad is not None and pad >= hf["vocab_size"]:
        raise CheckpointError(f"{path}: key 'pad_token_id' ({pad}) must be below vocab_size ({hf['vocab_size']})")


def _check_labels(hf: dict, path: Path) -> None:
    names = hf.get("id2label", {})
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise CheckpointError(f"{path}: key 'id2label' must map class indices to names, e.g. "
                              f'{{"0": "negative", "1": "positive"}}, got {names!r}')
    if any(not k.isdigit() for k in names):
        raise CheckpointError(f"{path}: key 'id2label' has a key that is not a class index: {sorted(names)}")


def _check_ours(hf: dict, path: Path) -> dict:
    ours = hf.get("minibert", {})
    if not isinstance(ours, dict):
        raise CheckpointError(f"{path}: key 'minibert' must be an object like {{\"pooling\": \"cls\"}}, got {ours!r}")
    return {k: v for k, v in ours.items() if k in ("pooling", "attention")}


def check_hf_config(hf: dict, path: Path) -> str:
    """Refuse a config.json that from_hf cannot read faithfully: one error naming the file and key; returns the
    family."""
    family = _check_model_type(hf, path)
    _check_required(hf, path, family)
    _check_kinds(hf, path, family)
    _check_heads(hf, path, family)
    _check_pad_id(hf, path)
    _check_labels(hf, path)
    return family


def read_config(folder: str | Path) -> Config:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {folder}")
    hf = _read_json(path)
    check_hf_config(hf, path)
    ours = _check_ours(hf, path)
    try:
        return from_hf(hf).with_(**ours)
    except ValueError as err:  # a combination Config refuses (e.g. an unknown activation)
        raise CheckpointError(f"{path}: {err}") from None


def write_config(config: Config, folder: str | Path, with_head: bool = True) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "config.json").write_text(json.dumps(to_hf(config, with_head), indent=2) + "\n")
