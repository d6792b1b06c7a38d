"""minibert.viz recomputes the attention weights transformers computes, and its CLI draws them.

The references are tiny random BERT and DistilBERT models built from a config with transformers (no download),
perturbed so that no bias is zero, saved, and loaded with minibert's own loader. transformers returns the weights
with `output_attentions=True` (eager attention); ours are recomputed by minibert.viz from q_lin/k_lin while our
model runs its fused SDPA path, so the test also shows that the figure does not depend on the attention kernel.
"""

import pytest
import torch
import transformers as hf

import minibert
from minibert import viz
from minibert.errors import run_cli

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "bad", "not", "!", "."]
CONFIGS = {
    "bert": lambda: hf.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=64),
    "distilbert": lambda: hf.DistilBertConfig(vocab_size=40, dim=24, n_layers=2, n_heads=3, hidden_dim=40,
                                              max_position_embeddings=64),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def tiny_model_dir(request, tmp_path_factory):
    """A random transformers encoder (eager attention, every parameter perturbed) saved with a tiny vocab.txt."""
    torch.manual_seed(0)
    config = CONFIGS[request.param]()
    config._attn_implementation = "eager"  # the implementation that can return its weights
    theirs = hf.AutoModel.from_config(config)
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp(request.param)
    theirs.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder, theirs.eval()


def padded_batch(vocab_size: int, lengths=(12, 5, 1)):
    """A batch with heavy padding, so the mask path is exercised."""
    T = max(lengths)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return torch.randint(1, vocab_size, (len(lengths), T)) * mask, mask


def test_weights_match_transformers(tiny_model_dir):
    """Every layer's (B, H, T, T) weights equal transformers' output_attentions within 1e-5, padding included."""
    folder, theirs = tiny_model_dir
    ours = minibert.load_encoder(folder)  # attention="sdpa": the weights are never materialised by the model
    ids, mask = padded_batch(theirs.config.vocab_size)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    got = viz.attention_weights(ours, ids, mask)
    assert got.shape == (len(expected), *expected[0].shape)
    for layer, (g, e) in enumerate(zip(got, expected)):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0, msg=lambda m: f"layer {layer}: {m}")
    # Padded keys get no weight, and the hooks are gone afterwards.
    assert got[:, 1, :, :, 5:].abs().max() < 1e-6
    assert all(not layer.attention._forward_pre_hooks for layer in ours.layers)


def test_weights_of_a_classifier_in_training_mode_are_refused(tiny_model_dir):
    """A model left in training mode is refused with a message, since dropout would change the weights."""
    folder, _ = tiny_model_dir
    model = minibert.load_classifier(folder).train()
    with pytest.raises(ValueError, match="training mode"):
        viz.attention_weights(model, torch.tensor([[2, 5, 3]]))


def test_cli_writes_png_from_a_run_folder(tiny_model_dir, tmp_path, capsys):
    """`python -m minibert.viz attention RUN ...` finds RUN/model/, prints the top tokens and writes a PNG."""
    folder, _ = tiny_model_dir
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    for f in folder.iterdir():
        (run / "model" / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "figures" / "attention.png"
    viz.main(["attention", str(run), "the movie was not great !", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5_000
    printed = capsys.readouterr().out
    assert "8 tokens" in printed and "layer 1: " in printed


@pytest.mark.parametrize("model,text,message", [("nope/x", "text", "not found"), ("all-MiniLM-L6-v2", "  ", "empty")])
def test_cli_bad_input_is_one_error_line(tmp_path, capsys, model, text, message):
    """A missing model folder or an empty text is one error line (exit code 2), not a traceback."""
    model = str(tmp_path / model) if "/" in model else model
    assert run_cli(viz.main, ["attention", model, text, "--out", str(tmp_path / "a.png")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()
