"""6. CUDA: bf16 autocast training and inference, model FLOP utilisation (MFU), LoRA and QLoRA on a GPU.

The GPU machine has no IMDB copy, so inputs are random token ids: full 512-token rows for the MFU step (as packed
pre-training batches), random lengths for the inference batches. Every step runs under bf16 autocast with fp32
master weights, and both sides use AdamW(fused=True), transformers' Trainer default with torch >= 2.8.

FLOPs of one training step (forward + backward = 3 x forward; a multiply-add = 2 FLOPs):
    6 * N * B * T                 every weight of the encoder blocks meets every token (N = non-embedding params
                                  of the n_layers blocks; the head sees one token per row and is left out)
  + 12 * n_layers * B * T^2 * D   attention: Q K^T and weights @ V, 2 * T^2 * D each per layer forward, x 3
MFU = FLOPs / step time / the GPU's dense bf16 peak (the spec sheet's, picked by device name and printed), and
also against the peak a plain 8192^3 bf16 matmul reaches on this GPU (measured here, a fairer ceiling).
Timing: torch.cuda.synchronize() before starting and before stopping the clock; memory: max_memory_allocated
after reset_peak_memory_stats.
"""

import copy
import time

import torch

from minibert.model import compile_model, set_fast_paths

from . import common
from .inference import predict_all
from .timing import Row, format_table, interleaved, median, sync_for

# Dense bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets (without sparsity). First match wins.
PEAK_BF16 = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("H800", 989.4), ("GH200", 989.4),
             ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0))


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16 if key in device_name), None)


def matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """What one large bf16 matmul reaches on this GPU: a realistic ceiling for MFU."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def step_flops(model, batch_size: int, seq_len: int) -> float:
    """6 N B T + 12 L B T^2 D (module docstring)."""
    config = model.config
    n = sum(p.numel() for p in model.encoder.layers.parameters())
    return 6 * n * batch_size * seq_len + 12 * config.n_layers * batch_size * seq_len**2 * config.dim


def training_rows(model_name: str, batch: dict, warmup: int, repeats: int, compile: bool,
                  peak: float | None, measured_peak: float, device: str = "cuda") -> list[Row]:
    """Step time of ours (default, fast paths, fast + compile) and transformers sdpa; TFLOP/s and MFU rows."""
    sync = sync_for(device)
    ours = common.build_ours(model_name, device, pretrained=False)
    theirs = common.Logits(common.theirs_from(ours, ("sdpa",), device)["sdpa"])
    fast = set_fast_paths(copy.deepcopy(ours), fused_qkv=True, skip_full_mask=True)
    models = {"minibert": ours, "minibert fast": fast, "transformers": theirs}
    if compile:
        try:
            compiled = compile_model(set_fast_paths(copy.deepcopy(ours), fused_qkv=True, skip_full_mask=True))
            step = common.stepper(compiled, batch)
            start = time.perf_counter()
            step()  # compiles the forward and the backward
            step()
            sync()
            print(f"  torch.compile: first two steps took {time.perf_counter() - start:.1f} s")
            models["minibert compiled"] = compiled
        except Exception as err:  # a broken compiler must not cost the other rows
            print(f"  torch.compile failed, row skipped: {type(err).__name__}: {str(err)[:300]}")
    steps = {k: common.stepper(m, batch) for k, m in models.items()}
    seconds = {k: median(v) for k, v in interleaved(steps, warmup, repeats, sync).items()}

    B, T = batch["input_ids"].shape
    short = f"{'MiniLM' if model_name == common.MINILM else 'distilbert-base'} {B}x{T} bf16"
    ref = seconds["transformers"]
    rows = [Row(f"CUDA train step {short} vs transformers sdpa", seconds["minibert"] * 1e3, ref * 1e3, "ms", "<= 1.0"),
            Row(f"CUDA train step {short}: fast paths vs transformers", seconds["minibert fast"] * 1e3, ref * 1e3,
                "ms", "<= 1.0"),
            Row(f"CUDA train step {short}: fast paths vs default path", seconds["minibert fast"] * 1e3,
                seconds["minibert"] * 1e3, "ms", "< 1.0 to turn on")]
    if "minibert compiled" in seconds:
        rows.append(Row(f"CUDA train step {short}: fast + torch.compile vs transformers",
                        seconds["minibert compiled"] * 1e3, ref * 1e3, "ms", "<= 1.0"))
    best = min(v for k, v in seconds.items() if k != "transformers")
    flops = step_flops(ours, B, T)
    rows.append(Row(f"CUDA throughput {short} (best minibert) vs transformers", B / best, B / ref, "samples/s",
                    ">= 1.0"))
    rows.append(Row(f"CUDA achieved TFLOP/s {short} (best minibert)", flops / best / 1e12, flops / ref / 1e12,
                    "TFLOP/s", ">= 1.0"))
    if peak:
        rows.append(Row(f"CUDA MFU {short} vs {peak:.0f} TFLOP/s spec peak (best minibert)",
                        100 * flops / best / 1e12 / peak, 100 * flops / ref / 1e12 / peak, "%", ">= 45%"))
    rows.append(Row(f"CUDA MFU {short} vs measured matmul peak {measured_peak:.0f} TFLOP/s",
                    100 * flops / best / 1e12 / measured_peak, 100 * flops / ref / 1e12 / measured_peak, "%", ""))
    return rows


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
    """Throughput over random-length rows sorted by length (as evaluation sorts real reviews)."""
    batches = sorted_random_batches(n_batches, batch_size, seq_len, device)
    ours = common.build_ours(model_name, device, pretrained=False)
    theirs = common.Logits(common.theirs_from(ours, ("sdpa",), device)["sdpa"])
    runs = {"minibert": predict_all(ours, batches), "transformers": predict_all(theirs, batches)}
    seconds = {k: median(v) for k, v in interleaved(runs, 1, repeats, sync_for(device)).items()}
    n = n_batches * batch_size
    short = "MiniLM" if model_name == common.MINILM else "distilbert-base"
    return [Row(f"CUDA inference {short} bf16, {n} random-length rows <= {seq_len}, batch {batch_size}",
                n / seconds["minibert"], n / seconds["transformers"], "rows/s", ">= 1.0")]


def cuda_rows(quick: bool, compile: bool = True) -> list[Row]:
    """Every CUDA row. Each part runs on its own: one that fails prints why, and the others still report."""
    if not torch.cuda.is_available():
        raise RuntimeError("--cuda-only needs a CUDA device; torch.cuda.is_available() is False here")
    name = torch.cuda.get_device_name()
    peak, measured = peak_tflops(name), matmul_tflops()
    print(f"  device: {name}; bf16 dense peak {peak or 'unknown'} TFLOP/s (spec sheet), {measured:.0f} TFLOP/s "
          "measured (8192^3 matmul)", flush=True)
    warmup, repeats = (3, 10) if quick else (5, 30)
    parts = {
        "train distilbert-base 32x512": lambda: training_rows(
            common.DISTILBERT, common.random_batch(32, 512, device="cuda"), warmup, repeats, compile, peak, measured),
        "train MiniLM 32x256": lambda: training_rows(
            common.MINILM, common.random_batch(32, 256, device="cuda"), warmup, repeats, False, peak, measured),
        "inference MiniLM": lambda: inference_rows(common.MINILM, 20 if quick else 50, 32, 256, 5 if quick else 10),
        "LoRA/QLoRA distilbert-base 32x256": lambda: _adapter_rows(warmup, repeats),
    }
    rows = []
    for part, run in parts.items():
        start = time.perf_counter()
        try:
            new = run()
        except Exception as err:  # one broken part (a missing bitsandbytes, a compiler error) must not sink the rest
            print(f"  {part}: FAILED, rows skipped: {type(err).__name__}: {str(err)[:400]}", flush=True)
            continue
        finally:
            torch.cuda.empty_cache()
        print(f"  {part}: {time.perf_counter() - start:.0f} s\n{format_table(new)}", flush=True)  # survives a timeout
        rows += new
    return rows


def _adapter_rows(warmup: int, repeats: int) -> list[Row]:
    from .adapters import adapter_rows  # imports bitsandbytes: needed here only

    return adapter_rows(common.DISTILBERT, common.random_batch(32, 256, device="cuda"), warmup, repeats, "cuda",
                        torch.cuda.synchronize, pretrained=False)
