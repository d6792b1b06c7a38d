"""lora's adapter files are peft's: adapters saved by us load in peft and the other way round, head included.

Same tiny random references and helpers as tests/test_lora.py. Every round trip compares logits in eval mode
(<= 1e-5) with a random B and a random head, so a lost head or a wrong key would show.
"""

import copy
import json
import shutil

import pytest
import torch
import transformers as hf
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn
from torch.testing import assert_close

import lora
from test_lora import (  # noqa: F401  (bert, batch, distilbert are fixtures)
    HEAD, TINY_DISTILBERT, batch, bert, distilbert, logits, perturbed, randomize, theirs_lora, tiny_llama,
)

# peft uses a transformers method that transformers 5 deprecates; the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def test_our_adapter_loads_in_peft(distilbert, batch, tmp_path):
    """An adapter saved by lora.save_adapter gives the same logits through PeftModel.from_pretrained, head included."""
    ours = randomize(lora.inject(copy.deepcopy(distilbert), r=4, alpha=8), head=HEAD).eval()
    lora.save_adapter(ours, tmp_path, modules_to_save=HEAD, base_model_name_or_path="tiny-distilbert")
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
    assert not any(p.requires_grad for p in ours.parameters())  # loaded for inference, as peft does by default
    lora.save_adapter(ours, tmp_path / "ours", modules_to_save=HEAD)
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
    lora.save_adapter(ours, tmp_path, modules_to_save=HEAD)
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


def test_module_name_map_both_ways(distilbert, batch, tmp_path):
    """With module_name_map, a model with other module paths saves adapters peft loads, and loads peft's."""
    net_head = ("net.pre_classifier", "net.classifier")
    ours = lora.inject(Renamed(copy.deepcopy(distilbert)), targets=("q_lin", "v_lin"), r=4, alpha=8,
                       trainable=net_head)
    randomize(ours, head=HEAD).eval()
    with pytest.raises(lora.AdapterError, match=r"no module 'net\."):
        lora.load_adapter(copy.deepcopy(distilbert), lora.save_adapter(ours, tmp_path / "unmapped",
                                                                       modules_to_save=net_head))
    lora.save_adapter(ours, tmp_path / "ours", modules_to_save=net_head, module_name_map=to_checkpoint)
    theirs = PeftModel.from_pretrained(copy.deepcopy(distilbert), tmp_path / "ours").eval()
    assert_close(logits(theirs, batch), logits(ours, batch), atol=1e-5, rtol=0)

    theirs = randomize(theirs_lora(distilbert, r=2, lora_alpha=4, target_modules=["v_lin"], modules_to_save=HEAD),
                       head=HEAD)
    theirs.save_pretrained(tmp_path / "theirs")
    ours = lora.load_adapter(Renamed(copy.deepcopy(distilbert)), tmp_path / "theirs", module_name_map=to_checkpoint)
    assert_close(logits(ours, batch), logits(theirs, batch), atol=1e-5, rtol=0)


def test_bert_adapter_loads_in_peft(bert, batch, tmp_path):
    """A BERT adapter (rsLoRA on query/value, classifier head) saved by us gives the same logits in peft."""
    ours = randomize(lora.inject(copy.deepcopy(bert), r=4, alpha=8, rslora=True), head=["classifier"]).eval()
    lora.save_adapter(ours, tmp_path, modules_to_save=["classifier"])
    assert json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] == ["classifier"]
    theirs = PeftModel.from_pretrained(copy.deepcopy(bert), tmp_path).eval()
    assert_close(logits(theirs, batch), logits(ours, batch), atol=1e-5, rtol=0)


def test_llama_adapter_without_head_loads_in_peft(tmp_path):
    """A causal-LM adapter (no head: no modules_to_save, no task type) gives the same logits through peft."""
    base = tiny_llama().eval()
    ours = randomize(lora.inject(copy.deepcopy(base), targets=("q_proj", "v_proj"), r=4, alpha=8))
    lora.save_adapter(ours, tmp_path, modules_to_save=())
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["modules_to_save"] is None and config["task_type"] is None
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        assert_close(theirs(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-5, rtol=0)


# --- bad adapters: one clear error, nothing changed -----------------------------------------------------------

Q_LIN = "base_model.model.distilbert.transformer.layer.0.attention.q_lin"


def snapshot(model: nn.Module) -> dict:
    """Everything loading could change: each tensor's bits, each flag, each module's type."""
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "types": [(n, type(m)) for n, m in model.named_modules()]}


def assert_unchanged(model: nn.Module, before: dict) -> None:
    """The model is as `snapshot` saw it: no LoRA added, nothing frozen, every parameter and buffer bit-identical."""
    after = snapshot(model)
    assert after["types"] == before["types"] and after["grad"] == before["grad"]
    assert after["state"].keys() == before["state"].keys()
    for key, value in after["state"].items():
        assert value.dtype == before["state"][key].dtype and torch.equal(value, before["state"][key]), key


@pytest.fixture(scope="module")
def good_adapter(distilbert, tmp_path_factory):
    """A valid adapter of the tiny DistilBERT: LoRA r=4 on q_lin, v_lin, random B and head."""
    model = randomize(lora.inject(copy.deepcopy(distilbert), r=4, alpha=8), head=HEAD)
    return lora.save_adapter(model, tmp_path_factory.mktemp("good"), modules_to_save=HEAD,
                             base_model_name_or_path="tiny-distilbert")


def with_tensor(key: str, value):
    """A change to the file's tensors: add `key`, or replace its value."""
    return lambda tensors: tensors.update({key: value})


BAD_FILES = {  # id: (change to the tensors, fragment of the one-line message)
    "base-weight": (with_tensor("base_model.model.distilbert.embeddings.word_embeddings.weight", torch.zeros(99, 32)),
                    "embeddings.word_embeddings.weight: a tensor of the base model, not of a module in"),
    "integer": (with_tensor(f"{Q_LIN}.lora_A.weight", torch.ones(4, 32, dtype=torch.int64)),
                "q_lin.lora_A.weight: dtype torch.int64; a floating dtype expected"),
    "nan": (with_tensor(f"{Q_LIN}.lora_B.weight", torch.full((32, 4), float("nan"))),
            "q_lin.lora_B.weight: holds NaN or inf"),
    "inf-in-head": (with_tensor("base_model.model.classifier.bias", torch.tensor([0.0, float("inf")])),
                    "classifier.bias: holds NaN or inf"),
    "wrong-shape": (with_tensor(f"{Q_LIN}.lora_A.weight", torch.zeros(4, 31)),
                    r"q_lin.lora_A.weight: shape \(4, 31\) in the adapter, \(4, 32\) expected"),
    "head-wrong-shape": (with_tensor("base_model.model.classifier.weight", torch.zeros(3, 32)),
                         r"classifier.weight: shape \(3, 32\) in the adapter, \(2, 32\) expected"),
    "not-a-target": (with_tensor(Q_LIN.replace("q_lin", "k_lin") + ".lora_A.weight", torch.zeros(4, 32)),
                     "k_lin.lora_A.weight: LoRA on '.*k_lin', which the config's target_modules does not name"),
    "variant-key": (with_tensor(f"{Q_LIN}.lora_magnitude_vector", torch.ones(32)),
                    "q_lin.lora_magnitude_vector: not a key of plain LoRA"),
    "no-prefix": (with_tensor("classifier.weight", torch.zeros(2, 32)), "classifier.weight: not a key of plain LoRA"),
    "unknown-head-tensor": (with_tensor("base_model.model.classifier.scale", torch.ones(2)),
                            "classifier.scale: 'classifier' has no parameter or buffer 'scale'"),
    "lone-lora-A": (lambda tensors: tensors.pop(f"{Q_LIN}.lora_B.weight"),
                    "q_lin: lora_A alone; LoRA needs both lora_A and lora_B"),
}


@pytest.mark.parametrize("case", BAD_FILES)
@pytest.mark.parametrize("into", ["plain", "with-lora"])
def test_a_bad_tensor_refuses_the_whole_file(distilbert, good_adapter, tmp_path, case, into):
    """Each bad tensor file raises AdapterError with one line naming the key, and the model, plain or already
    holding LoRA of the same rank, keeps every parameter, buffer, flag and module as it was."""
    change, message = BAD_FILES[case]
    tensors = load_file(good_adapter / "adapter_model.safetensors")
    change(tensors)
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    shutil.copy(good_adapter / "adapter_config.json", tmp_path)
    model = copy.deepcopy(distilbert).requires_grad_(True)
    if into == "with-lora":
        model = randomize(lora.inject(model, r=4, alpha=8), head=HEAD)
    before = snapshot(model)
    with pytest.raises(lora.AdapterError, match=message) as refused:
        lora.load_adapter(model, tmp_path)
    assert "\n" not in str(refused.value) and "the model is unchanged" in str(refused.value)
    assert_unchanged(model, before)


def test_the_good_file_does_change_both_models(distilbert, good_adapter):
    """The unchanged-model check above can fail: the unaltered file changes the plain and the LoRA model."""
    for model in (copy.deepcopy(distilbert), randomize(lora.inject(copy.deepcopy(distilbert), r=4, alpha=8))):
        before = snapshot(model.requires_grad_(True))
        lora.load_adapter(model, good_adapter)
        with pytest.raises(AssertionError):
            assert_unchanged(model, before)


def test_load_rejects_adapters_that_do_not_fit(distilbert, bert, good_adapter, tmp_path):
    """Another model's shapes or names, another base model, LoRA of another rank, a DoRA config, an adapter trained
    on a base that its initialisation changed (PiSSA, ...): one AdapterError each, model untouched."""
    torch.manual_seed(0)
    wider = perturbed(hf.DistilBertForSequenceClassification(hf.DistilBertConfig(**{**TINY_DISTILBERT, "dim": 48})))
    cases = [
        (wider, {}, r"weight: shape \((4|2), 32\) in the adapter, \((4|2), 48\) expected"),
        (bert, {}, r"no module '(distilbert|pre_classifier).*' in this model"),
        (distilbert, {"base_model_name_or_path": "other-model"}, "was trained on 'tiny-distilbert'"),
        (lora.inject(copy.deepcopy(distilbert), r=2, alpha=4), {}, "of rank 2, the adapter's is r=4"),
    ]
    for model, kwargs, message in cases:
        model = copy.deepcopy(model).requires_grad_(True)
        before = snapshot(model)
        with pytest.raises(lora.AdapterError, match=message):
            lora.load_adapter(model, good_adapter, **kwargs)
        assert_unchanged(model, before)
    shutil.copytree(good_adapter, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(lora.AdapterError, match="use_dora=True"):
        lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "a")
    for init in ("pissa", "pissa_niter_16", "OLoRA", "corda", "corda_kpm", "lora_ga", "loftq"):  # a changed base
        (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": init}))
        with pytest.raises(lora.AdapterError, match="also changes the base model's weights"):
            lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "a")
    for init in (True, "gaussian", "eva", "orthogonal"):  # only A and B started elsewhere: the adapter loads
        (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": init}))
        lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "a")
    with pytest.raises(lora.AdapterError, match="no adapter at"):
        lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "missing")


BAD_CONFIG_VALUES = {  # adapter_config.json key: a value of the wrong type or range, and what the message says
    "r": ("eight", "has r='eight'; expected a positive integer"),
    "lora_alpha": (float("nan"), "has lora_alpha=nan; expected a positive number"),
    "lora_dropout": (2.0, r"has lora_dropout=2.0; expected a number in \[0, 1\)"),
    "target_modules": (5, "has target_modules=5; expected a list of module names, a regex string or null"),
    "modules_to_save": ("classifier", "has modules_to_save='classifier'; expected a list of module names or null"),
}


@pytest.mark.parametrize("key", BAD_CONFIG_VALUES)
def test_a_config_value_of_the_wrong_type_or_range_is_refused(distilbert, good_adapter, tmp_path, key):
    """Each is one AdapterError naming the file and the key, before any weight is read; the model is untouched."""
    value, message = BAD_CONFIG_VALUES[key]
    shutil.copytree(good_adapter, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, key: value}))
    model = copy.deepcopy(distilbert)
    before = snapshot(model)
    with pytest.raises(lora.AdapterError, match="adapter_config.json " + message):
        lora.load_adapter(model, tmp_path / "a")
    assert_unchanged(model, before)


def test_save_refuses_what_peft_could_not_load(distilbert, tmp_path):
    """No LoRA, a head that is not a module or that holds LoRA, layers of two ranks: AdapterError, nothing written."""
    ours = lora.inject(copy.deepcopy(distilbert), r=4, alpha=8)
    lora.inject(ours, targets=("layer.0.attention.k_lin",), r=2, alpha=4, trainable=())
    cases = [
        (copy.deepcopy(distilbert), HEAD, "has no LoRA layers"),
        (ours, ["classifer"], "'classifer' is not a module path.*classifier"),
        (ours, ["distilbert.transformer.layer.0"], "holds LoRA layers"),
        (ours, HEAD, "LoRA layers differ in \\(r, alpha, rslora, dropout\\)"),
    ]
    for model, heads, message in cases:
        with pytest.raises(lora.AdapterError, match=message):
            lora.save_adapter(model, tmp_path / "out", modules_to_save=heads)
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
def test_cuda_bf16_base(distilbert, batch, tmp_path):
    """On CUDA with a bf16 base: A and B sit on the GPU in float32, logits come back bf16 and near the float32 CPU
    ones, merge/unmerge work within bf16 rounding, and an adapter saved from the GPU loads on the CPU exactly."""
    ours_cpu = randomize(lora.inject(copy.deepcopy(distilbert), r=4, alpha=8), head=HEAD).eval()
    expected = logits(ours_cpu, batch)
    lora.save_adapter(ours_cpu, tmp_path / "cpu", modules_to_save=HEAD)
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

    lora.save_adapter(model, tmp_path / "gpu", modules_to_save=HEAD)
    reloaded = lora.load_adapter(copy.deepcopy(distilbert), tmp_path / "gpu").eval()
    saved = load_file(tmp_path / "gpu" / "adapter_model.safetensors")
    assert all(not v.is_cuda for v in saved.values())
    assert torch.equal(saved["base_model.model.distilbert.transformer.layer.0.attention.q_lin.lora_A.weight"],
                       ours_cpu.distilbert.transformer.layer[0].attention.q_lin.lora_A.weight)
    assert_close(logits(reloaded, batch), expected, atol=0.02, rtol=0.02)  # the head went through bf16
