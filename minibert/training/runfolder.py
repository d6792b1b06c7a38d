"""The run folder train.py writes: metrics.jsonl, and figures of the report (peak memory, machine).

metrics.jsonl is append-only, one JSON object per line: {"type": "train", "step", "loss", "lr", ...} every few
steps and {"type": "eval", "split": "val" | "test", "accuracy", "f1", ...} per evaluation. A resumed run first
cuts it back to the length it had at the checkpoint, so lines written after the checkpoint are not doubled.
"""

import contextlib
import json
import os
import resource
from pathlib import Path

import torch

from minibert.errors import UserError


class Run:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.metrics_path = self.folder / "metrics.jsonl"

    def log(self, **record) -> None:
        with writing(self.metrics_path, self.folder), open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def n_lines(self) -> int:
        return len(self.metrics_path.read_text().splitlines()) if self.metrics_path.exists() else 0

    def truncate(self, n: int) -> None:
        """Keep the first n lines: those logged up to the checkpoint we resume from."""
        lines = self.metrics_path.read_text().splitlines(keepends=True)[:n] if self.metrics_path.exists() else []
        self.metrics_path.write_text("".join(lines))

    def records(self, type_: str, split: str | None = None) -> list[dict]:
        """The lines of one type (and split). A torn last line, from a crash mid-write, is skipped: the resume
        that follows cuts it off anyway. Any other line that is not JSON is an error naming its number."""
        text = self.metrics_path.read_text() if self.metrics_path.exists() else ""
        lines = text.splitlines()
        out = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines) and not text.endswith("\n"):
                    continue
                raise UserError(f"{self.metrics_path}, line {number}, is not JSON; fix or delete that line") from None
        return [r for r in out if r.get("type") == type_ and (split is None or r.get("split") == split)]


@contextlib.contextmanager
def writing(path: Path, run_folder: Path):
    """A write into the run folder that fails (a full disk, a folder made read-only) is the user's to fix: one line
    saying so. The last checkpoint is whole (train_state.py writes it atomically), so a resume continues from it."""
    try:
        yield
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror or err}); free space, then resume with --resume "
                        f"{run_folder}") from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: into a temporary file beside it, then renamed over it. On any
    failure (a full disk included) the temporary file is removed and `path` is as it was."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {err.strerror or err}; free space or choose another --out") from None


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
