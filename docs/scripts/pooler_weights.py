"""Was all-MiniLM-L6-v2's pooler ever trained? Its weights, against those of a layer that was.

    python docs/scripts/pooler_weights.py

BERT's pooler (dense + tanh on [CLS]) is trained by next-sentence prediction. sentence-transformers trained
all-MiniLM-L6-v2 through mean pooling, which never reads the pooler: no gradient ever reached it, and its bias is
still exactly zero. minibert loads it into `pre_classifier`, which is why train.py gives the head its own, larger
learning rate (docs/defaults.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

from safetensors.torch import load_file  # noqa: E402

from minibert.paths import minilm_dir  # noqa: E402

weights = load_file(minilm_dir() / "model.safetensors")
prefix = "" if "pooler.dense.bias" in weights else "bert."
for name in ("pooler.dense.weight", "pooler.dense.bias", "encoder.layer.0.attention.self.query.weight",
             "encoder.layer.5.output.dense.weight"):
    w = weights[prefix + name].float()
    print(f"{name:45s} {str(tuple(w.shape)):12s} std {w.std().item():.4f}  max |w| {w.abs().max().item():.4f}")
