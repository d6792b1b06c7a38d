"""What a finished train.py run leaves: the model exported for transformers and minibert.predict, and the summary
printed at the end. (train.py composes minibert, lora and quant; so does the export of a LoRA or QLoRA run.)"""

import copy
from pathlib import Path

import lora
import minibert
import quant
from train_config import HEAD, RunConfig


def export(model, tokenizer, run_folder: Path, cfg: RunConfig) -> None:
    """model/: the fine-tuned model in Hugging Face layout with its tokenizer (transformers and minibert.predict
    load it). LoRA runs first write adapter/ in peft's format, under the checkpoint's module names, then model/
    from a merged copy (the trained model itself keeps its adapter)."""
    if cfg.method in ("lora", "qlora"):
        lora.save_adapter(model, run_folder / "adapter", modules_to_save=HEAD,
                          base_model_name_or_path=cfg.model, task_type="SEQ_CLS")
        if not cfg.merge:
            return
        model = copy.deepcopy(model)
        if cfg.method == "qlora":  # merging into 4-bit weights would re-quantize them: merge into a float copy
            model = quant.dequantize_model(model)
        model = lora.merge_and_unload(model)
    minibert.save_pretrained(model, run_folder / "model")
    tokenizer.save_pretrained(run_folder / "model", model_max_length=cfg.eval_max_len)  # the length it was tested at


def summary(cfg: RunConfig, report: dict) -> str:
    rows = [("model", f"{cfg.model} ({cfg.init}, {cfg.method}, pooling={cfg.pooling})"),
            ("data", f"{report['n_train']} train / {report['n_val']} val / {report['n_test']} test, "
                     f"max_len {cfg.max_len} (val/test {cfg.eval_max_len})"),
            ("validation", f"accuracy {100 * report['val_accuracy']:.2f}%  F1 {100 * report['val_f1']:.2f}%"),
            ("test", f"accuracy {100 * report['test_accuracy']:.2f}%  F1 {100 * report['test_f1']:.2f}%"),
            ("time", f"train {report['train_seconds']:.0f} s ({report['steps']} steps), test eval "
                     f"{report['test_eval_seconds']:.0f} s on {report['device']}"),
            ("parameters", f"{report['trainable_params']:,} trainable of {report['total_params']:,}"),
            ("memory", f"peak {report['peak_memory_mb']:.0f} MB, weights {report['weight_memory_mb']:.0f} MB"),
            ("run folder", str(cfg.out))]
    return "\n".join(f"  {k:<11} {v}" for k, v in rows)
