"""The run folder train.py writes: metrics.jsonl, and figures of the report (peak memory, machine).

metrics.jsonl is append-only, one JSON object per line: {"type": "train", "step", "loss", "lr", ...} every few
steps and {"type": "eval", "split": "val" | "test", "accuracy", "f1", ...} per evaluation. A resumed run first
cuts it back to the length it had at the checkpoint, so lines written after the checkpoint are not doubled.
"""

import json
import resource
from pathlib import Path

import torch


class Run:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.metrics_path = self.folder / "metrics.jsonl"

    def log(self, **record) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def n_lines(self) -> int:
        return len(self.metrics_path.read_text().splitlines()) if self.metrics_path.exists() else 0

    def truncate(self, n: int) -> None:
        """Keep the first n lines: those logged up to the checkpoint we resume from."""
        lines = self.metrics_path.read_text().splitlines(keepends=True)[:n] if self.metrics_path.exists() else []
        self.metrics_path.write_text("".join(lines))

    def records(self, type_: str, split: str | None = None) -> list[dict]:
        lines = self.metrics_path.read_text().splitlines() if self.metrics_path.exists() else []
        out = [json.loads(line) for line in lines if line.strip()]
        return [r for r in out if r["type"] == type_ and (split is None or r.get("split") == split)]


def peak_memory_mb(device: str) -> float:
    """CUDA: the most memory torch allocated on the GPU. CPU: the process's peak resident set (RSS)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "CPU")
    return f"{cpu} ({torch.get_num_threads()} threads)"
