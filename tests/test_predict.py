"""python -m minibert.predict: JSON Lines that agree with predict(), standard input, the length limit the exported
tokenizer records, and one line (no traceback) for every mistake a user can make, while a bug keeps its traceback.

The run folder is built without training: a tiny random DistilBERT (1 layer, dim 16; initializer_range 0.5 so that
texts get clearly different probabilities) saved as train.py exports it, with all-MiniLM-L6-v2's tokenizer.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minibert
from minibert import predict
from minibert.errors import UserError, run_cli

REPO = Path(__file__).resolve().parents[1]
TINY = minibert.Config(dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=64,
                       labels=("negative", "positive"), initializer_range=0.5)
LIMIT = 32  # the tokenizer's model_max_length: below the model's 64 positions, so the two cannot be confused
TEXTS = ["A wonderful, moving film.", "Awful. Two hours I will never get back.",
         "word " * 20 + "terrible terrible " * 30]  # ~80 tokens: cut at LIMIT, and 32 vs 64 tokens differ


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run folder: model/ as train.py exports it, and a run_config.json that predict must not need."""
    run = tmp_path_factory.mktemp("predict") / "run"
    torch.manual_seed(0)
    minibert.save_pretrained(minibert.build_classifier(TINY), run / "model")
    minibert.load_tokenizer("all-MiniLM-L6-v2").save_pretrained(run / "model", model_max_length=LIMIT)
    (run / "run_config.json").write_text("train.py's, unreadable on purpose")
    return run


@pytest.fixture(scope="module")
def loaded(run_dir):
    return minibert.load_classifier(run_dir / "model"), minibert.load_tokenizer(run_dir / "model")


def run_predict(*args, stdin: str | bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MINIBERT_DEBUG"} | {"HF_HUB_OFFLINE": "1"}
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run([sys.executable, "-m", "minibert.predict", *map(str, args)], cwd=REPO, env=env,
                          input=data if data is not None else b"", capture_output=True, timeout=120)


def test_json_lines_agree_with_predict_and_sum_to_one(run_dir, loaded, capsys):
    """--json prints one object per text, in order, whose probabilities sum to 1 and are predict()'s at the
    tokenizer's limit."""
    model, tokenizer = loaded
    predict.main([str(run_dir), "--json", *TEXTS])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in rows] == TEXTS
    expected = predict.probabilities(model, tokenizer, TEXTS, max_len=LIMIT)
    for row, (label, score), probs in zip(rows, predict.predict(model, tokenizer, TEXTS, max_len=LIMIT), expected):
        assert set(row) == {"text", "label", "score", "probabilities"}
        assert list(row["probabilities"]) == ["negative", "positive"]
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-6)
        assert row["label"] == label and row["score"] == pytest.approx(score, abs=1e-7)
        assert row["score"] == row["probabilities"][label] == max(row["probabilities"].values())
        torch.testing.assert_close(torch.tensor(list(row["probabilities"].values())), probs, atol=1e-7, rtol=0)
    assert {row["label"] for row in rows} == {"negative", "positive"}  # the tiny model tells these texts apart


def test_the_limit_is_the_tokenizers_else_the_positions_and_max_len_overrides_it(run_dir, loaded, tmp_path, capsys):
    """Inputs are cut at tokenizer_config.json's model_max_length, at the model's positions when it records none
    (or an unbounded 1e30), and at --max-len when given."""
    model, tokenizer = loaded
    long = TEXTS[2:]
    at = {n: predict.probabilities(model, tokenizer, long, max_len=n) for n in (LIMIT, 64, 8)}
    assert (at[LIMIT] - at[64]).abs().max() > 1e-3  # else this test could not tell the limits apart
    assert predict.default_max_len(tokenizer, model.config) == LIMIT
    for flags, n in (([], LIMIT), (["--max-len", "8"], 8)):
        predict.main([str(run_dir), "--json", *flags, *long])
        row = json.loads(capsys.readouterr().out)
        torch.testing.assert_close(torch.tensor(list(row["probabilities"].values())), at[n][0], atol=1e-7, rtol=0)
    shutil.copytree(run_dir / "model", tmp_path / "model")
    (tmp_path / "model" / "tokenizer_config.json").unlink()
    assert predict.default_max_len(minibert.load_tokenizer(tmp_path / "model"), model.config) == 64
    (tmp_path / "model" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": int(1e30)}))
    assert predict.default_max_len(minibert.load_tokenizer(tmp_path / "model"), model.config) == 64


def test_the_table_has_a_header_and_one_row_per_text(run_dir, capsys):
    """Without --json: a header, then label, score and the start of each text, in the order given."""
    rows = predict.main([str(run_dir), *TEXTS])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["label", "score", "text"]
    assert len(lines) == len(TEXTS) + 1
    for line, row in zip(lines[1:], rows):
        label, score, *_ = line.split()
        assert label == row["label"] and score == f"{row['score']:.1%}"
    assert lines[3].endswith("...") and len(lines[3].split("  ", 2)[-1]) == 60


@pytest.mark.parametrize("flags", [[], ["--file", "-"]], ids=["no-texts", "file-dash"])
def test_standard_input_one_text_a_line_blank_lines_skipped(run_dir, loaded, flags):
    """With no texts and no --file, or with --file -, each non-blank line of standard input is one text."""
    model, tokenizer = loaded
    result = run_predict(run_dir, "--json", *flags, stdin=f"{TEXTS[0]}\n\n   \n{TEXTS[1]}\r\n")
    assert result.returncode == 0, result.stderr.decode()
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [row["text"] for row in rows] == TEXTS[:2]
    assert [row["label"] for row in rows] == [label for label, _ in predict.predict(model, tokenizer, TEXTS[:2],
                                                                                     max_len=LIMIT)]


def copy_with(run_dir: Path, tmp_path: Path, name: str, content: bytes) -> Path:
    """A copy of the run whose model/<name> holds `content`."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "model" / name).write_bytes(content)
    return run


def unfinished(tmp_path: Path) -> Path:
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    (run / "metrics.jsonl").write_text("")
    return run


def text_file(tmp_path: Path, content: bytes) -> Path:
    (tmp_path / "texts.txt").write_bytes(content)
    return tmp_path / "texts.txt"


# (case, what to run: (run_dir, tmp_path) -> (arguments, standard input), what stderr must say)
BAD_INPUTS = [
    ("missing-run", lambda run, tmp: ([tmp / "nope", "a text"], None), "run folder not found"),
    ("not-a-run", lambda run, tmp: ([tmp, "a text"], None), "not a run or model folder: no config.json"),
    ("unfinished-run", lambda run, tmp: ([unfinished(tmp), "a text"], None),
     f"finish it with `python train.py --resume {{tmp}}{os.sep}unfinished`"),
    ("missing-file", lambda run, tmp: ([run, "--file", tmp / "none.txt"], None), "none.txt: no such file"),
    ("not-utf8-file", lambda run, tmp: ([run, "--file", text_file(tmp, b"fine\nna\xefve\n")], None),
     "texts.txt is not UTF-8 text: byte 7 (line 2)"),
    ("not-a-regular-file", lambda run, tmp: ([run, "--file", os.devnull], None), "is not a regular file"),
    ("blank-text-argument", lambda run, tmp: ([run, "good", "  "], None), "text 2 on the command line is empty"),
    ("empty-file", lambda run, tmp: ([run, "--file", text_file(tmp, b"\n  \n")], None), "nothing to classify"),
    ("empty-stdin", lambda run, tmp: ([run], ""), "nothing to classify: standard input"),
    ("batch-size-0", lambda run, tmp: ([run, "a text", "--batch-size", "0"], None), "--batch-size must be at least 1"),
    ("corrupt-config", lambda run, tmp: ([copy_with(run, tmp, "config.json", b"{oops"), "a text"], None),
     "config.json is not valid JSON"),
    ("corrupt-weights", lambda run, tmp: ([copy_with(run, tmp, "model.safetensors", b"garbage"), "a text"], None),
     "model.safetensors as safetensors"),
]


@pytest.mark.parametrize("make, fragment", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_a_user_error_is_one_line_and_exit_2_without_traceback(run_dir, tmp_path, make, fragment):
    """Each mistake a user can make ends with `error: <what to fix>` on one line of stderr, exit status 2."""
    args, stdin = make(run_dir, tmp_path)
    result = run_predict(*args, stdin=stdin)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr and result.stdout == b""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert fragment.format(tmp=tmp_path) in stderr


@pytest.mark.parametrize("name, content, fragment", [
    ("tokenizer.json", b"garbage", "tokenizer.json: expected value"),
    ("tokenizer_config.json", b"{", "tokenizer_config.json is not valid JSON"),
    ("tokenizer_config.json", b'{"model_max_length": "long"}', "model_max_length must be a positive integer"),
], ids=["tokenizer", "tokenizer-config", "model-max-length"])
def test_a_corrupt_tokenizer_file_is_a_user_error_that_names_it(run_dir, tmp_path, capsys, name, content, fragment):
    """A tokenizer file that cannot be read is reported in one line naming it, through run_cli."""
    run = copy_with(run_dir, tmp_path, name, content)
    assert run_cli(predict.main, [str(run), "a text"]) == 2
    assert fragment in capsys.readouterr().err


def test_max_len_beyond_the_position_embeddings_is_a_user_error(run_dir, capsys):
    """--max-len longer than the model's position table is refused before any text is encoded."""
    assert run_cli(predict.main, [str(run_dir), "a text", "--max-len", "65"]) == 2
    assert "--max-len 65 is more than the model's 64 position embeddings" in capsys.readouterr().err


def test_debug_shows_a_user_errors_traceback(tmp_path):
    """--debug re-raises a user error instead of printing one line."""
    with pytest.raises(UserError, match="run folder not found"):
        run_cli(predict.main, [str(tmp_path / "nope"), "a text", "--debug"])


def test_a_bug_keeps_its_traceback(run_dir, monkeypatch):
    """An exception that is not a user error (a KeyError from the loader) is raised, not turned into one line."""
    def broken_loader(folder):
        raise KeyError("encoder.layers.0")

    monkeypatch.setattr(predict, "load_classifier", broken_loader)
    monkeypatch.delenv("MINIBERT_DEBUG", raising=False)
    with pytest.raises(KeyError, match="encoder.layers.0"):
        run_cli(predict.main, [str(run_dir), "a text"])
