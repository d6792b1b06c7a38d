"""QLoRA = quant/ + lora/ composed: LoRA trains on a frozen 4-bit NF4 base, on minibert and on transformers' Llama.

The two packages know nothing of each other: LoRA wraps any nn.Linear, and bitsandbytes' Linear4bit is one.
"""

import pytest
import torch
import transformers as hf

import lora
import minibert
import quant

HEAD = ("pre_classifier", "classifier")
TINY = minibert.Config(vocab_size=100, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=32)


def qlora(model, head=HEAD, targets=None):
    quant.quantize_model(model, skip=head)
    quant.prepare_for_kbit_training(model, head=head, use_gradient_checkpointing=False)
    return lora.inject(model, targets=targets, r=8, alpha=16, dropout=0.0, trainable=head)


def train_losses(model, loss_fn, steps: int, lr: float) -> list[float]:
    """AdamW on the trainable parameters for `steps` steps of `loss_fn()`; the loss before each step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def packed_weights(model) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if quant.is_4bit_layer(m)}


def test_qlora_trains_only_adapter_and_head_and_base_stays_4bit():
    """Ten AdamW steps on a tiny minibert QLoRA model: the loss falls, LoRA and head weights move, every base
    matrix stays 4-bit with its packed bytes untouched, and the head was never quantized."""
    model = qlora(minibert.build_classifier(TINY)).train()
    before_packed = packed_weights(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(not quant.is_4bit_layer(model.get_submodule(h)) for h in HEAD)
    assert len(before_packed) == TINY.n_layers * 6  # q, k, v, out, lin1, lin2 per block

    ids, labels = torch.randint(1, 100, (16, 12)), torch.randint(0, 2, (16,))
    losses = train_losses(model, lambda: torch.nn.functional.cross_entropy(model(ids), labels), steps=10, lr=1e-2)
    assert losses[-1] < 0.7 * losses[0], losses

    for name, p in model.named_parameters():
        if name in before:
            assert not torch.equal(p, before[name]), f"{name} did not train"
            assert "lora_" in name or name.startswith(HEAD)
    after_packed = packed_weights(model)
    assert after_packed.keys() == before_packed.keys()
    assert all(torch.equal(after_packed[k], before_packed[k]) for k in before_packed)


def test_quantizing_after_lora_is_refused_and_frozen_biases_stay_frozen():
    """QLoRA's order is quantize, then inject: the other way round would turn LoRA's own A and B into frozen 4-bit
    layers. And quantizing keeps each bias's requires_grad: a frozen bias does not start training again."""
    model = lora.inject(minibert.build_classifier(TINY), r=8, alpha=16, trainable=HEAD)
    with pytest.raises(ValueError, match="quantize first, then add the adapters"):
        quant.quantize_model(model, skip=HEAD)
    model = minibert.build_classifier(TINY).requires_grad_(False)
    quant.quantize_model(model, skip=HEAD)
    assert not any(p.requires_grad for p in model.parameters())


def test_merging_into_a_4bit_base_is_refused_then_done_on_a_float_copy():
    """lora.merge refuses a 4-bit base (merging would silently re-quantize, peft #2321); dequantize_model gives a
    float copy into which the merge is exact."""
    model = qlora(minibert.build_classifier(TINY)).eval()
    with torch.no_grad():
        for layer in lora.lora_layers(model):
            layer[1].lora_B.weight.normal_(0, 0.1)
    ids = torch.randint(1, 100, (3, 10))
    expected = model(ids)
    with pytest.raises(TypeError, match="[Dd]equantize"):
        lora.merge(model)
    merged = lora.merge_and_unload(quant.dequantize_model(model))
    assert not any(quant.is_4bit_layer(m) for m in merged.modules()) and not lora.lora_layers(merged)
    torch.testing.assert_close(merged(ids), expected, atol=1e-5, rtol=1e-5)


def test_qlora_on_a_tiny_llama_loss_falls():
    """QLoRA on a decoder (TinyLlama's architecture), in miniature: a LlamaForCausalLM quantized to NF4 with LoRA on
    q_proj, v_proj learns a fixed sequence (the same functions as for minibert)."""
    config = hf.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = qlora(hf.LlamaForCausalLM(config), head=("lm_head",), targets=("q_proj", "v_proj")).train()
    assert sum(quant.is_4bit_layer(m) for m in model.modules()) == 2 * 7  # q k v o gate up down
    ids = torch.randint(0, 128, (4, 24))
    losses = train_losses(model, lambda: model(input_ids=ids, labels=ids).loss, steps=15, lr=5e-3)
    assert losses[-1] < losses[0] - 0.5, losses


def test_nf4_minilm_classifier_agrees_with_fp32_on_imdb(imdb_dir):
    """all-MiniLM-L6-v2 as a classifier, quantized to NF4 (head in fp32), predicts the same class as fp32 on most
    real IMDB reviews (same head weights on both; measured: 62/64 agree)."""
    import pyarrow.parquet as pq

    reviews = pq.read_table(imdb_dir / "test.parquet", columns=["review"]).column("review").to_pylist()[:64]
    batch = minibert.load_tokenizer("all-MiniLM-L6-v2")(reviews, max_length=128)
    torch.manual_seed(0)
    fp32 = minibert.load_classifier("all-MiniLM-L6-v2", pooling="mean").eval()
    nf4 = minibert.load_classifier("all-MiniLM-L6-v2", pooling="mean").eval()
    nf4.load_state_dict(fp32.state_dict())
    quant.quantize_model(nf4, skip=HEAD)
    with torch.no_grad():
        a = fp32(batch["input_ids"], batch["attention_mask"])
        b = nf4(batch["input_ids"], batch["attention_mask"])
    agreement = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    print(f"agreement {agreement:.4f}")
    assert agreement >= 0.9, agreement
