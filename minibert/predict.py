"""Classify texts with a fine-tuned run:  python -m minibert.predict RUN_DIR "text" ... [--file reviews.txt] [--json]

Texts come from the command line, from --file (one text a line, blank lines skipped), or from standard input when
neither is given (or with `--file -`), so the command sits at the end of a pipe. Prints a table for people, or with
--json one JSON object a line for scripts: {"text", "label", "score", "probabilities": {label: p, ...}}, where
score is the probability of the label. Texts are batched, sorted by length so each batch pads little, and printed
back in the order given.

Inputs are cut at the length the exported tokenizer records (tokenizer_config.json's model_max_length: train.py
writes there the length the run tested at, its --eval-max-len, and transformers reads it too), else at the model's
position embeddings; --max-len overrides it. train.py's own run_config.json is not read: a model folder copied out of its run works the same.

A mistake the user can fix (a missing or unfinished run, a file that is not UTF-8, nothing to classify, a corrupt
model file) ends with one line on stderr and exit status 2 (minibert/errors.py); tests/test_predict.py runs each.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from .checkpoint import check_tokenizer_fits, load_classifier
from .errors import ArgumentParser, UserError, run_cli
from .tokenizer import load_tokenizer

LABELS = ("negative", "positive")  # for 2-label models saved without names (before config.json carried them)
STDIN = Path("-")


def model_folder(run_or_model: Path) -> Path:
    """A run folder holds the model in `model/` (or `merged/` after LoRA --merge); a model folder is itself."""
    for sub in ("model", "merged"):
        if (run_or_model / sub / "config.json").is_file():
            return run_or_model / sub
    return run_or_model


def find_model(run: Path) -> Path:
    """The model folder of `run`; a UserError that says what `run` is instead when it holds no model."""
    if not run.exists():
        raise UserError(f"run folder not found: {run} (the first argument is a folder written by train.py)")
    if not run.is_dir():
        raise UserError(f"{run} is a file; expected a run folder written by train.py, or a model folder")
    folder = model_folder(run)
    if (folder / "config.json").is_file():
        return folder
    if (run / "checkpoint.pt").is_file():
        raise UserError(f"{run} is an unfinished run (checkpoint.pt, no model/): finish it with "
                        f"`python train.py --resume {run}`")
    raise UserError(f"{run} is not a run or model folder: no config.json in it, nor in its model/ or merged/")


def load(folder: Path):
    """The classifier and tokenizer of a model folder; a file there that cannot be read is a UserError."""
    try:
        model = load_classifier(folder)
    except ValueError as err:  # CheckpointError, a config.json that is not JSON or not DistilBERT/BERT's
        raise UserError(f"cannot load the model in {folder}: {err}") from None
    try:
        tokenizer = load_tokenizer(folder)
    except ValueError as err:  # a tokenizer_config.json that is not JSON, a vocabulary without BERT's tokens
        raise UserError(f"cannot load the tokenizer in {folder}: {err}") from None
    except Exception as err:
        if type(err) is not Exception:  # the Rust library reports a file it cannot parse as a bare Exception
            raise
        raise UserError(f"cannot load the tokenizer in {folder}: {folder / 'tokenizer.json'}: {err}") from None
    check_tokenizer_fits(tokenizer, model.config, where=str(folder))  # an id past the table: an IndexError later
    return model, tokenizer


def default_max_len(tokenizer, config) -> int:
    """The longest input the exported tokenizer records, else the model's position embeddings; never more than
    those (a tokenizer saved as unbounded records 1e30)."""
    positions = config.max_position_embeddings
    return min(tokenizer.model_max_length or positions, positions)


def read_texts(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 file, or of standard input for `-`."""
    if path == STDIN:
        if sys.stdin.isatty():
            print("reading texts from standard input, one a line; end with Ctrl-D", file=sys.stderr)
        data, name = sys.stdin.buffer.read(), "standard input"
    elif not path.is_file():
        why = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "no such file"
        raise UserError(f"--file {path}: {why}")
    else:
        data, name = path.read_bytes(), str(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{name} is not UTF-8 text: byte {err.start} (line {line}) is 0x{data[err.start]:02x}; "
                        "save it as UTF-8") from None
    # split("\n"), not splitlines(): a form feed or U+2028 inside a review does not end the text
    texts = [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
    if not texts:
        raise UserError(f"nothing to classify: {name} holds no text (empty, or blank lines only)")
    return texts


def label_names(config) -> tuple[str, ...]:
    """The class names by logit index: config.json's id2label, else negative/positive for 2 classes, else 0, 1, ..."""
    return config.labels or (LABELS if config.num_labels == 2 else tuple(map(str, range(config.num_labels))))


@torch.no_grad()
def probabilities(model, tokenizer, texts: list[str], max_len: int, batch_size: int = 32) -> torch.Tensor:
    """Class probabilities (N, C), row i for texts[i]."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
    probs = torch.empty(len(texts), model.config.num_labels)  # (N, C)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in chunk], max_length=max_len)
        probs[chunk] = model(batch["input_ids"], batch["attention_mask"]).softmax(dim=-1)  # (B, C)
    return probs


def best(names: tuple[str, ...], row: list[float]) -> tuple[str, float]:
    i = max(range(len(row)), key=row.__getitem__)
    return names[i], row[i]


def predict(model, tokenizer, texts: list[str], max_len: int, batch_size: int = 32) -> list[tuple[str, float]]:
    """(label, probability) per text, in the order given."""
    names = label_names(model.config)
    return [best(names, row) for row in probabilities(model, tokenizer, texts, max_len, batch_size).tolist()]


def print_table(rows: list[dict]) -> None:
    width = max(len("label"), *(len(row["label"]) for row in rows))
    print(f"{'label':<{width}}  {'score':>6}  text")
    for row in rows:
        text = row["text"] if len(row["text"]) <= 60 else row["text"][:57] + "..."
        print(f"{row['label']:<{width}}  {row['score']:6.1%}  {text}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m minibert.predict", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder written by train.py (or a model folder)")
    parser.add_argument("texts", nargs="*", help="texts to classify; none and no --file: read standard input")
    parser.add_argument("--file", type=Path, help="a UTF-8 file with one text a line; - for standard input")
    parser.add_argument("--json", action="store_true", help="one JSON object a line (JSON Lines) instead of a table")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    parser.add_argument("--max-len", type=int,
                        help="cut inputs to this many tokens, [CLS]/[SEP] included; %(default)s: the length the run "
                             "recorded (tokenizer_config.json's model_max_length)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    args = parser.parse_intermixed_args(argv)  # flags may come between the texts
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_len is not None and args.max_len < 2:
        raise UserError(f"--max-len must be at least 2 (room for [CLS] and [SEP]), got {args.max_len}")
    if blank := next((i for i, text in enumerate(args.texts, 1) if not text.strip()), None):
        # a file's blank lines are skipped as separators; a text given on the command line was meant as one
        raise UserError(f"text {blank} on the command line is empty: nothing to classify")
    return args


def main(argv=None) -> list[dict]:
    """Classify, print, and return the rows printed: {"text", "label", "score", "probabilities"} per text."""
    args = parse_args(argv)
    folder = find_model(args.run)
    texts = list(args.texts)
    if args.file is not None or not texts:
        texts += read_texts(args.file or STDIN)
    model, tokenizer = load(folder)
    positions = model.config.max_position_embeddings
    if args.max_len is not None and args.max_len > positions:
        raise UserError(f"--max-len {args.max_len} is more than the model's {positions} position embeddings")
    max_len = args.max_len or default_max_len(tokenizer, model.config)
    names = label_names(model.config)
    rows = []
    for text, row in zip(texts, probabilities(model, tokenizer, texts, max_len, args.batch_size).tolist()):
        label, score = best(names, row)
        rows.append({"text": text, "label": label, "score": score, "probabilities": dict(zip(names, row))})
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(rows)
    return rows


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
