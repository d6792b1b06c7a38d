"""lora: minimal LoRA for any PyTorch model, exact against peft and interchangeable with it.

Read in this order: layer.py (the LoRA layer, with its diagram), select.py (how names pick modules),
inject.py (injection, freezing, counting, merging), adapter_io.py (peft's on-disk format).

    model = lora.inject(model, targets=("q_lin", "v_lin"), r=8, alpha=16, dropout=0.1)  # head stays trainable
    print(lora.format_trainable(model))          # trainable: N of M (p%)
    lora.save_adapter(model, "runs/adapter")     # adapter_config.json + adapter_model.safetensors (peft format)
    lora.load_adapter(base_model, "runs/adapter")
    lora.merge(model); lora.unmerge(model); lora.merge_and_unload(model)  # explicit, never on eval()

Nothing here imports a model family: it works on any nn.Module whose layers to adapt are nn.Linear (subclasses
too, e.g. bitsandbytes' 4-bit Linear4bit: QLoRA). Tested against peft 0.21.2 in tests/test_lora.py.
"""

from .adapter_io import load_adapter, read_adapter_config, save_adapter
from .inject import (
    default_targets, format_trainable, inject, lora_layers, merge, merge_and_unload, trainable_parameters, unmerge,
)
from .layer import LoRALinear

__all__ = [
    "LoRALinear", "default_targets", "format_trainable", "inject", "load_adapter", "lora_layers", "merge",
    "merge_and_unload", "read_adapter_config", "save_adapter", "trainable_parameters", "unmerge",
]
