"""Every flag of train.py, as one dataclass, and the defaults that depend on the device.

`RunConfig` is the single source of the command line: `parse_args` turns each field into a flag, with its help
and default shown by `python train.py --help`, and `resolve` fills in the "auto" values once, so the run_config.json
saved in a run folder says what really ran. Defaults marked auto or 0 depend on the device (DEVICE_DEFAULTS): a
2-core CPU gets a recipe measured to fit 10 minutes, a GPU the full train set (README, "Why these defaults").
"""

import argparse
import sys
import time
from dataclasses import dataclass, field, fields

import torch

from minibert.paths import OFFLINE_MINILM

AUTO = "auto"


@dataclass
class RunConfig:
    data: str | None = field(default=None, metadata={"help": "IMDB folder (train/test parquet or csv, or aclImdb/); "
                                                             "omit to download scikit-learn/imdb from the hub"})
    init: str = field(default="pretrained", metadata={"help": "pretrained weights, or random init (from scratch)",
                                                      "choices": ["pretrained", "random"]})
    model: str = field(default=AUTO, metadata={"help": "model folder or name; auto: all-MiniLM-L6-v2 (pretrained) "
                                                       "or the distilbert-base-uncased preset (random)"})
    method: str = field(default="full", metadata={"help": "what trains: every weight, only the head, LoRA adapters "
                                                          "+ head, or LoRA on a 4-bit NF4 base (QLoRA)",
                                                  "choices": ["full", "head", "lora", "qlora"]})
    pooling: str = field(default="cls", metadata={"help": "sentence vector: [CLS] token or mean of real tokens",
                                                   "choices": ["cls", "mean"]})
    max_len: int = field(default=256, metadata={"help": "tokens per review, [CLS]/[SEP] included"})
    max_samples: str = field(default=AUTO, metadata={"help": "train+val reviews; auto: 2000 on CPU, all on CUDA"})
    val_fraction: float = field(default=0.2, metadata={"help": "share of max_samples held out for validation"})
    eval_samples: str = field(default=AUTO, metadata={"help": "test reviews; auto: 2000 on CPU, all on CUDA"})
    special_tokens: bool = field(default=True, metadata={"help": "add [CLS]/[SEP] (--no-special-tokens: the "
                                                                 "notebook's way)"})
    epochs: int = field(default=0, metadata={"help": "passes over the training set; 0: 1 on CPU, 2 on CUDA"})
    batch_size: int = field(default=0, metadata={"help": "reviews per optimizer step; 0: 16 on CPU, 32 on CUDA"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches summed per optimizer step"})
    lr: float = field(default=0.0, metadata={"help": "peak learning rate (AdamW); 0: 1e-4 for full fine-tuning, "
                                                      "1e-3 when only a head or adapters train (method defaults)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decay, on matrices only"})
    warmup: float = field(default=0.1, metadata={"help": "share of steps with linearly rising lr"})
    clip: float = field(default=1.0, metadata={"help": "max gradient norm; 0 disables clipping"})
    bucket: bool = field(default=True, metadata={"help": "batch reviews of similar length (less padding)"})
    seed: int = field(default=0, metadata={"help": "seeds data split, init and dropout"})
    device: str = field(default=AUTO, metadata={"help": "auto: cuda if available", "choices": [AUTO, "cpu", "cuda"]})
    eval_batch_size: int = field(default=0, metadata={"help": "reviews per evaluation batch; 0: 64 on CPU, "
                                                              "256 on CUDA"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (fewer, fused GPU kernels; the "
                                                           "first steps pay tens of seconds of compilation)"})
    cls_only: bool = field(default=False, metadata={"help": "compute the last layer at the [CLS] position only, "
                                                            "the one the head reads: the same logits and gradients, "
                                                            "that layer at ~1/6 of its cost (needs --pooling cls)"})
    cuda_graphs: bool = field(default=False, metadata={"help": "CUDA only: replay each training step's forward and "
                                                               "backward as recorded CUDA graphs, one per batch shape; "
                                                               "for small models that wait on kernel launches"})
    pad_multiple: int = field(default=0, metadata={"help": "pad each training batch to a multiple of this many tokens "
                                                           "(at most --max-len); 0: 1 (no rounding), or --max-len "
                                                           "with --cuda-graphs (one shape, so one recording)"})
    log_every: int = field(default=10, metadata={"help": "optimizer steps between metrics.jsonl lines (one is "
                                                          "also written at each checkpoint)"})
    save_every: int = field(default=0, metadata={"help": "optimizer steps between checkpoints; 0: 25 on CPU "
                                                          "(~1-2 min), 500 on CUDA (a checkpoint costs ~25 GPU "
                                                          "steps of MiniLM)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank r"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scale numerator: updates are (alpha / r) B A"})
    lora_dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA branch's input"})
    lora_targets: str = field(default="", metadata={"help": "comma-separated module names to adapt; empty: the "
                                                            "family's attention q,v (q_lin,v_lin / query,value)"})
    merge: bool = field(default=True, metadata={"help": "LoRA runs: also export the merged model to model/"})
    double_quant: bool = field(default=False, metadata={"help": "QLoRA: quantize the absmax scales too (8-bit)"})
    compute_dtype: str = field(default=AUTO, metadata={"help": "QLoRA: dtype the 4-bit weights are dequantized to "
                                                               "for matmuls; auto: float32 on CPU, bfloat16 on CUDA",
                                                       "choices": [AUTO, "float32", "bfloat16", "float16"]})
    out: str | None = field(default=None, metadata={"help": "run folder; default runs/<timestamp>"})
    resume: str | None = field(default=None, metadata={"help": "run folder to continue (its saved config is used)"})


DEVICE_DEFAULTS = {  # measured choices, see README "Why these defaults"
    "cpu": dict(max_samples="2000", eval_samples="2000", epochs=1, batch_size=16, eval_batch_size=64,
                save_every=25, compute_dtype="float32"),
    "cuda": dict(max_samples="all", eval_samples="all", epochs=2, batch_size=32, eval_batch_size=256,
                 save_every=500, compute_dtype="bfloat16"),
}


def parse_args(argv) -> RunConfig:
    parser = argparse.ArgumentParser(description="Fine-tune a BERT-style encoder on IMDB sentiment, a plain loop.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            parser.add_argument(flag, default=f.default, action=argparse.BooleanOptionalAction, help=f.metadata["help"])
        else:
            kind = {int: int, float: float}.get(f.type, str)
            parser.add_argument(flag, type=kind, default=f.default, choices=f.metadata.get("choices"),
                                help=f.metadata["help"])
    return RunConfig(**vars(parser.parse_args(argv)))


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill in the device-dependent defaults, once, so the saved run config says what really ran."""
    if cfg.device == AUTO:
        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda, but torch sees no CUDA device")
    if cfg.cls_only and cfg.pooling != "cls":
        sys.exit(f"--cls-only needs --pooling cls: --pooling {cfg.pooling} reads every position of the last layer")
    if cfg.cuda_graphs and cfg.device != "cuda":
        sys.exit("--cuda-graphs needs --device cuda (CUDA graphs record GPU kernels)")
    defaults = DEVICE_DEFAULTS[cfg.device]
    for name, value in defaults.items():
        if getattr(cfg, name) in (AUTO, 0):
            setattr(cfg, name, value)
    for name in ("epochs", "batch_size", "grad_accum", "log_every", "save_every"):
        if getattr(cfg, name) < 1:
            sys.exit(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if not 0 < cfg.val_fraction < 1:
        sys.exit(f"--val-fraction must be between 0 and 1 (train.py validates after every epoch), "
                 f"got {cfg.val_fraction}")
    if cfg.pad_multiple == 0:
        cfg.pad_multiple = cfg.max_len if cfg.cuda_graphs else 1
    if cfg.lr == 0:
        # Few, freshly initialised weights (a head, LoRA's B = 0) need larger steps than pretrained ones do.
        cfg.lr = 1e-4 if cfg.method == "full" else 1e-3
    if cfg.model == AUTO:
        cfg.model = OFFLINE_MINILM if cfg.init == "pretrained" else "distilbert-base-uncased"
    if cfg.out is None:
        cfg.out = f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg


def refuse_flags_beside_resume(cfg: RunConfig) -> None:
    """--resume continues a run with the settings it was started with (its run_config.json). Any other flag would
    be ignored, so it is refused: `--resume RUN --epochs 3` must not look as if it trained longer."""
    given = [f"--{f.name.replace('_', '-')}" for f in fields(RunConfig)
             if f.name != "resume" and getattr(cfg, f.name) != f.default]
    if given:
        sys.exit(f"--resume continues a run with the settings it was started with; drop {', '.join(given)} "
                 "(to change them, start a new run)")
