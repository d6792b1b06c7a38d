"""Several processes, one model: the few pieces of torch.distributed that train.py needs.

Launched by `torchrun --nproc_per_node=N train.py ...`, each process (rank) holds a full copy of the model, trains
on its own share of every step's batches, and DistributedDataParallel averages the gradients across ranks before
the optimizer step, so all copies stay identical: N ranks with b reviews each compute the step one process
computes with N*b reviews. torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; without
them, everything here is a no-op and the run is a plain single process.
"""

import os

import torch
import torch.distributed as dist


def setup(device: str) -> tuple[int, int]:
    """(rank, world_size). Joins the process group when started by torchrun: nccl (and gloo) on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # one GPU per process
    # On CUDA, nccl for the GPU tensors (gradients) and gloo for the CPU ones (the losses and counts we reduce)
    dist.init_process_group("cpu:gloo,cuda:nccl" if device == "cuda" else "gloo")
    return dist.get_rank(), world


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """Rank 0 alone writes files and prints: N ranks writing one run folder would clobber each other."""
    return not dist.is_initialized() or dist.get_rank() == 0


def sum_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """Counts (a confusion matrix, a loss sum) add up across ranks; averages of averages would not."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast(value):
    """Rank 0's value on every rank (e.g. the run folder name, which holds a timestamp)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value) -> list:
    """[value of rank 0, value of rank 1, ...] on every rank (e.g. each rank's RNG state for the checkpoint)."""
    if not dist.is_initialized():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
