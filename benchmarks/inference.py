"""2. Inference throughput: reviews per second, minibert vs transformers, batch 32 of real IMDB reviews.

The reviews are sorted by token length before batching (as minibert's evaluation does), so each batch is padded
only to its own longest review; both sides get exactly the same batches. The forward runs under
torch.inference_mode, in eval mode (no dropout), fp32 on CPU and bf16 autocast on CUDA. A second minibert row
runs train.py's `--cls-only` (minibert.model.set_cls_only): the last layer computes the [CLS] position only, the one the head
reads (the same logits, tests/test_fast_paths.py).
"""

import copy

import torch

from minibert.model import set_cls_only

from . import common
from .timing import Row, interleaved, median


def sorted_batches(tokenizer, texts: list[str], batch_size: int, max_length: int, device: str = "cpu") -> list[dict]:
    """Tokenize once, sort by length (longest first), cut into padded batches of `batch_size`."""
    ids = tokenizer.encode_batch(texts, max_length=max_length)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = [ids[i] for i in order[start:start + batch_size]]
        T = len(rows[0])
        input_ids = torch.full((len(rows), T), tokenizer.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T)
        for r, x in enumerate(rows):
            input_ids[r, :len(x)] = torch.tensor(x)
            mask[r, :len(x)] = 1
        batches.append({"input_ids": input_ids.to(device), "attention_mask": mask.to(device)})
    return batches


def predict_all(model, batches: list[dict]):
    """A function that runs the model over every batch: one timed unit."""
    model.eval()
    device = batches[0]["input_ids"].device.type

    @torch.inference_mode()
    def run():
        for b in batches:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                model(b["input_ids"], b["attention_mask"])
    return run


def inference_rows(model_name: str, batches: list[dict], repeats: int, device: str = "cpu", sync=lambda: None,
                   pretrained: bool = True, name: str | None = None, unit: str = "reviews/s") -> list[Row]:
    """Warm-up: one batch through each model (first-call costs: kernel selection, allocator); then whole passes.
    `pretrained=False`: the architecture with random weights (the same speed; for a machine without the weights)."""
    ours = common.build_ours(model_name, device, pretrained=pretrained)
    models = {"minibert": ours, "cls only": set_cls_only(copy.deepcopy(ours)),
              "sdpa": common.Logits(common.theirs_from(ours, ("sdpa",), device)["sdpa"])}
    n = sum(len(b["input_ids"]) for b in batches)
    T = max(b["input_ids"].shape[1] for b in batches)
    for model in models.values():
        predict_all(model, batches[-1:])()  # the shortest batch: cheap
    seconds = interleaved({k: predict_all(m, batches) for k, m in models.items()}, 0, repeats, sync)
    rate = {k: n / median(v) for k, v in seconds.items()}
    short = "MiniLM" if model_name == common.MINILM else "distilbert-base"
    batch = len(batches[0]["input_ids"])
    name = name or f"inference {short}, {n} reviews, batch {batch}, sorted, max {T} tok"
    return [Row(name, rate["minibert"], rate["sdpa"], unit, ">= 1.0"),
            Row(f"{name}: last layer at [CLS] only", rate["cls only"], rate["sdpa"], unit, ">= 1.0")]
