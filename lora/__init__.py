"""lora: minimal LoRA for any PyTorch model, exact against peft and interchangeable with it.

Read in this order: layer.py (the LoRA layer, with its diagram), select.py (how names pick modules),
inject.py (injection, freezing, counting, merging), adapter_io.py (peft's on-disk format), adapter_checks.py
(what an adapter file may hold, and why the rest is refused).

    model = lora.inject(model, targets=("q_lin", "v_lin"), r=8, alpha=16, dropout=0.1)  # head stays trainable
    print(lora.format_trainable(model))          # trainable: N of M (p%)
    lora.save_adapter(model, "runs/adapter", modules_to_save=("pre_classifier", "classifier"))  # peft's format
    lora.load_adapter(base_model, "runs/adapter")  # all or nothing: lora.AdapterError names the first bad key
    lora.merge(model); lora.unmerge(model); lora.merge_and_unload(model)  # explicit, never on eval()

Nothing here imports a model family: it works on any nn.Module whose layers to adapt are nn.Linear (subclasses
too, e.g. bitsandbytes' 4-bit Linear4bit: QLoRA). A model whose module paths are not those of the transformers
model peft would wrap offers `model.hf_module_name(path) -> str` (the checkpoint's path, KeyError if it has none),
and adapter files use those names (adapter_io.py). Tested against peft 0.21.2 in tests/test_lora.py and
tests/test_lora_adapter.py.
"""

from .adapter_checks import AdapterError, read_adapter_config
from .adapter_io import load_adapter, save_adapter
from .inject import (
    default_targets, format_trainable, inject, lora_layers, merge, merge_and_unload, trainable_parameters, unmerge,
)
from .layer import LoRALinear

__all__ = [
    "AdapterError", "LoRALinear", "default_targets", "format_trainable", "inject", "load_adapter", "lora_layers",
    "merge", "merge_and_unload", "read_adapter_config", "save_adapter", "trainable_parameters", "unmerge",
]
