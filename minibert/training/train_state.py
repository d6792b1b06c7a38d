"""Crash-safe training state: everything needed to continue a run exactly where it stopped.

A checkpoint holds the trainable weights, the optimizer's moments, the schedule's position, the random number
generators and the data position (epoch, batch). With all five restored, a run killed at any step and resumed
computes bit for bit what the uninterrupted run computes (on CPU, same seed; tested in tests/test_train.py).

Written atomically: to a temporary file in the same folder, flushed to disk, then renamed over the old one. A
crash during the write leaves the previous checkpoint intact, never half a file. Read back with
`torch.load(weights_only=True)`, which refuses to unpickle anything but tensors and plain containers.

Ctrl-C is not a crash: the loop saves a checkpoint when it arrives. It must then arrive between steps, where the
counters say which steps are done: `interrupts_deferred` holds it back until the step inside has been counted.
"""

import contextlib
import os
import random
import signal
import threading
from pathlib import Path

import torch

from minibert.errors import UserError

CHECKPOINT = "checkpoint.pt"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl-C (SIGINT) inside the block raises KeyboardInterrupt when the block ends, not where it lands.

    Raised inside optimizer.step(), it would leave some weights updated and others not, with the step counter
    still before the step: the checkpoint saved on Ctrl-C would then resume a step that was half done."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes: frozen weights are rebuilt from the pretrained checkpoint on resume."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def save(run_dir: Path, **state) -> Path:
    """Write `state` (tensors, numbers, strings, lists, dicts) to run_dir/checkpoint.pt atomically."""
    path = Path(run_dir) / CHECKPOINT
    tmp = path.with_suffix(".pt.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path} ({err}); the previous checkpoint is kept: free space, then resume "
                        f"with --resume {run_dir}") from None
    return path


def load(run_dir: Path) -> dict:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {run_dir}: nothing to resume (was the run started there?)")
    return torch.load(path, map_location="cpu", weights_only=True)
