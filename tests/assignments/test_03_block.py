"""Assignment 03, the encoder block: post-LayerNorm residual wiring around attention and the feed-forward network.

Graded code: minibert/block.py `FeedForward.forward`, `Block.forward` and `Block.first_token` (region `block`). The reference is
transformers' DistilBERT `TransformerBlock` / `FFN` holding the same weights (our parameter names are theirs, so
one `load_state_dict` copies them). Our block is built with attention="sdpa": torch's fused kernel, not the
`attend` of assignment 02, so only the block's own code is graded here. Docs: docs/assignments/03-block.md.
"""

import pytest
import torch
from torch.testing import assert_close
from transformers import BertConfig, DistilBertConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.distilbert.modeling_distilbert import TransformerBlock

from minibert.block import Block
from minibert.config import Config

B, T, D, H, F = 3, 6, 32, 4, 64  # batch, tokens, hidden, heads, feed-forward size
LENGTHS = (6, 4, 1)


def pair(activation: str = "gelu"):
    """(ours, theirs): a minibert Block and a transformers TransformerBlock with identical, perturbed weights."""
    ours = Block(Config(vocab_size=50, dim=D, n_layers=1, n_heads=H, hidden_dim=F, activation=activation,
                        dropout=0.3, attention_dropout=0.0, attention="sdpa"))
    with torch.no_grad():  # LayerNorms start as the identity, biases as 0: perturb so a wrong wiring shows
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    config = DistilBertConfig(dim=D, n_heads=H, hidden_dim=F, n_layers=1, activation=activation, dropout=0.3,
                              attention_dropout=0.0)
    config._attn_implementation = "sdpa"
    theirs = TransformerBlock(config)
    theirs.load_state_dict(ours.state_dict())  # same names: attention.q_lin, sa_layer_norm, ffn.lin1, ...
    theirs.config = config
    return ours.eval(), theirs.eval()


def inputs():
    x = torch.randn(B, T, D)  # (B, T, D)
    mask = (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).long()  # (B, T)
    return x, mask


def their_mask(theirs, x, mask):
    """transformers' own translation of a (B, T) padding mask for its attention implementation."""
    return create_bidirectional_mask(config=theirs.config, inputs_embeds=x, attention_mask=mask)


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_feedforward_matches_transformers(activation):
    """FeedForward equals DistilBERT's FFN: lin1, activation, lin2 (dropout is the identity in eval mode)."""
    ours, theirs = pair(activation)
    x = torch.randn(B, T, D)
    assert_close(ours.ffn(x), theirs.ffn(x), atol=1e-6, rtol=1e-5)


def test_feedforward_dropout_in_training_matches_transformers():
    """In training mode the FFN output goes through dropout exactly where DistilBERT puts it (same seed, same mask)."""
    ours, theirs = pair()
    x = torch.randn(B, T, D)
    torch.manual_seed(7)
    a = ours.ffn.train()(x)
    torch.manual_seed(7)
    b = theirs.ffn.train()(x)
    assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert (a == 0).float().mean() > 0.1  # dropout p = 0.3 really zeroed entries


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_block_matches_transformers_with_padding(activation):
    """Block(x, mask) equals TransformerBlock on the same input and padding mask, at every position."""
    ours, theirs = pair(activation)
    x, mask = inputs()
    out = ours(x, mask)
    assert out.shape == (B, T, D)
    assert_close(out, theirs(x, their_mask(theirs, x, mask)), atol=1e-5, rtol=1e-4)


def test_block_without_mask_matches_transformers():
    """With no mask (no padding anywhere) the block still equals TransformerBlock."""
    ours, theirs = pair()
    x = torch.randn(B, T, D)
    assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_first_token_is_the_block_at_position_0():
    """Block.first_token(x, mask) is TransformerBlock's output at position 0 alone, (B, 1, D): the query runs on
    one token, but every position still answers as a key and a value (dropping them would change the output)."""
    ours, theirs = pair()
    x, mask = inputs()
    first = ours.first_token(x, mask)
    assert first.shape == (B, 1, D)
    assert_close(first, theirs(x, their_mask(theirs, x, mask))[:, :1], atol=1e-5, rtol=1e-4)


def test_block_gradients_match_transformers():
    """Every named parameter and the input receive the same gradient as in TransformerBlock."""
    ours, theirs = pair()
    x, mask = inputs()
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(B, T, D)
    (ours(x_ours, mask) * g).sum().backward()
    (theirs(x_theirs, their_mask(theirs, x_theirs, mask)) * g).sum().backward()
    assert_close(x_ours.grad, x_theirs.grad, atol=1e-5, rtol=1e-4)
    their_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, their_params[name].grad, atol=1e-5, rtol=1e-4, msg=f"gradient of {name}")


# BERT's layer under its own parameter names; BERT and DistilBERT differ in one place, the dropout on the attention
# output (BertSelfOutput has it), which only shows in training mode.
BERT_NAMES = {"attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key",
              "attention.v_lin": "attention.self.value", "attention.out_lin": "attention.output.dense",
              "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense",
              "ffn.lin2": "output.dense", "output_layer_norm": "output.LayerNorm"}


def test_bert_block_in_training_matches_bert_layer():
    """A family="bert" block in training mode equals transformers' BertLayer under the same seed (same dropouts)."""
    ours = Block(Config(vocab_size=50, dim=D, n_layers=1, n_heads=H, hidden_dim=F, family="bert", type_vocab_size=2,
                        dropout=0.3, attention_dropout=0.0, attention="sdpa")).train()
    config = BertConfig(hidden_size=D, num_attention_heads=H, intermediate_size=F, hidden_dropout_prob=0.3,
                        attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12)
    config._attn_implementation = "sdpa"
    theirs = BertLayer(config).train()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        their_params = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            module, kind = name.rsplit(".", 1)
            their_params[f"{BERT_NAMES[module]}.{kind}"].copy_(p)
    x, mask = inputs()
    torch.manual_seed(3)
    a = ours(x, mask)
    torch.manual_seed(3)
    b = theirs(x, create_bidirectional_mask(config=config, inputs_embeds=x, attention_mask=mask))
    assert_close(a, b[0] if isinstance(b, tuple) else b, atol=1e-5, rtol=1e-4)
