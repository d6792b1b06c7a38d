"""The whole IMDB job, minibert's train.py against a plain transformers loop, in one run (section 6, on a GPU).

    python -m benchmarks.imdb_job --data IMDB_FOLDER --out runs/imdb_job                    # CUDA recipe
    python -m benchmarks.imdb_job --data ... --device cpu --train-samples 64 --val-samples 16 --eval-samples 32

The reference is a plain PyTorch loop over transformers, the recipe of a reference run on one H200 (1,875 samples/s,
test 90.86%): transformers' BertForSequenceClassification from the same all-MiniLM-L6-v2 files, batch 32, max length
256, 2 epochs, random batches padded to their longest review, AdamW (fused on CUDA) at lr 5e-5 with 10% linear
warmup, gradient clipping at 1.0, bf16 autocast with fp32 master weights (loaded with dtype=float32: transformers 5
keeps a checkpoint's stored dtype, and a float16 copy of the weights would not train). It trains on the reviews
train.py trains on (minibert.training.data.prepare_imdb with train.py's seed 0 and truncation: with the CUDA defaults,
24,000 of the 25,000; the other 1,000 are train.py's validation set) and reads the loss only every 50 steps, so it
does not wait for the GPU after each step: its best case, no handicap.

minibert runs as a user runs it, `python train.py ...` in a subprocess, once per variant (`eager`: the defaults;
`eager8`: --pad-multiple 8; `graphs`: --cuda-graphs; `graphs32`: --cuda-graphs --pad-multiple 32; `graphs-cls`:
--cuda-graphs --cls-only), and its report.json gives the numbers; a later call with the same --out adds its runs
to the same table. Rows: training samples/s (train.py's train_seconds: the optimizer steps, without validation
and checkpoints; a second row counts the whole loop with them), and test accuracy on the same test reviews.
On CUDA an untimed short train.py run comes first (`warmup_run`): no timed run is the call's first.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minibert.training.batching import Collator, LengthBucketBatchSampler  # noqa: E402
from minibert.errors import ArgumentParser, UserError, run_cli  # noqa: E402

from .common import REPO  # noqa: E402
from .timing import Row, format_table  # noqa: E402

VARIANTS = {"eager": [], "eager8": ["--pad-multiple", "8"], "graphs": ["--cuda-graphs"],
            "graphs32": ["--cuda-graphs", "--pad-multiple", "32"], "graphs-cls": ["--cuda-graphs", "--cls-only"]}


def parse_args(argv):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", required=True, help="IMDB folder (train/test parquet)")
    parser.add_argument("--out", type=Path, default=Path("runs/imdb_job"), help="where the runs and JSON go")
    parser.add_argument("--order", default="graphs,reference,eager",
                        help=f"what to run, in this order: reference and/or minibert variants ({', '.join(VARIANTS)})")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--train-samples", default="all", help="training reviews (train.py's flag)")
    parser.add_argument("--val-samples", default="1000", help="validation reviews (train.py's flag and CUDA default)")
    parser.add_argument("--eval-samples", default="all", help="test reviews (train.py's flag)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--truncation", default="head+tail", choices=["head", "tail", "head+tail"],
                        help="the part of a longer review kept (train.py's flag and default)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed to each train.py run")
    parser.add_argument("--no-warmup", action="store_true", help="CUDA: skip the untimed warm-up run")
    return parser.parse_args(argv)


def train_command(args, out, *flags, train_samples=None, val_samples=None, eval_samples=None,
                  epochs=None) -> list[str]:
    """`python train.py ...` with this job's data, device and sizes (batch 32), unless told otherwise."""
    return [sys.executable, str(REPO / "train.py"), "--data", str(args.data), "--device", args.device,
            "--out", str(out), "--train-samples", str(train_samples or args.train_samples),
            "--val-samples", str(val_samples or args.val_samples),
            "--eval-samples", str(eval_samples or args.eval_samples), "--epochs", str(epochs or args.epochs),
            "--max-len", str(args.max_len), "--truncation", args.truncation, "--batch-size", "32", *flags]


def warmup_run(args) -> None:
    """An untimed train.py run on 64 reviews before the timed runs, on CUDA. In one H200 run (2026-11-26, docs/gpu.md)
    the first train.py run after start-up recorded its CUDA graph in 2.2 s and a later one in 0.5 s, and its test
    evaluation took 8.5 s against 5.2. Why is not known for sure (a guess: kernels for MiniLM's shapes that the GPU
    driver compiles on first use and keeps on disk); whatever it is, this run pays it before the clock starts, so
    every timed run starts alike, whatever --order says. A warm-up that fails or hangs costs only itself."""
    import tempfile

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        cmd = train_command(args, folder, "--cuda-graphs", train_samples=64, val_samples=16, eval_samples=32,
                            epochs=1)
        try:
            done = subprocess.run(cmd, cwd=REPO, timeout=min(args.timeout, 120), capture_output=True, text=True)
            outcome = "done" if done.returncode == 0 else f"FAILED ({done.returncode}): {done.stderr[-500:]}"
        except subprocess.TimeoutExpired:
            outcome = "FAILED: time limit"
    print(f"  warm-up run (untimed): {outcome}, {time.perf_counter() - start:.0f} s", flush=True)


def reference_run(args) -> dict:
    """The transformers loop described in the module docstring; returns report.json-like numbers."""
    import transformers

    import minibert
    from minibert.training.data import prepare_imdb
    from train_model import linear_warmup_decay  # the same schedule train.py uses

    folder = minibert.paths.resolve_model_dir(minibert.paths.OFFLINE_MINILM)
    tokenizer = minibert.load_tokenizer(folder)
    tokenizer.truncation = args.truncation  # as train.py cuts the reviews
    data = prepare_imdb(args.data, tokenizer, max_len=args.max_len, train_samples=args.train_samples,
                        val_samples=args.val_samples, eval_samples=args.eval_samples,
                        seed=0)  # train.py's split (its default --seed), from its token cache
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=2, attn_implementation="sdpa", dtype=torch.float32).to(args.device).train()
    cuda = args.device == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01, fused=cuda or None)
    sampler = LengthBucketBatchSampler(data["train"].lengths, 32, seed=0, bucket=False, shuffle=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(len(sampler) * args.epochs, 0.1))
    collate = Collator(tokenizer.pad_id)

    def to_device(batch):
        return {k: v.to(args.device, non_blocking=cuda) for k, v in batch.items()}

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    start, losses, step = time.perf_counter(), [], 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for indices in sampler:
            batch = to_device(collate([data["train"][i] for i in indices]))
            with torch.autocast(args.device, dtype=torch.bfloat16, enabled=cuda):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = F.cross_entropy(logits.float(), batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            step += 1
            if step % 50 == 0 and not math.isfinite(torch.stack(losses).mean().item()):
                raise RuntimeError(f"reference loss diverged by step {step}")
    sync()
    train_seconds = time.perf_counter() - start
    accuracy = reference_accuracy(model, data["test"], collate, args.device)
    return {"train_seconds": train_seconds, "loop_seconds": train_seconds, "steps": step,
            "train_reviews_per_s": len(data["train"]) * args.epochs / train_seconds, "test_accuracy": accuracy,
            "final_loss": torch.stack(losses[-50:]).mean().item(), "n_train": len(data["train"]),
            "n_test": len(data["test"])}


@torch.no_grad()
def reference_accuracy(model, split, collate, device: str) -> float:
    """Test accuracy as a transformers user's loop computes it: always with the tokenizer's mask (train.evaluate
    drops an all-ones mask, which picks another attention kernel), batches of 256 sorted by length."""
    model.eval()
    correct = 0
    sampler = LengthBucketBatchSampler(split.lengths, 256, bucket=True, shuffle=False)
    for indices in sampler:
        batch = {k: v.to(device) for k, v in collate([split[i] for i in indices]).items()}
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        correct += (logits.argmax(-1) == batch["labels"]).sum().item()
    return correct / len(split)


def minibert_run(args, variant: str) -> dict:
    """`python train.py` as a user runs it; its report.json."""
    out = args.out / variant
    if (out / "report.json").exists():
        raise FileExistsError(f"{out} already holds a run; choose another --out")
    cmd = train_command(args, out, *VARIANTS[variant])
    print("  $", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=REPO, timeout=args.timeout, capture_output=True, text=True)
    print("\n".join(done.stdout.splitlines()[-12:]), flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"train.py {variant} failed ({done.returncode}): {done.stderr[-1500:]}")
    return json.loads((out / "report.json").read_text())


def rows_from(reports: dict) -> list[Row]:
    ref = reports.get("reference")
    rows = []
    for variant in (v for v in reports if v != "reference"):
        ours = reports[variant]
        name = f"IMDB job {ours['n_train']} reviews x {ours['steps']} steps, minibert {variant}"
        rows.append(Row(f"{name}: training samples/s vs transformers loop", ours["train_reviews_per_s"],
                        ref and ref["train_reviews_per_s"], "samples/s", ">= 2.0"))
        whole = ours["train_reviews_per_s"] * ours["train_seconds"] / ours["loop_seconds"]  # same reviews, more time
        rows.append(Row(f"{name}: samples/s with validation + checkpoints", whole,
                        ref and ref["train_reviews_per_s"], "samples/s", ""))
        rows.append(Row(f"{name}: test accuracy ({ours['n_test']} reviews)", 100 * ours["test_accuracy"],
                        ref and 100 * ref["test_accuracy"], "%", "~1.0"))
    return rows


def main(argv=None) -> list[Row]:
    args = parse_args(argv)
    unknown = [what for what in args.order.split(",") if what != "reference" and what not in VARIANTS]
    if unknown:  # before any run starts: a typo must not cost the runs before it
        raise UserError(f"--order: unknown {', '.join(unknown)}; choose from reference, {', '.join(VARIANTS)}")
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such folder (it should hold IMDB's train and test parquet files)")
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "reports.json"  # runs from an earlier call with the same --out join this table
    try:
        reports = json.loads(saved.read_text()) if saved.exists() else {}
    except json.JSONDecodeError as err:
        raise UserError(f"{saved} is not valid JSON ({err}); move it away to start afresh") from None
    if args.device == "cuda" and not args.no_warmup:
        warmup_run(args)
    for what in args.order.split(","):
        start = time.perf_counter()
        try:
            reports[what] = reference_run(args) if what == "reference" else minibert_run(args, what)
        except Exception as err:  # one failed run must not cost the others
            print(f"  {what}: FAILED ({type(err).__name__}); its last output:", flush=True)  # a line of its own
            print(str(err)[-1500:], flush=True)
            continue
        print(f"  {what}: {time.perf_counter() - start:.0f} s, {json.dumps(reports[what], default=str)[:600]}",
              flush=True)
        saved.write_text(json.dumps(reports, indent=2, default=str) + "\n")
    rows = rows_from(reports)
    print(format_table(rows))
    (args.out / "imdb_job.json").write_text(json.dumps({"rows": [r.to_json() for r in rows]}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main))
