"""Fine-tune a BERT-style encoder on IMDB sentiment: a plain PyTorch loop, no Trainer.

    python train.py                                # all-MiniLM-L6-v2, full fine-tuning (IMDB from the hub)
    python train.py --data path/to/imdb            # the same on a local copy (parquet/csv files, or aclImdb/)
    python train.py --data path/to/imdb --init random   # DistilBERT from random init
    python train.py --resume runs/<timestamp>      # continue a killed or interrupted run

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

import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# Idle OpenMP threads otherwise spin, holding the core their partner needs: on a busy 2-core machine a training
# step took 3.2-4.4 s with spinning and 0.9-1.2 s without (bench.py). Must be set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

import lora  # noqa: E402
import minibert  # noqa: E402
import quant  # noqa: E402
from minibert.training import distributed as dist  # noqa: E402
from minibert.training import train_state  # noqa: E402
from minibert.training.batching import Collator, LengthBucketBatchSampler, PadToMultiple  # noqa: E402
from minibert.training.cuda_graphs import ShapeGraphs, keep_grads  # noqa: E402
from minibert.training.data import prepare_imdb  # noqa: E402
from minibert.errors import UserError, run_cli  # noqa: E402
from minibert.training.metrics import confusion_matrix, metrics_from_confusion  # noqa: E402
from minibert.training.plots import plot_confusion, plot_curves  # noqa: E402
from minibert.training.runfolder import Run, atomic_write_text, device_name, peak_memory_mb, writing  # noqa: E402
from quant.model import count_bytes  # noqa: E402
from train_config import (HEAD, RunConfig, check_against_model, fingerprint, parse_args, resolve,  # noqa: E402
                          validations_for)
from train_folder import claim_run_folder, resume_config, start_run_folder  # noqa: E402
from train_outputs import export, summary  # noqa: E402

LABELS = ("negative", "positive")  # by logit index: the IMDB labels are 0 = negative, 1 = positive
# ------------------------------------------------------------------------------------------------------------
# Model, optimizer, schedule
# ------------------------------------------------------------------------------------------------------------

def build_model(cfg: RunConfig):
    """(model, tokenizer). Random init reads only a config (a preset or a folder's config.json), no weights;
    the tokenizer is then all-MiniLM-L6-v2's, whose uncased 30,522-token vocabulary is distilbert-base-uncased's."""
    overrides = {name: float(getattr(cfg, name)) for name in ("dropout", "attention_dropout")
                 if getattr(cfg, name) != "checkpoint"}
    if cfg.init == "pretrained":
        check_against_model(cfg, minibert.config.read_config(minibert.paths.resolve_model_dir(cfg.model)))
        model = minibert.load_classifier(cfg.model, num_labels=2, labels=LABELS, pooling=cfg.pooling, **overrides)
        tokenizer = minibert.load_tokenizer(cfg.model)
    else:
        config = (minibert.preset(cfg.model) if cfg.model in minibert.config.PRESETS
                  else minibert.config.read_config(minibert.paths.resolve_model_dir(cfg.model)))
        check_against_model(cfg, config)
        model = minibert.build_classifier(config.with_(num_labels=2, labels=LABELS, pooling=cfg.pooling, **overrides))
        tokenizer = minibert.load_tokenizer(minibert.paths.OFFLINE_MINILM)
    minibert.checkpoint.check_tokenizer_fits(tokenizer, model.config, where=str(cfg.model))
    tokenizer.truncation = cfg.truncation  # travels with the exported tokenizer, so predict cuts reviews alike
    if cfg.head_init == "fresh":
        for module in (model.pre_classifier, model.classifier):
            minibert.model.init_weights(module, model.config)
    if cfg.freeze_embeddings:
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    if cfg.freeze_layers:  # nothing below the lowest trainable layer needs a gradient: autograd stops above it
        for module in (model.encoder.embeddings, *model.encoder.layers[:cfg.freeze_layers]):
            module.requires_grad_(False)
    if cfg.method == "head":  # a frozen feature extractor: only the head learns
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith("encoder."))
    if cfg.method == "qlora":
        # QLoRA (Dettmers et al. 2023): the frozen base becomes 4-bit NF4; the head is never quantized and, with
        # LayerNorms, stays fp32; then the same LoRA as below trains on top, in fp32.
        model.to(cfg.device)  # bitsandbytes quantizes on the device the layer lives on
        print(quant.quantize_model(model, skip=HEAD, compute_dtype=getattr(torch, cfg.compute_dtype),
                                   double_quant=cfg.double_quant))
        quant.prepare_for_kbit_training(model, head=HEAD, use_gradient_checkpointing=False)
    if cfg.method in ("lora", "qlora"):  # frozen base + low-rank updates; the head trains fully
        targets = tuple(cfg.lora_targets.split(",")) if cfg.lora_targets else None
        model = lora.inject(model, targets=targets, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
    return model, tokenizer


def make_optimizer(model, cfg: RunConfig) -> torch.optim.AdamW:
    """AdamW, one group per (depth, decays): matrices decay, biases and LayerNorm gains do not (decaying them only
    hurts). Depth sets the lr: the head trains at --head-lr, encoder layer i of L (from 1) at lr x decay^(L - i),
    the embeddings at lr x decay^L (layer-wise decay, Howard & Ruder 2018: lower layers hold the most general
    features and should move least)."""
    n_layers = model.config.n_layers if hasattr(model, "config") else 0
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = parameter_depth(name, n_layers)
        lr = (cfg.head_lr or cfg.lr) if depth > n_layers else cfg.lr * cfg.layer_decay ** (n_layers - depth)
        decay = cfg.weight_decay if p.dim() >= 2 else 0.0
        groups.setdefault((lr, decay), []).append(p)
    # fused=True: one kernel updates every tensor. CUDA only: the CPU default's figures were measured with the plain
    # loop, though a fused CPU step is faster too (32 vs 90 ms for MiniLM's 22.7 M weights on a 2-core AMD EPYC).
    return torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": decay} for (lr, decay), ps in groups.items()],
                             lr=cfg.lr, fused=cfg.device == "cuda")


def parameter_depth(name: str, n_layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder layer i, n_layers + 1 for the head (anything outside the encoder)."""
    if ".embeddings." in f".{name}":
        return 0
    layer = re.search(r"\blayers\.(\d+)\.", name)
    return int(layer.group(1)) + 1 if layer else n_layers + 1


def linear_warmup_decay(total_steps: int, warmup: float):
    """lr multiplier: 0 -> 1 over the warmup steps, then 1 -> 0 linearly until the last step."""
    warmup_steps = max(1, round(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


# ------------------------------------------------------------------------------------------------------------
# Training and evaluation
# ------------------------------------------------------------------------------------------------------------

class Diverged(RuntimeError):
    pass


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


def train(cfg: RunConfig, folder: Path | None, resume_from: dict | None) -> dict:
    """Build, train, evaluate and export; `folder` is None on ranks other than 0 (they write nothing)."""
    rank, world = dist.rank_and_world()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model, tokenizer = build_model(cfg)
    model.to(cfg.device).train()
    data = prepare_imdb(cfg.data, tokenizer, max_len=cfg.max_len, train_samples=cfg.train_samples,
                        val_samples=cfg.val_samples, eval_samples=cfg.eval_samples, seed=cfg.seed,
                        add_special_tokens=cfg.special_tokens)
    collate = Collator(tokenizer.pad_id)
    micro_batch = cfg.batch_size // (cfg.grad_accum * world)  # reviews per forward pass on one rank
    if micro_batch * cfg.grad_accum * world != cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size} must be divisible by --grad-accum x processes "
                         f"({cfg.grad_accum} x {world})")
    sampler = LengthBucketBatchSampler(data["train"].lengths, micro_batch, seed=cfg.seed, bucket=cfg.bucket,
                                       shuffle=True, num_replicas=world, rank=rank)
    steps_per_epoch = math.ceil(sampler.batches_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    validations = validations_for(cfg, total_steps)
    optimizer = make_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(total_steps, cfg.warmup))
    trainable, total = lora.trainable_parameters(model)
    say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)  |  "
        f"train {len(data['train'])}, val {len(data['val'])}, test {len(data['test'])} reviews  |  "
        f"{steps_per_epoch} steps/epoch x {cfg.epochs}" + (f"  |  {world} processes" if world > 1 else ""))
    # Each rank draws its own dropout masks; DDP keeps the weights identical.
    torch.manual_seed(cfg.seed + 1000 * rank)
    # Everything is checked and built: only now is the run folder written (a fresh run); a resume cuts it back below
    if folder is None:  # ranks other than 0 write nothing
        run = None
    elif resume_from is None:
        run = start_run_folder(cfg, folder)
    else:
        run = Run(folder)

    step, epoch, start_batch, train_seconds, step_times = 0, 0, 0, 0.0, []
    if resume_from is not None:
        if len(resume_from["rng"]) != world:
            raise UserError(f"the checkpoint was written by {len(resume_from['rng'])} processes; resume it with "
                             f"as many (now {world})")
        model.load_state_dict(resume_from["model"], strict=False)
        optimizer.load_state_dict(resume_from["optimizer"])
        schedule.load_state_dict(resume_from["schedule"])
        step, epoch, start_batch = resume_from["step"], resume_from["epoch"], resume_from["batch"]
        train_seconds = resume_from["train_seconds"]
        if run:
            run.truncate(resume_from["metrics_lines"])
        train_state.set_rng_state(resume_from["rng"][rank])
        say(f"resumed at epoch {epoch + 1}, batch {start_batch}, step {step}")
    if cfg.cls_only:  # the last layer computes position 0 only (minibert/block.py Block.first_token)
        minibert.model.set_fast_paths(model, first_token_only=True)
    if cfg.compile:
        minibert.model.compile_model(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None
    forward = ddp or model
    train_collate = (PadToMultiple(collate, cfg.pad_multiple, tokenizer.pad_id, cfg.max_len)
                     if cfg.pad_multiple > 1 else collate)  # fewer batch widths, e.g. one for CUDA graphs
    if cfg.cuda_graphs:  # minibert/training/cuda_graphs.py: one recorded forward + backward per batch shape
        if world > 1:
            raise UserError("--cuda-graphs runs in one process only (DDP's gradient all-reduce is not recorded)")
        forward = ShapeGraphs(model)
        keep_grads(model)

    def checkpoint(batch_in_epoch: int, epoch_: int, rngs: list[dict]) -> None:
        """`rngs`: every rank's generator state, so each rank resumes its own dropout stream."""
        # The loss check reads losses from before the last update; an update can still have broken the weights
        if not all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad):
            raise Diverged(f"the weights became non-finite by step {step}")
        if run:
            train_state.save(run.folder, model=train_state.trainable_state(model), optimizer=optimizer.state_dict(),
                             schedule=schedule.state_dict(), rng=rngs, step=step, epoch=epoch_,
                             batch=batch_in_epoch, train_seconds=train_seconds, metrics_lines=run.n_lines(),
                             config=fingerprint(cfg))

    # Validations evenly spaced over the run's steps, the last at its end (the report's val figures)
    val_steps = {math.ceil(total_steps * j / validations) for j in range(1, validations + 1)}

    def validate(epoch_: int) -> None:
        val = evaluate(model, data["val"], collate, cfg, "validating")
        if run:
            run.log(type="eval", split="val", step=step, epoch=epoch_, **val)
        say(f"step {step}/{total_steps}: val loss {val['loss']:.4f}, accuracy {100 * val['accuracy']:.2f}%, "
            f"F1 {100 * val['f1']:.2f}%")

    def stopped(err: Diverged) -> None:
        kept = (f"The last good checkpoint is kept in {cfg.out}" if (Path(cfg.out) / train_state.CHECKPOINT).exists()
                else "No checkpoint had been written yet")
        say(f"\nstopped: {err}. {kept}; lower --lr, or raise --warmup.")
        raise SystemExit(1)

    rng_at_step = train_state.rng_state()  # RNG as of the last optimizer-step boundary (for Ctrl-C saves)
    batch_in_epoch, loop_start = start_batch, time.perf_counter()
    running, t_interval = [], time.perf_counter()  # the losses and time of the steps since the last train line
    try:
        while epoch < cfg.epochs:
            sampler.set_epoch(epoch, start_batch=start_batch)
            batches = iter(sampler)
            bar = tqdm(total=sampler.batches_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="batch", disable=run is None)
            batch_in_epoch, running, t_interval = start_batch, [], time.perf_counter()
            while group := [b for _, b in zip(range(cfg.grad_accum), batches)]:  # the micro-batches of one step
                # Ctrl-C takes effect when a step is done and counted, never inside it (train_state.py)
                with train_state.interrupts_deferred():
                    lr = cfg.lr * schedule.lr_lambdas[0](schedule.last_epoch)  # --lr as this step scales it
                    loss = train_step(forward, optimizer, schedule, group, data["train"], train_collate, cfg)
                    step, batch_in_epoch = step + 1, batch_in_epoch + len(group)
                    running.append(loss)  # a tensor: reading it would wait for the GPU, so we read it only below
                    rng_at_step = train_state.rng_state()
                    bar.update(len(group))
                    last_of_epoch = batch_in_epoch == sampler.batches_per_epoch
                    validate_now = step in val_steps
                    if step % cfg.log_every and step % cfg.save_every and not last_of_epoch and not validate_now:
                        continue
                    # Every few steps: wait for the device, check the loss, time the interval, log, maybe save.
                    mean_loss = dist.sum_across_ranks(torch.stack(running).mean().float().cpu()).item() / world
                    if not math.isfinite(mean_loss):
                        raise Diverged(f"loss became {mean_loss} by step {step}")
                    seconds = time.perf_counter() - t_interval
                    train_seconds += seconds
                    step_times += [seconds / len(running)] * len(running)
                    reviews_per_s = len(running) * cfg.batch_size / seconds
                    bar.set_postfix(loss=f"{mean_loss:.3f}", reviews_per_s=f"{reviews_per_s:.1f}")
                    if run:  # at checkpoints too: every loss is in one line, none dropped between two logs
                        run.log(type="train", step=step, epoch=epoch, loss=mean_loss, lr=lr,
                                reviews_per_s=reviews_per_s)
                    if validate_now:  # no RNG is drawn: a resume from an earlier checkpoint redoes it exactly
                        validate(epoch)
                    if step % cfg.save_every == 0:
                        checkpoint(batch_in_epoch, epoch, dist.gather(rng_at_step))
                    running, t_interval = [], time.perf_counter()
            bar.close()
            with train_state.interrupts_deferred():  # the epoch's checkpoint, whole
                # batch_in_epoch too: a Ctrl-C now saves (epoch + 1, batch 0), not the end of the epoch just done
                epoch, start_batch, batch_in_epoch = epoch + 1, 0, 0
                rng_at_step = train_state.rng_state()
                checkpoint(0, epoch, dist.gather(rng_at_step))
    except KeyboardInterrupt:
        # No gather here: the other ranks may already be gone. Each rank resumes from rank 0's generator.
        try:
            if running:  # the steps since the last line: a line of their own before the checkpoint, and their time
                mean_loss = torch.stack(running).mean().item()  # waits for the device: the interval ends here
                train_seconds += time.perf_counter() - t_interval
                if not math.isfinite(mean_loss):
                    raise Diverged(f"loss became {mean_loss} by step {step}")
                if run:  # this rank's losses only (under torchrun the other lines average every rank's)
                    run.log(type="train", step=step, epoch=epoch, loss=mean_loss, lr=lr, interrupted=True)
            checkpoint(batch_in_epoch, epoch, [rng_at_step] * world)
        except Diverged as err:
            stopped(err)
        say(f"\ninterrupted: saved step {step}; continue with  python train.py --resume {cfg.out}")
        raise SystemExit(130)
    except Diverged as err:
        stopped(err)

    loop_seconds = time.perf_counter() - loop_start  # train_seconds + validation, checkpoints, compilation
    t0 = time.perf_counter()
    test = evaluate(model, data["test"], collate, cfg, "testing")
    eval_seconds = time.perf_counter() - t0
    if run is None:
        return {}
    run.log(type="eval", split="test", step=step, epoch=epoch, **test)
    val = run.records("eval", "val")[-1]
    with writing(run.folder / "model", run.folder):
        export(model, tokenizer, run.folder, cfg)
    return dict(val_accuracy=val["accuracy"], val_f1=val["f1"], val_loss=val["loss"], test_accuracy=test["accuracy"],
                test_f1=test["f1"], test_loss=test["loss"], test_confusion=test["confusion"],
                train_seconds=train_seconds, loop_seconds=loop_seconds, test_eval_seconds=eval_seconds, steps=step,
                median_step_seconds=sorted(step_times)[len(step_times) // 2] if step_times else None,
                train_reviews_per_s=len(data["train"]) * cfg.epochs / train_seconds if train_seconds else None,
                trainable_params=trainable, total_params=total, peak_memory_mb=peak_memory_mb(cfg.device),
                weight_memory_mb=count_bytes(model)[1] / 2**20, n_train=len(data["train"]),
                n_val=len(data["val"]), n_test=len(data["test"]), processes=world, device=device_name(cfg.device),
                **({"cuda_graphs": forward.records} if cfg.cuda_graphs else {}))


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
            # BEGIN ASSIGNMENT training_step: forward under autocast; loss = sum of cross-entropy / n_reviews; backward
            with autocast(cfg):
                logits = model(batch["input_ids"], batch.get("attention_mask"))  # (B, C)
            # Sum, then divide by the step's review count: accumulated micro-batches weigh as one big batch.
            loss = F.cross_entropy(logits.float(), batch["labels"], reduction="sum") / n_reviews
            loss.backward()
            # END ASSIGNMENT
        total = total + loss.detach()
    # BEGIN ASSIGNMENT training_step: clip grad norm to cfg.clip if > 0, then optimizer.step, schedule.step, zero_grad
    if cfg.clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=not cfg.cuda_graphs)  # graphs: keep our own .grad buffers (cuda_graphs.py)
    # END ASSIGNMENT
    return total


# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------

def say(message: str) -> None:
    if dist.is_main():
        print(message, flush=True)


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
