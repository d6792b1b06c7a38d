"""Every flag of train.py, as one dataclass; the defaults that depend on the device; every check of a flag.

`RunConfig` is the single source of the command line: `parse_args` turns each field into a flag, in the group its
metadata names, with its help and default shown by `python train.py --help`. `resolve` fills in the "auto" values
once, so the run_config.json saved in a run folder says what really ran: a 2-core CPU gets a recipe measured to fit
6 minutes, a GPU the full train set (DEVICE_DEFAULTS; docs/defaults.md has the measurements). `check` then refuses
every value that could only fail later, before any file is written: a run must not train for minutes and then
crash at its test evaluation.
"""

import argparse
import math
import os
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from minibert.errors import ArgumentParser, UserError
from minibert.paths import OFFLINE_MINILM

AUTO = "auto"
HEAD = ("pre_classifier", "classifier")  # minibert's classification head: trained fully, never quantized
GROUPS = {"data": "data", "model": "model", "optimisation": "optimisation", "lora": "LoRA / QLoRA",
          "speed": "speed", "run": "run folder"}


def flag(default, help: str, group: str, choices=None, kind=None):
    """A RunConfig field: its default, --help text, --help group, allowed values and, for an `auto` default,
    the type an explicit value has."""
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "kind": kind})


@dataclass
class RunConfig:
    # data
    data: str | None = flag(None, "IMDB folder (train/test parquet or csv, or aclImdb/); omit to download "
                                  "scikit-learn/imdb from the hub", "data")
    max_len: int = flag(384, "tokens per training review, [CLS]/[SEP] included", "data")
    eval_max_len: str = flag(AUTO, "tokens per review when validating, testing and in the exported model (what "
                                   "predict reads); auto: every position the model has (MiniLM: 512): a longer "
                                   "window costs evaluation time only", "data", kind=int)
    truncation: str = flag("head+tail", "the part of a longer review kept: its start, its end, or a quarter from the "
                                        "start and the rest from the end", "data", ["head", "tail", "head+tail"])
    train_samples: str = flag(AUTO, "training reviews (or all); auto: 2400 on CPU, all on CUDA", "data", kind=int)
    val_samples: str = flag(AUTO, "development reviews, carved from the train split before the training ones; "
                                  "auto: 200 on CPU, 1000 on CUDA", "data", kind=int)
    eval_samples: str = flag(AUTO, "test reviews (or all); auto: 2000 on CPU, all on CUDA", "data", kind=int)
    special_tokens: bool = flag(True, "add [CLS]/[SEP] (--no-special-tokens: position 0 is then the first word)",
                                "data")
    # model
    init: str = flag("pretrained", "pretrained weights, or random init (from scratch)", "model",
                     ["pretrained", "random"])
    model: str = flag(AUTO, "model folder or name; auto: all-MiniLM-L6-v2 (pretrained) or the "
                            "distilbert-base-uncased preset (random)", "model")
    method: str = flag("full", "what trains: every weight, only the head, LoRA adapters + head, or LoRA on a 4-bit "
                               "NF4 base (QLoRA)", "model", ["full", "head", "lora", "qlora"])
    pooling: str = flag("mean", "sentence vector: the [CLS] token, or the mean of the real tokens (how "
                                "all-MiniLM-L6-v2 was trained)", "model", ["cls", "mean"])
    head_init: str = flag("checkpoint", "the head's weights: as the checkpoint holds them (BERT: the pooler), or "
                                        "fresh N(0, 0.02)", "model", ["checkpoint", "fresh"])
    dropout: str = flag(AUTO, "dropout after the embeddings, attention and FFN; checkpoint: the model's own "
                              "(MiniLM: 0.1); auto: 0 on CPU (the same accuracy in one epoch, faster steps), "
                              "checkpoint on CUDA", "model", kind=float)
    attention_dropout: str = flag(AUTO, "dropout on the attention weights; checkpoint: the model's own (MiniLM: "
                                        "0.1); auto: 0 on CPU, checkpoint on CUDA", "model", kind=float)
    # optimisation
    epochs: str = flag(AUTO, "passes over the training set; auto: 1 on CPU, 2 on CUDA", "optimisation", kind=int)
    batch_size: str = flag(AUTO, "reviews per optimizer step; auto: 16 on CPU, 32 on CUDA", "optimisation", kind=int)
    grad_accum: int = flag(1, "micro-batches summed per optimizer step", "optimisation")
    lr: str = flag(AUTO, "peak learning rate (AdamW); auto: 1e-4 for full fine-tuning, 1e-3 when only a head or "
                         "adapters train", "optimisation", kind=float)
    head_lr: str = flag(AUTO, "peak learning rate of the head (pre_classifier, classifier); auto: 10 x --lr when "
                              "every weight trains (the head starts untrained), else --lr", "optimisation",
                        kind=float)
    layer_decay: float = flag(1.0, "layer-wise lr decay: encoder layer i of L (from 1) trains at lr x "
                                   "decay^(L - i), the embeddings at lr x decay^L; 1: one lr for the encoder",
                              "optimisation")
    freeze_embeddings: bool = flag(False, "keep the word-embedding table fixed (half of MiniLM's weights; a step "
                                          "touches few of its rows)", "optimisation")
    freeze_layers: str = flag(AUTO, "keep the embeddings and the bottom N encoder layers fixed: the backward pass then "
                                    "stops above them (2 of MiniLM's 6: 0.79x the step time on a CPU); auto: 2 when "
                                    "all pretrained weights train on a CPU, else 0", "optimisation", kind=int)
    weight_decay: float = flag(0.01, "AdamW decay, on matrices only", "optimisation")
    warmup: float = flag(0.1, "share of steps with linearly rising lr, in [0, 1)", "optimisation")
    clip: float = flag(1.0, "max gradient norm; 0 disables clipping", "optimisation")
    seed: int = flag(0, "seeds the train/val carving, init and dropout (the test reviews are fixed)", "optimisation")
    validations: int = flag(4, "validations per run, evenly spaced over its steps, the last at its end",
                            "optimisation")
    # LoRA / QLoRA
    lora_r: int = flag(8, "LoRA rank r", "lora")
    lora_alpha: float = flag(16.0, "LoRA scale numerator: updates are (alpha / r) B A", "lora")
    lora_dropout: float = flag(0.1, "dropout on the LoRA branch's input", "lora")
    lora_targets: str = flag("", "comma-separated module names to adapt; empty: the family's attention q,v "
                                 "(q_lin,v_lin / query,value)", "lora")
    merge: bool = flag(True, "LoRA runs: also export the merged model to model/", "lora")
    double_quant: bool = flag(False, "QLoRA: quantize the absmax scales too (8-bit)", "lora")
    compute_dtype: str = flag(AUTO, "QLoRA: dtype the 4-bit weights are dequantized to for matmuls; auto: float32 "
                                    "on CPU, bfloat16 on CUDA", "lora", [AUTO, "float32", "bfloat16", "float16"])
    # speed
    device: str = flag(AUTO, "auto: cuda if available", "speed", [AUTO, "cpu", "cuda"])
    precision: str = flag(AUTO, "matmul dtype under autocast (weights stay float32); auto: bf16 on CUDA and on a "
                                "CPU that multiplies bf16 natively (avx512_bf16, amx_bf16), else fp32", "speed",
                          [AUTO, "fp32", "bf16"])
    eval_batch_size: str = flag(AUTO, "reviews per evaluation batch; auto: 64 on CPU, 256 on CUDA", "speed",
                                kind=int)
    bucket: bool = flag(True, "batch reviews of similar length (less padding)", "speed")
    compile: bool = flag(False, "torch.compile the model (fewer, fused GPU kernels; the first steps pay tens of "
                                "seconds of compilation)", "speed")
    cls_only: bool = flag(False, "compute the last layer at the [CLS] position only, the one the head reads: the "
                                 "same logits and gradients, that layer at ~1/6 of its cost (needs --pooling cls)",
                          "speed")
    cuda_graphs: bool | str = flag(AUTO, "CUDA only: replay each training step's forward and backward as recorded "
                                          "CUDA graphs, one per batch shape (the same kernels, so the same result); "
                                          "auto: on for one CUDA process training fully or the head, where a small "
                                          "model waits on kernel launches", "speed")
    pad_multiple: str = flag(AUTO, "pad each training batch to a multiple of this many tokens (at most --max-len); "
                                   "auto: 1 (no rounding), or --max-len with --cuda-graphs (one shape, one "
                                   "recording)", "speed", kind=int)
    # run folder
    out: str | None = flag(None, "run folder; default runs/<timestamp>", "run")
    resume: str | None = flag(None, "run folder to continue (its saved config is used)", "run")
    overwrite: bool = flag(False, "write into a folder that already holds run output, replacing it", "run")
    log_every: int = flag(10, "optimizer steps between metrics.jsonl lines (one is also written at each "
                              "checkpoint)", "run")
    save_every: str = flag(AUTO, "optimizer steps between checkpoints; auto: 25 on CPU (~1-2 min), 500 on CUDA (a "
                                 "checkpoint costs ~25 GPU steps of MiniLM)", "run", kind=int)
    debug: bool = flag(False, "show the traceback of an error a user can fix", "run")


DEVICE_DEFAULTS = {  # measured choices: docs/defaults.md
    "cpu": dict(train_samples="2400", val_samples="200", eval_samples="2000", epochs=1, batch_size=16,
                eval_batch_size=64, save_every=25, compute_dtype="float32", dropout=0.0, attention_dropout=0.0),
    "cuda": dict(train_samples="all", val_samples="1000", eval_samples="all", epochs=2, batch_size=32,
                 eval_batch_size=256, save_every=500, compute_dtype="bfloat16", precision="bf16",
                 dropout="checkpoint", attention_dropout="checkpoint"),
}
NOT_SAVED = ("resume", "overwrite", "debug")  # how to run, not what ran: left out of a run's fingerprint


def parse_args(argv) -> RunConfig:
    parser = ArgumentParser(description="Fine-tune a BERT-style encoder on IMDB sentiment, a plain loop.",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for f in fields(RunConfig):
        meta, name = f.metadata, "--" + f.name.replace("_", "-")
        group = groups[meta["group"]]
        if f.type is bool or f.type == (bool | str):
            group.add_argument(name, default=f.default, action=argparse.BooleanOptionalAction, help=meta["help"])
        else:
            kind = meta["kind"] and auto_or(meta["kind"]) or {int: int, float: float}.get(f.type, str)
            group.add_argument(name, type=kind, default=f.default, choices=meta["choices"], help=meta["help"])
    return RunConfig(**vars(parser.parse_args(argv)))


def auto_or(kind):
    """argparse type for a flag whose default is a word (auto, checkpoint, all): that word, or a number."""
    def parse(text: str):
        return text if text in (AUTO, "checkpoint", "all") else kind(text)
    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill in the device-dependent defaults, once, so the saved run config says what really ran."""
    if cfg.device == AUTO:
        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but torch sees no CUDA device")
    for name, value in DEVICE_DEFAULTS[cfg.device].items():
        if getattr(cfg, name) == AUTO:
            setattr(cfg, name, value)
    if cfg.cuda_graphs == AUTO:
        one_process = int(os.environ.get("WORLD_SIZE", "1")) == 1  # torchrun sets it; DDP's all-reduce is not recorded
        cfg.cuda_graphs = cfg.device == "cuda" and one_process and cfg.method in ("full", "head") and not cfg.compile
    if cfg.precision == AUTO:
        cfg.precision = "bf16" if cfg.device == "cuda" or cpu_multiplies_bf16() else "fp32"
    if cfg.pad_multiple == AUTO:
        cfg.pad_multiple = cfg.max_len if cfg.cuda_graphs else 1
    if cfg.lr == AUTO:
        # Few, freshly initialised weights (a head, LoRA's B = 0) need larger steps than pretrained ones do.
        cfg.lr = 1e-4 if cfg.method == "full" else 1e-3
    if cfg.head_lr == AUTO:
        cfg.head_lr = 10 * cfg.lr if cfg.method == "full" else cfg.lr
    if cfg.freeze_layers == AUTO:
        # On a CPU a cheaper step buys more reviews in the same minutes; random weights have nothing worth keeping
        cpu_fine_tuning = cfg.device == "cpu" and cfg.init == "pretrained" and cfg.method == "full"
        cfg.freeze_layers = 2 if cpu_fine_tuning else 0
    if cfg.model == AUTO:
        cfg.model = OFFLINE_MINILM if cfg.init == "pretrained" else "distilbert-base-uncased"
    if cfg.out is None:
        cfg.out = f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    check(cfg)
    return cfg


def cpu_multiplies_bf16() -> bool:
    """True where the CPU has bf16 dot-product instructions. There bf16 autocast trains MiniLM ~1.6x faster at the
    same accuracy (docs/defaults.md); elsewhere oneDNN emulates bf16 and it is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell, so the safe choice
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def check(cfg: RunConfig) -> None:
    """Every flag's range, and the flags against each other: what would otherwise fail minutes into a run."""
    def refuse(name: str, why: str) -> None:
        raise UserError(f"--{name.replace('_', '-')} {why}, got {getattr(cfg, name)!r}")

    for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size", "log_every", "save_every", "validations",
                 "pad_multiple", "lora_r"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            refuse(name, "must be a whole number of at least 1")
    for name, may_be_all in (("train_samples", True), ("val_samples", False), ("eval_samples", True)):
        value = str(getattr(cfg, name))
        if not (value.isdigit() and int(value) >= 1 or may_be_all and value == "all"):
            refuse(name, "must be a whole number of at least 1" + (", or all" if may_be_all else ""))
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        refuse("seed", "must be a whole number of at least 0")
    for name in ("max_len", "eval_max_len"):
        if getattr(cfg, name) != AUTO and getattr(cfg, name) < (2 if cfg.special_tokens else 1):
            refuse(name, "must leave room for [CLS] and [SEP]")
    if cfg.pad_multiple > cfg.max_len:
        refuse("pad_multiple", f"must be at most --max-len ({cfg.max_len})")
    for name in ("lr", "head_lr", "lora_alpha"):
        if not math.isfinite(float(getattr(cfg, name))) or float(getattr(cfg, name)) <= 0:
            refuse(name, "must be a positive number")
    for name, low, high in (("warmup", 0, 1), ("lora_dropout", 0, 1), ("dropout", 0, 1), ("attention_dropout", 0, 1)):
        value = getattr(cfg, name)
        if value != "checkpoint" and not low <= float(value) < high:
            refuse(name, f"must be in [{low}, {high})")
    if not isinstance(cfg.freeze_layers, int) or cfg.freeze_layers < 0:
        refuse("freeze_layers", "must be a whole number of at least 0")
    if not 0 < cfg.layer_decay <= 1:
        refuse("layer_decay", "must be in (0, 1]")
    for name in ("weight_decay", "clip"):
        if not math.isfinite(getattr(cfg, name)) or getattr(cfg, name) < 0:
            refuse(name, "must be zero or more")
    if cfg.batch_size % cfg.grad_accum:
        refuse("batch_size", f"must be divisible by --grad-accum ({cfg.grad_accum})")
    if cfg.cls_only and cfg.pooling != "cls":
        refuse("cls_only", f"needs --pooling cls (--pooling {cfg.pooling} reads every position of the last layer)")
    if cfg.cuda_graphs and cfg.device != "cuda":
        refuse("cuda_graphs", "needs --device cuda (CUDA graphs record GPU kernels)")
    if cfg.lora_targets and cfg.method not in ("lora", "qlora"):
        refuse("lora_targets", "applies to --method lora or qlora only")
    if cfg.method == "qlora" and cfg.device == "cpu" and cfg.compute_dtype == "float16":
        refuse("compute_dtype", "float16 matmuls are not implemented on the CPU; use float32 or bfloat16")


def check_against_model(cfg: RunConfig, config) -> None:
    """The flags against the model they will train (its minibert Config), before any weight is read; fills in
    --eval-max-len auto, the one default that depends on the model."""
    if cfg.eval_max_len == AUTO:
        cfg.eval_max_len = config.max_position_embeddings
    if cfg.freeze_layers >= config.n_layers:
        raise UserError(f"--freeze-layers {cfg.freeze_layers} would freeze every one of the {config.n_layers} "
                        f"encoder layers of {cfg.model}; use at most {config.n_layers - 1} (0 trains them all; "
                        "--method head trains the head only)")
    if cfg.max_len > config.max_position_embeddings:
        raise UserError(f"--max-len {cfg.max_len} is longer than {cfg.model} has positions for "
                        f"({config.max_position_embeddings}); use at most that")
    if cfg.eval_max_len > config.max_position_embeddings:
        raise UserError(f"--eval-max-len {cfg.eval_max_len} is longer than {cfg.model} has positions for "
                        f"({config.max_position_embeddings}); use at most that")


def fingerprint(cfg: RunConfig) -> dict:
    """What a checkpoint must agree with to be resumed: every setting of the run, but how to run it."""
    return {f.name: getattr(cfg, f.name) for f in fields(RunConfig) if f.name not in NOT_SAVED + ("out",)}


def validations_for(cfg: RunConfig, total_steps: int) -> int:
    """How many validations the run makes: --validations, at most one a step. The default fits itself to a short
    run; a number asked for that the run's steps cannot hold is refused (two would fall on one step)."""
    if cfg.validations <= total_steps:
        return cfg.validations
    if cfg.validations == RunConfig.__dataclass_fields__["validations"].default:
        return total_steps
    raise UserError(f"--validations {cfg.validations} is more than the run's {total_steps} steps; "
                    f"ask for at most {total_steps}")


def refuse_flags_beside_resume(cfg: RunConfig) -> None:
    """--resume continues a run with the settings it was started with (its run_config.json). Any other flag would
    be ignored, so it is refused: `--resume RUN --epochs 3` must not look as if it trained longer."""
    given = [f"--{f.name.replace('_', '-')}" for f in fields(RunConfig)
             if f.name not in NOT_SAVED and getattr(cfg, f.name) != f.default]
    if given:
        raise UserError(f"--resume continues a run with the settings it was started with; drop {', '.join(given)} "
                        "(to change them, start a new run)")
