"""A padded batch, its attention mask, and what the mask is for (docs/input-format.md pastes the output).

    python docs/scripts/show_batch.py

Two texts of different lengths are tokenized together: the shorter is padded with [PAD] (id 0) up to the longer
one, and its attention mask is 0 there. Then the pretrained all-MiniLM-L6-v2 encoder runs on the short text alone
and inside the padded batch: with the mask its vectors do not change, without it they do.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import torch  # noqa: E402

import minibert  # noqa: E402

TEXTS = ["Read the book, forget the movie!", "hello my name is kevin"]


@torch.no_grad()
def main() -> None:
    tokenizer = minibert.load_tokenizer("all-MiniLM-L6-v2")
    batch = tokenizer(TEXTS, max_length=256)
    for name in ("input_ids", "attention_mask"):
        print(f"{name} {tuple(batch[name].shape)}:\n{batch[name]}")
    print("tokens of row 1:", tokenizer.convert_ids_to_tokens(batch["input_ids"][1]))

    encoder = minibert.load_encoder("all-MiniLM-L6-v2")
    alone = tokenizer(TEXTS[1:], max_length=256)
    T = alone["input_ids"].shape[1]  # the real tokens of the short text
    h_alone = encoder(alone["input_ids"], alone["attention_mask"])[0]  # (T, D)
    h_masked = encoder(batch["input_ids"], batch["attention_mask"])[1, :T]  # (T, D): padded row, real positions
    h_unmasked = encoder(batch["input_ids"], torch.ones_like(batch["attention_mask"]))[1, :T]  # mask ignored
    print(f"short text alone vs padded in the batch, largest difference over its {T} real tokens x D:")
    print(f"  with the attention mask:    {(h_masked - h_alone).abs().max().item():.1e}")
    print(f"  without (all ones):         {(h_unmasked - h_alone).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
