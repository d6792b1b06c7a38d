"""Classify texts with a fine-tuned run:  python -m minibert.predict RUN_DIR "text" ... [--file reviews.txt]

Prints one line per text: label, probability of that label, and the start of the text. Texts are batched,
sorted by length so each batch pads little, and printed back in the order given.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from .checkpoint import load_classifier
from .tokenizer import load_tokenizer

LABELS = ("negative", "positive")  # for 2-label models saved without names (before config.json carried them)


def model_folder(run_or_model: Path) -> Path:
    """A run folder holds the model in `model/` (or `merged/` after LoRA --merge); a model folder is itself."""
    for sub in ("model", "merged"):
        if (run_or_model / sub / "config.json").is_file():
            return run_or_model / sub
    return run_or_model


def max_length(run_or_model: Path, default: int = 512) -> int:
    config = run_or_model / "run_config.json"
    return json.loads(config.read_text())["max_len"] if config.is_file() else default


@torch.no_grad()
def predict(model, tokenizer, texts: list[str], max_len: int, batch_size: int = 32) -> list[tuple[str, float]]:
    """(label, probability) per text, in the order given."""
    names = model.config.labels or (LABELS if model.config.num_labels == 2 else ())
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
    results = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in chunk], max_length=max_len)
        probs = model(batch["input_ids"], batch["attention_mask"]).softmax(dim=-1)  # (B, C)
        p, label = probs.max(dim=-1)
        for i, pi, li in zip(chunk, p.tolist(), label.tolist()):
            results[i] = (names[li] if li < len(names) else str(li), pi)
    return results


def main(argv=None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(prog="python -m minibert.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder written by train.py (or a model folder)")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", type=Path, help="a file with one text per line")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    texts = list(args.texts)
    if args.file:
        texts += [line for line in args.file.read_text().splitlines() if line.strip()]
    if not texts:
        parser.error("give texts on the command line or --file")
    folder = model_folder(args.run)
    model, tokenizer = load_classifier(folder), load_tokenizer(folder)
    results = predict(model, tokenizer, texts, max_length(args.run), args.batch_size)
    for text, (label, p) in zip(texts, results):
        snippet = text if len(text) <= 60 else text[:57] + "..."
        print(f"{label:<9} {p:6.1%}  {snippet}")
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
