"""Fine-tune a BERT-style encoder on IMDB sentiment: a plain PyTorch loop, no Trainer.

    python train.py                                # all-MiniLM-L6-v2, full fine-tuning (IMDB from the hub)
    python train.py --data path/to/imdb            # the same on a local copy (parquet/csv files, or aclImdb/)
    python train.py --data path/to/imdb --init random   # DistilBERT from random init
    python train.py --resume runs/<timestamp>      # continue a killed or interrupted run

This file builds a run and calls its loop; the parts live beside it: train_config.py (every flag, its default and
its checks), train_model.py (the model, AdamW, the schedule), train_loop.py (the training step, evaluation and the
epoch in named parts: read this one for the loop), train_folder.py (the run folder), train_outputs.py (the export).

What is unusual here, on purpose:
- Refuse early. Every flag is checked against its range, the others and the model (train_config.py) before
  anything is written; a run folder holding another run's output is never written into without --overwrite.
- Crash safety. Every --save-every optimizer steps and at each epoch end, the trainable weights, optimizer,
  schedule, RNG states, data position and a fingerprint of the settings are written atomically
  (minibert/training/train_state.py). A run killed with SIGKILL and resumed ends with bitwise the same weights and
  metrics as an uninterrupted one (CPU, same seed). Ctrl-C saves and exits when the current step is done (so that it
  resumes exactly too); a NaN/inf loss stops the run and keeps the last good checkpoint.
- No DataLoader: batches are lists of indices from a sampler whose order is a pure function of (seed, epoch),
  collated in the loop. A DataLoader would draw from the global RNG each epoch, which breaks exact resume, and
  with short CPU batches its worker processes buy nothing.
- Several processes: `torchrun --nproc_per_node=N train.py ...` runs DistributedDataParallel (gloo on CPU, nccl on
  CUDA). --batch-size stays the reviews per optimizer step, split across ranks; rank 0 alone writes the run folder.
- Defaults depend on the device (train_config.py, with every flag): a 2-core CPU gets a recipe measured to fit
  6 minutes, a GPU gets the full train set. Every flag overrides them.
"""

import time

PROCESS_START = time.perf_counter()  # before torch is imported: a run's wall time includes the imports

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# Idle OpenMP threads otherwise spin, holding the core their partner needs: on a busy 2-core machine a training
# step took 3.2-4.4 s with spinning and 0.9-1.2 s without (bench.py). Must be set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import lora  # noqa: E402
import minibert  # noqa: E402
import quant  # noqa: E402
from minibert.errors import UserError, run_cli  # noqa: E402
from minibert.training import distributed as dist  # noqa: E402
from minibert.training.batching import Collator, PadToMultiple  # noqa: E402
from minibert.training.cuda_graphs import ShapeGraphs, keep_grads  # noqa: E402
from minibert.training.data import prepare_imdb  # noqa: E402
from minibert.training.plots import plot_confusion, plot_curves  # noqa: E402
from minibert.training.runfolder import Run, atomic_write_text, device_name, peak_memory_mb, writing  # noqa: E402
from quant.model import count_bytes  # noqa: E402
from train_config import RunConfig, parse_args, resolve  # noqa: E402
from train_folder import claim_run_folder, resume_config, start_run_folder  # noqa: E402
from train_loop import Loop, evaluate, say  # noqa: E402
from train_model import LABELS, build_model  # noqa: E402
from train_outputs import export, summary  # noqa: E402


# ------------------------------------------------------------------------------------------------------------
# The run: build, train, test, export
# ------------------------------------------------------------------------------------------------------------

def train(cfg: RunConfig, folder: Path | None, resume_from: dict | None) -> dict:
    """Build, train, evaluate and export; `folder` is None on ranks other than 0 (they write nothing)."""
    rank, world = dist.rank_and_world()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model, tokenizer = build_model(cfg)
    model.to(cfg.device).train()
    data = prepare_imdb(cfg.data, tokenizer, max_len=cfg.max_len, eval_max_len=cfg.eval_max_len,
                        train_samples=cfg.train_samples, val_samples=cfg.val_samples, eval_samples=cfg.eval_samples,
                        seed=cfg.seed, add_special_tokens=cfg.special_tokens)
    loop = Loop.build(cfg, model, data, Collator(tokenizer.pad_id))
    trainable, total = lora.trainable_parameters(model)
    say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)  |  "
        f"train {len(data['train'])}, val {len(data['val'])}, test {len(data['test'])} reviews  |  "
        f"{loop.total_steps // cfg.epochs} steps/epoch x {cfg.epochs}"
        + (f"  |  {world} processes" if world > 1 else ""))
    torch.manual_seed(cfg.seed + 1000 * rank)  # each rank draws its own dropout masks; DDP keeps the weights equal
    # Everything is checked and built: only now is the run folder written (a fresh run); a resume cuts it back
    loop.run = None if folder is None else start_run_folder(cfg, folder) if resume_from is None else Run(folder)
    if resume_from is not None:
        loop.restore(resume_from)
    loop.forward, loop.train_collate = fast_paths(model, cfg, world, loop.collate, tokenizer.pad_id)
    loop.run_all()

    t0 = time.perf_counter()
    test = evaluate(model, data["test"], loop.collate, cfg, "testing")
    eval_seconds = time.perf_counter() - t0
    if loop.run is None:
        return {}
    loop.run.log(type="eval", split="test", step=loop.step, epoch=loop.epoch, **test)
    val = loop.run.records("eval", "val")[-1]
    with writing(loop.run.folder / "model", loop.run.folder):
        export(model, tokenizer, loop.run.folder, cfg)
    return dict(val_accuracy=val["accuracy"], val_f1=val["f1"], val_loss=val["loss"], test_accuracy=test["accuracy"],
                test_f1=test["f1"], test_loss=test["loss"], test_confusion=test["confusion"],
                train_seconds=loop.train_seconds, loop_seconds=loop.loop_seconds, test_eval_seconds=eval_seconds,
                steps=loop.step, median_step_seconds=median(loop.step_times),
                train_reviews_per_s=(len(data["train"]) * cfg.epochs / loop.train_seconds if loop.train_seconds
                                     else None),
                trainable_params=trainable, total_params=total, peak_memory_mb=peak_memory_mb(cfg.device),
                weight_memory_mb=count_bytes(model)[1] / 2**20, n_train=len(data["train"]),
                n_val=len(data["val"]), n_test=len(data["test"]), processes=world, device=device_name(cfg.device),
                **({"cuda_graphs": loop.forward.records} if cfg.cuda_graphs else {}))


def fast_paths(model, cfg: RunConfig, world: int, collate, pad_id: int):
    """(what the loop calls forward on, the training batches' collate): the model itself, or the same model behind
    DDP or CUDA graphs; --cls-only and --compile change the model in place."""
    if cfg.cls_only:  # the last layer computes position 0 only (minibert/block.py Block.first_token)
        minibert.model.set_cls_only(model)
    if cfg.compile:
        minibert.model.compile_model(model)
    forward = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if cfg.pad_multiple > 1:  # fewer batch widths, e.g. one for CUDA graphs
        collate = PadToMultiple(collate, cfg.pad_multiple, pad_id, cfg.max_len)
    if cfg.cuda_graphs:  # minibert/training/cuda_graphs.py: one recorded forward + backward per batch shape
        if world > 1:
            raise UserError("--cuda-graphs runs in one process only (DDP's gradient all-reduce is not recorded)")
        forward = ShapeGraphs(model)
        keep_grads(model)
    return forward, collate


def median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def main(argv=None) -> dict:
    cfg = parse_args(argv)
    if cfg.resume:
        folder = Path(cfg.resume)
        cfg, resume_from = resume_config(folder, cfg)
        dist.setup(cfg.device)
    else:
        cfg, resume_from = resolve(cfg), None
        dist.setup(cfg.device)
        cfg.out = dist.broadcast(cfg.out)  # a timestamped name must be the same on every rank
        folder = claim_run_folder(cfg) if dist.is_main() else Path(cfg.out)
    main_rank = dist.is_main()
    try:
        report = train(cfg, folder if main_rank else None, resume_from)
    finally:
        dist.teardown()
    if not main_rank:
        return report
    run = Run(folder)
    plot_curves(run.records("train"), run.records("eval", "val"), folder / "curves.png")
    plot_confusion(report["test_confusion"], LABELS, folder / "confusion.png")
    # From this process's start (imports included) to here; a resumed run counts its last process only
    report.update(wall_seconds=time.perf_counter() - PROCESS_START, resumed=resume_from is not None)
    atomic_write_text(folder / "report.json", json.dumps(report, indent=2) + "\n")
    print("\n" + summary(cfg, report))
    return report


def cli() -> None:
    """The `minibert-train` command: errors a user can fix are one line (`error: ...`), exit 2."""
    sys.exit(run_cli(main, also=(lora.AdapterError, quant.QuantError)))


if __name__ == "__main__":
    cli()
