"""lora's layer and injection compute what peft 0.21.2 computes: outputs, every gradient, init, counts, merges.

References are tiny random transformers models (DistilBERT, BERT, Llama) built from configs, no download. `ours`
is the model after lora.inject, `theirs` the same base after peft's get_peft_model; both get the same A and B
(B random: a zero B would hide a wrong scaling or a wrong matrix order). Compared in eval mode (dropout off).
Adapter files (save/load, both ways with peft) are tested in tests/test_lora_adapter.py, with these fixtures.
"""

import copy

import pytest
import torch
import transformers as hf
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.testing import assert_close

import lora

TINY_DISTILBERT = dict(vocab_size=99, dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64)
TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                 max_position_embeddings=64)
HEAD = ["pre_classifier", "classifier"]
# peft uses a transformers method that transformers 5 deprecates; the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def perturbed(model: nn.Module) -> nn.Module:
    """Random-init model with every parameter nudged (a fresh init has zero biases), in eval mode."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def distilbert() -> nn.Module:
    torch.manual_seed(0)
    return perturbed(hf.DistilBertForSequenceClassification(hf.DistilBertConfig(**TINY_DISTILBERT)))


@pytest.fixture(scope="module")
def bert() -> nn.Module:
    torch.manual_seed(0)
    return perturbed(hf.BertForSequenceClassification(hf.BertConfig(**TINY_BERT)))


@pytest.fixture(scope="module")
def batch() -> dict:
    ids = torch.randint(1, 99, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # one padded row
    return {"input_ids": ids * mask, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


def logits(model: nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def randomize(model: nn.Module, head=()) -> nn.Module:
    """Random B (and head), as after training; works on ours and on peft models."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or any(f"{h}." in name for h in head):
                p.copy_(torch.randn_like(p) * 0.3)
    return model


def peft_name(name: str) -> str:
    """peft parameter name -> ours: drop the wrapper prefix, adapter name and modules_to_save wrapper."""
    return name.removeprefix("base_model.model.").replace(".default.", ".").replace(".modules_to_save", "")


def theirs_lora(base: nn.Module, **config) -> nn.Module:
    return get_peft_model(copy.deepcopy(base), LoraConfig(**config)).eval()


def copy_lora_from(ours: nn.Module, theirs: nn.Module) -> None:
    """Give ours the A, B (and head) values of theirs."""
    mine = dict(ours.named_parameters())
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if p.requires_grad:
                mine[peft_name(name)].copy_(p)


# --- the layer and injection -----------------------------------------------------------------------------------


def test_fresh_injection_equals_base(distilbert, batch):
    """A freshly injected model (B = 0) computes exactly what its base computes."""
    ours = lora.inject(copy.deepcopy(distilbert), r=4, alpha=8, dropout=0.1)
    assert len(lora.lora_layers(ours)) == 4  # q_lin, v_lin in 2 layers
    assert not any(m.training for m in ours.modules())  # new layers take the mode of the (eval) layer they wrap
    assert torch.equal(logits(ours, batch), logits(distilbert, batch))


def test_init_matches_peft_under_same_seed(distilbert):
    """Under the same seed our A equals peft's bit for bit (Kaiming-uniform, a=sqrt(5)) and B is zero."""
    torch.manual_seed(7)
    ours = lora.inject(copy.deepcopy(distilbert), targets=("q_lin", "v_lin"), r=4, alpha=8)
    torch.manual_seed(7)
    theirs = theirs_lora(distilbert, r=4, lora_alpha=8, target_modules=["q_lin", "v_lin"])
    theirs_params = {peft_name(n): p for n, p in theirs.named_parameters() if "lora_" in n}
    ours_params = {n: p for n, p in ours.named_parameters() if "lora_" in n}
    assert ours_params.keys() == theirs_params.keys()
    for name, p in ours_params.items():
        assert torch.equal(p, theirs_params[name]), name
        assert ("lora_B" in name) == (not p.any())


PARITY_CASES = {  # id: (our inject kwargs, peft LoraConfig kwargs)
    "qv-r4": (dict(targets=("q_lin", "v_lin"), r=4, alpha=8),
              dict(r=4, lora_alpha=8, target_modules=["q_lin", "v_lin"])),
    "all-linear-r8-rslora": (dict(targets=("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"), r=8, alpha=32,
                                  rslora=True),
                             dict(r=8, lora_alpha=32, use_rslora=True,
                                  target_modules=["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"])),
    "regex-layer1-r2": (dict(targets="re:.*layer\\.1\\.attention\\.(q|v)_lin", r=2, alpha=5),
                        dict(r=2, lora_alpha=5, target_modules=".*layer\\.1\\.attention\\.(q|v)_lin")),
}


@pytest.mark.parametrize("case", PARITY_CASES)
def test_outputs_and_gradients_match_peft(distilbert, batch, case):
    """Same base, same A and B: logits, loss and the gradient of every trainable parameter equal peft's."""
    ours_kwargs, their_kwargs = PARITY_CASES[case]
    theirs = randomize(theirs_lora(distilbert, lora_dropout=0.1, modules_to_save=HEAD, **their_kwargs))
    ours = lora.inject(copy.deepcopy(distilbert), dropout=0.1, **ours_kwargs).eval()
    copy_lora_from(ours, theirs)
    out_ours, out_theirs = ours(**batch), theirs(**batch)
    assert_close(out_ours.logits, out_theirs.logits, atol=1e-5, rtol=0)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    grads_theirs = {peft_name(n): p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    grads_ours = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    assert grads_ours.keys() == grads_theirs.keys()
    for name, grad in grads_ours.items():
        assert_close(grad, grads_theirs[name], atol=1e-5, rtol=0, msg=name)


def test_only_lora_and_head_receive_gradients(distilbert, batch):
    """After inject, backward reaches only A, B and the head (pre_classifier + classifier), nothing else."""
    ours = lora.inject(copy.deepcopy(distilbert), r=4, alpha=8)
    ours(**batch).loss.backward()
    with_grad = {n for n, p in ours.named_parameters() if p.grad is not None}
    expected = {n for n, _ in ours.named_parameters() if "lora_" in n or n.split(".")[0] in HEAD}
    assert with_grad == expected
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == expected


def test_names_match_whole_components(distilbert):
    """'classifier' does not catch pre_classifier (peft #3755), 'lin' does not catch q_lin, dotted suffixes work."""
    ours = lora.inject(copy.deepcopy(distilbert), targets="layer.0.attention.q_lin", trainable=("classifier",))
    assert [path for path, _ in lora.lora_layers(ours)] == ["distilbert.transformer.layer.0.attention.q_lin"]
    assert not ours.pre_classifier.weight.requires_grad and ours.classifier.weight.requires_grad
    with pytest.raises(ValueError, match="'lin' matches no module"):
        lora.inject(copy.deepcopy(distilbert), targets="lin")


def test_trainable_count_distilbert_base():
    """r=8 on q,v of a default (~67M) DistilBERT trains exactly 6 x 2 x (768*8 + 8*768) LoRA weights plus the head.

    DistilBertConfig() has 6 layers (not BERT-base's 12), so LoRA alone is 147,456 weights, ~0.22% of the model.
    """
    torch.manual_seed(0)
    model = hf.DistilBertForSequenceClassification(hf.DistilBertConfig())
    base_total = sum(p.numel() for p in model.parameters())
    assert model.config.n_layers == 6 and 66_000_000 < base_total < 68_000_000
    lora.inject(model, targets=("q_lin", "v_lin"), r=8, alpha=16)
    lora_params = 6 * 2 * (768 * 8 + 8 * 768)
    head = (768 * 768 + 768) + (768 * 2 + 2)  # pre_classifier + classifier
    assert lora_params == 147_456
    assert lora.trainable_parameters(model) == (lora_params + head, base_total + lora_params)
    line = lora.format_trainable(model)
    print(line, f"(LoRA alone: {100 * lora_params / base_total:.2f}%)")
    assert line == f"trainable: {lora_params + head:,} of {base_total + lora_params:,} " \
                   f"({100 * (lora_params + head) / (base_total + lora_params):.2f}%)"
    assert 0.0020 < lora_params / base_total < 0.0025  # "about 0.2%"


def test_merge_unmerge_and_unload(distilbert, batch):
    """Merged == unmerged output; merge then unmerge restores W; a merged layer skips A/B; unload leaves nn.Linear."""
    ours = randomize(lora.inject(copy.deepcopy(distilbert), r=4, alpha=8)).eval()
    weights = {n: p.clone() for n, p in ours.named_parameters() if "base_layer" in n}
    before = logits(ours, batch)
    lora.merge(ours)
    assert all(layer.merged for _, layer in lora.lora_layers(ours))
    assert not torch.equal(ours.distilbert.transformer.layer[0].attention.q_lin.base_layer.weight,
                           weights["distilbert.transformer.layer.0.attention.q_lin.base_layer.weight"])
    assert_close(logits(ours, batch), before, atol=1e-5, rtol=0)
    ours(**batch).loss.backward()  # merged: the A/B path is not computed, so it gets no gradient
    assert all(p.grad is None for n, p in ours.named_parameters() if "lora_" in n)
    lora.unmerge(ours)
    for name, p in ours.named_parameters():
        if "base_layer" in name:
            assert_close(p, weights[name], atol=1e-6, rtol=0)
    assert_close(logits(ours, batch), before, atol=1e-5, rtol=0)
    plain = lora.merge_and_unload(ours)
    assert not lora.lora_layers(plain)
    assert type(plain.distilbert.transformer.layer[1].attention.v_lin) is nn.Linear
    assert_close(logits(plain, batch), before, atol=1e-5, rtol=0)


def test_bert_defaults(bert):
    """On BERT, targets=None adapts query/value and trains the classifier; the pooler stays frozen."""
    ours = lora.inject(copy.deepcopy(bert), r=4, alpha=8)
    assert {path.rsplit(".", 1)[1] for path, _ in lora.lora_layers(ours)} == {"query", "value"}
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in ours.named_parameters() if "lora_" in n or n.startswith("classifier.")}


def tiny_llama() -> nn.Module:
    """A random 2-layer Llama: hidden 32, 4 query heads sharing 2 key/value heads (so v_proj is 32 -> 16)."""
    torch.manual_seed(0)
    return hf.LlamaForCausalLM(hf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                              max_position_embeddings=32))


def test_llama_loss_falls():
    """LoRA on a tiny random Llama's q_proj/v_proj lowers the LM loss over 20 steps; only A and B train."""
    model = lora.inject(tiny_llama(), r=4, alpha=8, dropout=0.0)
    assert {p.rsplit(".", 1)[1] for p, _ in lora.lora_layers(model)} == {"q_proj", "v_proj"}
    q_proj, v_proj = 4 * 32 + 32 * 4, 4 * 32 + 16 * 4  # A (r, in) + B (out, r): q is 32 -> 32, v is 32 -> 16
    assert lora.trainable_parameters(model)[0] == 2 * (q_proj + v_proj)  # 2 layers, nothing else trains
    ids = torch.randint(0, 64, (4, 16))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(20):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    print("llama LoRA loss:", " ".join(f"{x:.3f}" for x in losses[::4]), f"-> {losses[-1]:.3f}")
    # Random tokens (loss ~ ln 64 = 4.16) and only q/v adapted: measured 4.179 -> 3.920; the loss must fall steadily.
    assert losses[-1] < losses[0] - 0.15 and losses[-1] < losses[10] < losses[0]


# --- 4-bit and mixed-dtype bases --------------------------------------------------------------------------------


def four_bit(linear: nn.Linear) -> nn.Module:
    """bitsandbytes NF4 copy of `linear` on CPU (quantized when moved to the device)."""
    import bitsandbytes as bnb  # here, not at the top: the gpu test runs where bitsandbytes may be missing

    q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, compute_dtype=torch.float32, quant_type="nf4")
    q.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type="nf4")
    q.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    return q.to("cpu")


def test_qlora_on_a_4bit_base():
    """A 4-bit Linear4bit base works (QLoRA): equal to its base at init, A/B get gradients, counted as 4-bit."""
    net = nn.Sequential(four_bit(nn.Linear(64, 32)), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(5, 64)
    expected = net(x)
    lora.inject(net, targets=("0", "2"), r=4, alpha=8, trainable=())
    assert torch.equal(net(x), expected)
    net(x).square().sum().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if "lora_B" in n)
    lora_count = (4 * 64 + 32 * 4) + (4 * 32 + 8 * 4)
    assert lora.trainable_parameters(net) == (lora_count, 64 * 32 + 32 + 32 * 8 + 8 + lora_count)


def test_merge_refuses_a_4bit_base_and_changes_nothing():
    """merge() on a 4-bit base raises 'dequantize the base first' and merges no layer at all (all or nothing)."""
    net = lora.inject(nn.Sequential(nn.Linear(16, 16), four_bit(nn.Linear(64, 16))), targets=("0", "1"), r=2,
                      alpha=4, trainable=())
    randomize(net)
    packed, plain = net[1].base_layer.weight.clone(), net[0].base_layer.weight.clone()
    with pytest.raises(TypeError, match="Dequantize the base first"):
        lora.merge(net)
    assert not net[0].merged and not net[1].merged
    assert torch.equal(net[0].base_layer.weight, plain) and torch.equal(net[1].base_layer.weight, packed)


def test_lora_path_in_its_dtype_on_a_bf16_base():
    """On a bf16 base, A and B stay float32 and the output comes back in bf16, close to the float32 result."""
    base = nn.Linear(32, 16)
    layer = lora.LoRALinear(copy.deepcopy(base).to(torch.bfloat16), r=4, alpha=8)
    reference = lora.LoRALinear(base, r=4, alpha=8)
    nn.init.normal_(reference.lora_B.weight)
    layer.lora_A.load_state_dict(reference.lora_A.state_dict())
    layer.lora_B.load_state_dict(reference.lora_B.state_dict())
    x = torch.randn(3, 32)
    out = layer(x.bfloat16())
    assert layer.lora_A.weight.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert_close(out.float(), reference(x), atol=0.1, rtol=0.02)


# --- bad input: one clear error, nothing changed ----------------------------------------------------------------


BAD_INJECT = {  # id: (inject kwargs, exception, message pattern)
    "no-match": (dict(targets=("q_lim",)), ValueError, "'q_lim' matches no module.*close names: q_lin"),
    "r-zero": (dict(r=0), ValueError, "positive integer"),
    "r-negative": (dict(r=-2), ValueError, "positive integer"),
    "alpha-nan": (dict(alpha=float("nan")), ValueError, "alpha must be a positive number"),
    "alpha-inf": (dict(alpha=float("inf")), ValueError, "alpha must be a positive number"),
    "not-linear": (dict(targets=("sa_layer_norm",)), TypeError, "LayerNorm, not an nn.Linear"),
    "bad-trainable": (dict(trainable=("classifer",)), ValueError, "'classifer' matches no module.*classifier"),
    "bad-regex": (dict(targets="re:q_lin(("), ValueError, "not a valid regex"),
    "head-is-target": (dict(targets=("q_lin", "classifier")), ValueError, "either adapted by LoRA or trained"),
}


@pytest.mark.parametrize("case", BAD_INJECT)
def test_inject_rejects_bad_input(distilbert, case):
    """Each bad inject call raises its one clear error and leaves the model untouched."""
    kwargs, error, message = BAD_INJECT[case]
    model = copy.deepcopy(distilbert)
    with pytest.raises(error, match=message):
        lora.inject(model, **kwargs)
    assert not lora.lora_layers(model) and all(p.requires_grad for p in model.parameters())


def test_inject_refuses_unknown_family_and_double_injection(distilbert):
    """targets=None on a model of unknown names, and LoRA on a layer that has LoRA, are errors."""
    with pytest.raises(ValueError, match="cannot guess LoRA targets"):
        lora.inject(nn.Sequential(nn.Linear(4, 4)))
    ours = lora.inject(copy.deepcopy(distilbert), r=2, alpha=4)
    with pytest.raises(ValueError, match="already has LoRA"):
        lora.inject(ours, targets=("q_lin",))
