"""Every file minibert or quant loads is checked first: one bad thing per case, one clear error naming it.

A tiny random DistilBERT (transformers' own, saved with save_pretrained) is corrupted one tensor, one config.json
key or one file at a time; each case asserts the exception type and a message fragment naming the file and key.
Token caches that are torn or tampered with are rebuilt (with a notice), never used; a full disk is one DataError.
"""

import errno
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import minibert
import quant
from minibert.training import data, sources
from minibert.checkpoint import CheckpointError, check_tokenizer_fits
from minibert.training.sources import DataError
from minibert.tokenizer import load_tokenizer

VOCAB = 100
DROP = "<drop this key>"
WORDS = "distilbert.embeddings.word_embeddings.weight"
Q_LIN = "distilbert.transformer.layer.1.attention.q_lin.weight"


@pytest.fixture(scope="module")
def saved_once(tmp_path_factory):
    """A tiny random transformers DistilBERT classifier, saved once; each test works on a copy."""
    import transformers as hf

    config = hf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=VOCAB,
                                 max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("tiny-distilbert")
    hf.DistilBertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture
def saved(saved_once, tmp_path):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((saved_once / name).read_bytes())
    return tmp_path


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_tokenizer(minilm_dir)


def test_the_untouched_checkpoint_loads(saved):
    """The base of every case below loads: each refusal is caused by its one corruption."""
    assert minibert.load_classifier(saved).config.vocab_size == VOCAB


# ---------------------------------------------------------------------------------------------------------------
# Weights: one edited tensor per case
# ---------------------------------------------------------------------------------------------------------------

def _set(key, value):
    return lambda t: t.__setitem__(key, value(t[key]))


WEIGHT_CASES = {
    "int tensor": (_set(WORDS, lambda w: (w * 100).to(torch.int64)), rf"not floating point: \['{WORDS} \(torch.int64"),
    "NaN": (_set(Q_LIN, lambda w: w.index_put((torch.tensor([0]),), torch.tensor(float("nan")))),
            rf"not finite: \['{Q_LIN} \(32 NaN or inf"),
    "inf": (_set(Q_LIN, lambda w: w.clone().fill_(float("inf"))), rf"not finite: \['{Q_LIN} \(1024 NaN or inf"),
    "wrong shape": (_set(Q_LIN, lambda w: w[:, :16].contiguous()), rf"{Q_LIN}: checkpoint \(32, 16\) vs model"),
    "missing key": (lambda t: t.pop(Q_LIN), rf"missing: \['{Q_LIN} \(ours: encoder.layers.1.attention.q_lin.weight\)"),
}


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_a_bad_weight_is_refused_naming_file_and_key(saved, case):
    """An int, NaN, inf, mis-shaped or missing tensor: CheckpointError naming model.safetensors and the key."""
    edit, fragment = WEIGHT_CASES[case]
    tensors = load_file(saved / "model.safetensors")
    edit(tensors)
    save_file(tensors, saved / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=fragment) as err:
        minibert.load_classifier(saved)
    assert "model.safetensors does not fit the model" in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# config.json: one bad key per case
# ---------------------------------------------------------------------------------------------------------------

CONFIG_CASES = {
    "list": ({"dim": [32]}, r"key 'dim' must be a positive integer, got \[32\] \(list\)"),
    "string for an int": ({"n_heads": "2"}, r"key 'n_heads' must be a positive integer, got '2' \(str\)"),
    "float layer count": ({"n_layers": 2.0}, r"key 'n_layers' must be a positive integer, got 2.0 \(float\)"),
    "bool for an int": ({"n_layers": True}, r"key 'n_layers' must be a positive integer, got True \(bool\)"),
    "zero size": ({"hidden_dim": 0}, r"key 'hidden_dim' must be a positive integer, got 0"),
    "negative size": ({"vocab_size": -5}, r"key 'vocab_size' must be a positive integer, got -5"),
    "dim not divisible by heads": ({"n_heads": 3}, r"key 'dim' \(32\) must be divisible by 'n_heads' \(3\)"),
    "dropout out of range": ({"dropout": 1.5}, r"key 'dropout' must be a number in \[0, 1\), got 1.5"),
    "missing key": ({"dim": DROP}, r"no key \['dim'\]"),
    "pad id outside the vocabulary": ({"pad_token_id": VOCAB}, r"key 'pad_token_id' \(100\) must be below vocab_size"),
    "labels as a list": ({"id2label": ["neg", "pos"]}, r"key 'id2label' must map class indices to names"),
    "unknown activation": ({"activation": "swish"}, r"activation must be one of"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_bad_config_key_is_refused_naming_file_and_key(saved, case):
    """A wrong-typed, out-of-range, missing or inconsistent config.json key: CheckpointError naming the file."""
    changes, fragment = CONFIG_CASES[case]
    config = json.loads((saved / "config.json").read_text())
    config = {k: v for k, v in {**config, **changes}.items() if v != DROP}
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=fragment) as err:
        minibert.load_classifier(saved)
    assert str(err.value).startswith(str(saved / "config.json"))


@pytest.mark.parametrize("text, fragment", [('{"model_type": "distilbert", "dim": 32,', "is not valid JSON"),
                                            ('[1, 2]', "holds a JSON list, not an object")])
def test_config_that_is_not_a_json_object_names_the_file(saved, text, fragment):
    """A syntax error or a JSON list in config.json: CheckpointError naming the file, not a JSONDecodeError."""
    (saved / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=fragment) as err:
        minibert.load_classifier(saved)
    assert str(saved / "config.json") in str(err.value)


def test_tokenizer_larger_than_the_embedding_table_is_refused(saved, tokenizer):
    """MiniLM's 30,522 ids into a 100-row embedding table: refused naming vocab_size; a fitting config passes."""
    config = minibert.load_classifier(saved).config
    with pytest.raises(CheckpointError, match=r"30522 ids but .* 100 embedding rows \(config.json key 'vocab_size'\)"):
        check_tokenizer_fits(tokenizer, config, where=str(saved))
    check_tokenizer_fits(tokenizer, config.with_(vocab_size=tokenizer.vocab_size))


# ---------------------------------------------------------------------------------------------------------------
# 4-bit files
# ---------------------------------------------------------------------------------------------------------------

class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1, self.norm, self.classifier = nn.Linear(64, 128), nn.LayerNorm(128), nn.Linear(128, 2)


@pytest.fixture
def four_bit_file(tmp_path):
    """A Toy model with lin1 in 4 bits (reference backend, double quant), saved by save_4bit."""
    model = Toy()
    quant.quantize_model(model, skip=("classifier",), double_quant=True, backend="reference")
    quant.save_4bit(model, tmp_path / "m.safetensors")
    return tmp_path / "m.safetensors"


def _rewrite(path, edit_tensors=lambda t: None, edit_layers=lambda layers: None):
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    layers = json.loads(meta["quant"])
    edit_tensors(tensors)
    edit_layers(layers)
    save_file(tensors, str(path), metadata={**meta, "quant": json.dumps(layers)})


QUANT_CASES = {
    "codes not uint8": (dict(edit_tensors=_set("lin1.weight.packed", lambda p: p.to(torch.int16))),
                        r"lin1.weight.packed is torch.int16 \(4096,\), a 4-bit layer of shape \[128, 64\] stores "
                        r"torch.uint8 \(4096,\)"),
    "codes cut short": (dict(edit_tensors=_set("lin1.weight.packed", lambda p: p[:100].clone())),
                        r"lin1.weight.packed is torch.uint8 \(100,\)"),
    "absmax codes as float": (dict(edit_tensors=_set("lin1.weight.absmax", lambda a: a.float())),
                              r"lin1.weight.absmax is torch.float32 \(128,\).* stores torch.uint8 \(128,\)"),
    "NaN nested absmax": (dict(edit_tensors=_set("lin1.weight.nested_absmax", lambda a: a * float("nan"))),
                          r"\['lin1.weight.nested_absmax'\] hold NaN or inf"),
    "int bias of a float layer": (dict(edit_tensors=_set("norm.bias", lambda b: b.to(torch.int32))),
                                  r"norm.bias is torch.int32, the model holds floats there"),
    "blocksize as a string": (dict(edit_layers=lambda layers: layers["lin1"].update(blocksize="64")),
                              r"metadata\['quant'\]\['lin1'\] has missing or invalid \{'blocksize': '64'\}"),
    "unknown dtype": (dict(edit_layers=lambda layers: layers["lin1"].update(dtype="torch.int8")),
                      r"invalid \{'dtype': 'torch.int8'\}"),
}


@pytest.mark.parametrize("case", QUANT_CASES)
def test_a_bad_4bit_file_is_refused_naming_file_and_key(four_bit_file, case):
    """A 4-bit file with a wrong dtype, shape, value or metadata entry: QuantError naming the file and key, and
    the skeleton keeps its float layers."""
    edits, fragment = QUANT_CASES[case]
    _rewrite(four_bit_file, **edits)
    skeleton = Toy()
    with pytest.raises(quant.QuantError, match=fragment) as err:
        quant.load_4bit(skeleton, four_bit_file)
    assert str(err.value).startswith(str(four_bit_file)) and type(skeleton.lin1) is nn.Linear


def test_the_untouched_4bit_file_loads(four_bit_file):
    """The base of the 4-bit cases loads: each refusal is caused by its one corruption."""
    assert quant.is_4bit_layer(quant.load_4bit(Toy(), four_bit_file).lin1)


# ---------------------------------------------------------------------------------------------------------------
# Token caches
# ---------------------------------------------------------------------------------------------------------------

def _raw(n=12):
    texts = [f"review number {i} " * (i % 4 + 1) for i in range(n)]
    return sources.RawSplit("train", np.arange(n) % 2, "fixed-fingerprint", lambda rows: [texts[i] for i in rows])


def _tear(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _tamper(path):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["ids"] = arrays["ids"].copy()
    arrays["ids"][3] += 1  # one token id changed, the stored sha256 kept: still a valid .npz
    np.savez(path, **arrays)


def _strip_checksum(path):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "sha256"}
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage, why", [(_tear, "unreadable"), (_tamper, "sha256 mismatch"),
                                         (_strip_checksum, "no ['sha256'] array")])
def test_a_damaged_cache_is_rebuilt_never_used(tmp_path, tokenizer, capsys, damage, why):
    """A torn, tampered or unchecked cache file: a one-line notice, and the result equals a fresh tokenization."""
    raw, rows = _raw(), np.arange(12)
    fresh = data.tokenize_rows(raw, rows, tokenizer, max_len=16, use_cache=False)
    data.tokenize_rows(raw, rows, tokenizer, max_len=16, cache_dir=tmp_path)
    [path] = (tmp_path / "tokens").glob("*.npz")
    damage(path)
    capsys.readouterr()
    again = data.tokenize_rows(raw, rows, tokenizer, max_len=16, cache_dir=tmp_path)
    notice = capsys.readouterr().err.strip()
    assert notice.startswith(f"notice: token cache {path} failed its check ({why}") and "\n" not in notice
    assert not again.from_cache and np.array_equal(again.ids, fresh.ids)
    assert np.array_equal(again.offsets, fresh.offsets)
    assert data.tokenize_rows(raw, rows, tokenizer, max_len=16, cache_dir=tmp_path).from_cache  # rewritten whole


def test_a_full_disk_leaves_no_temporary_file_and_says_what_to_do(tmp_path, tokenizer, monkeypatch):
    """np.savez failing half-way with ENOSPC: a DataError naming the cache folder and MINIBERT_CACHE, no *.tmp."""
    def half_then_full(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(data.np, "savez", half_then_full)
    with pytest.raises(DataError, match=r"cannot write the token cache in .*tokens \(No space left on device\); "
                                        r"free space there or set MINIBERT_CACHE") as err:
        data.tokenize_rows(_raw(), np.arange(12), tokenizer, max_len=16, cache_dir=tmp_path)
    assert str(tmp_path / "tokens") in str(err.value) and "\n" not in str(err.value)
    assert list((tmp_path / "tokens").iterdir()) == []
