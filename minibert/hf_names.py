"""Module names, ours -> Hugging Face's: the one table that checkpoints and peft adapters both address.

Our module tree names every layer once, the DistilBERT way; each family's checkpoint spells them its own way:

| minibert (Classifier)               | DistilBERT checkpoint                           | BERT checkpoint                               |
|-------------------------------------|-------------------------------------------------|-----------------------------------------------|
| encoder.embeddings.word_embeddings  | distilbert.embeddings.word_embeddings           | bert.embeddings.word_embeddings               |
| encoder.layers.{i}.attention.q_lin  | distilbert.transformer.layer.{i}.attention.q_lin | bert.encoder.layer.{i}.attention.self.query  |
| encoder.layers.{i}.sa_layer_norm    | ...transformer.layer.{i}.sa_layer_norm          | ...encoder.layer.{i}.attention.output.LayerNorm |
| pre_classifier                      | pre_classifier                                  | bert.pooler.dense                             |

A bare encoder (`DistilBertModel`, `BertModel`, all-MiniLM-L6-v2) has the same names without the `distilbert.` /
`bert.` prefix. Only the config decides the names, so this module needs neither the model nor the checkpoint
code: checkpoint.py maps weights with it, and model.py offers it to lora's adapter files (`hf_module_name`).
Pinned by tests/test_checkpoint.py and the adapter round trips in tests/test_lora_minibert.py.
"""

from .config import Config

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
    """A Classifier's module path -> the checkpoint's (e.g. for peft adapter keys). KeyError for unknown paths."""
    return module_map(config)[ours]


def hf_encoder_module_name(ours: str, config: Config) -> str:
    """An Encoder's module path -> the bare encoder checkpoint's. KeyError for unknown paths."""
    return hf_module_name(f"encoder.{ours}", config).removeprefix(BASE_PREFIX[config.family])
