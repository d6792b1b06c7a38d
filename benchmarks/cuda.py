"""6. CUDA: bf16 autocast training and inference, model FLOP utilisation (MFU), LoRA and QLoRA on a GPU.

The GPU machine has no IMDB copy, so inputs are random token ids: full 512-token rows for the MFU step (as packed
pre-training batches), random lengths for the inference batches. Every step runs under bf16 autocast with fp32
master weights, and both sides use AdamW(fused=True), transformers' Trainer default with torch >= 2.8.

MFU (model FLOP utilisation; the FLOP count and the peaks it is measured against): benchmarks/mfu.py.
Timing: torch.cuda.synchronize() before starting and before stopping the clock, around 5 training steps run back
to back (a loop never waits for the GPU between steps; one step alone would also time the launch of its first
kernels); memory: max_memory_allocated after reset_peak_memory_stats.
"""

import copy
import dataclasses
import gc
import time
from functools import partial

import torch
import torch._inductor.config as inductor_config

from minibert.model import compile_model, set_fast_paths

from . import common, inference, mfu
from .gpu_profile import gpu_profile
from .timing import Row, format_table, interleaved, median, sync_for

def training_rows(model_name: str, batch: dict, warmup: int, repeats: int, compile: bool,
                  peaks: list[mfu.Peak], device: str = "cuda", steps_per_call: int = 5,
                  autotune: bool = False, profile: bool = False, emit=None, only: list[str] | None = None) -> list[Row]:
    """Step time of ours (default, fast paths, + CUDA graphs, + torch.compile, + a whole-step graph) and
    transformers sdpa; TFLOP/s, MFU.

    The rows are full-length (no padding), so neither side gets a mask, as train.py's to_device drops an all-ones
    mask: SDPA may then pick its flash kernel on both sides. Each timed call runs `steps_per_call` steps back to
    back, as a training loop does (the CPU queues the next step while the GPU runs this one), and the row reports
    one step. A candidate that fails (to compile, to record, or later while timed) is reported and left out.
    Two rounds, each timed against transformers and handed to `emit` (default: print) as soon as it is timed:
    first the candidates that could reach the MFU goal, then the others; after a round whose best candidate is the
    best so far, that candidate's throughput and MFU rows. A run cut short (a time limit, a crash) still reports
    the rounds before. `only`: just these candidates (`candidates`), in one round.
    `autotune`: one more candidate, compiled with mode="max-autotune-no-cudagraphs" (inductor benchmarks several
    matmul kernels per shape: minutes of compilation). `profile`: print where the best candidate's GPU time goes.
    """
    emit = emit or (lambda new: print(format_table(new), flush=True))
    sync = sync_for(device)
    batch = {**batch, "attention_mask": None}
    ours = common.build_ours(model_name, device, pretrained=False)
    theirs = common.Logits(common.theirs_from(ours, ("sdpa",), device)["sdpa"])
    B, T = batch["input_ids"].shape
    short = f"{'MiniLM' if model_name == common.MINILM else 'distilbert-base'} {B}x{T} bf16"
    flops = mfu.step_flops(ours, B, T), mfu.step_flops(ours, B, T, blocks_only=True)
    rounds = candidates(ours, batch, steps_per_call, compile, autotune, only)

    steps = {"transformers": common.stepper(theirs, batch, steps=steps_per_call)}
    seconds, refs, rows, best_name = {}, {}, [], None  # refs: each candidate's reference, timed in its round
    for number, makers in enumerate(rounds, 1):
        this_round = {"transformers": steps["transformers"]} | first_calls(makers, steps_per_call, sync)
        steps |= this_round
        guarded, failed = guard(this_round)
        try:
            timed = interleaved(guarded, warmup, repeats, sync)
        except Exception as err:  # a CUDA error that stays set (the sync itself fails): keep the earlier rounds
            print(f"  timing this round FAILED, its rows skipped: {type(err).__name__}: {str(err)[:300]}", flush=True)
            break
        if "transformers" in failed:
            continue
        timed = {k: median(v) / steps_per_call for k, v in timed.items() if k not in failed}
        ref = timed.pop("transformers")
        new = [Row(f"CUDA train step {short}: {name} vs transformers sdpa", t * 1e3, ref * 1e3, "ms", "<= 1.0")
               for name, t in timed.items()]
        if {"minibert", "minibert fast"} <= timed.keys():
            new.append(Row(f"CUDA train step {short}: fast paths vs default path", timed["minibert fast"] * 1e3,
                           timed["minibert"] * 1e3, "ms", "< 1.0 to turn on"))
        seconds |= timed
        refs |= dict.fromkeys(timed, ref)
        if seconds and (leader := min(seconds, key=seconds.get)) != best_name:  # a new best: its MFU rows now
            label = "best minibert" if len(rounds) == 1 else f"best minibert after round {number}"
            best_name = leader
            print(f"  {label}: {best_name}; one step = {flops[0] / 1e12:.2f} TFLOP ({flops[1] / 1e12:.2f} counting "
                  "the blocks only)", flush=True)
            new += summary_rows(short, B, flops, seconds[best_name], refs[best_name], peaks, label)
        emit(new)  # now: a time limit or a crash may end a later round
        rows += new

    if profile and best_name:
        for name in dict.fromkeys([best_name, "minibert fast + compile"]):
            if name in steps:
                try:
                    print(f"  profile of {name}:\n{gpu_profile(steps[name], steps_per_call)}", flush=True)
                except Exception as err:  # the rows above are what counts
                    print(f"  profile of {name} FAILED: {type(err).__name__}: {str(err)[:300]}", flush=True)
    return rows


def summary_rows(short: str, batch_size: int, flops: tuple[float, float], best: float, ref: float,
                 peaks: list[mfu.Peak], label: str) -> list[Row]:
    """Samples/s, TFLOP/s and MFU of the best candidate (`best` seconds a step) against transformers (`ref`).
    `flops`: one step in transformers' count and in the blocks-only count (mfu.py); MFU against each of `peaks`."""
    full, blocks = flops
    rows = [Row(f"CUDA throughput {short} ({label}) vs transformers", batch_size / best, batch_size / ref,
                "samples/s", ">= 1.0"),
            Row(f"CUDA achieved TFLOP/s {short}, {mfu.TRANSFORMERS_COUNT} ({label})", full / best / 1e12,
                full / ref / 1e12, "TFLOP/s", ">= 1.0"),
            Row(f"CUDA achieved TFLOP/s {short}, {mfu.BLOCKS_COUNT} ({label})", blocks / best / 1e12,
                blocks / ref / 1e12, "TFLOP/s", "")]
    for peak in peaks:
        rows.append(Row(f"CUDA MFU {short}, {mfu.TRANSFORMERS_COUNT}, vs {peak.label} ({label})",
                        mfu.utilisation(full, best, peak.tflops), mfu.utilisation(full, ref, peak.tflops), "%",
                        peak.goal))
    if peaks:  # the goal's peak, with the FLOPs a step performs
        goal = peaks[0]
        rows.append(Row(f"CUDA MFU {short}, {mfu.BLOCKS_COUNT}, vs {goal.label} ({label})",
                        mfu.utilisation(blocks, best, goal.tflops), mfu.utilisation(blocks, ref, goal.tflops), "%"))
    return rows


# In the name of every candidate that records its whole training step as one CUDA graph. Two such graphs alive in
# one process crashed it (segfault in CUDAGraph.replay, torch 2.11 on one H200, 2026-11-26,
# docs/results/crash_h200_two_whole_step_graphs.txt; each alone, or beside inductor's own CUDA graphs, ran): a
# process times at most one, the others run alone with bench.py --mfu-only NAME.
WHOLE_STEP = "whole-step graph"


def candidates(ours, batch: dict, steps_per_call: int, compile: bool, autotune: bool,
               only: list[str] | None = None) -> list[dict]:
    """Two rounds of {row name: a function that builds that candidate's stepper}: the ones that could reach the
    MFU goal, then the others; one whole-step graph among them when compiling, none without. `only`: one round of
    just these names (at most one whole-step graph). Nothing is built here: the makers run when their candidate's
    turn comes."""
    def fast(compiled: bool = False, bf16_residual: bool = False, fused_qkv: bool = True, **options):
        model = set_fast_paths(copy.deepcopy(ours), fused_qkv=fused_qkv, bf16_residual=bf16_residual)
        return compile_model(model, dynamic=False, **options) if compiled else model  # one fixed shape here

    # `model`: a function that builds the candidate's model, called when the candidate's turn comes
    def stepper(model, **kwargs):
        return lambda: common.stepper(model(), batch, steps=steps_per_call, **kwargs)

    def whole_step(model, **kwargs):  # one CUDA graph for forward, backward, clipping and AdamW
        return lambda: common.whole_step_graph(model(), batch, steps_per_call, **kwargs)

    others = {"minibert": lambda: common.stepper(ours, batch, steps=steps_per_call),
              "minibert fast": stepper(fast),
              "minibert fast + CUDA graphs": stepper(fast, cuda_graphs=True)}
    eager_whole_step = {f"minibert fast + {WHOLE_STEP}": whole_step(fast)}
    if not compile:  # (the MiniLM part): its CUDA graphs row is the one that counts; no whole-step graph beside it
        return pick([others], only, eager_whole_step)

    def compiled(**options):  # a maker of compiled fast-path models with these options
        return partial(fast, True, **options)

    # inductor draws each dropout element with its own Philox call (tl.rand) inside the fused norm kernels;
    # align_random_eager (a newer inductor option) draws them as eager dropout does, 4 numbers a call
    rng = {"options": {"align_random_eager": True}} if hasattr(inductor_config, "align_random_eager") else {}
    rng_name = " + eager-style RNG" if rng else ""
    goal = {
        "minibert fast + compile + bf16 residual": stepper(compiled(bf16_residual=True)),
        # inductor's own CUDA graphs (forward and backward; gradients are graph outputs, nothing to copy back)
        "minibert fast + compile reduce-overhead + bf16 residual":
            stepper(compiled(bf16_residual=True, mode="reduce-overhead")),
        # the best row measured (one H200, 2026-11-26: 13.16-13.28 ms); recorded last: a failed recording costs no
        # other row
        f"minibert fast + compile + bf16 residual + {WHOLE_STEP} + clip in AdamW":
            whole_step(compiled(bf16_residual=True), clip_in_optimizer=True),
    }
    others |= {
        "minibert fast + compile": stepper(compiled()),
        "minibert fast + compile + CUDA graphs": stepper(compiled(), cuda_graphs=True),
        "minibert + compile + bf16 residual (Q/K/V unfused)": stepper(compiled(bf16_residual=True, fused_qkv=False)),
    }
    if autotune:
        others["minibert fast + compile max-autotune"] = stepper(compiled(mode="max-autotune-no-cudagraphs"))
    tuned = {"coordinate_descent_tuning": True}
    alone = eager_whole_step | {
        f"minibert fast + compile + bf16 residual + {WHOLE_STEP}": whole_step(compiled(bf16_residual=True)),
        # clipping and AdamW compiled too, as one graph: inductor's update kernels instead of torch's fused AdamW
        f"minibert fast + compile + bf16 residual + {WHOLE_STEP} + compiled clip and AdamW":
            whole_step(compiled(bf16_residual=True), compile_update=True),
        # inductor times a few block sizes for each of its kernels at compile time: its fused elementwise and norm
        # kernels took 3.2 ms a step (H200 profile, 2026-11-26), the GELU forward moving ~2.7 TB/s of the H200's 4.8
        f"minibert fast + compile (coordinate descent tuning) + bf16 residual + {WHOLE_STEP} + clip in AdamW":
            whole_step(compiled(bf16_residual=True, options=tuned), clip_in_optimizer=True),
        f"minibert fast + compile (coordinate descent tuning) + bf16 residual + {WHOLE_STEP} + compiled clip and "
        "AdamW": whole_step(compiled(bf16_residual=True, options=tuned), compile_update=True),
        # Three Q/K/V matmuls instead of one: q, k, v are then views of their own (B, T, D) buffers, and SDPA's
        # backward returns dq, dk, dv in that layout, so the (B, T, 3D) stacking copy of the fused path's
        # backward (~0.33 ms a step in an H200 profile) goes, for three narrower matmuls (13.64 vs 13.18 ms there)
        f"minibert + compile + bf16 residual (Q/K/V unfused) + {WHOLE_STEP} + clip in AdamW" + rng_name:
            whole_step(compiled(bf16_residual=True, fused_qkv=False, **rng), clip_in_optimizer=True),
    }
    if rng:
        alone[f"minibert fast + compile + bf16 residual + {WHOLE_STEP} + clip in AdamW" + rng_name] = \
            whole_step(compiled(bf16_residual=True, **rng), clip_in_optimizer=True)
    return pick([goal, others], only, alone)


def pick(rounds: list[dict], only: list[str] | None, alone: dict | None = None) -> list[dict]:
    """`rounds`, or one round of the candidates named in `only` (from `rounds` or `alone`); refuses unknown names and
    two whole-step graphs in one process."""
    if not only:
        return rounds
    every = {name: make for round_ in rounds for name, make in round_.items()} | (alone or {})
    if unknown := [name for name in only if name not in every]:
        raise ValueError(f"unknown MFU candidate(s) {unknown}; the candidates are:\n  " + "\n  ".join(every))
    names = sorted(dict.fromkeys(only), key=lambda name: WHOLE_STEP in name)  # a recording last, as in the rounds
    if sum(WHOLE_STEP in name for name in names) > 1:
        raise ValueError(f"at most one {WHOLE_STEP} candidate per process (two crashed torch 2.11 on the H200); "
                         "run each with its own bench.py --mfu-only NAME")
    return [{name: every[name] for name in names}]


def first_calls(makers: dict, steps_per_call: int, sync) -> dict:
    """{name: stepper} for each candidate whose first call (compilation, graph recording) works; the others are
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


def guard(steps: dict) -> tuple[dict, dict]:
    """`steps` wrapped so that one that raises while being timed is reported once, then skipped: the round goes
    on without it. Returns (the wrapped steps, {name: error} filled as they fail)."""
    failed = {}

    def guarded(name, step):
        def run():
            if name in failed:
                return
            try:
                step()
            except Exception as err:  # kept as text: a kept exception's traceback would keep the step (a graph)
                failed[name] = f"{type(err).__name__}: {err}"
                print(f"  {name}: FAILED while timed, row skipped: {type(err).__name__}: {str(err)[:300]}",
                      flush=True)
        return run
    return {name: guarded(name, step) for name, step in steps.items()}, failed


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
    measurement, on random weights and rows (the GPU machine has neither the weights nor IMDB)."""
    batches = sorted_random_batches(n_batches, batch_size, seq_len, device)
    short = "MiniLM" if model_name == common.MINILM else "distilbert-base"
    name = f"CUDA inference {short} bf16, {n_batches * batch_size} random-length rows <= {seq_len}, batch {batch_size}"
    return inference.inference_rows(model_name, batches, repeats, device, sync_for(device), pretrained=False,
                                    name=name, unit="rows/s")


PARTS = ("mfu", "minilm", "inference", "adapters")


SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                 "math": "MATH"}  # --attention NAME -> torch.nn.attention.SDPBackend member


def sdpa_backend(name: str | None):
    """A context that lets F.scaled_dot_product_attention use only one kernel family, on both sides (None: torch's
    own choice). It must hold while torch.compile traces, which is when a compiled graph picks its kernel."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name is None:
        return contextlib.nullcontext()
    return sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[name]))


def cuda_rows(quick: bool, compile: bool = True, parts=PARTS, autotune: bool = False, profile: bool = False,
              attention: str | None = None, emit=None, mfu_only: list[str] | None = None) -> list[Row]:
    """The CUDA rows of `parts`. Each part runs on its own: one that fails prints why, the others still report.
    `attention`: one of SDPA_BACKENDS for every attention call of both sides (rows then say which).
    `emit(rows)` is handed the rows as soon as they are measured (default: print them). `mfu_only`: the mfu part
    times only these candidates."""
    emit = emit or (lambda new: print(format_table(new), flush=True))
    if not torch.cuda.is_available():
        raise RuntimeError("--cuda-only needs a CUDA device; torch.cuda.is_available() is False here")
    name = torch.cuda.get_device_name()
    peaks = mfu.peaks(name, mfu.matmul_tflops())  # the goal is distilbert-base's at 32 x 512: the minilm part has none
    print(f"  device: {name}; bf16 peaks: " + ", ".join(peak.label for peak in peaks), flush=True)
    warmup, repeats = (3, 10) if quick else (5, 30)
    rows = []

    def report(new: list[Row]) -> list[Row]:  # rows reach `emit` as they are measured, not at the end of a part
        if attention:
            new = [dataclasses.replace(row, name=f"{row.name} [{attention} attention]") for row in new]
        emit(new)
        rows.extend(new)
        return new

    runs = {
        "mfu": lambda: training_rows(common.DISTILBERT, common.random_batch(32, 512, device="cuda"), warmup, repeats,
                                     compile, peaks, autotune=autotune, profile=profile, emit=report,
                                     only=mfu_only),
        "minilm": lambda: training_rows(common.MINILM, common.random_batch(32, 256, device="cuda"), warmup, repeats,
                                        False, [dataclasses.replace(p, goal="") for p in peaks], emit=report),
        "inference": lambda: report(inference_rows(common.MINILM, 20 if quick else 50, 32, 256, 5 if quick else 10)),
        "adapters": lambda: report(_adapter_rows(warmup, repeats)),
    }
    for part in parts:
        start = time.perf_counter()
        try:
            with sdpa_backend(attention):
                runs[part]()
        except Exception as err:  # one broken part (a missing bitsandbytes, a compiler error) must not sink the rest
            print(f"  {part}: FAILED, its rows not yet reported are skipped: {type(err).__name__}: {str(err)[:400]}",
                  flush=True)
            continue
        finally:  # the part's models and graphs go before the next part records its own
            gc.collect()
            try:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            except Exception as err:  # a CUDA error that stays set: the next parts will say so themselves
                print(f"  {part}: cleaning up FAILED: {type(err).__name__}: {str(err)[:300]}", flush=True)
        print(f"  {part}: {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def _adapter_rows(warmup: int, repeats: int) -> list[Row]:
    from .adapters import adapter_rows  # imports bitsandbytes: needed here only

    return adapter_rows(common.DISTILBERT, common.random_batch(32, 256, device="cuda"), warmup, repeats, "cuda",
                        torch.cuda.synchronize, pretrained=False)
