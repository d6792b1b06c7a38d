"""The smallest complete fine-tuning loop in minibert: read it before train.py.

    python docs/minimal_train.py --data <imdb folder>     # 300 reviews, 128 tokens, one epoch: under a minute on a CPU

tokenize, batch, forward, loss, backward, step, evaluate: nothing else. No learning-rate schedule, no mixed
precision, no checkpoints, no resume, one device. train.py is this loop with those added, each in its own step.
tests/test_minimal_train.py holds it to what it promises: one epoch on 300 reviews reaches more than 75% accuracy
on 200 test reviews.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `import minibert` works from any folder

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import minibert  # noqa: E402
from minibert.training.batching import Collator, LengthBucketBatchSampler  # noqa: E402
from minibert.training.data import prepare_imdb  # noqa: E402


def batches(split, pad_id: int, shuffle: bool, batch_size: int = 8):
    """Batches {"input_ids", "attention_mask": (B, T), "labels": (B,)}, each padded to its longest review."""
    sampler = LengthBucketBatchSampler(split.lengths, batch_size, shuffle=shuffle)  # reviews of similar length
    return torch.utils.data.DataLoader(split, batch_sampler=sampler, collate_fn=Collator(pad_id))


@torch.no_grad()  # evaluation needs no gradients: less memory, less time
def accuracy(model, loader) -> float:
    model.eval()  # dropout off
    right = sum((model(b["input_ids"], b["attention_mask"]).argmax(-1) == b["labels"]).sum().item() for b in loader)
    return right / len(loader.dataset)


def train_minimal(data, train_samples: int = 300, max_len: int = 128, lr: float = 1e-4, seed: int = 0) -> dict:
    torch.manual_seed(seed)  # the head's random init
    # The pretrained encoder with a new head; no dropout: one short epoch cannot overfit
    model = minibert.load_classifier("all-MiniLM-L6-v2", num_labels=2, pooling="mean", dropout=0.0,
                                     attention_dropout=0.0)
    tokenizer = minibert.load_tokenizer("all-MiniLM-L6-v2")
    tokenizer.truncation = "head+tail"  # a long review keeps its start and its end, where the verdict usually is
    # 1. tokenize: "[CLS] review [SEP]" as at most max_len ids; dev reviews are carved from the train split
    splits = prepare_imdb(data, tokenizer, max_len, train_samples, val_samples=100, eval_samples=200, seed=seed)
    train, dev, test = (batches(splits[s], tokenizer.pad_id, shuffle=s == "train") for s in ("train", "val", "test"))
    # The head starts untrained, so it learns 10x faster than the pretrained encoder beneath it
    head = [p for name, p in model.named_parameters() if name.startswith(("pre_classifier", "classifier"))]
    body = [p for name, p in model.named_parameters() if not name.startswith(("pre_classifier", "classifier"))]
    optimizer = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": 10 * lr}])
    model.train()
    losses = []
    for batch in train:  # 2. batch: (B, T) ids and mask, (B,) labels
        logits = model(batch["input_ids"], batch["attention_mask"])  # 3. forward: (B, 2)
        loss = F.cross_entropy(logits, batch["labels"])  # 4. loss: mean over the batch
        loss.backward()  # 5. backward: d loss / d every weight
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # one odd batch cannot throw the weights far
        optimizer.step()  # 6. step: AdamW moves each weight against its gradient
        optimizer.zero_grad()  # gradients add up otherwise
        losses.append(loss.item())
    # 7. evaluate on reviews the model never trained on
    return {"losses": losses, "dev_accuracy": accuracy(model, dev), "test_accuracy": accuracy(model, test)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The smallest complete fine-tuning loop in minibert.")
    parser.add_argument("--data", help="IMDB folder (train/test parquet or csv, or aclImdb/); omit for the hub")
    parser.add_argument("--train-samples", type=int, default=300, help="training reviews (default: 300)")
    args = parser.parse_args()
    result = train_minimal(args.data, args.train_samples)
    print(f"{len(result['losses'])} steps, loss {result['losses'][0]:.3f} -> {result['losses'][-1]:.3f}; "
          f"dev accuracy {100 * result['dev_accuracy']:.1f}%, test accuracy {100 * result['test_accuracy']:.1f}%")
