"""train.py refuses bad command lines before it writes anything, and its run folders hold up to misuse.

Here: a table of bad command lines (each refused in-process with the flag named, the --out folder untouched); the
one-line `error:` of the command line; validations evenly spaced over the steps, and resumed bit for bit after a
kill; a copied run folder resumed in place; --overwrite; a torn or corrupt metrics.jsonl; a disk that fills up
during a checkpoint; --truncation (keep_tokens, transformers' head cut, the saved tokenizer); --layer-decay.

The runs use the tiny random model of tests/conftest.py on 40 + 8 IMDB reviews at --max-len 32: 5 steps an epoch.
"""

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import minibert
from minibert.errors import UserError
from minibert.training.runfolder import Run
from minibert.tokenizer import Tokenizer, keep_tokens, load_tokenizer
from test_train import CTRL_C_AT, REPO, args_for, comparable, run_patched, train
from train_config import RunConfig, validations_for
import train_model

VAL_STEPS = [3, 5, 8, 10]  # --validations 4 over 10 steps: ceil(10 * j / 4) for j = 1..4


def tiny_run(tiny_dir, imdb_dir, out, *extra) -> list[str]:
    """2 epochs of 5 steps (40 reviews, batch 8), 8 val and 8 test reviews, a checkpoint every 2 steps."""
    return args_for(tiny_dir, imdb_dir, out, "--train-samples", "40", "--val-samples", "8", "--eval-samples", "8",
                    "--max-len", "32", "--save-every", "2", "--validations", "4", *extra)


def files(folder: Path) -> dict[str, bytes] | None:
    """Every file under `folder` with its bytes; None when the folder does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refusal(argv) -> str:
    """The message train.main refuses `argv` with (a value argparse cannot read is a UserError too)."""
    with pytest.raises(UserError) as caught:
        train.main(argv)
    return str(caught.value)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_dir, imdb_dir) -> Path:
    """One uninterrupted tiny run, in-process: the yardstick, and a finished run folder to misuse (copies only)."""
    out = tmp_path_factory.mktemp("checks") / "uninterrupted"
    train.main(tiny_run(tiny_dir, imdb_dir, out))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Bad command lines
# ---------------------------------------------------------------------------------------------------------------

BAD_FLAGS = [
    (["--warmup", "1.5"], "--warmup must be in [0, 1), got 1.5"),
    (["--warmup", "-0.1"], "--warmup must be in [0, 1), got -0.1"),
    (["--weight-decay", "-0.01"], "--weight-decay must be zero or more"),
    (["--clip", "-1"], "--clip must be zero or more"),
    (["--pad-multiple", "0"], "--pad-multiple must be a whole number of at least 1"),
    (["--pad-multiple", "33"], "--pad-multiple must be at most --max-len (32)"),
    (["--eval-batch-size", "0"], "--eval-batch-size must be a whole number of at least 1"),
    (["--max-len", "129"], "--max-len 129 is longer than"),  # the tiny model has 128 positions
    (["--max-len", "1"], "--max-len must leave room for [CLS] and [SEP]"),
    (["--eval-max-len", "129"], "--eval-max-len 129 is longer than"),
    (["--eval-max-len", "1"], "--eval-max-len must leave room for [CLS] and [SEP]"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number, got nan"),
    (["--head-lr", "0"], "--head-lr must be a positive number"),
    (["--layer-decay", "0"], "--layer-decay must be in (0, 1]"),
    (["--layer-decay", "1.5"], "--layer-decay must be in (0, 1]"),
    (["--dropout", "1.0"], "--dropout must be in [0, 1), got 1.0"),
    (["--attention-dropout", "-0.1"], "--attention-dropout must be in [0, 1)"),
    (["--cls-only", "--pooling", "mean"], "--cls-only needs --pooling cls"),
    (["--cuda-graphs"], "--cuda-graphs needs --device cuda"),
    (["--train-samples", "0"], "--train-samples must be a whole number of at least 1, or all"),
    (["--train-samples", "x"], "argument --train-samples: invalid"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast' (see"),
    (["--val-samples", "all"], "--val-samples must be a whole number of at least 1, got 'all'"),
    (["--grad-accum", "3"], "--batch-size must be divisible by --grad-accum (3), got 8"),
    (["--lora-targets", "q_lin"], "--lora-targets applies to --method lora or qlora only"),
    (["--validations", "0"], "--validations must be a whole number of at least 1"),
    (["--validations", "11"], "--validations 11 is more than the run's 10 steps"),  # 2 epochs of 5 steps
    (["--epochs", "0"], "--epochs must be a whole number of at least 1"),
    (["--method", "qlora", "--compute-dtype", "float16"], "--compute-dtype float16 matmuls are not implemented"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(flags) for flags, _ in BAD_FLAGS])
def test_a_bad_flag_is_refused_by_name_and_no_run_folder_is_made(tmp_path, tiny_dir, imdb_dir, flags, message):
    """Each bad value is refused before any work, with a message naming the flag, and --out is never created."""
    out = tmp_path / "out"
    assert message in refusal(tiny_run(tiny_dir, imdb_dir, out, *flags))
    assert not out.exists()


def test_the_default_validations_fit_a_short_run_and_an_asked_number_does_not():
    """The default (4) becomes one validation a step on a 2-step run; `--validations 6` on it is refused (above)."""
    assert validations_for(RunConfig(), 10) == 4
    assert validations_for(RunConfig(), 2) == 2
    assert validations_for(RunConfig(validations=2), 2) == 2
    with pytest.raises(UserError, match="--validations 6 is more than the run's 2 steps"):
        validations_for(RunConfig(validations=6), 2)


def edit_seed(folder: Path) -> None:
    saved = json.loads((folder / "run_config.json").read_text())
    (folder / "run_config.json").write_text(json.dumps({**saved, "seed": saved["seed"] + 1}, indent=2))


# what is done to a copy of a finished run; then the command line (None: a new run with --out there); the refusal
BAD_FOLDERS = {
    "--out onto a finished run": (
        None, None, "already holds run output (run_config.json, metrics.jsonl, report.json, checkpoint.pt, model, "
                    "curves.png, confusion.png); choose another --out"),
    "--out onto a finished run without its checkpoint": (
        lambda run: (run / "checkpoint.pt").unlink(), None,
        "already holds run output (run_config.json, metrics.jsonl, report.json, model, curves.png, confusion.png); "
        "choose another --out"),
    "--resume of a folder without run_config.json": (
        lambda run: (run / "run_config.json").unlink(), [], "is not a run folder (no run_config.json)"),
    "--resume after the seed was edited in run_config.json": (edit_seed, [], "(seed changed)"),
    "--resume with an extra flag": (None, ["--epochs", "3"], "drop --epochs"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_a_run_folder_in_the_wrong_state_is_refused_and_left_byte_identical(tmp_path, tiny_dir, imdb_dir, finished,
                                                                            case):
    """A new run into a folder holding run output (with or without its checkpoint), or a resume the folder cannot
    honour, is refused with the reason, and every file of the folder keeps its bytes."""
    edit, resume_flags, message = BAD_FOLDERS[case]
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    if edit:
        edit(run)
    before = files(run)
    argv = tiny_run(tiny_dir, imdb_dir, run) if resume_flags is None else ["--resume", str(run), *resume_flags]
    assert message in refusal(argv)
    assert files(run) == before


def test_the_command_line_prints_one_error_line_and_exits_2(tmp_path):
    """`python train.py --warmup 2` prints `error: --warmup ...` on stderr, no traceback, exits 2, writes nothing."""
    env = {k: v for k, v in os.environ.items() if k != "MINIBERT_DEBUG"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--warmup", "2"], cwd=tmp_path,
                          env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: --warmup must be in [0, 1), got 2.0" in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no runs/<timestamp> folder


# ---------------------------------------------------------------------------------------------------------------
# Validations, and resuming after a kill
# ---------------------------------------------------------------------------------------------------------------

def test_validations_are_evenly_spaced_and_the_report_gives_the_last(finished):
    """--validations 4 over 10 steps (2 epochs of 5) writes 4 val lines, at steps 3, 5, 8 and 10; the report's val
    figures are the last one's."""
    val = Run(finished).records("eval", "val")
    assert [line["step"] for line in val] == VAL_STEPS
    assert [line["epoch"] for line in val] == [0, 0, 1, 1]
    report = json.loads((finished / "report.json").read_text())
    assert (report["val_accuracy"], report["val_loss"]) == (val[-1]["accuracy"], val[-1]["loss"])


@pytest.fixture(scope="module")
def resumed_copy(tmp_path_factory, tiny_dir, imdb_dir):
    """A run SIGKILLed inside update 4 (after the validation at step 3, its last checkpoint at step 2), its folder
    copied, and the copy resumed in-process: (killed folder, its files after the kill, copy, printed output)."""
    root = tmp_path_factory.mktemp("resume")
    killed, copied = root / "killed", root / "copied"
    sigkill_in_update_4 = CTRL_C_AT["optimizer step"].replace("28", "4").replace("SIGINT", "SIGKILL")
    proc = run_patched(sigkill_in_update_4, tiny_run(tiny_dir, imdb_dir, killed))
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert 3 in [line["step"] for line in Run(killed).records("eval", "val")]  # the validation is on record
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 2  # ... after the checkpoint
    shutil.copytree(killed, copied)
    after_kill = files(killed)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train.main(["--resume", str(copied)])
    return killed, after_kill, copied, printed.getvalue()


def test_a_run_killed_after_a_mid_epoch_validation_resumes_bitwise_identical(finished, resumed_copy):
    """Resumed from the checkpoint before the validation at step 3, the run redoes it and ends with exactly the
    weights, report and metrics lines (validations included) of the uninterrupted run."""
    _, _, copied, output = resumed_copy
    assert "resumed at epoch 1, batch 2, step 2" in output
    assert comparable(copied) == comparable(finished)


def test_a_copied_run_folder_resumes_in_the_copy(resumed_copy):
    """A resumed copy of a run folder names the copy, not the folder it was copied from, and writes only there."""
    killed, after_kill, copied, output = resumed_copy
    assert f"run folder  {copied}" in output and str(killed) not in output
    assert (copied / "report.json").is_file() and (copied / "model" / "model.safetensors").is_file()
    assert files(killed) == after_kill


# ---------------------------------------------------------------------------------------------------------------
# Run folder: --overwrite, metrics.jsonl, a full disk
# ---------------------------------------------------------------------------------------------------------------

def test_overwrite_replaces_a_finished_run_and_keeps_other_files(tmp_path, tiny_dir, imdb_dir, finished):
    """--overwrite onto a finished 2-epoch run: every output is the new 1-epoch run's (no old metrics line is
    left), and a file of the user's in that folder stays as it was."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "notes.txt").write_text("my notes\n")
    train.main(tiny_run(tiny_dir, imdb_dir, run, "--epochs", "1", "--overwrite"))
    assert (run / "notes.txt").read_text() == "my notes\n"
    assert json.loads((run / "run_config.json").read_text())["epochs"] == 1
    assert json.loads((run / "report.json").read_text())["steps"] == 5
    assert [line["step"] for line in Run(run).records("train")] == [1, 2, 3, 4, 5]
    assert [line["step"] for line in Run(run).records("eval", "val")] == [2, 3, 4, 5]  # ceil(5 * j / 4)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_metrics_with_a_torn_last_line_are_read_without_it_and_a_corrupt_line_is_named(tmp_path):
    """A last line cut off mid-write (a crash) is skipped; a line that is not JSON anywhere else raises a
    UserError naming its number."""
    run = Run(tmp_path)
    run.metrics_path.write_text('{"type": "train", "step": 1}\n{"type": "eval", "split": "val", "step": 1}\n'
                                '{"type": "train", "st')
    assert run.records("train") == [{"type": "train", "step": 1}]
    assert [line["step"] for line in run.records("eval", "val")] == [1]
    run.metrics_path.write_text('{"type": "train", "step": 1}\nnot json\n{"type": "train", "step": 2}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl, line 2, is not JSON"):
        run.records("train")


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, tiny_dir, imdb_dir, monkeypatch):
    """The second checkpoint's write fails half-way with ENOSPC: train.main raises a UserError saying so, the
    temporary file is gone, and the first checkpoint is on disk byte for byte."""
    out = tmp_path / "full"
    real_save, previous = torch.save, []

    def save(obj, f, *args, **kwargs):
        if not (out / "checkpoint.pt").exists():
            return real_save(obj, f, *args, **kwargs)
        previous.append((out / "checkpoint.pt").read_bytes())
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(UserError, match=r"cannot write .*checkpoint\.pt .*No space left on device.*--resume"):
        train.main(tiny_run(tiny_dir, imdb_dir, out, "--save-every", "1"))
    assert len(previous) == 1 and (out / "checkpoint.pt").read_bytes() == previous[0]
    assert not (out / "checkpoint.pt.tmp").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1


def test_a_full_disk_at_the_export_is_one_line_and_a_resume_finishes_the_run(tmp_path, tiny_dir, imdb_dir, finished,
                                                                              monkeypatch):
    """Training is done and checkpointed when writing model/ fails with ENOSPC: a UserError says what to do; once
    there is space, --resume evaluates and exports without training again, to the uninterrupted run's figures."""
    import train_outputs

    out, real_save = tmp_path / "full", train_outputs.minibert.save_pretrained

    def no_space(model, folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(train_outputs.minibert, "save_pretrained", no_space)
    with pytest.raises(UserError, match=r"cannot write .*model \(No space left on device\).*--resume"):
        train.main(tiny_run(tiny_dir, imdb_dir, out))
    monkeypatch.setattr(train_outputs.minibert, "save_pretrained", real_save)
    report = train.main(["--resume", str(out)])
    assert (out / "model" / "model.safetensors").is_file() and report["steps"] == 10
    assert [r["step"] for r in Run(out).records("eval", "test")] == [10]  # one test line, not two
    uninterrupted = json.loads((finished / "report.json").read_text())
    for key in ("test_accuracy", "test_loss"):
        assert report[key] == uninterrupted[key], key


def test_a_metrics_line_that_cannot_be_written_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()  # any OSError on append; a full disk is another
    with pytest.raises(UserError, match=r"cannot write .*metrics\.jsonl .*--resume"):
        Run(tmp_path).log(type="train", step=1)


# ---------------------------------------------------------------------------------------------------------------
# --truncation
# ---------------------------------------------------------------------------------------------------------------

def test_keep_tokens_keeps_the_named_part_within_the_budget():
    """head: the first `budget` ids; tail: the last; head+tail: a quarter (rounded down) first, the rest last; a
    text within the budget is kept whole."""
    ids = list(range(10))
    assert keep_tokens(ids, 6, "head") == [0, 1, 2, 3, 4, 5]
    assert keep_tokens(ids, 6, "tail") == [4, 5, 6, 7, 8, 9]
    assert keep_tokens(ids, 6, "head+tail") == [0, 5, 6, 7, 8, 9]
    assert keep_tokens(ids, 8, "head+tail") == [0, 1, 4, 5, 6, 7, 8, 9]
    assert keep_tokens(ids, 3, "head+tail") == [7, 8, 9]
    for truncation in ("head", "tail", "head+tail"):
        assert keep_tokens(ids, 10, truncation) == ids and keep_tokens(ids, 12, truncation) == ids


@pytest.fixture(scope="module")
def long_reviews(imdb_dir) -> list[str]:
    """20 IMDB train reviews of more than 2,000 characters (far beyond 64 tokens)."""
    texts = pq.read_table(imdb_dir / "train.parquet", columns=["review"]).column("review").to_pylist()[:500]
    return [text for text in texts if len(text) > 2000][:20]


def test_head_truncation_still_matches_transformers(minilm_dir, long_reviews):
    """--truncation head cuts as transformers' truncation=True does: the same ids on long reviews."""
    import transformers

    ours = load_tokenizer(minilm_dir)
    ours.truncation = "head"
    theirs = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    expected = theirs(long_reviews, truncation=True, max_length=64)["input_ids"]
    assert len(long_reviews) == 20 and ours.encode_batch(long_reviews, max_length=64) == expected
    assert ours(long_reviews, max_length=64)["input_ids"].tolist() == expected


def test_head_tail_and_tail_keep_the_ends_of_a_long_review(minilm_dir, long_reviews):
    """At 64 tokens, head+tail is [CLS], the review's first 15 tokens, its last 47, [SEP]; tail is [CLS], its last
    62, [SEP]; the padded batch holds the same ids."""
    tokenizer = load_tokenizer(minilm_dir)
    whole = tokenizer.encode_batch(long_reviews, max_length=100_000, add_special_tokens=False)
    for truncation, head in (("head+tail", 15), ("tail", 0)):
        tokenizer.truncation = truncation
        cut = tokenizer.encode_batch(long_reviews, max_length=64)
        for ids, full in zip(cut, whole):
            assert len(full) > 64
            assert ids == [tokenizer.cls_id, *full[:head], *full[len(full) - (62 - head):], tokenizer.sep_id]
        assert tokenizer(long_reviews, max_length=64)["input_ids"].tolist() == cut


def test_a_saved_tokenizer_keeps_its_truncation(tmp_path, minilm_dir, finished):
    """save_pretrained records the truncation and the length; from_folder reads both back; a run exports its own."""
    tokenizer = load_tokenizer(minilm_dir)
    tokenizer.truncation = "tail"
    tokenizer.save_pretrained(tmp_path, model_max_length=48)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["minibert_truncation"] == "tail"
    back = Tokenizer.from_folder(tmp_path)
    assert (back.truncation, back.model_max_length) == ("tail", 48)
    exported = load_tokenizer(finished / "model")
    # the default truncation; the length the run tested at, --eval-max-len auto: the tiny model's 128 positions
    assert (exported.truncation, exported.model_max_length) == ("head+tail", 128)


# ---------------------------------------------------------------------------------------------------------------
# --freeze-layers
# ---------------------------------------------------------------------------------------------------------------

def test_frozen_layers_get_no_gradient_and_no_optimizer_state(tiny_dir):
    """--freeze-layers 1 on 2 layers: the embeddings and layer 0 keep their weights and get no gradient (autograd
    stops above them); layer 1 and the head train, and only they are in AdamW's groups."""
    cfg = train.resolve(train.parse_args(["--device", "cpu", "--init", "random", "--model", str(tiny_dir),
                                          "--max-len", "64", "--freeze-layers", "1"]))
    model, _ = train_model.build_model(cfg)
    logits = model(torch.randint(5, 50, (2, 8)), torch.ones(2, 8, dtype=torch.long))  # (B, 2)
    logits.sum().backward()
    frozen = ("encoder.embeddings.", "encoder.layers.0.")
    for name, p in model.named_parameters():
        assert (p.grad is None) == name.startswith(frozen), name
    in_optimizer = {id(p) for g in train_model.make_optimizer(model, cfg).param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for name, p in model.named_parameters() if not name.startswith(frozen)}


# ---------------------------------------------------------------------------------------------------------------
# --layer-decay
# ---------------------------------------------------------------------------------------------------------------

def test_layer_decay_gives_each_depth_its_rate(tiny_config):
    """--layer-decay 0.5 on 2 layers: embeddings at lr x 0.25, layer 0 at lr x 0.5, the top layer at lr, the head
    at --head-lr; matrices decay, vectors do not; every trainable parameter is in exactly one group."""
    cfg = train.resolve(train.parse_args(["--device", "cpu", "--lr", "1e-3", "--head-lr", "1e-2",
                                          "--layer-decay", "0.5"]))
    model = minibert.build_classifier(tiny_config.with_(num_labels=2))
    optimizer = train_model.make_optimizer(model, cfg)
    groups = [(id(p), g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(i for i, _, _ in groups) == sorted(id(p) for p in model.parameters())
    lr, decay = {i: lr for i, lr, _ in groups}, {i: wd for i, _, wd in groups}
    for name, p in model.named_parameters():
        depth = (0.25 if name.startswith("encoder.embeddings.") else 0.5 if name.startswith("encoder.layers.0.")
                 else 1.0 if name.startswith("encoder.layers.1.") else None)
        assert lr[id(p)] == pytest.approx(1e-2 if depth is None else 1e-3 * depth, rel=1e-12), name
        assert decay[id(p)] == (0.01 if p.dim() >= 2 else 0.0), name
