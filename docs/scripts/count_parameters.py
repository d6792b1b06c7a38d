"""Count the parameters of the encoders the docs compare, by building them (docs/architecture.md pastes the output).

    python docs/scripts/count_parameters.py

Three classifiers with 2 labels, all minibert modules: the distilbert-base-uncased preset (random init, the
model the course recipe trains), a BERT-base-sized model (the same Config with BERT's 12 layers, token types and
pooler: no weights needed, only the shapes), and the pretrained all-MiniLM-L6-v2 (read from its folder). Counted
per part, so the table shows where the parameters sit and what distillation removed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import torch  # noqa: E402

import minibert  # noqa: E402


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parts(model: minibert.Classifier) -> dict[str, int]:
    """Parameters per part of a Classifier, in the order the data flows through them."""
    emb = model.encoder.embeddings
    return {
        "word embeddings (V x D)": count(emb.word_embeddings),
        "position embeddings (512 x D)": count(emb.position_embeddings),
        "token-type embeddings (2 x D)": count(emb.token_type_embeddings) if emb.token_type_embeddings else 0,
        "embedding LayerNorm": count(emb.LayerNorm),
        "one block: attention q,k,v,out (4 D^2 + 4 D)": count(model.encoder.layers[0].attention),
        "one block: FFN lin1, lin2 (2 D F + F + D)": count(model.encoder.layers[0].ffn),
        "one block: 2 LayerNorms (4 D)": count(model.encoder.layers[0].sa_layer_norm) * 2,
        "all blocks (n_layers x block)": count(model.encoder.layers),
        "head: pre_classifier / pooler (D^2 + D)": count(model.pre_classifier),
        "head: classifier (D C + C)": count(model.classifier),
        "total": count(model),
    }


def main() -> None:
    torch.manual_seed(0)
    distil = minibert.build_classifier(minibert.preset("distilbert-base-uncased"))
    # BERT-base's published shape: 12 layers, token types, the tanh pooler. Random weights: only shapes matter.
    bert_base = minibert.build_classifier(
        minibert.preset("distilbert-base-uncased").with_(family="bert", n_layers=12, type_vocab_size=2))
    minilm = minibert.load_classifier("all-MiniLM-L6-v2", num_labels=2)
    models = {"distilbert-base (preset)": distil, "BERT-base shape": bert_base, "all-MiniLM-L6-v2": minilm}
    for name, m in models.items():
        c = m.config
        print(f"{name}: D={c.dim} H={c.n_heads} Dh={c.head_dim} F={c.hidden_dim} layers={c.n_layers} "
              f"V={c.vocab_size} token types={c.type_vocab_size} head={c.family}")
    counts = {name: parts(m) for name, m in models.items()}
    print()
    print("| part | " + " | ".join(models) + " |")
    print("|---|" + "---:|" * len(models))
    for row in counts["distilbert-base (preset)"]:
        cells = [f"{counts[name][row]:,}" for name in models]
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
