"""What freezing the bottom layers saves: one training step of all-MiniLM-L6-v2 with every weight training, and
with the embeddings and the bottom N encoder layers frozen, timed in one process.

    python docs/scripts/frozen_step.py            # batch 16 x 320 tokens, bf16 where the CPU multiplies it

Nothing below the lowest trainable layer needs a gradient, so autograd runs no backward pass there, and AdamW
updates fewer weights. The forward pass costs the same.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repository root

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import minibert  # noqa: E402
from minibert.training.runfolder import device_name  # noqa: E402
from train_config import cpu_multiplies_bf16  # noqa: E402


def step_seconds(frozen: int, batch: int, length: int, bf16: bool, repeats: int) -> float:
    torch.manual_seed(0)
    model = minibert.load_classifier("all-MiniLM-L6-v2", num_labels=2, pooling="mean", dropout=0.0,
                                     attention_dropout=0.0)
    if frozen:
        for module in (model.encoder.embeddings, *model.encoder.layers[:frozen]):
            module.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(1000, 30000, (batch, length))  # (B, T): random words, the cost does not depend on them
    mask, labels = torch.ones_like(ids), torch.randint(0, 2, (batch,))
    times = []
    for _ in range(repeats + 2):  # the first two warm the allocator and oneDNN's kernels up
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids, mask)  # (B, 2)
        F.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return sorted(times[2:])[len(times[2:]) // 2]  # the median


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frozen", type=int, nargs="+", default=[0, 2], help="frozen layers to time (default: 0 2)")
    parser.add_argument("--repeats", type=int, default=6, help="timed steps each (default: 6)")
    args = parser.parse_args()
    bf16 = cpu_multiplies_bf16()
    print(f"{device_name('cpu')}, batch 16 x 320 tokens, "
          f"{'bf16' if bf16 else 'float32'}")
    base = None
    for frozen in args.frozen:
        seconds = step_seconds(frozen, 16, 320, bf16, args.repeats)
        base = base or seconds
        print(f"  bottom {frozen} layers frozen: {seconds:.2f} s a step ({seconds / base:.2f}x)")
