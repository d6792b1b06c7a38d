""""Used as-is": the pretrained encoder with its new, untrained classification head, on train.py's val split.

    python docs/scripts/untrained_head.py --data path/to/imdb
    python docs/scripts/untrained_head.py --data path/to/imdb --no-special-tokens   # no [CLS]/[SEP]

The split is train.py's CPU default, read from train_config.py (a seed-0 shuffle of the train reviews, whose first
reviews are validation; train.py's max length and truncation). For each seed, the classifier is built exactly as
train.py builds it before step 0 (torch.manual_seed(seed), then load_classifier): pretrained encoder, the
checkpoint's (untrained) pooler, a random 2-way layer. The encoder runs once; only the random layer changes
between seeds. For comparison, a zero-training use of the same encoder as a sentence embedder: each review takes
the label whose description its mean-pooled vector is closest to (the two descriptions below were fixed before
measuring and never tuned). With --no-special-tokens every text is encoded without [CLS]/[SEP] (yet the cls
pooling still reads position 0), as the course recipe minibert's experiment follows does (docs/input-format.md).
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import minibert  # noqa: E402
from minibert.training.batching import Collator, LengthBucketBatchSampler  # noqa: E402
from minibert.training.data import prepare_imdb  # noqa: E402
from minibert.training.runfolder import device_name  # noqa: E402
from train_config import DEVICE_DEFAULTS, RunConfig  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
DESCRIPTIONS = ["This movie is terrible.", "This movie is great."]  # label 0 = negative, 1 = positive


@torch.no_grad()
def pooled_features(model, split, pad_id: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """{"cls": (N, D), "mean": (N, D)} pooled last hidden states, and the labels (N,), in split order."""
    collate = Collator(pad_id)
    out = {"cls": torch.empty(len(split), model.config.dim), "mean": torch.empty(len(split), model.config.dim)}
    labels = torch.empty(len(split), dtype=torch.long)
    for positions in LengthBucketBatchSampler(split.lengths, 32, bucket=True, shuffle=False):
        batch = collate([split[i] for i in positions])
        hidden = model.encoder(batch["input_ids"], batch["attention_mask"])  # (B, T, D)
        out["cls"][positions] = hidden[:, 0]
        mask = batch["attention_mask"][:, :, None].float()  # (B, T, 1)
        out["mean"][positions] = (hidden * mask).sum(1) / mask.sum(1)  # (B, D), as Classifier.pool does
        labels[positions] = batch["labels"]
    return out, labels


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("MINIBERT_DATA"), required="MINIBERT_DATA" not in os.environ,
                        help="IMDB folder (train/test parquet); default $MINIBERT_DATA")
    parser.add_argument("--split", default="val", choices=["val", "test"], help="which split to score")
    parser.add_argument("--seeds", type=int, default=10, help="random heads to try (seeds 0..N-1)")
    parser.add_argument("--special-tokens", default=True, action=argparse.BooleanOptionalAction,
                        help="add [CLS]/[SEP] to every text (--no-special-tokens: the course recipe's way)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = minibert.load_classifier(MODEL, num_labels=2)
    tokenizer = minibert.load_tokenizer(MODEL)
    tokenizer.truncation = RunConfig.truncation  # train.py's defaults: how reviews are cut, and which are drawn
    cpu = DEVICE_DEFAULTS["cpu"]
    data = prepare_imdb(args.data, tokenizer, max_len=RunConfig.max_len, train_samples=cpu["train_samples"],
                        val_samples=cpu["val_samples"], eval_samples=1000, seed=RunConfig.seed,
                        add_special_tokens=args.special_tokens)
    split = data[args.split]
    t0 = time.perf_counter()
    features, labels = pooled_features(model, split, tokenizer.pad_id)
    print(f"{MODEL}, {len(split)} {args.split} reviews ({labels.float().mean():.1%} positive), "
          f"[CLS]/[SEP] {'added' if args.special_tokens else 'NOT added'}, encoder pass "
          f"{time.perf_counter() - t0:.0f} s on {device_name('cpu')}")

    for pooling in ("cls", "mean"):
        accuracies = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            head = minibert.load_classifier(MODEL, num_labels=2)  # the same draws as train.py's build_model
            with torch.no_grad():
                logits = head.classifier(head.activation(head.pre_classifier(features[pooling])))  # (N, C)
            accuracies.append((logits.argmax(-1) == labels).float().mean().item())
        acc = torch.tensor(accuracies)
        print(f"untrained head, pooling={pooling}: accuracy seed 0 {acc[0]:.1%}; over {args.seeds} seeds "
              f"mean {acc.mean():.1%}, min {acc.min():.1%}, max {acc.max():.1%}")

    with torch.no_grad():
        described = tokenizer(DESCRIPTIONS, max_length=32, add_special_tokens=args.special_tokens)
        hidden = model.encoder(described["input_ids"], described["attention_mask"])  # (2, T, D)
        mask = described["attention_mask"][:, :, None].float()
        anchors = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # (2, D)
        predicted = (F.normalize(features["mean"], dim=-1) @ anchors.T).argmax(-1)  # (N,) nearest description
    print(f"no training, nearest of {DESCRIPTIONS}: accuracy {(predicted == labels).float().mean():.1%}")


if __name__ == "__main__":
    main()
