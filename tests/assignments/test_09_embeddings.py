"""Assignment 09, embeddings: LayerNorm(word + position (+ token type) vectors), then dropout.

Graded code: minibert/embeddings.py `Embeddings.forward` (region `embeddings`); the tables, the LayerNorm, the
dropout and the check of the length are given. The references are transformers' own modules, DistilBERT's
`Embeddings` and `BertEmbeddings`, built from tiny random configs (no download), their weights perturbed (a fresh
LayerNorm is the identity and would hide a missing one) and copied into ours. Shapes: B batch, T tokens, D hidden.
Docs: docs/assignments/09-embeddings.md.
"""

import pytest
import torch
import transformers as hf
from torch.testing import assert_close
from transformers.models.bert.modeling_bert import BertEmbeddings
from transformers.models.distilbert.modeling_distilbert import Embeddings as DistilBertEmbeddings

from minibert.config import from_hf
from minibert.embeddings import Embeddings

P, D = 12, 16  # positions, hidden size
CONFIGS = {
    "distilbert": hf.DistilBertConfig(vocab_size=50, dim=D, n_heads=2, max_position_embeddings=P, dropout=0.5),
    "distilbert-sinusoidal": hf.DistilBertConfig(vocab_size=50, dim=D, n_heads=2, max_position_embeddings=P,
                                                 sinusoidal_pos_embds=True, dropout=0.5),
    "bert": hf.BertConfig(vocab_size=50, hidden_size=D, num_attention_heads=2, max_position_embeddings=P,
                          hidden_dropout_prob=0.5, layer_norm_eps=1e-7),
}
LENGTHS = (7, 3, 1)  # real tokens per row: one full row, one mostly padding, one single token


def pair(name: str):
    """(ours, theirs): transformers' embeddings module with perturbed weights, and ours holding the same weights."""
    config = CONFIGS[name]
    theirs = (BertEmbeddings if name == "bert" else DistilBertEmbeddings)(config)
    ours = Embeddings(from_hf(config.to_dict()))
    with torch.no_grad():
        for key, p in theirs.named_parameters():
            p.add_(torch.randn_like(p) * 0.1)
        theirs.word_embeddings.weight[config.pad_token_id] = 0  # the padding row stays zero, as in a checkpoint
        if config.to_dict().get("sinusoidal_pos_embds"):  # the fixed table: ours builds it; transformers' model does
            theirs.position_embeddings.weight.copy_(ours.position_embeddings.weight)
        for key, p in ours.named_parameters():
            p.copy_(dict(theirs.named_parameters())[key])
    return ours.eval(), theirs.eval()


def padded_ids(lengths=LENGTHS, vocab_size: int = 50) -> torch.Tensor:
    """(B, T) ids, right-padded with the padding id 0."""
    T = max(lengths)
    ids = torch.randint(1, vocab_size, (len(lengths), T))
    return ids * (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None])


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_transformers_on_a_padded_batch(name):
    """(B, T) ids -> (B, T, D) vectors equal to transformers' module's, padded positions included."""
    ours, theirs = pair(name)
    ids = padded_ids()
    with torch.no_grad():
        got = ours(ids)
        assert got.shape == (len(LENGTHS), max(LENGTHS), D) and got.dtype == torch.float32
        assert_close(got, theirs(ids), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", CONFIGS)
def test_positions_count_from_zero_for_every_length(name):
    """At every length from 1 to the table's size the output equals transformers'; a token's vector depends on its
    position (0 for the first token, whatever the length) and not on the tokens after it."""
    ours, theirs = pair(name)
    ids = torch.randint(1, 50, (2, P))
    with torch.no_grad():
        full = ours(ids)  # (2, P, D)
        for T in (1, 5, P):
            assert_close(ours(ids[:, :T]), theirs(ids[:, :T]), atol=1e-6, rtol=1e-6)
            assert_close(ours(ids[:, :T]), full[:, :T], atol=1e-6, rtol=1e-6)
        same = torch.full((1, P), 7)  # one token, repeated: only its position tells the copies apart
        out = ours(same)[0]  # (P, D)
        assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[P - 1])
    with pytest.raises(ValueError, match="positions"):
        ours(torch.randint(1, 50, (1, P + 1)))


@pytest.mark.parametrize("name", CONFIGS)
def test_gradients_match_and_the_padding_row_gets_none(name):
    """With dropout off, every trained parameter gets transformers' gradient; the padding id's row gets zero."""
    ours, theirs = pair(name)
    ids = padded_ids()
    g = torch.randn(len(LENGTHS), max(LENGTHS), D)
    (ours(ids) * g).sum().backward()
    (theirs(ids) * g).sum().backward()
    their_params = dict(theirs.named_parameters())
    trained = [(key, p) for key, p in ours.named_parameters() if p.requires_grad]  # not the fixed sinusoidal table
    assert {"word_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"} <= {key for key, _ in trained}
    for key, p in trained:
        assert p.grad is not None, f"{key} got no gradient"
        assert_close(p.grad, their_params[key].grad, atol=1e-5, rtol=1e-5, msg=f"gradient of {key}")
    assert torch.equal(ours.word_embeddings.weight.grad[0], torch.zeros(D))  # id 0 is padding, and it is in ids


@pytest.mark.parametrize("name", CONFIGS)
def test_eval_is_deterministic_and_training_applies_dropout(name):
    """In eval mode two calls give the same vectors; in training mode dropout (p = 0.5) acts on the normalized
    vectors, drawing the same mask as transformers' module under the same seed."""
    ours, theirs = pair(name)
    ids = padded_ids()
    with torch.no_grad():
        first = ours(ids)
        assert torch.equal(first, ours(ids))
        ours.train(), theirs.train()
        torch.manual_seed(5)
        dropped = ours(ids)
        torch.manual_seed(5)
        assert_close(dropped, theirs(ids), atol=1e-6, rtol=1e-6)
        torch.manual_seed(5)
        assert_close(dropped, torch.nn.functional.dropout(first, 0.5, training=True), atol=1e-6, rtol=1e-6)
        assert (dropped == 0).any() and not torch.equal(dropped, first)
