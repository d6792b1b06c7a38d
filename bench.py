"""Measure minibert against the Hugging Face stack, side by side in one process, and print one table.

    python bench.py --quick                     # CPU, a few minutes: every section at reduced sizes
    python bench.py                             # CPU, the full sizes (long on 2 cores)
    python bench.py --cuda-only --json out.json # only the GPU rows (bf16 steps, inference, LoRA/QLoRA)
    python bench.py --only train --profile      # one section, and where the time of a training step goes

Every row compares minibert with a reference measured in the same run: the same weights (one safetensors file
read by both), the same inputs, warm-up first, then the median of repeats taken in turns (ours, theirs, ours, ...)
so that load from other processes falls on both alike. ratio = minibert / reference; the goal column says which
way is better. `--json FILE` writes {"meta": {...}, "rows": [{"name", "minibert", "reference", "unit",
"ratio"}]}. Sections and their methods: benchmarks/*.py; results and discussion: docs/benchmarks.md.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never wait on the network
# Idle OpenMP threads sleep instead of spinning. Must be set before torch loads OpenMP. On a shared 2-core machine
# a spinning thread burns the core its partner needs: measured 3x slower steps under load (docs/benchmarks.md).
# It applies to ours and theirs alike; set OMP_WAIT_POLICY=ACTIVE to measure torch's default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import lora  # noqa: E402
import quant  # noqa: E402
from minibert.errors import ArgumentParser, UserError, run_cli  # noqa: E402

SECTIONS = ("train", "inference", "adapters", "tokenize", "epoch", "cuda")
CUDA_PARTS = ("train", "inference", "adapters")  # benchmarks/cuda.py PARTS


def parse_args(argv):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced sizes and repeats (~minutes on 2 CPU cores)")
    parser.add_argument("--cuda-only", action="store_true", help="run only the CUDA rows (needs a GPU)")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--data", type=Path, default=None,
                        help="IMDB folder (train/test parquet); default $MINIBERT_DATA")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: torch's default")
    parser.add_argument("--profile", action="store_true", help="print the top ops of a MiniLM training step (CPU)")
    parser.add_argument("--cuda-parts", default=",".join(CUDA_PARTS),
                        help="CUDA: which parts, comma-separated (train: MiniLM 32x256 and distilbert-base 32x512)")
    args = parser.parse_args(argv)
    if unknown := set(args.cuda_parts.split(",")) - set(CUDA_PARTS):  # before any measurement: GPU time is dear
        parser.error(f"unknown --cuda-parts {sorted(unknown)}; choose from {', '.join(CUDA_PARTS)}")
    if args.cuda_only:
        args.only = ["cuda"]
    return args


def machine() -> dict:
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "load_average_start": os.getloadavg()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def cpu_sections(args, wanted: set, show) -> None:
    """Sections 1-5 on the CPU (fp32), each section's rows handed to `show` as they come. Imports are local:
    --cuda-only needs no IMDB data and no datasets."""
    import minibert
    from benchmarks import common

    data = args.data or common.default_data_dir()
    if not (data / "train.parquet").is_file():
        raise UserError(f"IMDB not found at {data}: pass --data DIR (a folder with train.parquet) or set "
                        "MINIBERT_DATA")
    quick = args.quick
    tokenizer = minibert.load_tokenizer(common.MINILM)

    def section(title: str):
        print(f"\n== {title}", flush=True)

    if "train" in wanted:
        from benchmarks.train_step import profile_step, train_step_rows

        section("1. training step, fp32 CPU")
        texts = common.imdb_texts(data, n=8, seed=1)
        batch = common.tokenized_batch(tokenizer, texts, 256)
        show(train_step_rows(common.MINILM, batch, 1, 3 if quick else 5, eager=not quick, cls_only=not quick))
        distil_batch = common.tokenized_batch(tokenizer, texts, 128 if quick else 256)
        show(train_step_rows(common.DISTILBERT, distil_batch, 1, 2 if quick else 3, eager=not quick,
                             cls_only=not quick))
        if args.profile:
            print(profile_step(common.MINILM, batch))
    if "inference" in wanted:
        from benchmarks.inference import inference_rows, sorted_batches

        section("2. inference throughput, fp32 CPU")
        texts = common.imdb_texts(data, split="test", n=64 if quick else 256, seed=2)
        batches = sorted_batches(tokenizer, texts, 32, 256)
        for name in (common.MINILM,) if quick else (common.MINILM, common.DISTILBERT):
            show(inference_rows(name, batches, 2 if quick else 3))
    if "adapters" in wanted:
        from benchmarks.adapters import adapter_rows

        section("3. LoRA / QLoRA vs peft and vs full fine-tuning, fp32 CPU")
        texts = common.imdb_texts(data, n=8, seed=1)
        for name in (common.MINILM,) if quick else (common.DISTILBERT, common.MINILM):
            batch = common.tokenized_batch(tokenizer, texts, 128 if quick else 256)
            show(adapter_rows(name, batch, 1, 2 if quick else 3))
    if "tokenize" in wanted:
        from benchmarks.tokenizing import tokenize_rows_bench

        section("4. data pipeline")
        n = 5000 if quick else 25000
        show(tokenize_rows_bench(tokenizer, data, n, 256, 1 if quick else 3, 500 if quick else n))
    if "epoch" in wanted:
        from benchmarks.epoch import epoch_rows

        section("5. one epoch: length-bucketed vs random batches")
        train = common.imdb_reviews(data, n=500 if quick else 2000, seed=3)
        test = None if quick else common.imdb_reviews(data, split="test", n=1000, seed=4)
        show(epoch_rows(tokenizer, train, 16, 512, tiny=quick, test=test))


class Report:
    """The rows so far. Each batch is printed as it comes and, with --json, the file is rewritten, so that a run
    cut short (a time limit, Ctrl-C, a crash in a later section) keeps what it measured ("complete": false)."""

    def __init__(self, path: Path | None, meta: dict):
        self.path, self.meta, self.rows = path, meta, []

    def add(self, rows: list) -> None:
        from benchmarks.timing import format_table

        print(format_table(rows), flush=True)
        self.rows += rows
        self.write(complete=False)

    def write(self, complete: bool) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"meta": {**self.meta, "complete": complete},
                                   "rows": [row.to_json() for row in self.rows]}, indent=2) + "\n")
        tmp.replace(self.path)  # a reader never sees a half-written file


def main(argv=None) -> list:
    args = parse_args(argv)
    if args.threads < 0:
        raise UserError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from benchmarks.timing import format_table

    wanted = set(args.only or SECTIONS)
    if "cuda" in wanted and not torch.cuda.is_available():
        if args.only:
            sys.exit("the cuda section needs a CUDA device; torch.cuda.is_available() is False here")
        wanted.discard("cuda")
    meta = machine()
    meta["mode"] = "quick" if args.quick else "full"
    print("  ".join(f"{k}: {v}" for k, v in meta.items()), flush=True)
    report = Report(args.json, meta)
    start = time.perf_counter()
    if wanted - {"cuda"}:
        cpu_sections(args, wanted, report.add)
    if "cuda" in wanted:
        from benchmarks.cuda import cuda_rows

        print("\n== 6. CUDA, bf16 autocast", flush=True)
        cuda_rows(quick=args.quick, parts=args.cuda_parts.split(","), emit=report.add)
    meta["seconds"] = round(time.perf_counter() - start, 1)
    meta["load_average_end"] = os.getloadavg()
    print(f"\n== all rows ({meta['seconds']:.0f} s; load average at start {meta['load_average_start'][0]:.1f}, "
          f"at end {meta['load_average_end'][0]:.1f}, {meta['torch_threads']} torch threads)")
    print(format_table(report.rows))
    report.write(complete=True)
    if args.json:
        print(f"wrote {args.json}")
    return report.rows


if __name__ == "__main__":
    sys.exit(run_cli(main, also=(lora.AdapterError, quant.QuantError)))
