"""quant: NF4 4-bit quantization (QLoRA, Dettmers et al. 2023), readable and bit-exact with bitsandbytes 0.50.2.

Read in this order:
    blockwise.py     absmax scaling per block, nearest codebook entry (shared by 4-bit and 8-bit)
    double_quant.py  the 8-bit "dynamic" map and double quantization of the absmax values
    nf4.py           the 16 NF4 levels, packing two codes per byte, quantize_nf4 / dequantize_nf4
    linear.py        NF4Linear: our 4-bit linear layer (dequantizes in every forward; for learning)
    bnb.py           the bridge to bitsandbytes (its quantizer, Linear4bit, QuantState); its pitfalls
    model.py         quantize_model / dequantize_model on any nn.Module, with a memory report
    kbit.py          prepare_for_kbit_training: what peft's version does that matters
    io.py            save_4bit / load_4bit: safetensors, no re-quantization; every stored tensor checked on load
    errors.py        QuantError, for a 4-bit file that does not fit
    parity.py        compare_with_bnb, and `python -m quant.parity model.safetensors` to measure

Knows nothing of minibert or lora. bitsandbytes is imported only when its backend is used (it takes ~4 s).
"""

from .double_quant import DoubleQuantState, dynamic_map
from .errors import QuantError
from .io import load_4bit, save_4bit
from .kbit import prepare_for_kbit_training
from .linear import NF4Linear
from .model import DEFAULT_SKIP, MemoryReport, dequantize_model, is_4bit_layer, quantize_model
from .nf4 import NF4_LEVELS, NF4State, dequantize_nf4, levels_from_normal_quantiles, quantize_nf4

__all__ = [
    "DEFAULT_SKIP", "DoubleQuantState", "MemoryReport", "NF4Linear", "NF4State", "NF4_LEVELS", "QuantError",
    "dequantize_model", "dequantize_nf4", "dynamic_map", "is_4bit_layer", "levels_from_normal_quantiles",
    "load_4bit", "prepare_for_kbit_training", "quantize_model", "quantize_nf4", "save_4bit",
]
