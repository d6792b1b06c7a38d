"""Does a model trained on 384-token windows read long reviews better at test with a longer window?
(docs/defaults.md pastes the output)

    python docs/scripts/eval_window.py RUN [RUN ...] --data path/to/imdb --lengths 384,448,512

Each RUN is a finished train.py run folder. It is scored on the train-split reviews its run left unused (after its
val and training reviews, in its seed's shuffle: a development set it never saw), 2,000 by default, at each
window length, with the run's truncation. The test split is not read.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import numpy as np  # noqa: E402
import torch  # noqa: E402

from minibert.predict import find_model, load  # noqa: E402
from minibert.training.batching import Collator, LengthBucketBatchSampler  # noqa: E402
from minibert.training.data import cache_root, tokenize_rows  # noqa: E402
from minibert.training.sources import load_raw_splits  # noqa: E402


def unused_rows(run: Path, n_train_split: int, n: int) -> np.ndarray:
    """The first `n` train-split rows after the run's val and training reviews (prepare_imdb's shuffle)."""
    cfg = json.loads((run / "run_config.json").read_text())
    used = int(cfg["val_samples"]) + int(cfg["train_samples"])
    return np.random.default_rng([cfg["seed"], 0]).permutation(n_train_split)[used:used + n]


@torch.no_grad()
def accuracy(model, split, pad_id: int) -> float:
    """bf16 autocast where train.py evaluates in it; batches of 64 sorted by length, as train.py's evaluation."""
    collate, correct = Collator(pad_id), 0
    for positions in LengthBucketBatchSampler(split.lengths, 64, bucket=True, shuffle=False):
        batch = collate([split[i] for i in positions])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(batch["input_ids"], batch["attention_mask"])  # (B, 2)
        correct += (logits.argmax(dim=-1) == batch["labels"]).sum().item()
    return correct / len(split)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", default=os.environ.get("MINIBERT_DATA"), required="MINIBERT_DATA" not in os.environ,
                        help="IMDB folder (train/test parquet); default $MINIBERT_DATA")
    parser.add_argument("--lengths", default="384,448,512")
    parser.add_argument("--reviews", type=int, default=2000)
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")]
    raw = load_raw_splits(args.data, cache_root())["train"]
    means = {length: [] for length in lengths}
    for run in args.runs:
        model, tokenizer = load(find_model(run))
        model.eval()
        rows = unused_rows(run, len(raw), args.reviews)
        cells = []
        for length in lengths:
            split = tokenize_rows(raw, rows, tokenizer, length, use_cache=False)
            t0 = time.perf_counter()
            acc = accuracy(model, split, tokenizer.pad_id)
            means[length].append(acc)
            cells.append(f"{length}: {100 * acc:.2f}% ({time.perf_counter() - t0:.0f} s)")
        print(f"{run.name}  {len(rows)} unused train reviews  " + "  ".join(cells))
    print("mean  " + "  ".join(f"{length}: {100 * np.mean(v):.2f}%" for length, v in means.items()))


if __name__ == "__main__":
    main()
