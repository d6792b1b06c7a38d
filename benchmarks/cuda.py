"""6. CUDA: the training step train.py takes on a GPU, inference, LoRA and QLoRA, each against the Hugging Face stack.

The GPU machine has no IMDB copy and no weights, so inputs are random token ids on random weights: full-length rows
for the training step (no padding, so neither side gets a mask), random lengths for the inference batches. Every
step runs under bf16 autocast with fp32 master weights, and both sides use AdamW(fused=True), transformers'
Trainer default with torch >= 2.8.

Timing: torch.cuda.synchronize() before starting and before stopping the clock, around 5 training steps run back
to back (a loop never waits for the GPU between steps; one step alone would also time the launch of its first
kernels); memory: max_memory_allocated after reset_peak_memory_stats.
"""

import gc
import time

import torch

from . import common, inference
from .timing import Row, format_table, interleaved, median, sync_for


def training_rows(model_name: str, batch: dict, warmup: int, repeats: int, device: str = "cuda",
                  steps_per_call: int = 5) -> list[Row]:
    """One training step of minibert, eager and with CUDA graphs (train.py's default on one GPU,
    minibert/training/cuda_graphs.py), against transformers sdpa. A candidate that fails on its first call (CUDA
    graphs off a GPU, an out-of-memory) is reported and left out; the others still get their rows."""
    sync = sync_for(device)
    batch = {**batch, "attention_mask": None}  # full-length rows: no padding to mask, on either side
    ours = common.build_ours(model_name, device, pretrained=False)
    theirs = common.Logits(common.theirs_from(ours, ("sdpa",), device)["sdpa"])
    makers = {"transformers": lambda: common.stepper(theirs, batch, steps=steps_per_call),
              "minibert": lambda: common.stepper(ours, batch, steps=steps_per_call),
              "minibert + CUDA graphs": lambda: common.stepper(ours, batch, steps=steps_per_call, cuda_graphs=True)}
    steps = first_calls(makers, steps_per_call, sync)
    if "transformers" not in steps:
        return []
    seconds = {k: median(v) / steps_per_call for k, v in interleaved(steps, warmup, repeats, sync).items()}
    ref = seconds.pop("transformers")
    B, T = batch["input_ids"].shape
    short = f"{'MiniLM' if model_name == common.MINILM else 'distilbert-base'} {B}x{T} bf16"
    return [Row(f"CUDA train step {short}: {name} vs transformers sdpa", t * 1e3, ref * 1e3, "ms", "<= 1.0")
            for name, t in seconds.items()]


def first_calls(makers: dict, steps_per_call: int, sync) -> dict:
    """{name: stepper} for each candidate whose first call (graph recording, the first kernels) works; the others are
    reported and left out: one broken candidate must not cost the other rows."""
    steps = {}
    for name, make in makers.items():
        start = time.perf_counter()
        try:
            steps[name] = make()
            steps[name]()
            sync()
        except Exception as err:
            steps.pop(name, None)
            print(f"  {name}: FAILED, row skipped: {type(err).__name__}: {str(err)[:300]}", flush=True)
            continue
        print(f"  {name}: first {steps_per_call} steps took {time.perf_counter() - start:.1f} s", flush=True)
    return steps


def sorted_random_batches(n_batches: int, batch_size: int, max_len: int, device: str, seed: int = 0) -> list[dict]:
    """Rows of random lengths (16 to max_len tokens) sorted longest first and cut into padded batches: the shape of
    evaluation over real reviews sorted by length, without the reviews."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, max_len + 1, (n_batches * batch_size,), generator=g).sort(descending=True).values
    batches = []
    for chunk in lengths.split(batch_size):
        T = int(chunk[0])
        mask = (torch.arange(T)[None, :] < chunk[:, None]).long()  # (B, T)
        ids = torch.randint(1000, 30522, (len(chunk), T), generator=g) * mask  # (B, T), padding id 0
        batches.append({"input_ids": ids.to(device), "attention_mask": mask.to(device)})
    return batches


def inference_rows(model_name: str, n_batches: int, batch_size: int, seq_len: int, repeats: int,
                   device: str = "cuda") -> list[Row]:
    """Throughput over random-length rows sorted by length (as evaluation sorts real reviews): section 2's
    measurement, on random weights and rows."""
    batches = sorted_random_batches(n_batches, batch_size, seq_len, device)
    short = "MiniLM" if model_name == common.MINILM else "distilbert-base"
    name = f"CUDA inference {short} bf16, {n_batches * batch_size} random-length rows <= {seq_len}, batch {batch_size}"
    return inference.inference_rows(model_name, batches, repeats, device, sync_for(device), pretrained=False,
                                    name=name, unit="rows/s")


PARTS = ("train", "inference", "adapters")


def cuda_rows(quick: bool, parts=PARTS, emit=None) -> list[Row]:
    """The CUDA rows of `parts`, each handed to `emit` (default: print) as soon as it is measured. Each part runs
    on its own: one that fails prints why, the others still report."""
    emit = emit or (lambda new: print(format_table(new), flush=True))
    if not torch.cuda.is_available():
        raise RuntimeError("--cuda-only needs a CUDA device; torch.cuda.is_available() is False here")
    print(f"  device: {torch.cuda.get_device_name()}", flush=True)
    warmup, repeats = (3, 10) if quick else (5, 30)
    rows = []

    def report(new: list[Row]) -> None:
        emit(new)
        rows.extend(new)

    def train_steps() -> None:  # MiniLM launch-bound at 32 x 256, distilbert-base GPU-bound at 32 x 512
        for name, T in ((common.MINILM, 256), (common.DISTILBERT, 512)):
            report(training_rows(name, common.random_batch(32, T, device="cuda"), warmup, repeats))

    runs = {
        "train": train_steps,
        "inference": lambda: report(inference_rows(common.MINILM, 20 if quick else 50, 32, 256, 5 if quick else 10)),
        "adapters": lambda: report(_adapter_rows(warmup, repeats)),
    }
    for part in parts:
        start = time.perf_counter()
        try:
            runs[part]()
        except Exception as err:  # one broken part (a missing bitsandbytes, an out-of-memory) must not sink the rest
            print(f"  {part}: FAILED, its rows not yet reported are skipped: {type(err).__name__}: {str(err)[:400]}",
                  flush=True)
            continue
        finally:  # the part's models and graphs go before the next part records its own
            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        print(f"  {part}: {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def _adapter_rows(warmup: int, repeats: int) -> list[Row]:
    from .adapters import adapter_rows  # imports bitsandbytes: needed here only

    return adapter_rows(common.DISTILBERT, common.random_batch(32, 256, device="cuda"), warmup, repeats, "cuda",
                        torch.cuda.synchronize, pretrained=False)
