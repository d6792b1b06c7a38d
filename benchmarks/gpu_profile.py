"""Where the GPU time of a training step goes: each kernel in ms per step, then the sums by kind (matmul,
attention, layer norm, fused elementwise, optimizer, ...). bench.py --cuda-only --profile prints it for the best
MFU candidate (benchmarks/cuda.py); docs/benchmarks.md reads these tables.

The kinds come from kernel names (cuBLAS's nvjet/gemm, cuDNN's and FlashAttention's attention, inductor's
triton_*), which is coarse but needs no knowledge of who launched a kernel: a replayed CUDA graph has no Python
or aten frame to attribute its kernels to.
"""

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

# Kernel-name fragments -> what the kernel does, to sum a profile by kind. First match wins.
KERNEL_KINDS = (("attention", ("flash", "fmha", "attention", "cudnn", "sdpa")),
                ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "triton_mm", "splitk")),
                # torch's fused AdamW and foreach norm; inductor's compiled update (common.compiled_update) is
                # horizontally fused Triton ("triton_for_") with a norm reduction
                ("optimizer + clipping", ("adam", "multi_tensor", "lpnorm", "triton_for_", "vector_norm")),
                ("layer norm", ("layer_norm", "layernorm")),
                ("dropout", ("dropout",)),
                ("embedding", ("embedding", "index", "scatter", "sort", "radix")),
                ("fused elementwise (compiled)", ("triton_",)))


def kernel_kind(name: str) -> str:
    lower = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in lower for k in keys)), "other elementwise")


def gpu_profile(step, steps: int, top: int = 25) -> str:
    """Where one call of `step` (`steps` training steps) spends GPU time: each kernel, then summed by kind, in ms
    per step."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages()  # kernels only: a user annotation (Optimizer.step) spans some
               if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    if not kernels:
        return "  no GPU kernel was recorded"
    kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
    ms = {e.key: e.self_device_time_total / 1e3 / steps for e in kernels}  # kernel name -> GPU ms per step
    total = sum(ms.values())
    lines = [f"  GPU time of one step: {total:.2f} ms in {sum(e.count for e in kernels) // steps} kernel launches"]
    for e in kernels[:top]:
        lines.append(f"  {ms[e.key]:7.3f} ms {100 * ms[e.key] / total:5.1f}%  x{e.count // steps:<4d} "
                     f"{kernel_kind(e.key):28s} {e.key[:90]}")
    by_kind: dict[str, float] = {}
    for key, t in ms.items():
        by_kind[kernel_kind(key)] = by_kind.get(kernel_kind(key), 0.0) + t
    lines.append("  by kind: " + ", ".join(f"{kind} {ms:.2f} ms ({100 * ms / total:.0f}%)"
                                           for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)
