"""Weight memory of a classifier in float32 and with its linear layers in 4-bit NF4 (docs/nf4.md pastes the output).

    python docs/scripts/weight_memory.py

quant.quantize_model replaces every nn.Linear except the head by a 4-bit layer and reports the bytes before and
after (quant.model.MemoryReport); backend="reference" (quant.linear.NF4Linear) holds the same bytes as
bitsandbytes' Linear4bit without importing it. Embeddings, LayerNorms and biases stay float32, as in QLoRA.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import torch  # noqa: E402

import minibert  # noqa: E402
import quant  # noqa: E402


def main() -> None:
    builders = {
        "all-MiniLM-L6-v2": lambda: minibert.load_classifier("all-MiniLM-L6-v2", num_labels=2),
        "distilbert-base (preset)": lambda: minibert.build_classifier(minibert.preset("distilbert-base-uncased")),
    }
    for name, build in builders.items():
        for double_quant in (False, True):
            torch.manual_seed(0)
            report = quant.quantize_model(build(), double_quant=double_quant, backend="reference")
            print(f"{name}, NF4 block 64{', double quant' if double_quant else ''}:")
            print("  " + str(report).replace("\n", "\n  "))


if __name__ == "__main__":
    main()
