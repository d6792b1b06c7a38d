"""How every number in bench.py is taken: warm-up, interleaved repeats, median; and the rows they fill.

What is unusual:
- Interleaving. The machine is shared (2 CPU cores, other jobs come and go), so we never time all of ours and
  then all of theirs: round k runs ours once, then theirs once, then the next candidate. A burst of load then hits
  both sides of a comparison alike, and the median of the rounds ignores the worst bursts.
- On CUDA, kernels run asynchronously: `sync` (torch.cuda.synchronize) is called before the clock starts and
  before it stops, or we would time the kernel launches, not the work.
- Memory on CUDA is `torch.cuda.max_memory_allocated` after a reset. The CPU has no allocator statistics, so
  there we count what a training step must hold: weights, gradients, optimizer state, and the activations that
  autograd saves for backward (`saved_tensor_bytes`, through torch's saved-tensor hooks).
"""

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Row:
    """One line of the table and of --json: `ratio` = minibert / reference (None when there is no reference)."""

    name: str
    minibert: float
    reference: float | None
    unit: str
    goal: str = ""  # e.g. "<= 1.0": printed in the table, not written to --json

    @property
    def ratio(self) -> float | None:
        return None if not self.reference else self.minibert / self.reference

    def to_json(self) -> dict:
        return {"name": self.name, "minibert": self.minibert, "reference": self.reference, "unit": self.unit,
                "ratio": self.ratio}


def no_sync() -> None:
    pass


def sync_for(device: str) -> Callable[[], None]:
    """What to call before reading the clock: wait for queued GPU work on CUDA, nothing on CPU."""
    return torch.cuda.synchronize if device == "cuda" else no_sync


def interleaved(candidates: dict[str, Callable[[], object]], warmup: int = 1, repeats: int = 3,
                sync: Callable[[], None] = no_sync) -> dict[str, list[float]]:
    """Seconds per call of each candidate: `warmup` untimed rounds, then `repeats` timed rounds, interleaved."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    sync()
    seconds = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def tensor_bytes(tensors) -> int:
    """Bytes of distinct storages among `tensors` (a view and its base count once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor):
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


class saved_tensor_bytes:
    """Context manager: the bytes autograd keeps for backward during the forward run inside it (`.bytes`).

    Every tensor that a backward formula needs passes through the pack hook; storages are counted once.
    Weights that are saved too (a Linear saves its weight) are left out: they are counted as weights.
    """

    def __init__(self, model: torch.nn.Module):
        self.exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.exclude |= {b.untyped_storage().data_ptr() for b in model.buffers()}
        self.seen: set[int] = set()
        self.bytes = 0

    def pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.seen and ptr not in self.exclude:
            self.seen.add(ptr)
            self.bytes += storage.nbytes()
        return t

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)


def training_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Weights + buffers + gradients + optimizer state (AdamW: two moments per trainable parameter)."""
    weights = tensor_bytes(list(model.parameters()) + list(model.buffers()))
    grads = tensor_bytes(p.grad for p in model.parameters())
    state = tensor_bytes(v for s in optimizer.state.values() for v in s.values())
    return weights + grads + state


def format_table(rows: list[Row]) -> str:
    """A plain-text table: name, minibert, reference, unit, ratio, goal."""
    header = ("benchmark", "minibert", "reference", "unit", "ratio", "goal")
    body = [(r.name, fmt(r.minibert), fmt(r.reference), r.unit, "" if r.ratio is None else f"{r.ratio:.2f}", r.goal)
            for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i in (0, 3, 5) else str(c).rjust(w) for i, (c, w) in
                       enumerate(zip(line, widths))).rstrip() for line in [header, *body]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"
