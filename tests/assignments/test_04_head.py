"""Assignment 04, the classification head: pool the last hidden state into one vector, then map it to logits.

Graded code: minibert/model.py `Classifier.pool` and the head lines of `Classifier.forward` (region `head`). The
encoder is replaced by a stand-in that returns a fixed random hidden state, so no block or attention runs: only
pooling and the head are graded. References: transformers' DistilBertForSequenceClassification (its encoder
replaced the same way) and BERT's pooler (BertPooler); mean pooling against its formula.
Shapes: B batch, T tokens, D hidden, C classes. Docs: docs/assignments/04-head.md.
"""

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from transformers import BertConfig, DistilBertConfig, DistilBertForSequenceClassification
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.bert.modeling_bert import BertPooler

from minibert.config import Config
from minibert.model import Classifier

B, T, D, C = 4, 5, 16, 3
LENGTHS = (5, 2, 1, 4)


class FixedEncoder(nn.Module):
    """Stands in for an encoder: returns the same hidden state whatever the input (wrapped as transformers does)."""

    def __init__(self, hidden: torch.Tensor, wrapped: bool = False):
        super().__init__()
        self.hidden, self.wrapped = hidden, wrapped

    def forward(self, *args, **kwargs):
        return BaseModelOutput(last_hidden_state=self.hidden) if self.wrapped else self.hidden


@pytest.fixture
def hidden():
    return torch.randn(B, T, D, requires_grad=True)  # (B, T, D): the encoder's last hidden state


@pytest.fixture
def batch():
    mask = (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).long()  # (B, T)
    return torch.randint(1, 30, (B, T)) * mask, mask


def ours(hidden, family="distilbert", pooling="cls", seq_classif_dropout=0.2):
    model = Classifier(Config(vocab_size=30, dim=D, n_layers=1, n_heads=2, hidden_dim=32, num_labels=C,
                              family=family, pooling=pooling, seq_classif_dropout=seq_classif_dropout))
    model.encoder = FixedEncoder(hidden)
    with torch.no_grad():  # biases start at 0: perturb so that a forgotten bias would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def distilbert_twin(model, hidden):
    """DistilBertForSequenceClassification with the same head weights, reading the same hidden state."""
    theirs = DistilBertForSequenceClassification(DistilBertConfig(dim=D, n_heads=2, n_layers=1, hidden_dim=32,
                                                                  num_labels=C, seq_classif_dropout=0.2))
    theirs.distilbert = FixedEncoder(hidden, wrapped=True)
    theirs.pre_classifier.load_state_dict(model.pre_classifier.state_dict())
    theirs.classifier.load_state_dict(model.classifier.state_dict())
    return theirs.eval()


def test_cls_head_matches_distilbert(hidden, batch):
    """DistilBERT head: logits = classifier(dropout(ReLU(pre_classifier(h[:, 0])))), equal to transformers'."""
    model = ours(hidden)
    logits = model(*batch)
    assert logits.shape == (B, C)
    assert_close(logits, distilbert_twin(model, hidden)(*batch).logits, atol=1e-6, rtol=1e-5)


def test_head_dropout_in_training_matches_distilbert(hidden, batch):
    """In training mode the head drops out exactly where DistilBERT does (same seed, same mask, same logits)."""
    model = ours(hidden, seq_classif_dropout=0.5)
    theirs = distilbert_twin(model, hidden)
    theirs.dropout.p = 0.5
    torch.manual_seed(5)
    a = model.train()(*batch)
    torch.manual_seed(5)
    b = theirs.train()(*batch).logits
    assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(a, model.eval()(*batch))  # the dropout really acted


def test_gradients_match_distilbert(hidden, batch):
    """The head's weights and the hidden state get the same gradients as in transformers' head."""
    model = ours(hidden)
    theirs = distilbert_twin(model, hidden.detach().clone().requires_grad_())
    g = torch.randn(B, C)
    (model(*batch) * g).sum().backward()
    (theirs(*batch).logits * g).sum().backward()
    assert_close(hidden.grad, theirs.distilbert.hidden.grad, atol=1e-6, rtol=1e-5)
    for name in ("pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"):
        assert_close(model.get_parameter(name).grad, theirs.get_parameter(name).grad, atol=1e-6, rtol=1e-5,
                     msg=f"gradient of {name}")


def test_bert_head_is_the_pooler_with_tanh(hidden, batch):
    """BERT head: BertPooler (dense + tanh on h[:, 0]) in the pre_classifier slot, then the classifier."""
    model = ours(hidden, family="bert")
    pooler = BertPooler(BertConfig(hidden_size=D))
    pooler.dense.load_state_dict(model.pre_classifier.state_dict())
    assert_close(model(*batch), model.classifier(pooler(hidden)), atol=1e-6, rtol=1e-5)


def test_cls_pooling_reads_the_first_token(hidden, batch):
    """pool with pooling="cls" returns the first token's vector, (B, D)."""
    model = ours(hidden)
    assert_close(model.pool(hidden, batch[1]), hidden[:, 0])


def test_mean_pooling_averages_real_tokens_only(hidden, batch):
    """pool with pooling="mean" averages the real tokens of each row; padded positions do not count."""
    model = ours(hidden, pooling="mean")
    mask = batch[1]
    expected = torch.stack([hidden[i, :n].mean(dim=0) for i, n in enumerate(LENGTHS)])  # (B, D)
    assert_close(model.pool(hidden, mask), expected, atol=1e-6, rtol=1e-5)
    noisy = torch.where(mask[:, :, None].bool(), hidden, torch.randn_like(hidden) * 100)
    assert_close(model.pool(noisy, mask), expected, atol=1e-6, rtol=1e-5)


def test_mean_pooling_without_mask_averages_every_token(hidden, batch):
    """pool with pooling="mean" and no mask averages all T positions; the logits use that vector."""
    model = ours(hidden, pooling="mean")
    assert_close(model.pool(hidden, None), hidden.mean(dim=1), atol=1e-6, rtol=1e-5)
    expected = model.classifier(torch.relu(model.pre_classifier(hidden.mean(dim=1))))
    assert_close(model(batch[0]), expected, atol=1e-6, rtol=1e-5)
