"""What the model outputs, step by step, on one real IMDB review (docs/outputs.md pastes the output).

    python docs/scripts/show_outputs.py

all-MiniLM-L6-v2 loaded as a classifier (pretrained encoder and pooler; the 2-way classifier layer is new and
random, seed 0). The forward pass is spelled out as Classifier.forward runs it, printing shapes and a few values.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import minibert  # noqa: E402

# IMDB test reviews id 5110 (positive, rating 10) and id 12100 (negative, rating 1), verbatim.
REVIEW = "This is a good film. This is very funny. Yet after this film there were no good Ernest films!"
NEGATIVE = "Hated it with all my being. Worst movie ever. Mentally- scarred. Help me. It was that bad.TRUST ME!!!"


def show(name: str, t: torch.Tensor, n: int = 4) -> None:
    fmt = "{:d}" if not t.is_floating_point() else "{:+.3f}"
    values = ", ".join(fmt.format(v) for v in t.flatten()[:n].tolist())
    print(f"{name:<44} {str(tuple(t.shape)):<12} [{values}{', ...' if t.numel() > n else ''}]")


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    model = minibert.load_classifier("all-MiniLM-L6-v2", num_labels=2, pooling="cls")  # eval mode
    tokenizer = minibert.load_tokenizer("all-MiniLM-L6-v2")
    batch = tokenizer([REVIEW], max_length=256)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    show("input_ids (B, T)", ids)
    x = model.encoder.embeddings(ids)
    show("embeddings (B, T, D)", x)
    for i, layer in enumerate(model.encoder.layers):
        x = layer(x, mask)
        show(f"hidden state after layer {i + 1} (B, T, D)", x)
    cls = x[:, 0]
    show("[CLS] vector = hidden[:, 0] (B, D)", cls)
    pooled = model.activation(model.pre_classifier(cls))
    show("pooler: tanh(W cls + b) (B, D)", pooled)
    logits = model.classifier(pooled)  # dropout is the identity in eval mode
    show("logits = classifier(pooled) (B, C)", logits)
    probs = logits.softmax(dim=-1)
    show("probabilities = softmax(logits) (B, C)", probs)
    assert torch.allclose(logits, model(ids, mask), atol=1e-6)  # the same as the model's own forward
    print(f"prediction: {['negative', 'positive'][probs.argmax().item()]} (p = {probs.max().item():.3f}); "
          "the classifier layer is untrained, so this is a coin flip")

    # The same encoder used as-is, as the sentence embedder it was trained to be: mean of the real tokens.
    embed = minibert.load_classifier("all-MiniLM-L6-v2", num_labels=2, pooling="mean")
    texts = [REVIEW, "A wonderful, very funny movie.", NEGATIVE]
    b = tokenizer(texts, max_length=256)
    hidden = embed.encoder(b["input_ids"], b["attention_mask"])  # (3, T, D)
    vectors = F.normalize(embed.pool(hidden, b["attention_mask"]), dim=-1)  # (3, D), unit length
    similarity = vectors @ vectors.T  # (3, 3) cosine similarities
    print("cosine similarity of mean-pooled vectors, review vs: a positive sentence "
          f"{similarity[0, 1]:.3f}, a negative review {similarity[0, 2]:.3f}")


if __name__ == "__main__":
    main()
