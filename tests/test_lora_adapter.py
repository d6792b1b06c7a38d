"""lora's adapter files are peft's: adapters saved by us load in peft and the other way round, head included.

Same tiny random references and helpers as tests/test_lora.py. Every round trip compares logits in eval mode
(<= 1e-5) with a random B and a random head, so a lost head or a wrong key would show.
"""

import copy
import json

import pytest
import torch
import transformers as hf
from peft import PeftModel
from safetensors.torch import load_file
from torch import nn
from torch.testing import assert_close

import lora
from test_lora import (  # noqa: F401  (bert, batch, distilbert are fixtures)
    HEAD, TINY_DISTILBERT, batch, bert, distilbert, logits, perturbed, randomize, theirs_lora, tiny_llama,
)

# peft calls a transformers method that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def test_our_adapter_loads_in_peft(distilbert, batch, tmp_path):
    """An adapter saved by lora.save_adapter gives the same logits through PeftModel.from_pretrained, head included."""
    ours = randomize(lora.inject(copy.deepcopy(distilbert), r=4, alpha=8), head=HEAD).eval()
    lora.save_adapter(ours, tmp_path, base_model_name_or_path="tiny-distilbert")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["modules_to_save"] == HEAD and config["task_type"] == "SEQ_CLS" and config["r"] == 4
    assert "base_model.model.classifier.weight" in load_file(tmp_path / "adapter_model.safetensors")
    theirs = PeftModel.from_pretrained(copy.deepcopy(distilbert), tmp_path).eval()
    assert_close(logits(theirs, batch), logits(ours, batch), atol=1e-5, rtol=0)
    assert not torch.allclose(logits(distilbert, batch), logits(ours, batch), atol=1e-3)  # the test can fail


def test_peft_adapter_loads_in_ours(distilbert, batch, tmp_path):
    """An adapter saved by peft (with modules_to_save) gives the same logits after lora.load_adapter, head included;
    and our files use exactly peft's keys, shapes and dtypes."""
    theirs = randomize(theirs_lora(distilbert, r=4, lora_alpha=8, target_modules=["q_lin", "v_lin"],
                                   modules_to_save=HEAD), head=HEAD)
    theirs.save_pretrained(tmp_path / "theirs")
    ours = lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "theirs").eval()
    assert_close(logits(ours, batch), logits(theirs, batch), atol=1e-5, rtol=0)
    assert ours.lora_modules_to_save == tuple(HEAD)
    assert not any(p.requires_grad for p in ours.parameters())  # loaded for inference, as peft does by default
    lora.save_adapter(ours, tmp_path / "ours")
    their_file, our_file = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("theirs", "ours"))
    assert our_file.keys() == their_file.keys()
    for key, value in their_file.items():
        assert our_file[key].dtype == value.dtype and torch.equal(our_file[key], value), key


def test_reload_restores_the_head(distilbert, batch, tmp_path):
    """Save a trained model, load onto a fresh base: the same logits, because the trained head comes back."""
    ours = lora.inject(copy.deepcopy(distilbert), r=4, alpha=8).train()
    optimizer = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        ours(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    ours.eval()
    lora.save_adapter(ours, tmp_path)
    fresh = copy.deepcopy(distilbert)
    assert not torch.equal(fresh.classifier.weight, ours.classifier.weight)
    reloaded = lora.load_adapter(fresh, tmp_path, is_trainable=True).eval()
    assert_close(logits(reloaded, batch), logits(ours, batch), atol=1e-6, rtol=0)
    assert {n for n, p in reloaded.named_parameters() if p.requires_grad} == \
           {n for n, p in ours.named_parameters() if p.requires_grad}


class Renamed(nn.Module):
    """The same network under other module paths (`net.distilbert...`), as minibert's are."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = model

    def forward(self, **kwargs):
        return self.net(**kwargs)


def to_checkpoint(path: str) -> str:
    return path.removeprefix("net.")


def test_rename_hook_both_ways(distilbert, batch, tmp_path):
    """With module_name_map, a model with other module paths saves adapters peft loads, and loads peft's."""
    ours = lora.inject(Renamed(copy.deepcopy(distilbert)), targets=("q_lin", "v_lin"), r=4, alpha=8,
                       trainable=("net.pre_classifier", "net.classifier"))
    randomize(ours, head=HEAD).eval()
    lora.save_adapter(ours, tmp_path / "ours", module_name_map=to_checkpoint)
    theirs = PeftModel.from_pretrained(copy.deepcopy(distilbert), tmp_path / "ours").eval()
    assert_close(logits(theirs, batch), logits(ours, batch), atol=1e-5, rtol=0)

    theirs = randomize(theirs_lora(distilbert, r=2, lora_alpha=4, target_modules=["v_lin"], modules_to_save=HEAD),
                       head=HEAD)
    theirs.save_pretrained(tmp_path / "theirs")
    ours = lora.load_adapter(Renamed(copy.deepcopy(distilbert)), tmp_path / "theirs", module_name_map=to_checkpoint)
    assert_close(logits(ours, batch), logits(theirs, batch), atol=1e-5, rtol=0)
    assert ours.lora_modules_to_save == ("net.pre_classifier", "net.classifier")


def test_bert_adapter_loads_in_peft(bert, batch, tmp_path):
    """A BERT adapter (rsLoRA on query/value, classifier head) saved by us gives the same logits in peft."""
    ours = randomize(lora.inject(copy.deepcopy(bert), r=4, alpha=8, rslora=True), head=["classifier"]).eval()
    lora.save_adapter(ours, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] == ["classifier"]
    theirs = PeftModel.from_pretrained(copy.deepcopy(bert), tmp_path).eval()
    assert_close(logits(theirs, batch), logits(ours, batch), atol=1e-5, rtol=0)


def test_llama_adapter_without_head_loads_in_peft(tmp_path):
    """A causal-LM adapter (no head: no modules_to_save, no task type) gives the same logits through peft."""
    base = tiny_llama().eval()
    ours = randomize(lora.inject(copy.deepcopy(base), targets=("q_proj", "v_proj"), r=4, alpha=8))
    lora.save_adapter(ours, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["modules_to_save"] is None and config["task_type"] is None
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        assert_close(theirs(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-5, rtol=0)


# --- bad adapters: one clear error, nothing changed -----------------------------------------------------------


def assert_unchanged(model: nn.Module, state: dict) -> None:
    """No LoRA layer added, nothing frozen, every tensor as before."""
    assert not lora.lora_layers(model) and all(p.requires_grad for p in model.parameters())
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_load_rejects_adapters_that_do_not_fit(distilbert, bert, tmp_path):
    """Wrong shapes, missing modules, another base model, a DoRA config, an adapter trained on a base that its
    initialisation changed (PiSSA, ...): one clear error each, model untouched."""
    torch.manual_seed(0)
    wider = perturbed(hf.DistilBertForSequenceClassification(hf.DistilBertConfig(**{**TINY_DISTILBERT, "dim": 48})))
    lora.save_adapter(lora.inject(copy.deepcopy(distilbert), r=4, alpha=8), tmp_path / "a",
                      base_model_name_or_path="tiny-distilbert")
    cases = [
        (wider, {}, r"lora_A.weight: shape \(4, 32\) in the adapter, \(4, 48\) expected"),
        (bert, {}, "distilbert.transformer.layer.0.attention.q_lin: no such module in BertForSequenceClassification"),
        (distilbert, {"base_model_name_or_path": "other-model"}, "was trained on 'tiny-distilbert'"),
    ]
    for model, kwargs, message in cases:
        model = copy.deepcopy(model).requires_grad_(True)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(ValueError, match=message):
            lora.load_adapter(model, tmp_path / "a", **kwargs)
        assert_unchanged(model, state)
    wrapped = lora.inject(copy.deepcopy(distilbert), r=2, alpha=4).requires_grad_(True)  # LoRA of another rank
    state = {k: v.clone() for k, v in wrapped.state_dict().items()}
    with pytest.raises(ValueError, match="already has LoRA of rank 2, the adapter's is r=4"):
        lora.load_adapter(wrapped, tmp_path / "a")
    assert all(p.requires_grad for p in wrapped.parameters())
    assert all(torch.equal(v, wrapped.state_dict()[k]) for k, v in state.items())
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora=True"):
        lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "a")
    for init in ("pissa", "pissa_niter_16", "OLoRA", "corda", "corda_kpm", "lora_ga", "loftq"):  # a changed base
        (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": init}))
        with pytest.raises(ValueError, match="also changes the base model's weights"):
            lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "a")
    for init in (True, "gaussian", "eva", "orthogonal"):  # only A and B started elsewhere: the adapter loads
        (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": init}))
        lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no adapter at"):
        lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "missing")


@pytest.mark.gpu
def test_cuda_bf16_base(distilbert, batch, tmp_path):
    """On CUDA with a bf16 base: A and B sit on the GPU in float32, logits come back bf16 and near the float32 CPU
    ones, merge/unmerge work within bf16 rounding, and an adapter saved from the GPU loads on the CPU exactly."""
    ours_cpu = randomize(lora.inject(copy.deepcopy(distilbert), r=4, alpha=8), head=HEAD).eval()
    expected = logits(ours_cpu, batch)
    lora.save_adapter(ours_cpu, tmp_path / "cpu")
    on_gpu = {k: v.cuda() for k, v in batch.items()}
    model = lora.load_adapter(copy.deepcopy(distilbert).to("cuda", torch.bfloat16), tmp_path / "cpu",
                              is_trainable=True).eval()
    layer = model.distilbert.transformer.layer[0].attention.q_lin
    assert layer.lora_A.weight.is_cuda and layer.lora_A.weight.dtype == torch.float32
    assert model.classifier.weight.dtype == torch.bfloat16
    out = model(**on_gpu)
    assert out.logits.dtype == torch.bfloat16
    assert_close(out.logits.float().cpu(), expected, atol=0.05, rtol=0.05)
    out.loss.backward()
    assert layer.lora_B.weight.grad.dtype == torch.float32 and layer.lora_B.weight.grad.abs().sum() > 0

    weight = layer.base_layer.weight.detach().clone()
    unmerged = logits(model, on_gpu).float()
    lora.merge(model)
    assert_close(logits(model, on_gpu).float(), unmerged, atol=0.05, rtol=0.05)
    lora.unmerge(model)
    assert_close(layer.base_layer.weight, weight, atol=0.02, rtol=0.02)  # bf16: W + d - d rounds twice

    lora.save_adapter(model, tmp_path / "gpu")
    reloaded = lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "gpu").eval()
    saved = load_file(tmp_path / "gpu" / "adapter_model.safetensors")
    assert all(not v.is_cuda for v in saved.values())
    assert torch.equal(saved["base_model.model.distilbert.transformer.layer.0.attention.q_lin.lora_A.weight"],
                       ours_cpu.distilbert.transformer.layer[0].attention.q_lin.lora_A.weight)
    assert_close(logits(reloaded, batch), expected, atol=0.02, rtol=0.02)  # the head went through bf16
