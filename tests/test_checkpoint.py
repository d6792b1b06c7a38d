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
    minibert.build_classifier(TINY).save_pretrained(tmp_path)
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


def test_module_names_follow_each_family():
    """The same module is q_lin in a DistilBERT checkpoint and self.query in a BERT one; the head's first layer is
    DistilBERT's pre_classifier but BERT's pretrained pooler."""
    distil = TINY.with_(family="distilbert", type_vocab_size=0)
    assert hf_module_name("encoder.layers.1.attention.q_lin", distil) == "distilbert.transformer.layer.1.attention.q_lin"
    assert hf_module_name("encoder.layers.1.attention.q_lin", TINY) == "bert.encoder.layer.1.attention.self.query"
    assert hf_module_name("pre_classifier", TINY) == "bert.pooler.dense"
    assert hf_module_name("pre_classifier", distil) == "pre_classifier"
