"""4. The data pipeline: tokenizing IMDB train reviews three ways, and the cached second run.

- minibert: `Tokenizer.encode_batch`, one call for the whole list; Rust splits it over threads.
- transformers: its fast tokenizer (the same Rust library underneath), one batched call: the best HF path.
- per example: `datasets.Dataset.map(tokenize)` without `batched=True`, one Python call per review.
  It is slow, so it is timed on a subset and scaled linearly (the row name says so).
- cached: `minibert.training.data.tokenize_rows` a second time, which reads token ids from its .npz cache instead of
  tokenizing (in a private temporary cache folder, so no earlier run can help the first one).
All of them truncate at the same max length and add [CLS]/[SEP]. Full mode: all 25,000 train reviews; --quick: the
first 5,000, said in the row names.
"""

import tempfile
import time

import numpy as np

from minibert.training.data import cache_root, tokenize_rows
from minibert.training.sources import load_raw_splits
from minibert.paths import minilm_dir

from .timing import Row, interleaved, median


def tokenize_rows_bench(tokenizer, data_dir, n: int, max_length: int, repeats: int, notebook_n: int) -> list[Row]:
    import datasets
    import transformers

    raw = load_raw_splits(data_dir, cache_root())["train"]
    rows = np.arange(min(n, len(raw)))
    texts = raw.read_texts(rows)
    n = len(texts)
    what = f"{n:,} train reviews" if n == len(raw) else f"{n:,} of {len(raw):,} train reviews"
    theirs = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))
    tokenizer.encode_batch(texts[:200], max_length=max_length)  # warm-up: Rust's thread pool starts on first use
    theirs(texts[:200], truncation=True, max_length=max_length)
    seconds = interleaved({
        "minibert": lambda: tokenizer.encode_batch(texts, max_length=max_length),
        "transformers": lambda: theirs(texts, truncation=True, max_length=max_length),
    }, warmup=0, repeats=repeats)
    ours = median(seconds["minibert"])
    out = [Row(f"tokenize {what} @{max_length}: batched vs transformers fast batched", ours,
               median(seconds["transformers"]), "s", "<= 1.0")]

    subset = datasets.Dataset.from_dict({"review": texts[:notebook_n]})
    start = time.perf_counter()
    subset.map(lambda ex: theirs(ex["review"], truncation=True, max_length=max_length), load_from_cache_file=False,
               keep_in_memory=True)
    notebook = (time.perf_counter() - start) * n / notebook_n
    how = "" if notebook_n == n else f", timed on {notebook_n:,} x{n / notebook_n:g}"
    out.append(Row(f"tokenize {n:,}: batched vs notebook per-example datasets.map{how}", ours, notebook, "s",
                   "<= 0.4"))

    with tempfile.TemporaryDirectory() as cache:
        times = []
        for _ in range(2):  # first: tokenize and write the cache; second: read it
            start = time.perf_counter()
            tokenize_rows(raw, rows, tokenizer, max_length, cache_dir=cache)
            times.append(time.perf_counter() - start)
    out.append(Row(f"data pipeline ({n:,} reviews, token cache): 2nd run vs 1st run", times[1], times[0], "s", "~0"))
    return out
