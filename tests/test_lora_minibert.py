"""LoRA adapters move between minibert and peft: trained in minibert, loaded by peft onto the exported transformers
model (and the other way), with the same logits and the trained head included.

minibert's module paths (`encoder.layers.0.attention.q_lin`) differ from the checkpoint's
(`distilbert.transformer.layer.0.attention.q_lin`, `bert.encoder.layer.0.attention.self.query`); Classifier and
Encoder name them with `hf_module_name` (minibert/hf_names.py, the table the weights use), which lora's adapter
files call by themselves: the plain `lora.save_adapter(model, dir, modules_to_save=...)` needs no map.
"""

import pytest
import torch
import transformers as hf
from peft import LoraConfig, PeftModel, get_peft_model

from safetensors.torch import load_file

import lora
import minibert

# peft uses a transformers method that transformers 5 deprecates; the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

DISTIL = minibert.Config(vocab_size=80, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=32)
BERT = DISTIL.with_(family="bert", type_vocab_size=2)
HEAD = ("pre_classifier", "classifier")


def perturb_lora_and_head(model) -> None:
    """A fresh adapter is a no-op (B = 0); give B and the head random values so the test can see them."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)


def batch():
    ids = torch.randint(1, 80, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return ids * mask, mask


@pytest.mark.parametrize("config", [DISTIL, BERT], ids=["distilbert", "bert"])
def test_minibert_adapter_loads_in_peft(tmp_path, config):
    """minibert LoRA (targets picked per family) -> save_adapter -> PeftModel.from_pretrained on the exported
    transformers model -> the same logits, so the head travelled with the adapter."""
    base = minibert.build_classifier(config).eval()
    minibert.save_pretrained(base, tmp_path / "base")
    ours = lora.inject(base, r=4, alpha=8, dropout=0.0)
    perturb_lora_and_head(ours)
    lora.save_adapter(ours, tmp_path / "adapter", modules_to_save=HEAD)
    keys = load_file(tmp_path / "adapter" / "adapter_model.safetensors").keys()
    assert not any(".encoder.layers." in key for key in keys)  # our paths never reach the file

    theirs = hf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    theirs = PeftModel.from_pretrained(theirs, tmp_path / "adapter").eval()
    ids, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids, attention_mask=mask).logits, ours(ids, mask),
                                   atol=1e-5, rtol=0)


PEFT_CASES = {  # id: (config, peft's target_modules, peft's modules_to_save)
    "distilbert": (DISTIL, ["q_lin", "v_lin"], ["pre_classifier", "classifier"]),
    "bert": (BERT, ["query", "value"], ["pooler", "classifier"]),  # "pooler" holds the dense layer we load
}


@pytest.mark.parametrize("case", PEFT_CASES)
def test_peft_adapter_loads_in_minibert(tmp_path, case):
    """A peft adapter (LoRA on the query/value projections, the head in modules_to_save) trained on transformers'
    model loads into minibert's classifier with no name map, head included, with the same logits."""
    config, targets, heads = PEFT_CASES[case]
    minibert.save_pretrained(minibert.build_classifier(config), tmp_path / "base")
    theirs = hf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    theirs = get_peft_model(theirs, LoraConfig(r=4, lora_alpha=8, target_modules=targets, modules_to_save=heads))
    perturb_lora_and_head(theirs)
    theirs.save_pretrained(tmp_path / "adapter")

    ours = lora.load_adapter(minibert.load_classifier(tmp_path / "base"), tmp_path / "adapter")
    assert len(lora.lora_layers(ours)) == 2 * config.n_layers
    ids, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(ids, mask), theirs.eval()(input_ids=ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=0)


def test_encoder_adapter_loads_in_peft_on_the_bare_model(tmp_path):
    """LoRA on minibert's bare Encoder saves under the bare checkpoint's names (no `distilbert.` prefix): peft
    loads it onto transformers' DistilBertModel and gives the same last hidden state."""
    minibert.save_pretrained(minibert.build_classifier(DISTIL), tmp_path / "base")
    ours = lora.inject(minibert.load_encoder(tmp_path / "base"), r=4, alpha=8, dropout=0.0)
    perturb_lora_and_head(ours)
    lora.save_adapter(ours, tmp_path / "adapter", modules_to_save=())
    theirs = PeftModel.from_pretrained(hf.AutoModel.from_pretrained(tmp_path / "base"), tmp_path / "adapter").eval()
    ids, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids, attention_mask=mask).last_hidden_state, ours.eval()(ids, mask),
                                   atol=1e-5, rtol=0)


def test_default_share_on_distilbert_base_preset():
    """r=8 on q_lin and v_lin of minibert's distilbert-base-uncased preset: 147,456 LoRA weights (0.22% of the
    model) plus the head (pre_classifier + classifier: 592,130), as peft counts on transformers' model."""
    model = lora.inject(minibert.build_classifier(minibert.preset("distilbert-base-uncased")), r=8, alpha=16)
    trainable, total = lora.trainable_parameters(model)
    assert trainable == 147_456 + 592_130 == 739_586
    assert total == 66_955_010 + 147_456
    print(lora.format_trainable(model))
