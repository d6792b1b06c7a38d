"""minibert's encoder and classifier compute what transformers' DistilBERT and BERT compute (fp32, <= 1e-5).

Reference models are tiny random configs built with transformers and saved to a temp folder (no download); we load
them with minibert's own loader, so these tests cover the name map too. Every parameter is perturbed first: a
fresh HF init has zero biases and identity LayerNorms, which would hide a bias or norm that is mapped wrongly.
"""

import pytest
import torch
import transformers as hf

import minibert
from minibert.checkpoint import parameter_map

DISTILBERT_CONFIGS = {
    "learned-4heads": dict(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=40),
    "sinusoidal-3heads": dict(vocab_size=90, dim=48, n_layers=3, n_heads=3, hidden_dim=80,
                              max_position_embeddings=40, sinusoidal_pos_embds=True),
    "one-head": dict(vocab_size=60, dim=16, n_layers=1, n_heads=1, hidden_dim=24, max_position_embeddings=40),
}
BERT_CONFIGS = {
    "4heads": dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=37, max_position_embeddings=40),
    "8heads-eps": dict(vocab_size=100, hidden_size=64, num_hidden_layers=3, num_attention_heads=8,
                       intermediate_size=96, max_position_embeddings=40, layer_norm_eps=1e-7),
}
CASES = [("distilbert", n) for n in DISTILBERT_CONFIGS] + [("bert", n) for n in BERT_CONFIGS]


# Each of our attention paths is compared with transformers' implementation of the same algorithm: the explicit
# formula with "eager", torch's fused kernel with "sdpa". (Across the two, kernels sum in another order, and a real
# 6-layer model drifts by ~1e-5.)
THEIR_ATTENTION = {"math": "eager", "sdpa": "sdpa"}


def reference(family: str, name: str, head: bool, attention: str = "math", **extra):
    """A random transformers model of the given family, every parameter perturbed, in eval mode."""
    if family == "distilbert":
        config = hf.DistilBertConfig(**DISTILBERT_CONFIGS[name], **extra)
        cls = hf.DistilBertForSequenceClassification if head else hf.DistilBertModel
    else:
        config = hf.BertConfig(**BERT_CONFIGS[name], **extra)
        cls = hf.BertForSequenceClassification if head else hf.BertModel
    config._attn_implementation = THEIR_ATTENTION[attention]
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def padded_batch(vocab_size: int, lengths=(20, 1, 3, 14, 20)):
    """Rows of very different lengths: one full, one of length 1, one mostly padding."""
    T = max(lengths)
    ids = torch.randint(1, vocab_size, (len(lengths), T))
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask  # padding id 0 where masked


@pytest.mark.parametrize("attention", ["math", "sdpa"])
@pytest.mark.parametrize("family,name", CASES)
def test_encoder_matches_transformers(tmp_path, family, name, attention):
    """The last hidden state equals DistilBertModel's / BertModel's on a heavily padded batch."""
    theirs = reference(family, name, head=False, attention=attention)
    theirs.save_pretrained(tmp_path)
    ours = minibert.load_encoder(tmp_path, attention=attention)
    ids, mask = padded_batch(theirs.config.vocab_size)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    # Padded positions' outputs are meaningless but still defined; compare them too.
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ["math", "sdpa"])
@pytest.mark.parametrize("family,name", CASES)
def test_classifier_matches_transformers(tmp_path, family, name, attention):
    """Logits equal *ForSequenceClassification's: DistilBERT's pre_classifier+ReLU head, BERT's pooler+tanh head."""
    theirs = reference(family, name, head=True, attention=attention, num_labels=3)
    theirs.save_pretrained(tmp_path)
    ours = minibert.load_classifier(tmp_path, num_labels=3, attention=attention)
    ids, mask = padded_batch(theirs.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask), theirs(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0)


def test_all_padding_row_gives_no_nan(tmp_path):
    """A row with no real token gets uniform attention (mask = dtype min, not -inf): finite, and equal to HF's."""
    theirs = reference("distilbert", "learned-4heads", head=False)
    theirs.save_pretrained(tmp_path)
    ids, mask = padded_batch(theirs.config.vocab_size, lengths=(6, 0, 2))
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        for attention in ("math", "sdpa"):
            got = minibert.load_encoder(tmp_path, attention=attention)(ids, mask)
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family,name", [("distilbert", "sinusoidal-3heads"), ("bert", "4heads")])
def test_gradients_match_transformers(tmp_path, family, name):
    """With dropout off, d(loss)/d(parameter) matches transformers' for every parameter (relative error <= 1e-4)."""
    off = dict(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0) if family == "distilbert" else \
        dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    theirs = reference(family, name, head=True, **off)
    theirs.save_pretrained(tmp_path)
    ours = minibert.load_classifier(tmp_path)
    ours.train(), theirs.train()
    ids, mask = padded_batch(theirs.config.vocab_size)
    labels = torch.tensor([0, 1, 1, 0, 1])
    torch.nn.functional.cross_entropy(ours(ids, mask), labels).backward()
    theirs(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()

    their_grads = dict(theirs.named_parameters())
    names = parameter_map(ours, ours.config)
    checked = 0
    for key, p in ours.named_parameters():
        if not p.requires_grad:  # the fixed sinusoidal table
            continue
        g_theirs = their_grads[names[key]].grad
        if key.endswith("k_lin.bias"):
            # The key bias adds q.b_k to every score of a row, which softmax ignores: its gradient is exactly zero
            # in exact arithmetic, so both sides hold only rounding noise and a relative error means nothing.
            assert p.grad.abs().max() < 1e-6 and g_theirs.abs().max() < 1e-6
            checked += 1
            continue
        error = (p.grad - g_theirs).norm() / g_theirs.norm().clamp(min=1e-12)
        assert error <= 1e-4, f"{key} ({names[key]}): relative gradient error {error:.2e}"
        checked += 1
    assert checked == sum(p.requires_grad for p in ours.parameters()) > 10


@pytest.fixture(scope="module")
def real_reviews(imdb_dir):
    import pyarrow.parquet as pq

    return pq.read_table(imdb_dir / "test.parquet", columns=["review"]).column("review").to_pylist()[:8]


@pytest.fixture(scope="module")
def minilm_batch(minilm_dir, real_reviews):
    """8 real IMDB reviews, tokenized by transformers itself, so only the models differ."""
    tokenizer = hf.AutoTokenizer.from_pretrained(minilm_dir)
    enc = tokenizer(real_reviews, truncation=True, max_length=256, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_real_minilm_weights_match_transformers(minilm_dir, minilm_batch, attention):
    """all-MiniLM-L6-v2 (a bare BertModel checkpoint, keys without 'bert.') gives BertModel's hidden states."""
    ids, mask = minilm_batch
    theirs = hf.BertModel.from_pretrained(minilm_dir, attn_implementation=THEIR_ATTENTION[attention]).eval()
    ours = minibert.load_encoder("all-MiniLM-L6-v2", attention=attention)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask), theirs(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   atol=1e-5, rtol=0)


def test_real_minilm_classifier_and_export_round_trip(tmp_path, minilm_batch):
    """MiniLM -> our classifier (pretrained pooler + new head) -> save_pretrained -> transformers loads every
    weight (nothing missing, nothing unexpected) and gives the same logits; reloading it in minibert does too."""
    ids, mask = minilm_batch
    ours = minibert.load_classifier("all-MiniLM-L6-v2")
    minibert.save_pretrained(ours, tmp_path / "export")
    theirs, info = hf.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "export", output_loading_info=True, attn_implementation="sdpa")
    assert type(theirs).__name__ == "BertForSequenceClassification"
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    again = minibert.load_classifier(tmp_path / "export")
    with torch.no_grad():
        expected = ours(ids, mask)
        torch.testing.assert_close(theirs.eval()(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=0)
        assert torch.equal(again(ids, mask), expected)


def test_random_distilbert_export_round_trip(tmp_path):
    """A randomly initialised minibert DistilBERT (sinusoidal positions) exports to a folder that
    DistilBertForSequenceClassification loads completely, with the same logits."""
    config = minibert.Config(vocab_size=50, dim=24, n_layers=2, n_heads=2, hidden_dim=40,
                             max_position_embeddings=32, sinusoidal_pos_embds=True, num_labels=4)
    ours = minibert.build_classifier(config).eval()
    minibert.save_pretrained(ours, tmp_path)
    theirs, info = hf.AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert type(theirs).__name__ == "DistilBertForSequenceClassification"
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids, mask = padded_batch(50)
    with torch.no_grad():
        torch.testing.assert_close(theirs.eval()(input_ids=ids, attention_mask=mask).logits, ours(ids, mask),
                                   atol=1e-5, rtol=0)


def test_sinusoidal_table_equals_transformers():
    """Our sin/cos position table equals DistilBERT's (computed in float64, rounded once)."""
    from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings

    from minibert.embeddings import sinusoidal_table

    expected = create_sinusoidal_embeddings(64, 48, torch.empty(64, 48))
    torch.testing.assert_close(sinusoidal_table(64, 48), expected, atol=1e-7, rtol=0)
