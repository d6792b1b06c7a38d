"""Prepare a 4-bit model for training (QLoRA): the steps of peft's prepare_model_for_kbit_training that matter here.

What peft 0.21.2 does, and what we keep:
1. Freeze every parameter. The 4-bit weights are frozen anyway (integer codes have no gradient); this also
   freezes the float leftovers (embeddings, LayerNorms, biases). Trainable parts are switched back on later:
   LoRA's A and B by lora/, the classification head here (`head`).
2. Cast every float parameter that is not 4-bit from fp16/bf16 to fp32. LayerNorm divides by a standard
   deviation computed over D values, which is fragile in 16 bits; and a trainable head in bf16 loses its
   updates: with 8 bits of mantissa, w + lr * g == w for most steps of size lr * g < w / 256.
3. Make the input embeddings' output require grad (a forward hook), only needed for gradient checkpointing.
   With reentrant checkpointing (torch.utils.checkpoint(..., use_reentrant=True), peft's default) a segment whose
   inputs don't require grad is treated as constant: no gradient flows inside it, so LoRA weights in the
   checkpointed blocks silently get none. With a frozen embedding nothing upstream requires grad, so the hook
   marks the embeddings' output as requiring it.
peft also enables the model's gradient checkpointing; that switch is model-specific, so the caller does it.

Tested in tests/test_quant_model.py (dtypes, trainability, and gradients through a reentrant checkpoint).
"""

import torch
from torch import nn

from .model import is_4bit_layer, matches

DEFAULT_HEAD = ("classifier", "pre_classifier", "score")


def input_embeddings(model: nn.Module) -> nn.Module:
    """The input embedding layer: `model.get_input_embeddings()` if the model has one, else its first nn.Embedding."""
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter) and getter() is not None:
        return getter()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module
    raise ValueError("no input embeddings found: the model has no get_input_embeddings() and no nn.Embedding")


def _make_output_require_grad(module: nn.Module, inputs, output: torch.Tensor) -> None:
    output.requires_grad_(True)


def prepare_for_kbit_training(model: nn.Module, head: tuple[str, ...] = DEFAULT_HEAD,
                              use_gradient_checkpointing: bool = True) -> nn.Module:
    """Freeze the 4-bit base, keep float parts in fp32, train the head, hook the embeddings. In place; returns model.

    `head` names modules by whole components of their dotted names (as quantize_model's `skip`); their parameters
    stay trainable. Calling it twice registers the embedding hook once.
    """
    if not any(is_4bit_layer(m) for m in model.modules()):
        raise ValueError("prepare_for_kbit_training: the model has no 4-bit layers; call quant.quantize_model first")

    # BEGIN ASSIGNMENT qlora: steps 1 and 2 of the docstring, then the parameters of the modules `head` matches train; step 3 (once per model: remember the hook's handle) only with use_gradient_checkpointing
    for param in model.parameters():  # 1. freeze everything
        param.requires_grad_(False)

    for module in model.modules():  # 2. float leftovers in fp32 (the 4-bit weights are uint8: untouched)
        for param in module.parameters(recurse=False):
            if param.dtype in (torch.float16, torch.bfloat16):
                param.data = param.data.float()

    head_params = [p for name, m in model.named_modules() if matches(name, head) for p in m.parameters()]
    for param in head_params:
        param.requires_grad_(True)

    if use_gradient_checkpointing and getattr(model, "_kbit_input_grad_hook", None) is None:  # 3.
        model._kbit_input_grad_hook = input_embeddings(model).register_forward_hook(_make_output_require_grad)
    # END ASSIGNMENT
    return model
