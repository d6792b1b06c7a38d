"""The benchmark reports what it could measure, whatever stops it.

A GPU run is short and cannot be repeated at will, and a full CPU run takes an hour: a candidate that fails on its
first call, or a run cut short, must cost only the rows not yet measured. The CUDA training rows
(benchmarks/cuda.py `training_rows`) run here on the CPU with a tiny model: the CUDA graphs candidate then fails on
its first call, which is the failure path.
"""

import json

import pytest
import torch

import bench
import minibert
from benchmarks import common, cuda
from benchmarks.timing import Row
from minibert.errors import UserError

VOCAB = 1100  # common.random_batch draws token ids from 1000 up
TINY = dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)


def tiny_model(device: str = "cpu") -> minibert.Classifier:
    torch.manual_seed(0)
    config = minibert.Config(**TINY, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
    return minibert.build_classifier(config).to(device).train()


@pytest.fixture
def tiny(monkeypatch):
    """training_rows on a tiny random model instead of the named checkpoint's architecture."""
    monkeypatch.setattr(common, "build_ours", lambda name, device="cpu", pretrained=True: tiny_model(device))
    return common.random_batch(2, 16, vocab_size=VOCAB)


def test_every_candidate_that_runs_gets_a_row_and_the_others_are_reported(tiny, capsys):
    rows = cuda.training_rows(common.MINILM, tiny, warmup=1, repeats=1, device="cpu", steps_per_call=1)
    out = capsys.readouterr().out
    assert [row.name for row in rows] == ["CUDA train step MiniLM 2x16 bf16: minibert vs transformers sdpa"]
    assert "minibert + CUDA graphs: FAILED, row skipped" in out  # CUDA only
    assert rows[0].unit == "ms" and rows[0].minibert > 0 and rows[0].reference > 0


def test_without_the_reference_there_is_no_row(tiny, monkeypatch, capsys):
    """Every row is a ratio to transformers: if transformers' first step fails, nothing is reported as measured."""
    monkeypatch.setattr(common, "theirs_from", lambda *args, **kwargs: {"sdpa": None})  # Logits(None) cannot run
    assert cuda.training_rows(common.MINILM, tiny, warmup=1, repeats=1, device="cpu", steps_per_call=1) == []
    assert "transformers: FAILED, row skipped" in capsys.readouterr().out


def test_an_unknown_cuda_part_is_refused_before_anything_runs(capsys):
    with pytest.raises(UserError, match=r"unknown --cuda-parts \['mfu'\]"):
        bench.main(["--cuda-only", "--cuda-parts", "train,mfu"])
    assert not capsys.readouterr().out  # refused before the run began: nothing measured, nothing printed


def test_bench_json_keeps_the_sections_measured_before_an_interruption(tmp_path, monkeypatch):
    """bench.py rewrites --json after every section: Ctrl-C in the second section leaves the first one's rows,
    marked incomplete."""
    def sections(args, wanted, show):
        show([Row("train step", 1.0, 2.0, "s", "<= 1.0")])
        raise KeyboardInterrupt  # the user gives up during the next section

    monkeypatch.setattr(bench, "cpu_sections", sections)
    out = tmp_path / "rows.json"
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--only", "train", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written["meta"]["complete"] is False
    assert written["rows"] == [{"name": "train step", "minibert": 1.0, "reference": 2.0, "unit": "s", "ratio": 0.5}]
