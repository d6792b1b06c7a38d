"""Every command a user runs refuses bad input the same way: `error: <one line>` on stderr, exit status 2, no
traceback, and nothing written. One table across the entry points; each row is a mistake a user makes.

The commands: train.py (`minibert-train`), `python -m minibert.predict` (`minibert-predict`), the coursework kit,
the attention viewer, the tokenizer viewer, bench.py and the two benchmark scripts. Deeper checks of each live
beside their code's tests: test_train_checks.py, test_predict.py (its input files), test_refusals_on_load.py."""

import json
from pathlib import Path

import pytest

import bench
import lora
import quant
import train
from benchmarks import imdb_job
from minibert import coursework, predict, tokenizer, viz
from conftest import REPO
from minibert.errors import run_cli

ALSO = (lora.AdapterError, quant.QuantError)  # what train.py and bench.py add to minibert's UserError


def a_run_folder(folder: str) -> str:
    """A folder that looks like a run to a careless eye: a run_config.json, no model."""
    run = Path(folder) / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps({"seed": 0}))
    return str(run)


# (command, argv built from tmp_path, a fragment the one-line message must hold)
CASES = {
    # train.py: flags checked before anything is read or written
    "train: negative warmup": (train.main, lambda t: ["--warmup", "-0.1"], "--warmup"),
    "train: warmup of 1": (train.main, lambda t: ["--warmup", "1"], "[0, 1)"),
    "train: zero batch": (train.main, lambda t: ["--batch-size", "0"], "--batch-size"),
    "train: zero eval batch": (train.main, lambda t: ["--eval-batch-size", "0"], "--eval-batch-size"),
    "train: negative weight decay": (train.main, lambda t: ["--weight-decay", "-1"], "--weight-decay"),
    "train: nan lr": (train.main, lambda t: ["--lr", "nan"], "--lr"),
    "train: zero lr": (train.main, lambda t: ["--lr", "0"], "--lr"),
    "train: lr that is no number": (train.main, lambda t: ["--lr", "fast"], "--lr"),
    "train: a flag that does not exist": (train.main, lambda t: ["--learning-rate", "1e-4"], "--learning-rate"),
    "train: a device it does not know": (train.main, lambda t: ["--device", "tpu"], "--device"),
    "train: zero validations": (train.main, lambda t: ["--validations", "0"], "--validations"),
    "train: val samples all": (train.main, lambda t: ["--val-samples", "all"], "--val-samples"),
    "train: dropout of 1": (train.main, lambda t: ["--dropout", "1"], "--dropout"),
    "train: layer decay 0": (train.main, lambda t: ["--layer-decay", "0"], "--layer-decay"),
    "train: negative frozen layers": (train.main, lambda t: ["--freeze-layers", "-1"], "--freeze-layers"),
    "train: every layer frozen": (train.main, lambda t: ["--freeze-layers", "6", "--data", t], "--freeze-layers"),
    "train: accumulation not dividing": (train.main, lambda t: ["--batch-size", "16", "--grad-accum", "3"],
                                         "--grad-accum"),
    "train: cls-only with mean pooling": (train.main, lambda t: ["--cls-only", "--pooling", "mean"], "--pooling cls"),
    "train: graphs on the cpu": (train.main, lambda t: ["--cuda-graphs", "--device", "cpu"], "--device cuda"),
    "train: lora targets without lora": (train.main, lambda t: ["--lora-targets", "q_lin"], "--method lora"),
    "train: lora targets that match nothing": (train.main, lambda t: ["--method", "lora", "--lora-targets", "q_lni",
                                                                      "--data", t], "matches no module"),
    "train: lora targets that are no linear layer": (train.main, lambda t: ["--method", "lora", "--lora-targets",
                                                                            "sa_layer_norm", "--data", t],
                                                     "not an nn.Linear"),
    "train: negative seed": (train.main, lambda t: ["--seed", "-1"], "--seed"),
    "train: longer than the positions": (train.main, lambda t: ["--max-len", "1000", "--data", t], "positions"),
    "train: pad multiple past max len": (train.main, lambda t: ["--pad-multiple", "600"], "--pad-multiple"),
    "train: no such data folder": (train.main, lambda t: ["--data", f"{t}/nowhere"], "nowhere"),
    "train: resume of nothing": (train.main, lambda t: ["--resume", f"{t}/nowhere"], "nowhere"),
    "train: resume with a flag": (train.main, lambda t: ["--resume", t, "--epochs", "3"], "--epochs"),
    # predict
    "predict: no such run": (predict.main, lambda t: [f"{t}/nowhere", "great film"], "nowhere"),
    "predict: a folder that is no run": (predict.main, lambda t: [t, "great film"], "run"),
    "predict: an unfinished run": (predict.main, lambda t: [a_run_folder(t), "great film"], "run"),
    "predict: nothing given": (predict.main, lambda t: [], "required: run"),
    "predict: batch that is no number": (predict.main, lambda t: ["all-MiniLM-L6-v2", "a", "--batch-size", "x"],
                                         "--batch-size"),
    "predict: zero batch": (predict.main, lambda t: ["all-MiniLM-L6-v2", "a", "--batch-size", "0"], "--batch-size"),
    "predict: max len of 1": (predict.main, lambda t: ["all-MiniLM-L6-v2", "a", "--max-len", "1"], "--max-len"),
    # the coursework kit
    "coursework: student copy inside the repo": (coursework.main, lambda t: ["student", str(REPO / "x")],
                                                 "outside"),
    "coursework: unknown assignment": (coursework.main, lambda t: ["student", f"{t}/copy", "--only", "nope"], "nope"),
    "coursework: grade an empty folder": (coursework.main, lambda t: ["grade", t], "not a minibert repository"),
    "coursework: no such command": (coursework.main, lambda t: ["mark", t], "mark"),
    "coursework: grade no such folder": (coursework.main, lambda t: ["grade", f"{t}/nowhere"], "nowhere"),
    # the viewers
    "viz: no such model": (viz.main, lambda t: ["attention", f"{t}/nowhere", "a text"], "nowhere"),
    "viz: query past the text": (viz.main, lambda t: ["attention", "all-MiniLM-L6-v2", "a text", "--query", "99"],
                                 "--query"),
    "viz: max length of 1": (viz.main, lambda t: ["attention", "all-MiniLM-L6-v2", "a", "--max-length", "1"],
                             "--max-length"),
    "viz: no such view": (viz.main, lambda t: ["heatmap", "all-MiniLM-L6-v2", "a text"], "heatmap"),
    "tokenizer: no such model": (tokenizer.main, lambda t: ["--model", f"{t}/nowhere", "a text"], "nowhere"),
    "tokenizer: max length of 0": (tokenizer.main, lambda t: ["--max-length", "0", "a text"], "--max-length"),
    # benchmarks
    "bench: no such data folder": (bench.main, lambda t: ["--only", "epoch", "--data", f"{t}/nowhere"], "nowhere"),
    "bench: threads that are no number": (bench.main, lambda t: ["--threads", "two"], "--threads"),
    "bench: negative threads": (bench.main, lambda t: ["--threads", "-2"], "--threads"),
    "imdb_job: unknown variant": (imdb_job.main, lambda t: ["--data", t, "--order", "graphs,fastest"], "fastest"),
    "imdb_job: no such data folder": (imdb_job.main, lambda t: ["--data", f"{t}/nowhere"], "nowhere"),
    "bench: unknown CUDA part": (bench.main, lambda t: ["--cuda-only", "--cuda-parts", "train,mfu"], "mfu"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_mistake_is_one_line_and_exit_2(case, tmp_path, capsys):
    main, argv, fragment = CASES[case]
    args = argv(str(tmp_path))
    before = sorted(tmp_path.rglob("*"))
    status = run_cli(main, args, also=ALSO)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before  # refused before anything was written


def test_the_table_covers_every_entry_point():
    commands = {main for main, _, _ in CASES.values()}
    assert commands == {train.main, predict.main, coursework.main, viz.main, tokenizer.main, bench.main,
                        imdb_job.main}
    assert len(CASES) >= 40
