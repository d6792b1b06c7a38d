"""What train.py trains, and with what: the model (pretrained or random, frozen parts, LoRA or QLoRA on top), AdamW
with its parameter groups, and the learning-rate schedule. (train.py composes minibert, lora and quant here.)"""

import re

import torch

import lora
import minibert
import quant
from minibert.errors import UserError
from train_config import HEAD, RunConfig, check_against_model

LABELS = ("negative", "positive")  # by logit index: the IMDB labels are 0 = negative, 1 = positive


def build_model(cfg: RunConfig):
    """(model, tokenizer). Random init reads only a config (a preset or a folder's config.json), no weights;
    the tokenizer is then all-MiniLM-L6-v2's, whose uncased 30,522-token vocabulary is distilbert-base-uncased's."""
    overrides = {name: float(getattr(cfg, name)) for name in ("dropout", "attention_dropout")
                 if getattr(cfg, name) != "checkpoint"}
    if cfg.init == "pretrained":
        check_against_model(cfg, minibert.config.read_config(minibert.paths.resolve_model_dir(cfg.model)))
        model = minibert.load_classifier(cfg.model, num_labels=2, labels=LABELS, pooling=cfg.pooling, **overrides)
        tokenizer = minibert.load_tokenizer(cfg.model)
    else:
        config = (minibert.preset(cfg.model) if cfg.model in minibert.config.PRESETS
                  else minibert.config.read_config(minibert.paths.resolve_model_dir(cfg.model)))
        check_against_model(cfg, config)
        model = minibert.build_classifier(config.with_(num_labels=2, labels=LABELS, pooling=cfg.pooling, **overrides))
        tokenizer = minibert.load_tokenizer(minibert.paths.OFFLINE_MINILM)
    minibert.checkpoint.check_tokenizer_fits(tokenizer, model.config, where=str(cfg.model))
    tokenizer.truncation = cfg.truncation  # travels with the exported tokenizer, so predict cuts reviews alike
    if cfg.head_init == "fresh":
        for module in (model.pre_classifier, model.classifier):
            minibert.model.init_weights(module, model.config)
    if cfg.freeze_embeddings:
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    if cfg.freeze_layers:  # nothing below the lowest trainable layer needs a gradient: autograd stops above it
        for module in (model.encoder.embeddings, *model.encoder.layers[:cfg.freeze_layers]):
            module.requires_grad_(False)
    if cfg.method == "head":  # a frozen feature extractor: only the head learns
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith("encoder."))
    if cfg.method == "qlora":
        # QLoRA (Dettmers et al. 2023): the frozen base becomes 4-bit NF4; the head is never quantized and, with
        # LayerNorms, stays fp32; then the same LoRA as below trains on top, in fp32.
        model.to(cfg.device)  # bitsandbytes quantizes on the device the layer lives on
        print(quant.quantize_model(model, skip=HEAD, compute_dtype=getattr(torch, cfg.compute_dtype),
                                   double_quant=cfg.double_quant))
        quant.prepare_for_kbit_training(model, head=HEAD, use_gradient_checkpointing=False)
    if cfg.method in ("lora", "qlora"):  # frozen base + low-rank updates; the head trains fully
        targets = tuple(cfg.lora_targets.split(",")) if cfg.lora_targets else None
        try:
            model = lora.inject(model, targets=targets, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
        except (ValueError, TypeError) as err:  # a name that is no Linear layer of this model: the user's to fix
            if not cfg.lora_targets:
                raise  # the family's own targets failed: a bug of ours, with its traceback
            raise UserError(f"--lora-targets {cfg.lora_targets!r}: {err}") from None
    return model, tokenizer


def make_optimizer(model, cfg: RunConfig) -> torch.optim.AdamW:
    """AdamW, one group per (depth, decays): matrices decay, biases and LayerNorm gains do not (decaying them only
    hurts). Depth sets the lr: the head trains at --head-lr, encoder layer i of L (from 1) at lr x decay^(L - i),
    the embeddings at lr x decay^L (layer-wise decay, Howard & Ruder 2018: lower layers hold the most general
    features and should move least)."""
    n_layers = model.config.n_layers if hasattr(model, "config") else 0
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = parameter_depth(name, n_layers)
        lr = (cfg.head_lr or cfg.lr) if depth > n_layers else cfg.lr * cfg.layer_decay ** (n_layers - depth)
        decay = cfg.weight_decay if p.dim() >= 2 else 0.0
        groups.setdefault((lr, decay), []).append(p)
    # fused=True: one kernel updates every tensor. CUDA only: the CPU default's figures were measured with the plain
    # loop, though a fused CPU step is faster too (32 vs 90 ms for MiniLM's 22.7 M weights on a 2-core AMD EPYC).
    return torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": decay} for (lr, decay), ps in groups.items()],
                             lr=cfg.lr, fused=cfg.device == "cuda")


def parameter_depth(name: str, n_layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder layer i, n_layers + 1 for the head (anything outside the encoder)."""
    if ".embeddings." in f".{name}":
        return 0
    layer = re.search(r"\blayers\.(\d+)\.", name)
    return int(layer.group(1)) + 1 if layer else n_layers + 1


def linear_warmup_decay(total_steps: int, warmup: float):
    """lr multiplier: 0 -> 1 over the warmup steps, then 1 -> 0 linearly until the last step."""
    warmup_steps = max(1, round(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor
