"""CUDA graphs for training: record a model's forward and backward once per input shape, then replay them.

A small model on a fast GPU is *launch-bound*: a training step of all-MiniLM-L6-v2 runs hundreds of kernels,
each a few microseconds of GPU work but more than that of Python, dispatcher and autograd on the CPU, so the GPU
waits for the CPU most of the time (a plain transformers loop on one H200: 17 ms a step, a few % of the chip). A
CUDA graph records the kernels of one forward (and one backward) with their arguments; a replay launches all of
them with one call. The CPU cost of a step then no longer grows with the number of kernels. Measured on an H200
(bench.py, MiniLM at 32 x 256, bf16): 14.1 ms a step eager, 6.1 ms replayed (docs/benchmarks.md).

    eager:   CPU  [launch k1][launch k2] ... [launch kN]        GPU waits between kernels
    graph:   CPU  [replay fwd][replay bwd]                      GPU runs k1..kN back to back

What a graph fixes, and what that asks of us:
- Shapes and addresses. A graph replays the same kernels on the same memory. So one graph is recorded per input
  shape (B, T) and per "mask or no mask", and a batch is copied into the graph's own input tensors before a
  replay (torch.cuda.make_graphed_callables does this). With dynamic padding every batch has its own T;
  minibert.training.batching.PadToMultiple cuts that to a few shapes, each recorded the first time it is seen.
  train.py --cuda-graphs pads to --max-len and keeps the all-ones mask of an unpadded batch: one width, always
  with a mask, so a single recording serves every batch.
- The weights are read where they live: the optimizer must update them in place (AdamW does), never replace them.
- Random numbers. Dropout in a graph draws from the CUDA generator's graph-safe stream: each replay gets fresh
  masks (the offset advances), so training is not the same as with one fixed mask.
- Gradients. The backward graph writes parameter gradients into its own static buffers on every replay. If
  `p.grad` is None, autograd may adopt such a buffer as `p.grad` itself, and the next replay would overwrite a
  gradient still being accumulated. `keep_grads()` allocates `.grad` once, so gradients are always *added* into
  our buffers; zero them with `optimizer.zero_grad(set_to_none=False)`.
- Training mode only. The graphs hold dropout; evaluation runs the model itself (eager, no graph).

The first batch of each shape pays three warm-up steps and the recording (1.5-2 s each for MiniLM on an H200, the
CUDA start-up of the first steps included), counted in the training time like any other step. The warm-up runs on
a side stream, so torch may warn that "The AccumulateGrad node's stream does not match": expected here, and the
GPU tests show the gradients are right. Measured in bench.py (section 6) and benchmarks/imdb_job.py
(docs/benchmarks.md); tests/test_cuda_graphs.py checks the bookkeeping on CPU and, on a GPU, that a graphed step
gives the eager step's loss and gradients.
"""

import time

import torch
from torch import nn


class _Call(nn.Module):
    """`model(*inputs)` as a module of its own, so make_graphed_callables sees the model's parameters (it takes
    gradients for the parameters of the module it is given) while `model.forward` itself stays untouched."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(*inputs)


class ShapeGraphs(nn.Module):
    """Call `model(input_ids, attention_mask)` through CUDA graphs, one pair (forward, backward) per input shape.

    A drop-in for the model inside a training step: `logits = graphs(ids, mask); loss(logits).backward()`.
    `max_graphs` bounds the memory: each recorded shape keeps its input, output and gradient buffers (one
    gradient per trainable weight); shapes beyond it run eagerly. Every graph shares one memory pool for the
    activations: correct because each forward replay is followed by its own backward before the next forward.
    """

    def __init__(self, model: nn.Module, autocast_dtype: torch.dtype | None = torch.bfloat16, max_graphs: int = 32):
        super().__init__()
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device; it is on {device}")
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.max_graphs = max_graphs
        self.graphs: dict[tuple, nn.Module] = {}  # (B, T, has_mask) -> recorded callable
        self.pool = torch.cuda.graph_pool_handle()
        self.records: list[dict] = []  # {"shape", "mask", "seconds"} per recording, for the report

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.model.training:
            raise RuntimeError("ShapeGraphs replays training graphs (with dropout); call the model itself to "
                               "evaluate")
        inputs = (input_ids,) if attention_mask is None else (input_ids, attention_mask)
        key = (*input_ids.shape, attention_mask is not None)
        if key not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                with self.autocast():
                    return self.model(*inputs)  # too many shapes: eager, like without graphs
            self.graphs[key] = self.record(inputs)
        return self.graphs[key](*inputs)  # copies the inputs into the graph's buffers, then replays

    def autocast(self):
        return torch.autocast("cuda", dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None, cache_enabled=False)

    def record(self, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
        """Warm up (3 steps on a side stream, leaving `.grad` alone) and record forward + backward for this shape.

        Autocast's weight cache must be off while recording: a cached bf16 copy of a weight would be baked
        into the graph and go stale after the first optimizer step. `allow_unused_input`: a weight that does not
        reach the output (none in minibert, but any module may be given) gets no gradient instead of an error."""
        start = time.perf_counter()
        with self.autocast():
            graphed = torch.cuda.make_graphed_callables(_Call(self.model), tuple(x.clone() for x in inputs),
                                                        allow_unused_input=True, pool=self.pool)
        self.records.append({"shape": list(inputs[0].shape), "mask": len(inputs) > 1,
                             "seconds": round(time.perf_counter() - start, 3)})
        return graphed


def keep_grads(model: nn.Module) -> None:
    """Give every trainable parameter a zero `.grad` of its own (see the module docstring: never alias a graph's
    gradient buffer). Afterwards clear gradients with `zero_grad(set_to_none=False)`."""
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)
