"""What every measurement shares: the models side by side, one call signature for both, inputs, the step.

- `theirs_from(ours, implementations)` saves our classifier to a temporary Hugging Face folder and loads that folder
  with transformers: both sides then start from the same safetensors file, bit for bit.
- `Logits` wraps a transformers (or peft) model so that `model(input_ids, attention_mask)` returns logits, as
  ours does; every timed function then calls ours and theirs the same way.
- `train_step(model, optimizer, batch)`: forward -> cross-entropy -> backward -> clip -> AdamW step -> zero_grad,
  the order of train.py's loop, in bf16 autocast on CUDA (fp32 master weights) and plain fp32 on CPU.
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
    from minibert.training.data import cache_root
    from minibert.training.sources import load_raw_splits

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


def make_optimizer(model: nn.Module) -> torch.optim.AdamW:
    """AdamW on the trainable parameters, the same for ours and theirs. On CUDA the fused kernel (one launch for
    all parameters; transformers' Trainer default with torch >= 2.8); on CPU torch's default (per-parameter loop)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.01, fused=trainable[0].is_cuda or None)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, set_to_none: bool = True,
               max_norm: float = 1.0) -> None:
    """`set_to_none=False` for a CUDA-graph runner, which needs .grad to stay our own buffer (cuda_graphs.py)."""
    device = batch["input_ids"].device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        logits = model(batch["input_ids"], batch["attention_mask"])  # (B, C)
    loss = F.cross_entropy(logits.float(), batch["labels"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_norm)
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


def n_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
