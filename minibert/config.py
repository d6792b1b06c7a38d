"""The one configuration of a DistilBERT-style encoder, and its translation to and from Hugging Face config.json.

Field names follow DistilBERT's (`dim`, `n_layers`, `n_heads`, `hidden_dim`, ...), the smallest of the two
vocabularies. A BERT config.json maps onto the same fields: BERT and DistilBERT share the encoder block; they
differ in three places, all captured here:

| field              | DistilBERT                  | BERT                                  |
|--------------------|-----------------------------|---------------------------------------|
| `type_vocab_size`  | 0 (no token-type table)     | 2 (sentence A / sentence B)           |
| `family`           | head = pre_classifier, ReLU | head = pooler (pretrained), tanh      |
| `layer_norm_eps`   | always 1e-12 (hard-coded)   | read from config.json (1e-12 in BERT) |
"""

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

FAMILIES = ("distilbert", "bert")
ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh")
POOLINGS = ("cls", "mean")
ATTENTIONS = ("sdpa", "math")


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


def read_config(folder: str | Path) -> Config:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {folder}")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    config = from_hf(hf)
    ours = hf.get("minibert", {})
    return config.with_(**{k: v for k, v in ours.items() if k in ("pooling", "attention")})


def write_config(config: Config, folder: str | Path, with_head: bool = True) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "config.json").write_text(json.dumps(to_hf(config, with_head), indent=2) + "\n")
