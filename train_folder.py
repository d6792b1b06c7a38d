"""The run folder of train.py: claimed for a new run, started once the run is ready, or resumed.

A folder holding another run's output is never written into without --overwrite; run_config.json is written only
once the model and data are built, so a run refused before that leaves nothing; a resume is refused when
run_config.json no longer matches the fingerprint its checkpoint recorded (tests/test_train_checks.py).
"""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from minibert.training import train_state
from minibert.errors import UserError
from minibert.training.runfolder import Run, atomic_write_text
from train_config import RunConfig, check, fingerprint, refuse_flags_beside_resume

RUN_OUTPUTS = ("run_config.json", "metrics.jsonl", "report.json", train_state.CHECKPOINT, "model", "adapter",
               "curves.png", "confusion.png")  # what a run writes into its folder


def resume_config(folder: Path, cfg: RunConfig) -> tuple[RunConfig, dict]:
    """The saved settings of the run in `folder` and its checkpoint, refused when the two disagree: a seed edited in
    run_config.json would otherwise move validation reviews into training."""
    refuse_flags_beside_resume(cfg)
    saved = folder / "run_config.json"
    if not saved.is_file():
        raise UserError(f"{folder} is not a run folder (no run_config.json); start a run there without --resume")
    try:
        settings = json.loads(saved.read_text())
        cfg = RunConfig(**{**settings, "resume": None, "out": str(folder)})  # messages name this folder, not the first
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
        raise UserError(f"{saved} is not a run config train.py wrote ({err}); start a new run") from None
    if not (folder / train_state.CHECKPOINT).is_file():
        done = "finished: its model is in model/" if (folder / "report.json").is_file() else "not checkpointed yet"
        raise UserError(f"{folder} has no {train_state.CHECKPOINT} to resume from (the run is {done})")
    resume_from = train_state.load(folder)
    changed = sorted(k for k, v in fingerprint(cfg).items() if resume_from.get("config", {}).get(k, v) != v)
    if changed:
        raise UserError(f"{saved} no longer matches the run's checkpoint ({', '.join(changed)} changed); "
                        "restore it, or start a new run")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{folder} was a CUDA run and torch sees no CUDA device here; resume it on a GPU machine")
    check(cfg)  # a checkpoint written before fingerprints were saved checks nothing above
    if settings.get("out") != str(folder):  # a copied folder: from now on it records itself
        atomic_write_text(saved, json.dumps({**settings, "out": str(folder)}, indent=2) + "\n")
    return cfg, resume_from


def claim_run_folder(cfg: RunConfig) -> Path:
    """The folder a new run writes into: refused when it holds another run's output, unless --overwrite."""
    folder = Path(cfg.out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file, not a folder")
    found = [name for name in RUN_OUTPUTS if (folder / name).exists()]
    if found and not cfg.overwrite:
        unfinished = (folder / train_state.CHECKPOINT).exists() and not (folder / "report.json").exists()
        hint = f"continue it with --resume {folder}, " if unfinished else ""
        raise UserError(f"{folder} already holds run output ({', '.join(found)}); {hint}choose another --out, "
                        "or pass --overwrite to replace it")
    return folder


def start_run_folder(cfg: RunConfig, folder: Path) -> Run:
    """Write the run's settings, once the model and data are ready: a run refused before that leaves nothing."""
    for name in RUN_OUTPUTS:  # --overwrite: the old run's output goes, other files in the folder stay
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "run_config.json", json.dumps(asdict(cfg), indent=2) + "\n")
    return Run(folder)
