"""The loop of train.py, in named parts: one training step, evaluation over a split, and the epoch around them
(logging, validation, checkpoints, Ctrl-C, resume). train.py builds what it needs and calls `Loop.run_all`.

A reader learning the loop reads `train_step` and `evaluate` first (docs/minimal_train.py is the same loop
without any of the rest), then `Loop.run_epoch`.
"""

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from minibert.errors import UserError
from minibert.training import distributed as dist
from minibert.training import train_state
from minibert.training.batching import Collator, LengthBucketBatchSampler
from minibert.training.metrics import confusion_matrix, metrics_from_confusion
from minibert.training.runfolder import Run
from train_config import RunConfig, fingerprint, validations_for
from train_model import linear_warmup_decay, make_optimizer


# ------------------------------------------------------------------------------------------------------------
# One training step, and evaluation
# ------------------------------------------------------------------------------------------------------------

def autocast(cfg: RunConfig):

    """--precision bf16: matmuls in bfloat16 under autocast, float32 master weights; fp32: plain float32."""
    return torch.autocast(cfg.device, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def to_device(batch: dict, device: str, keep_mask: bool = False) -> dict:
    """Move a collated batch to the device. A mask without padding is dropped (checked here, on the CPU, so the
    GPU is never waited for): it would add 0 to every score, and without it SDPA may use its flash kernel.
    `keep_mask` (CUDA graphs): keep it, so that one recorded graph per batch shape serves every batch."""
    if not keep_mask and bool(batch["attention_mask"].all()):
        batch = {k: v for k, v in batch.items() if k != "attention_mask"}
    if device == "cuda":  # page-locked memory lets the copy run while the GPU still works on the last step
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch


@torch.no_grad()
def evaluate(model, split, collate, cfg: RunConfig, desc: str) -> dict:
    """Loss, accuracy, F1 and confusion matrix over a whole split, batches sorted by length (fast, same result).

    Under torchrun each rank evaluates every world-th review and the counts are summed across ranks.
    """
    model.eval()
    rank, world = dist.rank_and_world()
    shard = list(range(rank, len(split), world))
    sampler = LengthBucketBatchSampler(split.lengths[shard], cfg.eval_batch_size, bucket=True, shuffle=False)
    loss_sum = torch.zeros((), dtype=torch.float64)
    confusion = torch.zeros(2, 2, dtype=torch.long)
    for positions in tqdm(sampler, desc=desc, leave=False, unit="batch", disable=not dist.is_main()):
        batch = to_device(collate([split[shard[i]] for i in positions]), cfg.device)
        with autocast(cfg):
            logits = model(batch["input_ids"], batch.get("attention_mask")).float()  # (B, C)
        loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        confusion += confusion_matrix(batch["labels"].cpu(), logits.argmax(dim=-1).cpu(), 2)
    model.train()
    totals = dist.sum_across_ranks(torch.cat([loss_sum[None], confusion.flatten().double()]))
    confusion = totals[1:].long().reshape(2, 2)
    return {"loss": totals[0].item() / len(split), **metrics_from_confusion(confusion)}


def train_step(model, optimizer, schedule, group, dataset, collate, cfg: RunConfig) -> torch.Tensor:
    """One optimizer step over `group` micro-batches: forward -> loss -> backward (xN) -> clip -> step -> zero.

    Returns the step's loss as a tensor, without reading it: on a GPU, `.item()` would wait for every queued
    kernel, and a small model spends more time launching kernels than running them.
    """
    n_reviews = sum(map(len, group))
    # DDP averages the ranks' gradients: divide by the ranks' mean review count, so that the step averages over
    # every review even when the epoch's last batches differ in size
    if hasattr(model, "no_sync"):
        n_reviews = dist.sum_across_ranks(torch.tensor(float(n_reviews))).item() / dist.rank_and_world()[1]
    total = 0.0
    for i, indices in enumerate(group):
        batch = to_device(collate([dataset[j] for j in indices]), cfg.device, keep_mask=cfg.cuda_graphs)
        # Under DDP, gradients are averaged across ranks during backward; only the last micro-batch needs that.
        sync = contextlib.nullcontext() if i == len(group) - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            # BEGIN ASSIGNMENT training_step: each micro-batch: forward under autocast, a float32 cross-entropy scaled so that the step averages over all n_reviews, backward
            with autocast(cfg):
                logits = model(batch["input_ids"], batch.get("attention_mask"))  # (B, C)
            # Sum, then divide by the step's review count: accumulated micro-batches weigh as one big batch.
            loss = F.cross_entropy(logits.float(), batch["labels"], reduction="sum") / n_reviews
            loss.backward()
            # END ASSIGNMENT
        total = total + loss.detach()
    # BEGIN ASSIGNMENT training_step: once per step: clip the trainable gradients' norm (when cfg.clip > 0), then the optimizer's and the schedule's steps, then clear the gradients
    if cfg.clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=not cfg.cuda_graphs)  # graphs: keep our own .grad buffers (cuda_graphs.py)
    # END ASSIGNMENT
    return total


# ------------------------------------------------------------------------------------------------------------
# The epoch, in named parts
# ------------------------------------------------------------------------------------------------------------

class Diverged(RuntimeError):
    pass


@dataclass
class Loop:
    """What the loop trains with, and where it is. (step, epoch, batch, train_seconds) and the RNG are what a
    checkpoint saves beside the weights, and what a resume restores; each method is one named part of the loop."""
    cfg: RunConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    sampler: LengthBucketBatchSampler
    data: dict
    collate: Collator
    total_steps: int
    val_steps: set[int]  # validations evenly spaced over the run's steps, the last at its end
    run: Run | None = None  # None on ranks other than 0: they write nothing
    forward: torch.nn.Module | None = None  # the model, or the same model behind DDP or CUDA graphs
    train_collate: Collator | None = None
    step: int = 0
    epoch: int = 0
    batch: int = 0  # micro-batches of this epoch done
    train_seconds: float = 0.0  # time in training steps only, summed over the processes of a resumed run
    loop_seconds: float = 0.0  # train_seconds + validation, checkpoints, compilation (this process)
    step_times: list[float] = field(default_factory=list)
    running: list[torch.Tensor] = field(default_factory=list)  # losses of the steps since the last train line
    since: float = 0.0  # when those steps began
    lr: float = 0.0  # --lr as the last step scaled it
    rng_at_step: dict | None = None  # RNG as of the last optimizer-step boundary (for Ctrl-C saves)

    @classmethod
    def build(cls, cfg: RunConfig, model, data: dict, collate: Collator) -> "Loop":
        """The sampler, AdamW and the schedule for this run's data and processes."""
        rank, world = dist.rank_and_world()
        micro_batch = cfg.batch_size // (cfg.grad_accum * world)  # reviews per forward pass on one rank
        if micro_batch * cfg.grad_accum * world != cfg.batch_size:
            raise UserError(f"--batch-size {cfg.batch_size} must be divisible by --grad-accum x processes "
                             f"({cfg.grad_accum} x {world})")
        sampler = LengthBucketBatchSampler(data["train"].lengths, micro_batch, seed=cfg.seed, bucket=cfg.bucket,
                                           shuffle=True, num_replicas=world, rank=rank)
        total_steps = math.ceil(sampler.batches_per_epoch / cfg.grad_accum) * cfg.epochs
        validations = validations_for(cfg, total_steps)
        optimizer = make_optimizer(model, cfg)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(total_steps, cfg.warmup))
        val_steps = {math.ceil(total_steps * j / validations) for j in range(1, validations + 1)}
        return cls(cfg, model, optimizer, schedule, sampler, data, collate, total_steps, val_steps)

    def restore(self, saved: dict) -> None:
        """Continue where a checkpoint left off: weights, optimizer, schedule, position, RNG, metrics."""
        rank, world = dist.rank_and_world()
        if len(saved["rng"]) != world:
            raise UserError(f"the checkpoint was written by {len(saved['rng'])} processes; resume it with "
                             f"as many (now {world})")
        self.model.load_state_dict(saved["model"], strict=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.step, self.epoch, self.batch = saved["step"], saved["epoch"], saved["batch"]
        self.train_seconds = saved["train_seconds"]
        if self.run:
            self.run.truncate(saved["metrics_lines"])
        train_state.set_rng_state(saved["rng"][rank])
        say(f"resumed at epoch {self.epoch + 1}, batch {self.batch}, step {self.step}")

    def run_all(self) -> None:
        """Every epoch; Ctrl-C saves and exits, a non-finite loss or weight stops with the last good checkpoint."""
        self.rng_at_step, start = train_state.rng_state(), time.perf_counter()
        try:
            while self.epoch < self.cfg.epochs:
                self.run_epoch()
        except KeyboardInterrupt:
            self.save_on_interrupt()
        except Diverged as err:
            self.stopped(err)
        self.loop_seconds = time.perf_counter() - start

    def run_epoch(self) -> None:
        """One pass over the training reviews, from `batch` (0, or where a resume starts), then its checkpoint."""
        cfg, world = self.cfg, dist.rank_and_world()[1]
        self.sampler.set_epoch(self.epoch, start_batch=self.batch)
        batches = iter(self.sampler)
        bar = tqdm(total=self.sampler.batches_per_epoch, initial=self.batch, desc=f"epoch {self.epoch + 1}/"
                   f"{cfg.epochs}", unit="batch", disable=self.run is None)
        self.running, self.since = [], time.perf_counter()
        while group := [b for _, b in zip(range(cfg.grad_accum), batches)]:  # the micro-batches of one step
            # Ctrl-C takes effect when a step is done and counted, never inside it (train_state.py)
            with train_state.interrupts_deferred():
                self.lr = cfg.lr * self.schedule.lr_lambdas[0](self.schedule.last_epoch)
                loss = train_step(self.forward, self.optimizer, self.schedule, group, self.data["train"],
                                  self.train_collate, cfg)
                self.step, self.batch = self.step + 1, self.batch + len(group)
                self.running.append(loss)  # a tensor: reading it would wait for the GPU, so it is read only below
                self.rng_at_step = train_state.rng_state()
                bar.update(len(group))
                if (self.step % cfg.log_every == 0 or self.step % cfg.save_every == 0 or self.step in self.val_steps
                        or self.batch == self.sampler.batches_per_epoch):
                    self.log_validate_save(bar, world)
        bar.close()
        with train_state.interrupts_deferred():  # the epoch's checkpoint, whole
            # batch too: a Ctrl-C now saves (epoch + 1, batch 0), not the end of the epoch just done
            self.epoch, self.batch = self.epoch + 1, 0
            self.rng_at_step = train_state.rng_state()
            self.checkpoint(dist.gather(self.rng_at_step))

    def log_validate_save(self, bar, world: int) -> None:
        """Every few steps: wait for the device, check the loss, time the steps, log; validate and save when due."""
        mean_loss = dist.sum_across_ranks(torch.stack(self.running).mean().float().cpu()).item() / world
        if not math.isfinite(mean_loss):
            raise Diverged(f"loss became {mean_loss} by step {self.step}")
        seconds = time.perf_counter() - self.since
        self.train_seconds += seconds
        self.step_times += [seconds / len(self.running)] * len(self.running)
        reviews_per_s = len(self.running) * self.cfg.batch_size / seconds
        bar.set_postfix(loss=f"{mean_loss:.3f}", reviews_per_s=f"{reviews_per_s:.1f}")
        if self.run:  # at checkpoints too: every loss is in one line, none dropped between two logs
            self.run.log(type="train", step=self.step, epoch=self.epoch, loss=mean_loss, lr=self.lr,
                         reviews_per_s=reviews_per_s)
        if self.step in self.val_steps:  # no RNG is drawn: a resume from an earlier checkpoint redoes it exactly
            self.validate()
        if self.step % self.cfg.save_every == 0:
            self.checkpoint(dist.gather(self.rng_at_step))
        self.running, self.since = [], time.perf_counter()

    def validate(self) -> None:
        val = evaluate(self.model, self.data["val"], self.collate, self.cfg, "validating")
        if self.run:
            self.run.log(type="eval", split="val", step=self.step, epoch=self.epoch, **val)
        say(f"step {self.step}/{self.total_steps}: val loss {val['loss']:.4f}, accuracy {100 * val['accuracy']:.2f}%,"
            f" F1 {100 * val['f1']:.2f}%")

    def checkpoint(self, rngs: list[dict]) -> None:
        """`rngs`: every rank's generator state, so each rank resumes its own dropout stream."""
        # The loss check reads losses from before the last update; an update can still have broken the weights
        if not all(torch.isfinite(p).all() for p in self.model.parameters() if p.requires_grad):
            raise Diverged(f"the weights became non-finite by step {self.step}")
        if self.run:
            train_state.save(self.run.folder, model=train_state.trainable_state(self.model),
                             optimizer=self.optimizer.state_dict(), schedule=self.schedule.state_dict(), rng=rngs,
                             step=self.step, epoch=self.epoch, batch=self.batch, train_seconds=self.train_seconds,
                             metrics_lines=self.run.n_lines(), config=fingerprint(self.cfg))

    def save_on_interrupt(self) -> None:
        """Ctrl-C: a line for the steps since the last one, a checkpoint, and how to resume. No gather here: the
        other ranks may already be gone; each rank resumes from rank 0's generator."""
        try:
            if self.running:
                mean_loss = torch.stack(self.running).mean().item()  # waits for the device: the interval ends here
                self.train_seconds += time.perf_counter() - self.since
                if not math.isfinite(mean_loss):
                    raise Diverged(f"loss became {mean_loss} by step {self.step}")
                if self.run:  # this rank's losses only (under torchrun the other lines average every rank's)
                    self.run.log(type="train", step=self.step, epoch=self.epoch, loss=mean_loss, lr=self.lr,
                                 interrupted=True)
            self.checkpoint([self.rng_at_step] * dist.rank_and_world()[1])
        except Diverged as err:
            self.stopped(err)
        say(f"\ninterrupted: saved step {self.step}; continue with  python train.py --resume {self.cfg.out}")
        raise SystemExit(130)

    def stopped(self, err: Diverged) -> None:
        kept = ("The last good checkpoint is kept in " + self.cfg.out
                if (Path(self.cfg.out) / train_state.CHECKPOINT).exists() else "No checkpoint had been written yet")
        say(f"\nstopped: {err}. {kept}; lower --lr, or raise --warmup.")
        raise SystemExit(1)


def say(message: str) -> None:
    if dist.is_main():
        print(message, flush=True)
