"""What every measurement shares: the models side by side, one call signature for both, inputs, the step.

- `theirs_from(ours, implementations)` saves our classifier to a temporary Hugging Face folder and loads that folder
  with transformers: both sides then start from the same safetensors file, bit for bit.
- `Logits` wraps a transformers (or peft) model so that `model(input_ids, attention_mask)` returns logits, as
  ours does; every timed function then calls ours and theirs the same way.
- `train_step(model, optimizer, batch)`: forward -> cross-entropy -> backward -> clip -> AdamW step -> zero_grad,
  the order of train.py's loop, in bf16 autocast on CUDA (fp32 master weights) and plain fp32 on CPU.
- `whole_step_graph(model, batch)`: that whole step recorded once as a CUDA graph and replayed (CUDA only).
transformers and peft are imported inside functions: `--cuda-only` and the data rows never pay for them twice.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import minibert
from minibert.training.cuda_graphs import ShapeGraphs, keep_grads

REPO = Path(__file__).resolve().parents[1]
MINILM = "all-MiniLM-L6-v2"
DISTILBERT = "distilbert-base-uncased"


def default_data_dir() -> Path:
    """$MINIBERT_DATA, else the IMDB folder beside the repository that tests/conftest.py defaults to."""
    return Path(os.environ.get("MINIBERT_DATA", REPO.parent / "shared" / "data" / "imdb"))


class Logits(nn.Module):
    """A transformers model called like ours: forward(input_ids, attention_mask) -> logits (B, C)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


# all-MiniLM-L6-v2's architecture (its config.json), for machines without its weights (the GPU machine).
MINILM_CONFIG = minibert.Config(family="bert", dim=384, n_layers=6, n_heads=12, hidden_dim=1536, dropout=0.1,
                                attention_dropout=0.1, seq_classif_dropout=0.1, type_vocab_size=2, num_labels=2)


def build_ours(name: str, device: str = "cpu", pretrained: bool = True) -> minibert.Classifier:
    """distilbert-base-uncased: the preset, random init (as train.py --init random). MiniLM: its pretrained weights,
    or its architecture with random weights (`pretrained=False`: the same speed, no weights package needed)."""
    torch.manual_seed(0)
    if name == DISTILBERT:
        model = minibert.build_classifier(minibert.preset(DISTILBERT).with_(num_labels=2))
    elif name == MINILM:
        model = (minibert.load_classifier(MINILM, num_labels=2) if pretrained
                 else minibert.build_classifier(MINILM_CONFIG))
    else:
        raise ValueError(f"unknown benchmark model {name!r}; expected {DISTILBERT!r} or {MINILM!r}")
    return model.to(device)


def theirs_from(ours: nn.Module, implementations=("sdpa",), device: str = "cpu", **kwargs) -> dict[str, nn.Module]:
    """transformers' *ForSequenceClassification loaded from our saved weights, once per attention implementation."""
    import transformers

    out = {}
    with tempfile.TemporaryDirectory() as folder:
        minibert.save_pretrained(ours, folder)
        for impl in implementations:
            hf = transformers.AutoModelForSequenceClassification.from_pretrained(
                folder, attn_implementation=impl, **kwargs)
            out[impl] = hf.to(device) if "quantization_config" not in kwargs else hf
    return out


def random_batch(batch_size: int, seq_len: int, vocab_size: int = 30522, device: str = "cpu",
                 padded: bool = False, seed: int = 0) -> dict:
    """Token ids drawn uniformly (no data on the GPU machine); `padded` cuts rows to random lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab_size, (batch_size, seq_len), generator=g)
    mask = torch.ones_like(ids)
    if padded:
        lengths = torch.randint(seq_len // 4, seq_len + 1, (batch_size,), generator=g)
        lengths[0] = seq_len
        mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
        ids = ids * mask
    labels = torch.randint(0, 2, (batch_size,), generator=g)
    return {k: v.to(device) for k, v in dict(input_ids=ids, attention_mask=mask, labels=labels).items()}


def imdb_reviews(data_dir: Path, split: str = "train", n: int | None = None,
                 seed: int = 0) -> tuple[list[str], np.ndarray]:
    """`n` reviews of a seeded shuffle of the split (all of it, in file order, when n is None) and their labels
    (0 = negative, 1 = positive)."""
    from minibert.training.data import cache_root, load_raw_splits

    raw = load_raw_splits(data_dir, cache_root())[split]
    rows = np.arange(len(raw)) if n is None else np.random.default_rng(seed).permutation(len(raw))[:n]
    return raw.read_texts(rows), raw.labels[rows]


def imdb_texts(data_dir: Path, split: str = "train", n: int | None = None, seed: int = 0) -> list[str]:
    """The texts of imdb_reviews: for the measurements whose labels do not matter."""
    return imdb_reviews(data_dir, split, n, seed)[0]


def tokenized_batch(tokenizer, texts: list[str], max_length: int, device: str = "cpu") -> dict:
    batch = tokenizer(texts, max_length=max_length)
    batch["labels"] = torch.arange(len(texts)) % 2
    return {k: v.to(device) for k, v in batch.items()}


def make_optimizer(model: nn.Module, capturable: bool = False, fused: bool = True) -> torch.optim.AdamW:
    """AdamW on the trainable parameters, the same for ours and theirs. On CUDA the fused kernel (one launch for
    all parameters; transformers' Trainer default with torch >= 2.8); on CPU torch's default (per-parameter loop:
    fused=True measured no faster there, 2.51 vs 2.52 s per MiniLM step). `capturable`: the step count lives on
    the GPU, so a CUDA graph may record optimizer.step(). `fused=False`: not the fused kernel (for compiled_update,
    whose kernels inductor writes)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.01, fused=(fused and trainable[0].is_cuda) or None,
                             capturable=capturable)


def clip_in_adamw(optimizer: torch.optim.Optimizer, params: list, max_norm: float) -> None:
    """clip_grad_norm_'s rescale, done by the fused AdamW kernel as it reads each gradient.

    clip_grad_norm_ makes two passes over the gradients: one for their norm, one to multiply them by
    min(1, max_norm / norm). The fused kernel already divides every gradient by `optimizer.grad_scale` when that
    is set (the attribute torch.amp.GradScaler sets to unscale fp16 gradients), so dividing by
    max(1, norm / max_norm) there is the same update without the second pass. Only for fused Adam/AdamW."""
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # clip_grad_norm_'s first pass
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0)  # the epsilon of clip_grad_norm_


def compiled_update(optimizer: torch.optim.AdamW, params: list, max_norm: float):
    """Gradient clipping and the AdamW update as ONE torch.compile'd graph: inductor then writes kernels that read
    each gradient once, already scaled by the clip coefficient (clip_grad_norm_ rescales the gradients in a pass of
    their own; torch's fused AdamW is one hand-written kernel).

    `optimizer.step()` cannot be called inside: Optimizer.step breaks the graph before and after its body (the
    `_use_grad` wrapper in torch/optim/optimizer.py), which would leave the rescale as a kernel of its own. So the
    function calls what AdamW.step calls, the functional `torch.optim.adam.adam` with decoupled weight decay, on the
    optimizer's own hyperparameters and state (created here as AdamW creates it on its first step): the optimizer
    keeps the state, only its step() is not used. For a fresh AdamW that is not fused=True; its hyperparameters
    (lr included: no schedule) are fixed when the function compiles."""
    from torch.optim.adam import adam  # AdamW.step's own update, as a function

    group = optimizer.param_groups[0]
    if not isinstance(optimizer, torch.optim.AdamW) or group["fused"] or len(optimizer.param_groups) > 1 \
            or group["amsgrad"] or group["maximize"] or optimizer.state:
        raise ValueError("compiled_update needs a fresh torch.optim.AdamW with one parameter group, not fused=True, "
                         "amsgrad or maximize")
    for p in params:  # zeros, as AdamW's first step would make them; the step count on the parameter's device
        optimizer.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                              "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    state = [optimizer.state[p] for p in params]
    beta1, beta2 = group["betas"]

    @torch.compile
    def update():  # every parameter in `params` must have its .grad
        with torch.no_grad():
            grads = [p.grad for p in params]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # clip_grad_norm_'s norm
            grads = torch._foreach_mul(grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0))  # and its rescale
            # capturable: the step count stays a tensor (the non-capturable path reads it as a Python number)
            adam(params, grads, [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state], [],
                 [s["step"] for s in state], foreach=True, capturable=True, decoupled_weight_decay=True,
                 amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                 eps=group["eps"], maximize=False)
    return update


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, set_to_none: bool = True,
               clip_in_optimizer: bool = False, max_norm: float = 1.0, update=None) -> None:
    """`set_to_none=False` for a CUDA-graph runner, which needs .grad to stay our own buffer (cuda_graphs.py).
    `clip_in_optimizer`: clip_in_adamw instead of clip_grad_norm_ (fused AdamW only). `update`: a function doing
    clipping and the optimizer step (compiled_update) in place of both."""
    device = batch["input_ids"].device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        logits = model(batch["input_ids"], batch["attention_mask"])  # (B, C)
    loss = F.cross_entropy(logits.float(), batch["labels"])
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if update is not None:  # clipping and the step in one compiled function
        update()
    elif clip_in_optimizer:  # clipping done by the fused AdamW kernel as it reads the gradients
        clip_in_adamw(optimizer, trainable, max_norm)
        optimizer.step()
    else:
        torch.nn.utils.clip_grad_norm_(trainable, max_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=set_to_none)


def stepper(model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer | None = None, steps: int = 1,
            cuda_graphs: bool = False):
    """A no-argument function running `steps` training steps of `model` on `batch` (its own optimizer), back to
    back as in a training loop: on a GPU the CPU queues step k+1 while step k runs. `cuda_graphs`: through
    minibert.training.cuda_graphs.ShapeGraphs (forward and backward replayed from recorded graphs)."""
    model.train()
    optimizer = optimizer or make_optimizer(model)
    forward = model
    if cuda_graphs:
        forward = ShapeGraphs(model)
        keep_grads(model)

    def run():
        for _ in range(steps):
            train_step(forward, optimizer, batch, set_to_none=not cuda_graphs)
    return run


def whole_step_graph(model: nn.Module, batch: dict, steps: int = 1, clip_in_optimizer: bool = False,
                     compile_update: bool = False, warmup: int = 3, max_norm: float = 1.0):
    """Like `stepper`, but each step is ONE replay of a CUDA graph that holds the whole step: forward, loss,
    backward, clipping and AdamW. (minibert.training.cuda_graphs records forward and backward only; the optimizer still
    launches its kernels from Python there, and the backward adds into .grad buffers of our own.)

    What recording the whole step asks for, following torch.cuda.graph's documentation:
    - fixed inputs: every replay reads `batch` where it lies (the MFU step trains on one batch shape);
    - a capturable optimizer: its step count is a GPU tensor that the graph increments;
    - warm-up steps on a side stream first: compilation, optimizer state, cuBLAS/cuDNN plans all happen there,
      outside the recording;
    - gradients that are None when recording starts: the recorded backward then writes (not adds) them into
      the graph's own memory, the recorded optimizer reads them there, and every replay overwrites them.
    `compile_update`: clipping and AdamW through `compiled_update` (compiled during the warm-up steps)."""
    model.train()
    optimizer = make_optimizer(model, capturable=True, fused=not compile_update)
    trainable = [p for p in model.parameters() if p.requires_grad]
    options = dict(clip_in_optimizer=clip_in_optimizer, max_norm=max_norm,
                   update=compiled_update(optimizer, trainable, max_norm) if compile_update else None)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            train_step(model, optimizer, batch, **options)  # ends with .grad = None
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        train_step(model, optimizer, batch, **options)

    def run():
        for _ in range(steps):
            graph.replay()
    return run


def n_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
