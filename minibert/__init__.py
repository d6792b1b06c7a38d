"""minibert: a readable DistilBERT/BERT encoder, exact against Hugging Face transformers.

Public API (README lists it with examples):
    load_encoder(path)            -> Encoder:    forward(input_ids, attention_mask) -> (B, T, D)
    load_classifier(path, n)      -> Classifier: forward(input_ids, attention_mask) -> logits (B, n)
    save_pretrained(model, dir)   -> config.json + model.safetensors that transformers loads
    build_classifier(config)      -> a randomly initialised Classifier (config: Config or preset(name))
    load_tokenizer(path)          -> Tokenizer:  tokenizer(texts, max_length) -> {"input_ids", "attention_mask"}
`path` is a local Hugging Face folder or the name "all-MiniLM-L6-v2" (the offline pretrained weights).
"""

from .checkpoint import CheckpointError, build_classifier, load_classifier, load_encoder, save_pretrained
from .config import Config, preset
from .model import Classifier, Encoder


def __getattr__(name):
    # Imported on first use, so that `python -m minibert.tokenizer` does not find itself already imported.
    if name == "load_tokenizer":
        from .tokenizer import load_tokenizer

        return load_tokenizer
    raise AttributeError(f"module 'minibert' has no attribute {name!r}")


__all__ = [
    "CheckpointError", "Classifier", "Config", "Encoder", "build_classifier", "load_classifier", "load_encoder",
    "load_tokenizer", "preset", "save_pretrained",
]
