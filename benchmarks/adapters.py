"""3. LoRA and QLoRA training steps next to full fine-tuning: time and memory, minibert (lora/, quant/) vs peft.

The recipe on both sides: LoRA r=8, alpha=16, dropout 0.1 on the query and value projections; the classification
head trains fully; everything else is frozen. QLoRA = the same on an NF4 base (bitsandbytes' 4-bit layers, block
64, no double quantization; the head stays in float): ours via quant.quantize_model + quant.prepare_for_kbit_training
+ lora.inject, theirs via transformers' BitsAndBytesConfig + peft.prepare_model_for_kbit_training + get_peft_model.
Gradient checkpointing is off on both sides, so time and memory compare the same computation.

Memory: on CUDA, torch.cuda.max_memory_allocated over a step (peak stats reset before). On CPU there are no
allocator statistics: we count weights + gradients + AdamW state + the activations saved for backward
(timing.saved_tensor_bytes), which is what a step must hold at its peak, give or take temporaries.
"""

import copy

import torch

import lora
import quant

from . import common
from .timing import Row, interleaved, median, saved_tensor_bytes, training_state_bytes

R, ALPHA, DROPOUT = 8, 16, 0.1


def ours_variants(ours, device: str) -> dict:
    """{"full", "lora", "qlora"}: minibert models trained three ways (the encoder names are DistilBERT's for both
    families). The head that trains: pre_classifier + classifier for DistilBERT, classifier alone for BERT (whose
    pre_classifier slot holds the pretrained pooler, which peft leaves frozen)."""
    head = ("pre_classifier", "classifier") if ours.config.family == "distilbert" else ("classifier",)
    lora_model = lora.inject(copy.deepcopy(ours), targets=("q_lin", "v_lin"), r=R, alpha=ALPHA, dropout=DROPOUT,
                             trainable=head)
    qlora_model = copy.deepcopy(ours)
    compute = torch.bfloat16 if device == "cuda" else torch.float32
    quant.quantize_model(qlora_model, skip=quant.DEFAULT_SKIP, compute_dtype=compute, backend="bnb")
    quant.prepare_for_kbit_training(qlora_model, use_gradient_checkpointing=False)
    lora.inject(qlora_model, targets=("q_lin", "v_lin"), r=R, alpha=ALPHA, dropout=DROPOUT, trainable=head)
    return {"full": ours, "lora": lora_model, "qlora": qlora_model}


def theirs_variants(ours, device: str) -> dict:
    """The same three on transformers + peft, from our saved weights."""
    import peft
    import transformers

    distil = ours.config.family == "distilbert"
    targets = ["q_lin", "v_lin"] if distil else ["query", "value"]
    head = ["pre_classifier", "classifier"] if distil else ["classifier"]
    config = dict(r=R, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules=targets, modules_to_save=head)
    full = common.theirs_from(ours, ("sdpa",), device)["sdpa"]
    lora_model = peft.get_peft_model(copy.deepcopy(full), peft.LoraConfig(**config))
    compute = torch.bfloat16 if device == "cuda" else torch.float32
    bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_compute_dtype=compute,
                                          llm_int8_skip_modules=head + ([] if distil else ["pooler"]))
    base4 = common.theirs_from(ours, ("sdpa",), device, quantization_config=bnb, device_map=device)["sdpa"]
    base4 = peft.prepare_model_for_kbit_training(base4, use_gradient_checkpointing=False)
    qlora_model = peft.get_peft_model(base4, peft.LoraConfig(**config))
    return {"full": full, "lora": lora_model, "qlora": qlora_model}


def step_memory(model, batch: dict, device: str) -> float:
    """MiB one training step holds at its peak (see the module docstring for CPU vs CUDA)."""
    model.train()
    optimizer = common.make_optimizer(model)
    common.train_step(model, optimizer, batch)  # creates the AdamW state
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        common.train_step(model, optimizer, batch)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    with saved_tensor_bytes(model) as saved:
        logits = model(batch["input_ids"], batch["attention_mask"])
    torch.nn.functional.cross_entropy(logits, batch["labels"]).backward()
    total = training_state_bytes(model, optimizer) + saved.bytes
    optimizer.zero_grad(set_to_none=True)
    return total / 2**20


def adapter_rows(model_name: str, batch: dict, warmup: int, repeats: int, device: str = "cpu",
                 sync=lambda: None, pretrained: bool = True) -> list[Row]:
    ours_base = common.build_ours(model_name, device, pretrained)
    ours = ours_variants(ours_base, device)
    theirs = {k: common.Logits(m) for k, m in theirs_variants(ours_base, device).items()}
    for kind in ("lora", "qlora"):
        a, b = common.n_params(ours[kind], True), common.n_params(theirs[kind], True)
        if a != b:
            raise RuntimeError(f"{kind}: minibert trains {a:,} parameters, peft {b:,}; the comparison would be unfair")
    candidates = {f"ours {k}": common.stepper(m, batch) for k, m in ours.items()}
    candidates |= {f"theirs {k}": common.stepper(m, batch) for k, m in theirs.items()}
    seconds = {k: median(v) for k, v in interleaved(candidates, warmup, repeats, sync).items()}
    memory = {k: step_memory(m, batch, device) for k, m in [*(("ours " + k, m) for k, m in ours.items()),
                                                         *(("theirs " + k, m) for k, m in theirs.items())]}
    B, T = batch["input_ids"].shape
    short = f"{'MiniLM' if model_name == common.MINILM else 'distilbert-base'} {B}x{T}"
    n_lora = common.n_params(ours["lora"], True)
    return [
        Row(f"LoRA step {short} (q,v r=8, {n_lora:,} trained) vs peft LoRA", seconds["ours lora"],
            seconds["theirs lora"], "s", "<= 1.0"),
        Row(f"QLoRA step {short} (NF4 base) vs peft QLoRA", seconds["ours qlora"], seconds["theirs qlora"], "s",
            "<= 1.0"),
        Row(f"LoRA step {short} vs minibert full fine-tuning step", seconds["ours lora"], seconds["ours full"], "s",
            "< 1.0"),
        Row(f"QLoRA step {short} vs minibert full fine-tuning step", seconds["ours qlora"], seconds["ours full"], "s",
            ""),
        Row(f"memory full step {short} vs transformers", memory["ours full"], memory["theirs full"], "MiB", "<= 1.0"),
        Row(f"memory LoRA step {short} vs peft LoRA", memory["ours lora"], memory["theirs lora"], "MiB", "<= 1.0"),
        Row(f"memory QLoRA step {short} vs peft QLoRA", memory["ours qlora"], memory["theirs qlora"], "MiB", "<= 1.0"),
        Row(f"memory QLoRA step {short} vs minibert full step", memory["ours qlora"], memory["ours full"], "MiB",
            "< 1.0"),
    ]
