"""torchrun: 2 CPU processes (gloo) compute the step one process computes with twice the batch, and write one run.

Dropout is off in the tiny model so the comparison is exact up to the order of the gradient all-reduce's sums.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import minibert
from minibert.config import write_config

REPO = Path(__file__).resolve().parents[1]
NO_DROPOUT = minibert.Config(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128,
                             dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, imdb_dir):
    """The same one-step job (16 reviews, --no-bucket so both cut the same shuffled order), run by a single
    process and by torchrun with 2 processes (8 reviews each). The 2-process run names no --out."""
    return one_and_two_processes(tmp_path_factory.mktemp("ddp"), imdb_dir, train_samples=16)


def one_and_two_processes(root, imdb_dir, train_samples: int):
    write_config(NO_DROPOUT, root / "tiny")
    common = ["--data", str(imdb_dir), "--init", "random", "--model", str(root / "tiny"), "--train-samples",
              str(train_samples), "--val-samples", "4", "--eval-samples", "10", "--max-len", "64", "--batch-size",
              "16", "--epochs", "1", "--no-bucket", "--lr", "1e-3", "--warmup", "0", "--device", "cpu",
              "--precision", "fp32"]  # bf16 matmuls would round the two runs' sums differently
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(REPO / "train.py"), *common, "--out", str(root / "single")],
                            cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout + single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(REPO / "train.py"), *common], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    assert double.returncode == 0, double.stdout + double.stderr
    return root, double.stdout


def test_two_ranks_equal_one_process_with_double_batch(runs):
    """After one optimizer step, 2 ranks x 8 reviews give the weights of 1 process x 16 reviews (within 1e-6)."""
    assert_same_step(*runs)


def test_ranks_with_unequal_batches_still_average_over_every_review(tmp_path, imdb_dir):
    """14 training reviews: one process trains on all 14 at once; of 2 ranks, one gets 8 and the other 6. The
    step must be the mean over the 14 reviews, not the mean of the two ranks' means (which moved weights 2e-3
    away; dividing by 7 on each rank instead of 14 once leaves rounding of ~1e-6 that Adam's first step keeps)."""
    assert_same_step(*one_and_two_processes(tmp_path, imdb_dir, train_samples=14), atol=1e-5)


def assert_same_step(root, _, atol: float = 1e-6):
    [double] = (root / "runs").iterdir()
    ours = load_file(double / "model" / "model.safetensors")
    reference = load_file(root / "single" / "model" / "model.safetensors")
    assert ours.keys() == reference.keys()
    for key, tensor in reference.items():
        torch.testing.assert_close(ours[key], tensor, atol=atol, rtol=0, msg=key)
    # ... and that step really happened: Adam holds moments after exactly one step, in both runs.
    for run in (double, root / "single"):
        optimizer = torch.load(run / "checkpoint.pt", weights_only=True)["optimizer"]
        assert {int(s["step"]) for s in optimizer["state"].values()} == {1}


def test_two_process_run_writes_one_complete_run_folder(runs):
    """Rank 0 alone writes: one timestamped folder (the name is broadcast), a report that counts 2 processes and
    evaluates every test review once (counts summed across ranks), and one set of log lines (one validation)."""
    root, stdout = runs
    folders = list((root / "runs").iterdir())
    assert len(folders) == 1
    report = json.loads((folders[0] / "report.json").read_text())
    assert report["processes"] == 2 and report["steps"] == 1
    assert sum(map(sum, report["test_confusion"])) == 10  # every test review counted exactly once
    assert stdout.count("step 1/1: val loss") == 1
