"""Assignment 10, LoRA injection: put LoRA layers into a model by name, and train only them and the head.

Graded code: lora/inject.py, the part of `inject` that changes the model (region `lora_inject`); choosing the
targets by name and every check before the change are given. The reference is peft 0.21.2's `get_peft_model` on
the same tiny random transformers models (DistilBERT, BERT, Llama; no download): the same modules get LoRA and the
same parameters train. No test runs a LoRA layer's forward, so this assignment does not wait on 06.
Docs: docs/assignments/10-lora-inject.md.
"""

import copy

import pytest
import torch
import transformers as hf
from peft import LoraConfig, get_peft_model
from torch import nn

import lora
from lora.layer import LoRALinear

# peft uses a transformers method that transformers 5 deprecates; the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
HEAD = ["pre_classifier", "classifier"]
CASES = {  # id: (our inject kwargs, peft LoraConfig kwargs)
    "query-value": (dict(targets=("q_lin", "v_lin"), r=4, alpha=8),
                    dict(r=4, lora_alpha=8, target_modules=["q_lin", "v_lin"], modules_to_save=HEAD)),
    "every-linear": (dict(targets=("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"), r=2, alpha=4),
                     dict(r=2, lora_alpha=4, target_modules=["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
                          modules_to_save=HEAD)),
    "one-layer-by-regex": (dict(targets="re:.*layer\\.1\\.attention\\.(q|v)_lin", r=8, alpha=8),
                           dict(r=8, lora_alpha=8, target_modules=".*layer\\.1\\.attention\\.(q|v)_lin",
                                modules_to_save=HEAD)),
}


def distilbert() -> nn.Module:
    torch.manual_seed(0)
    return hf.DistilBertForSequenceClassification(hf.DistilBertConfig(
        vocab_size=99, dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64)).eval()


def peft_name(name: str) -> str:
    """peft's parameter name -> ours: drop its wrapper prefix, the adapter name and the modules_to_save copy."""
    return name.removeprefix("base_model.model.").replace(".default.", ".").replace(".modules_to_save", "")


def trainable(model: nn.Module, rename=lambda name: name) -> dict[str, int]:
    return {rename(name): p.numel() for name, p in model.named_parameters() if p.requires_grad}


def their_lora_paths(model: nn.Module) -> list[str]:
    return [peft_name(name) for name, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)]


@pytest.mark.parametrize("case", CASES)
def test_same_layers_get_lora_and_same_parameters_train_as_peft(case):
    """Ours and peft's wrap the same modules, and train the same parameters (names and sizes): A, B, the head."""
    ours_kwargs, their_kwargs = CASES[case]
    ours = lora.inject(distilbert(), dropout=0.0, **ours_kwargs)
    theirs = get_peft_model(distilbert(), LoraConfig(lora_dropout=0.0, **their_kwargs))
    assert [path for path, _ in lora.lora_layers(ours)] == their_lora_paths(theirs)
    assert trainable(ours) == trainable(theirs, peft_name)


def test_each_target_is_wrapped_not_copied():
    """A LoRA layer holds the very nn.Linear that was there (its weight is not copied); every other module stays."""
    base = distilbert()
    before = dict(base.named_modules())
    ours = lora.inject(base, targets=("q_lin", "v_lin"), r=4, alpha=8)
    assert ours is base  # in place
    wrapped = dict(lora.lora_layers(ours))
    assert len(wrapped) == 4  # q_lin and v_lin of two layers
    for path, layer in wrapped.items():
        assert isinstance(layer, LoRALinear) and layer.base_layer is before[path]
        assert (layer.r, layer.scaling) == (4, 2.0)
        assert layer.lora_A.weight.shape == (4, 32) and layer.lora_B.weight.shape == (32, 4)
    for path, module in ours.named_modules():
        if path in before and not any(path == p or path.startswith(p + ".") for p in wrapped):
            assert module is before[path], path


def test_everything_else_is_frozen_even_what_was_trainable_before():
    """Only A and B of each LoRA layer and the head train: the base's weights, biases, embeddings and LayerNorms
    are frozen, whatever they were before (a model arrives with everything trainable)."""
    base = distilbert()
    assert all(p.requires_grad for p in base.parameters())
    ours = lora.inject(base, targets=("q_lin", "v_lin"), r=4, alpha=8)
    for name, p in ours.named_parameters():
        expected = ".lora_A." in name or ".lora_B." in name or name.split(".")[0] in HEAD
        assert p.requires_grad == expected, name
    trained, total = lora.trainable_parameters(ours)
    assert trained == 4 * (4 * 32 + 32 * 4) + (32 * 32 + 32) + (32 * 2 + 2)


def test_only_the_named_head_trains():
    """trainable=("classifier",) trains the classifier and not pre_classifier: names are whole components (peft
    would also catch pre_classifier by its suffix)."""
    ours = lora.inject(distilbert(), targets=("q_lin", "v_lin"), r=4, alpha=8, trainable=("classifier",))
    heads = {name for name in trainable(ours) if ".lora_" not in name}
    assert heads == {"classifier.weight", "classifier.bias"}


def test_bert_and_a_decoder_with_the_default_targets():
    """With targets=None the family's query/value projections are adapted: BERT's query/value, with its
    classifier trained and its pretrained pooler frozen; a Llama decoder's q_proj/v_proj, with no head at all."""
    torch.manual_seed(0)
    bert = hf.BertForSequenceClassification(hf.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37))
    their_bert = get_peft_model(copy.deepcopy(bert), LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                                modules_to_save=["classifier"]))
    ours = lora.inject(bert, r=4, alpha=8)
    assert [path for path, _ in lora.lora_layers(ours)] == their_lora_paths(their_bert)
    assert trainable(ours) == trainable(their_bert, peft_name)
    assert not any(p.requires_grad for p in ours.bert.pooler.parameters())

    llama = hf.LlamaForCausalLM(hf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    their_llama = get_peft_model(copy.deepcopy(llama), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    ours = lora.inject(llama, r=2, alpha=4)
    assert [path for path, _ in lora.lora_layers(ours)] == their_lora_paths(their_llama)
    assert trainable(ours) == trainable(their_llama, peft_name)
    assert all(".lora_" in name for name in trainable(ours))


def test_a_refused_injection_changes_nothing():
    """A target that is not a linear layer is refused before any change: no module swapped, nothing frozen; the
    model can then be injected as if nothing had happened."""
    base = distilbert()
    with pytest.raises(TypeError, match="not an nn.Linear"):
        lora.inject(base, targets=("q_lin", "attention"))
    assert lora.lora_layers(base) == [] and all(p.requires_grad for p in base.parameters())
    lora.inject(base, targets=("q_lin",), r=2, alpha=2)
    assert len(lora.lora_layers(base)) == 2
