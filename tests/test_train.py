"""train.py really learns, survives SIGKILL and Ctrl-C bit for bit, stops on NaN, and leaves a complete run folder.

All runs use a tiny random DistilBERT (2 layers, dim 32) on a few hundred real IMDB reviews, so each takes seconds.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import minibert
from minibert.config import write_config
from minibert.errors import UserError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train  # noqa: E402
import train_loop  # noqa: E402
import train_model  # noqa: E402


def args_for(tiny_dir, imdb_dir, out, *extra) -> list[str]:
    """24 steps an epoch (192 reviews, batch 8), 2 epochs; validations at steps 12, 24, 36 and 48."""
    return ["--data", str(imdb_dir), "--init", "random", "--model", str(tiny_dir), "--pooling", "cls",
            "--train-samples", "192", "--val-samples", "48", "--eval-samples", "40", "--max-len", "64",
            "--batch-size", "8", "--epochs", "2", "--lr", "1e-3", "--save-every", "3", "--log-every", "1",
            "--device", "cpu", "--out", str(out), *extra]


def restore_ctrl_c() -> None:
    """A job started in the background of a non-interactive shell (as CI may run us) inherits SIGINT ignored, and
    Python then never raises KeyboardInterrupt. The child gets the default back, as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_train(args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=restore_ctrl_c, **kwargs)


def wait_for_step(run_dir: Path, proc: subprocess.Popen, step: int) -> None:
    """Poll metrics.jsonl until the run has logged `step` (it logs every step)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        path = run_dir / "metrics.jsonl"
        if path.exists():
            steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
            if steps and max(steps) >= step:
                return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}:\n{proc.stdout.read()}")
        time.sleep(0.005)
    raise AssertionError(f"step {step} not reached in time")


def comparable(run_dir: Path) -> tuple[bytes, dict, list]:
    """What must be identical between two runs: exported weights, report metrics, metrics.jsonl minus timings (and
    minus the report's note of whether the run was resumed)."""
    report = json.loads((run_dir / "report.json").read_text())
    timing = ("train_seconds", "loop_seconds", "test_eval_seconds", "median_step_seconds", "train_reviews_per_s",
              "peak_memory_mb", "wall_seconds", "resumed")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("reviews_per_s", None)
    return ((run_dir / "model" / "model.safetensors").read_bytes(),
            {k: v for k, v in report.items() if k not in timing}, lines)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_dir, imdb_dir) -> Path:
    """One uninterrupted run: the yardstick for the resumed ones."""
    out = tmp_path_factory.mktemp("runs") / "uninterrupted"
    proc = run_train(args_for(tiny_dir, imdb_dir, out))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    return out


def test_run_folder_is_complete_and_model_loads_in_transformers(reference_run):
    """The run folder holds config, metrics, report, figures and a model that transformers loads with our logits."""
    import transformers as hf

    for name in ("run_config.json", "metrics.jsonl", "report.json", "curves.png", "confusion.png",
                 "checkpoint.pt", "model/config.json", "model/model.safetensors", "model/tokenizer.json"):
        assert (reference_run / name).is_file(), name
    report = json.loads((reference_run / "report.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "train_seconds", "trainable_params", "total_params", "peak_memory_mb"):
        assert key in report
    ours = minibert.load_classifier(reference_run / "model")
    assert ours.config.labels == ("negative", "positive")  # the class names travel in config.json
    theirs = hf.AutoModelForSequenceClassification.from_pretrained(reference_run / "model").eval()
    assert theirs.config.id2label == {0: "negative", 1: "positive"}
    assert hf.AutoTokenizer.from_pretrained(reference_run / "model").model_max_length == 128  # tested at: every position
    batch = minibert.load_tokenizer(reference_run / "model")(["a fine film", "dull, dull, dull"], max_length=64)
    with torch.no_grad():
        torch.testing.assert_close(ours(batch["input_ids"], batch["attention_mask"]),
                                   theirs(**batch).logits, atol=1e-5, rtol=0)


def test_sigkill_then_resume_is_bitwise_identical(tmp_path, tiny_dir, imdb_dir, reference_run):
    """A run killed with SIGKILL mid-epoch and resumed ends with exactly the weights and metrics of an
    uninterrupted run: weights, optimizer, schedule, RNG and data position all come back."""
    out = tmp_path / "killed"
    proc = run_train(args_for(tiny_dir, imdb_dir, out))
    wait_for_step(out, proc, 5)  # epoch 1 has 24 steps; 5 is past a checkpoint (step 3), mid-epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "report.json").exists()
    resumed = run_train(["--resume", str(out)])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "resumed at epoch 1" in output
    assert comparable(out) == comparable(reference_run)


def test_ctrl_c_saves_and_resume_is_bitwise_identical(tmp_path, tiny_dir, imdb_dir, reference_run):
    """Ctrl-C (SIGINT) saves a checkpoint at the last finished step and exits with 130; resuming matches too."""
    out = tmp_path / "interrupted"
    proc = run_train(args_for(tiny_dir, imdb_dir, out))
    wait_for_step(out, proc, 28)  # in the second epoch
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "--resume" in output
    resumed = run_train(["--resume", str(out)])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert comparable(out) == comparable(reference_run)


# train.py run with a Ctrl-C sent from inside the process at an exact point, where a signal from outside would land
# only by chance: right after AdamW's 28th update (before the loop has counted that step), or while the checkpoint
# at the end of epoch 1 is being written (step 24).
CTRL_C_AT = {
    "optimizer step": """
import torch
update = torch.optim.AdamW.step
def step(self, *args, **kwargs):
    out = update(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == 28:
        os.kill(os.getpid(), signal.SIGINT)
    return out
torch.optim.AdamW.step = step
""",
    "end-of-epoch checkpoint": """
from minibert.training import train_state
save = train_state.save
def save_with_ctrl_c(run_dir, **state):
    if (state["epoch"], state["batch"]) == (1, 0) and not calls:
        calls.append(1)
        os.kill(os.getpid(), signal.SIGINT)
    return save(run_dir, **state)
train_state.save = save_with_ctrl_c
"""}
# Every AdamW update leaves an infinite weight, as an overflowing update would (a finite --lr cannot: float32 refuses
# a rate beyond its range, and --lr inf is refused up front). The step's loss, computed before the update, is finite.
BREAK_WEIGHTS = """
import torch
adamw_step = torch.optim.AdamW.step
def breaking_step(self, *args, **kwargs):
    out = adamw_step(self, *args, **kwargs)
    with torch.no_grad():
        self.param_groups[0]["params"][0].fill_(float("inf"))
    return out
torch.optim.AdamW.step = breaking_step
"""


def run_patched(patch: str, args) -> subprocess.CompletedProcess:
    """train.py with `args`, in a subprocess that first runs `patch` (Python source that sees os, signal and a list
    `calls`)."""
    program = ("import os, runpy, signal, sys\ncalls = []\n" + patch
               + "sys.argv = ['train.py', *sys.argv[1:]]\nrunpy.run_path('train.py', run_name='__main__')\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", program, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, preexec_fn=restore_ctrl_c)


@pytest.mark.parametrize("where", CTRL_C_AT)
def test_ctrl_c_at_the_worst_moment_still_resumes_bitwise_identical(tmp_path, tiny_dir, imdb_dir, reference_run,
                                                                   where):
    """Ctrl-C in the middle of a step's bookkeeping, or during the checkpoint that closes an epoch: the saved state
    must still be one the run passed through (no step done twice, no epoch skipped)."""
    out = tmp_path / "interrupted"
    proc = run_patched(CTRL_C_AT[where], args_for(tiny_dir, imdb_dir, out))
    assert proc.returncode == 130, proc.stdout + proc.stderr
    resumed = run_train(["--resume", str(out)])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert comparable(out) == comparable(reference_run)


def test_ctrl_c_between_log_lines_logs_the_steps_since_the_last_line(tmp_path, tiny_dir, imdb_dir):
    """--log-every 4, 4 steps an epoch, one validation (at the end), Ctrl-C after the 3rd update: steps 1-3 get a
    line of their own (marked interrupted) before the checkpoint, and the resumed run goes on from there: no step's
    loss is lost."""
    out = tmp_path / "interrupted"
    args = args_for(tiny_dir, imdb_dir, out, "--train-samples", "32", "--val-samples", "8", "--log-every", "4",
                    "--save-every", "100", "--validations", "1")
    proc = run_patched(CTRL_C_AT["optimizer step"].replace("28", "3"), args)
    assert proc.returncode == 130, proc.stdout + proc.stderr

    def train_lines():
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["type"] == "train"]
    assert [(line["step"], line.get("interrupted")) for line in train_lines()] == [(3, True)]
    train.main(["--resume", str(out)])
    assert [line["step"] for line in train_lines()] == [3, 4, 8]


def test_ctrl_c_after_an_update_that_broke_the_weights_stops_with_the_message_not_a_traceback(tmp_path, tiny_dir,
                                                                                             imdb_dir):
    """Update 1 breaks the weights and Ctrl-C comes right after it: the checkpoint that Ctrl-C asks for is refused,
    and the run ends as any diverged run does (exit 1, the message), with nothing saved."""
    out = tmp_path / "broken"
    args = args_for(tiny_dir, imdb_dir, out, "--log-every", "4", "--save-every", "100")
    proc = run_patched(BREAK_WEIGHTS + CTRL_C_AT["optimizer step"].replace("28", "1"), args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stopped: the weights became non-finite by step 1" in proc.stdout and "Traceback" not in proc.stderr
    assert not (out / "checkpoint.pt").exists()


def test_overwrite_of_a_folder_without_checkpoint_starts_a_fresh_metrics_file(tmp_path, tiny_dir, imdb_dir):
    """A run killed before its first checkpoint cannot be resumed; running again into its folder with --overwrite
    must not append to the lines the killed run left."""
    out = tmp_path / "again"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"type": "train", "step": 1, "loss": 9.0}\n' * 3)
    train.main(args_for(tiny_dir, imdb_dir, out, "--epochs", "1", "--train-samples", "32", "--val-samples", "8",
                        "--overwrite"))
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "train"]
    assert steps == list(range(1, len(steps) + 1)) and 9.0 not in [json.loads(line).get("loss") for line in
                                                                   (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("flags, message", [
    (["--grad-accum", "0"], "--grad-accum must be a whole number of at least 1"),
    (["--log-every", "0"], "--log-every must be a whole number of at least 1"),
    (["--epochs", "-1"], "--epochs must be a whole number of at least 1"),
    (["--batch-size", "-8"], "--batch-size must be a whole number of at least 1"),
    (["--val-samples", "0"], "--val-samples must be a whole number of at least 1"),
])
def test_bad_flags_fail_before_any_work_with_a_clear_message(flags, message):
    """resolve refuses an out-of-range flag with a UserError naming it (tests/test_train_checks.py has the rest)."""
    with pytest.raises(UserError, match=message):
        train.resolve(train.parse_args(["--device", "cpu", *flags]))


def test_lr_logged_is_the_one_the_step_used(reference_run):
    """metrics.jsonl's lr is the rate of the step it reports: the last step of a warmup + linear decay schedule
    trains with a small positive rate, not the 0 the schedule reaches after it."""
    train_lines = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()
                   if json.loads(line)["type"] == "train"]
    assert train_lines[-1]["lr"] > 0
    assert train_lines[0]["lr"] < train_lines[1]["lr"]  # warmup: the first step uses the smallest rate


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_dir, imdb_dir):
    """An absurd learning rate makes the loss non-finite: the run stops with a clear message and exit code 1,
    and the checkpoint on disk is the last one written before that (finite weights)."""
    out = tmp_path / "diverged"
    proc = run_train(args_for(tiny_dir, imdb_dir, out, "--lr", "1e30", "--warmup", "0", "--clip", "0",
                              "--save-every", "1"))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output
    assert "loss became" in output and "last good checkpoint" in output
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_weights_broken_by_an_update_are_never_checkpointed(tmp_path, tiny_dir, imdb_dir):
    """The first update breaks the weights while that step's loss (computed before it) is still finite: the run
    must stop rather than save those weights as a checkpoint to resume from."""
    out = tmp_path / "broken"
    proc = run_patched(BREAK_WEIGHTS, args_for(tiny_dir, imdb_dir, out, "--save-every", "1"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "weights became non-finite by step 1" in proc.stdout and "No checkpoint had been written yet" in proc.stdout
    assert not (out / "checkpoint.pt").exists()


def test_every_step_loss_is_logged_once_even_when_checkpoints_fall_between_log_lines(tmp_path, tiny_dir, imdb_dir):
    """--log-every 4 with a checkpoint every 3 steps, 4 steps an epoch, one validation: lines at the checkpoints
    (3, 6) and at the log points and epoch ends (4, 8). Each line averages the steps since the one before, so no
    step's loss is dropped from the curve (a checkpoint step used to consume the losses it checked without writing
    them)."""
    out = tmp_path / "logged"
    train.main(args_for(tiny_dir, imdb_dir, out, "--train-samples", "32", "--val-samples", "8", "--log-every", "4",
                        "--save-every", "3", "--validations", "1"))
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "train"]
    assert steps == [3, 4, 6, 8]


def test_resume_refuses_flags_it_would_ignore(reference_run):
    """--resume with a flag of the run's settings is refused, naming the flag: it would be ignored."""
    with pytest.raises(UserError, match="drop --epochs"):
        train.main(["--resume", str(reference_run), "--epochs", "3"])


def test_tiny_model_overfits_32_reviews(imdb_dir, tiny_dir):
    """The loop really learns: 32 reviews, memorised to 100% training accuracy."""
    cfg = train.resolve(train.parse_args(["--data", str(imdb_dir), "--init", "random", "--model", str(tiny_dir),
                                          "--train-samples", "32", "--val-samples", "8", "--eval-samples", "8",
                                          "--max-len", "64", "--batch-size", "8", "--lr", "3e-3", "--warmup", "0",
                                          "--device", "cpu", "--pooling", "cls"]))
    torch.manual_seed(0)
    model, tokenizer = train_model.build_model(cfg)
    data = train.prepare_imdb(cfg.data, tokenizer, max_len=64, train_samples=32, val_samples=8, eval_samples=8)
    assert len(data["train"]) == 32
    collate = train.Collator(tokenizer.pad_id)
    optimizer = train_model.make_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    batches = [list(range(i, i + 8)) for i in range(0, 32, 8)]
    before = train_loop.evaluate(model, data["train"], collate, cfg, "train")
    model.train()
    for _ in range(40):
        for indices in batches:
            train_loop.train_step(model, optimizer, schedule, [indices], data["train"], collate, cfg)
    after = train_loop.evaluate(model, data["train"], collate, cfg, "train")
    assert after["accuracy"] == 1.0 and after["loss"] < before["loss"] / 5, (before, after)


def test_cls_only_trains_the_same_weights(imdb_dir, tmp_path, tiny_config):
    """--cls-only (the last layer at [CLS] only) changes the work, not the training: without dropout, two runs end
    with the same weights and test loss. And it is refused with mean pooling, which reads every position."""
    from safetensors.torch import load_file

    no_dropout = tmp_path / "tiny"
    write_config(tiny_config.with_(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0), no_dropout)
    reports, weights = [], []
    for extra in ([], ["--cls-only"]):
        out = tmp_path / f"run{len(extra)}"
        reports.append(train.main(["--data", str(imdb_dir), "--init", "random", "--model", str(no_dropout),
                                   "--train-samples", "32", "--val-samples", "8", "--eval-samples", "16",
                                   "--max-len", "64", "--batch-size", "8", "--epochs", "1", "--lr", "1e-3",
                                   "--pooling", "cls", "--device", "cpu", "--out", str(out), *extra]))
        weights.append(load_file(out / "model" / "model.safetensors"))
    assert json.loads((tmp_path / "run1" / "run_config.json").read_text())["cls_only"] is True
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], atol=1e-5, rtol=1e-4, msg=name)
    assert abs(reports[1]["test_loss"] - reports[0]["test_loss"]) < 1e-5
    with pytest.raises(UserError, match="--cls-only needs --pooling cls"):
        train.resolve(train.parse_args(["--device", "cpu", "--cls-only", "--pooling", "mean"]))


def test_lora_run_writes_adapter_and_merged_model(tmp_path, tiny_dir, tiny_config, imdb_dir):
    """--method lora trains only the adapter and the head, and the run folder holds both the peft-format adapter
    (under the checkpoint's module names) and the merged model."""
    out = tmp_path / "lora"
    report = train.main(args_for(tiny_dir, imdb_dir, out, "--method", "lora", "--epochs", "1", "--train-samples", "32",
                                 "--val-samples", "8"))
    dim = tiny_config.dim
    lora_weights = tiny_config.n_layers * 2 * (dim * 8 + 8 * dim)  # q and v, r=8
    head = dim * dim + dim + dim * 2 + 2
    assert report["trainable_params"] == lora_weights + head
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert "distilbert.transformer.layer.0.attention.q_lin" in config["target_modules"]
    assert config["modules_to_save"] == ["pre_classifier", "classifier"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    merged = minibert.load_classifier(out / "model")
    assert not any("lora" in name for name in merged.state_dict())
