"""How long are IMDB reviews in tokens, and how many does truncation cut? (docs/input-format.md pastes the output)

    python docs/scripts/token_lengths.py --data path/to/imdb

Every review of both splits is tokenized with all-MiniLM-L6-v2's uncased WordPiece (the vocabulary of
distilbert-base-uncased too), [CLS] and [SEP] included, without truncation.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import numpy as np  # noqa: E402

import minibert  # noqa: E402
from minibert.training.data import cache_root  # noqa: E402
from minibert.training.sources import load_raw_splits  # noqa: E402

NO_LIMIT = 1_000_000  # longer than any review: nothing is truncated


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("MINIBERT_DATA"), required="MINIBERT_DATA" not in os.environ,
                        help="IMDB folder (train/test parquet); default $MINIBERT_DATA")
    args = parser.parse_args(argv)
    tokenizer = minibert.load_tokenizer("all-MiniLM-L6-v2")
    raw = load_raw_splits(args.data, cache_root())
    for name in ("train", "test"):
        split = raw[name]
        t0 = time.perf_counter()
        texts = split.read_texts(np.arange(len(split)))
        lengths = np.array([len(ids) for ids in tokenizer.encode_batch(texts, max_length=NO_LIMIT)])
        seconds = time.perf_counter() - t0
        print(f"{name}: {len(lengths):,} reviews, tokenized in {seconds:.1f} s")
        print(f"  tokens per review: min {lengths.min()}, median {np.median(lengths):.0f}, "
              f"mean {lengths.mean():.0f}, 90th percentile {np.percentile(lengths, 90):.0f}, max {lengths.max()}")
        for limit in (128, 256, 512):
            over = lengths > limit
            lost = np.clip(lengths - limit, 0, None).sum() / lengths.sum()
            print(f"  longer than {limit}: {over.mean():6.1%} of reviews; truncating at {limit} drops "
                  f"{lost:5.1%} of all tokens")


if __name__ == "__main__":
    main()
