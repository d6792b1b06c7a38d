"""Loading refuses a checkpoint that does not fit, with one message naming every problem; config.json round-trips."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import minibert
from minibert.checkpoint import CheckpointError, hf_module_name
from minibert.config import from_hf, read_config, to_hf

TINY = minibert.Config(vocab_size=40, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=24,
                       family="bert", type_vocab_size=2)


@pytest.fixture
def saved(tmp_path):
    """A tiny BERT-family classifier saved in Hugging Face layout; returns its folder."""
    minibert.save_pretrained(minibert.build_classifier(TINY), tmp_path)
    return tmp_path


def edit_weights(folder, edit):
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_missing_weights_are_all_named(saved):
    """Two absent tensors: the error names both, with our name beside the checkpoint's."""
    def drop(t):
        del t["bert.encoder.layer.1.attention.self.query.weight"], t["bert.embeddings.LayerNorm.bias"]
    edit_weights(saved, drop)
    with pytest.raises(CheckpointError) as err:
        minibert.load_classifier(saved)
    message = str(err.value)
    assert "bert.encoder.layer.1.attention.self.query.weight" in message and "encoder.layers.1.attention.q_lin" in message
    assert "bert.embeddings.LayerNorm.bias" in message


def test_unexpected_weight_is_named(saved):
    """A tensor the model has no place for is an error, not silently dropped."""
    edit_weights(saved, lambda t: t.update({"bert.encoder.layer.7.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected: \['bert.encoder.layer.7.extra.weight'\]"):
        minibert.load_classifier(saved)


def test_shape_mismatch_names_tensor_and_both_shapes(saved):
    """A 3-label model cannot take a 2-label head: the message says which tensor and both shapes."""
    with pytest.raises(CheckpointError, match=r"classifier.weight: checkpoint \(2, 16\) vs model \(3, 16\)"):
        minibert.load_classifier(saved, num_labels=3)


def test_pretraining_leftovers_are_ignored(saved):
    """Position-id buffers and MLM/NSP heads are pretraining leftovers, skipped without error."""
    edit_weights(saved, lambda t: t.update({"cls.predictions.bias": torch.zeros(40),
                                            "bert.embeddings.position_ids": torch.arange(24)[None]}))
    minibert.load_classifier(saved)


def test_missing_folder_and_missing_weights_file(tmp_path, saved):
    """A folder that does not exist, and a folder without model.safetensors, each say what is missing."""
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        minibert.load_classifier(tmp_path / "nope" / "deeper")
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        minibert.load_classifier(saved)


def test_pickle_is_refused(saved):
    """A pytorch_model.bin is never unpickled: the message says to convert to safetensors."""
    (saved / "model.safetensors").rename(saved / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors"):
        minibert.load_classifier(saved)


def test_unknown_model_type(saved):
    """Only distilbert and bert config.json files are read."""
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="unknown model_type 'llama'"):
        minibert.load_classifier(saved)


def test_input_longer_than_position_table():
    """25 tokens into a 24-position model: a clear error instead of an index error deep in an embedding."""
    model = minibert.build_classifier(TINY)
    with pytest.raises(ValueError, match="25 tokens but the model knows only 24 positions"):
        model(torch.ones(1, 25, dtype=torch.long))


def test_config_round_trip_both_families(saved):
    """config.json -> Config -> config.json -> Config is the identity, for BERT and DistilBERT."""
    assert read_config(saved) == TINY
    distil = minibert.preset("distilbert-base-uncased").with_(pooling="mean")
    assert from_hf(to_hf(distil)).with_(pooling="mean") == distil
    assert distil.dim == 768 and distil.n_layers == 6 and distil.vocab_size == 30522 and distil.type_vocab_size == 0


def test_invalid_config_is_refused():
    """Heads that do not divide the hidden size, or an unknown pooling, fail when the config is made."""
    with pytest.raises(ValueError, match="divisible by n_heads"):
        minibert.Config(dim=30, n_heads=4)
    with pytest.raises(ValueError, match="pooling must be one of"):
        minibert.Config(pooling="max")
    with pytest.raises(ValueError, match="a distilbert config has type_vocab_size=0 and layer_norm_eps=1e-12"):
        minibert.Config(family="distilbert", layer_norm_eps=1e-5)  # it would not survive config.json


def test_module_names_follow_each_family():
    """The same module is q_lin in a DistilBERT checkpoint and self.query in a BERT one; the head's first layer is
    DistilBERT's pre_classifier but BERT's pretrained pooler."""
    distil = TINY.with_(family="distilbert", type_vocab_size=0)
    assert hf_module_name("encoder.layers.1.attention.q_lin", distil) == "distilbert.transformer.layer.1.attention.q_lin"
    assert hf_module_name("encoder.layers.1.attention.q_lin", TINY) == "bert.encoder.layer.1.attention.self.query"
    assert hf_module_name("pre_classifier", TINY) == "bert.pooler.dense"
    assert hf_module_name("pre_classifier", distil) == "pre_classifier"


def test_a_classifier_keeps_its_number_of_labels_and_their_names(tmp_path):
    """A 3-class transformers classifier loads as it is (no num_labels to pass), computes transformers' logits,
    and keeps its class names through our save_pretrained, back to transformers and to predict."""
    import transformers as hf

    from minibert import predict

    names = {0: "negative", 1: "neutral", 2: "positive"}
    config = hf.DistilBertConfig(vocab_size=30522, dim=16, n_layers=1, n_heads=2, hidden_dim=32,
                                 max_position_embeddings=64, id2label=names, label2id={v: k for k, v in names.items()})
    torch.manual_seed(0)
    hf.DistilBertForSequenceClassification(config).save_pretrained(tmp_path / "theirs")
    ours = minibert.load_classifier(tmp_path / "theirs")
    assert ours.config.num_labels == 3 and ours.config.labels == ("negative", "neutral", "positive")
    theirs = hf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "theirs").eval()
    ids = torch.randint(1000, 30522, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(input_ids=ids).logits, atol=1e-5, rtol=0)
    minibert.save_pretrained(ours, tmp_path / "ours")
    assert hf.AutoConfig.from_pretrained(tmp_path / "ours").id2label == names
    tokenizer = minibert.load_tokenizer("all-MiniLM-L6-v2")
    label, _ = predict.predict(ours, tokenizer, ["a film"], max_len=16)[0]
    assert label in names.values()


def test_old_bert_layer_norm_names_gamma_and_beta_load(saved):
    """bert-base-uncased's own checkpoint still names LayerNorm's weight gamma and its bias beta (as
    transformers, we read them as weight and bias)."""
    edit_weights(saved, lambda t: t.update({k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta"): t.pop(k) for k in [k for k in t if "LayerNorm" in k]}))
    assert any(k.endswith("LayerNorm.gamma") for k in load_file(saved / "model.safetensors"))
    reference = minibert.load_classifier(saved)  # gamma/beta read as weight/bias: nothing missing or unexpected
    assert torch.equal(reference.encoder.embeddings.LayerNorm.weight,
                       load_file(saved / "model.safetensors")["bert.embeddings.LayerNorm.gamma"])


def test_save_pretrained_refuses_adapters_and_4bit_weights_with_a_way_out(tmp_path):
    """Hugging Face's layout holds a plain float model: a LoRA-wrapped or 4-bit model is refused with what to do,
    instead of a KeyError or a file that cannot be loaded back."""
    import lora
    import quant

    config = TINY.with_(dim=64, n_heads=2, hidden_dim=64)
    wrapped = lora.inject(minibert.build_classifier(config), r=2, alpha=4)
    with pytest.raises(CheckpointError, match="lora.merge_and_unload"):
        minibert.save_pretrained(wrapped, tmp_path / "lora")
    four_bit = minibert.build_classifier(config)
    quant.quantize_model(four_bit, skip=("pre_classifier", "classifier"))  # in place
    with pytest.raises(CheckpointError, match="quant.dequantize_model"):
        minibert.save_pretrained(four_bit, tmp_path / "4bit")
    assert not (tmp_path / "lora").exists() and not (tmp_path / "4bit").exists()
