"""The benchmark reports what it could measure, whatever stops it.

A GPU call is short and cannot be repeated at will, and a full CPU run takes an hour: a candidate that fails to
compile or record, a round whose timing fails, or a run cut short must cost only the rows not yet measured.
The MFU harness (benchmarks/cuda.py `training_rows`) runs here on the CPU with a tiny model: the CUDA-only
candidates (CUDA graphs, whole-step graphs) then fail on their first call, which is the failure path.
"""

import json

import pytest
import torch

import bench
from benchmarks import common, cuda, mfu
from benchmarks.timing import Row
from test_benchmark_steps import VOCAB, tiny_model


@pytest.fixture
def tiny(monkeypatch):
    """training_rows on a tiny random model instead of the named checkpoint's architecture."""
    monkeypatch.setattr(common, "build_ours", lambda name, device="cpu", pretrained=True: tiny_model(device))
    return common.random_batch(2, 16, vocab_size=VOCAB)


PEAKS = [mfu.Peak("a made-up peak of 100 TFLOP/s", 100.0, mfu.GOAL)]


def names(rows: list[Row]) -> list[str]:
    return [row.name.split(": ", 1)[-1] for row in rows]


def test_every_candidate_that_runs_gets_a_row_and_the_others_are_reported(tiny, capsys):
    emitted = []  # what bench.py would write to --json, batch by batch
    rows = cuda.training_rows(common.MINILM, tiny, warmup=1, repeats=1, compile=False, peaks=PEAKS,
                              device="cpu", steps_per_call=1, emit=emitted.append)
    out = capsys.readouterr().out
    assert sum(emitted, []) == rows and len(emitted) == 1  # the round's rows with its best one's summary
    step_rows = [n for n in names(rows) if n.endswith("vs transformers sdpa")]
    assert step_rows == ["minibert vs transformers sdpa", "minibert fast vs transformers sdpa"]
    assert "minibert fast + CUDA graphs: FAILED, row skipped" in out  # CUDA only
    assert "fast paths vs default path" in names(rows)
    summary = [row for row in rows if "(best minibert)" in row.name]  # the best candidate's
    assert [row.unit for row in summary] == ["samples/s", "TFLOP/s", "TFLOP/s", "%", "%"]
    goal_row, blocks_row = summary[-2:]  # MFU in transformers' count, then with the encoder blocks alone
    assert goal_row.goal == mfu.GOAL and "made-up peak" in goal_row.name
    count = {blocks: mfu.step_flops(tiny_model(), 2, 16, blocks_only=blocks) for blocks in (False, True)}
    assert blocks_row.minibert / goal_row.minibert == pytest.approx(count[True] / count[False])  # the head left out
    assert all(row.minibert > 0 and row.reference > 0 for row in rows)


def test_the_candidates_that_could_reach_the_goal_are_timed_first_and_recordings_last_in_a_round(tiny):
    rounds = cuda.candidates(tiny_model(), tiny, steps_per_call=1, compile=True, autotune=False)
    assert len(rounds) == 2
    goal, others = (list(round_) for round_ in rounds)
    assert "minibert fast + compile reduce-overhead + bf16 residual" in goal  # the best before whole-step graphs
    assert any("whole-step graph + clip in AdamW" in name for name in goal)
    assert "minibert" in others and not set(goal) & set(others)
    for names_ in (goal, others):  # a recording that fails (and may leave a CUDA error) comes after the rest
        recorded = ["whole-step" in name for name in names_]
        assert recorded == sorted(recorded), names_


def test_a_process_records_at_most_one_whole_step_graph(tiny, capsys):
    """Two whole-step graphs alive in one process crashed it on the H200 (a segfault in CUDAGraph.replay, torch 2.11,
    2026-11-26, docs/results/crash_h200_two_whole_step_graphs.txt): the default rounds hold one, any other runs
    alone by name (bench.py --mfu-only), and two asked for at once are refused before anything is built."""
    for compile, recorded in ((False, 0), (True, 1)):  # without compile: the MiniLM part, beside its CUDA graphs
        rounds = cuda.candidates(tiny_model(), tiny, 1, compile=compile, autotune=True)
        assert sum(cuda.WHOLE_STEP in name for round_ in rounds for name in round_) == recorded
    alone = f"minibert fast + compile + bf16 residual + {cuda.WHOLE_STEP} + compiled clip and AdamW"
    picked = cuda.candidates(None, None, 1, True, False, only=[alone, "minibert fast", alone])
    assert [list(r) for r in picked] == [["minibert fast", alone]]  # once each, the recording last
    default_one = next(name for round_ in rounds for name in round_ if cuda.WHOLE_STEP in name)
    with pytest.raises(ValueError, match="at most one"):
        cuda.candidates(None, None, 1, True, False, only=[default_one, alone])
    with pytest.raises(SystemExit, match="unknown MFU candidate"):  # and the message lists the names
        bench.main(["--cuda-only", "--mfu-only", "minibert fast + compil"])
    for flags in (["--cuda-only", "--cuda-parts", "minilm"], []):  # the mfu part not asked for; the CPU sections
        with pytest.raises(SystemExit, match="use it with --cuda-only --cuda-parts mfu"):
            bench.main([*flags, "--mfu-only", alone])
    assert not capsys.readouterr().out  # refused before the run began: nothing measured, nothing printed


def breaks_on_call(n: int, error: Exception):
    """A step that works n - 1 times (its first call, which compiles or records, passes), then raises."""
    calls = {"n": 0}

    def step():
        calls["n"] += 1
        if calls["n"] >= n:
            raise error
    return step


def test_a_candidate_that_fails_while_timed_costs_only_its_own_row(tiny, monkeypatch, capsys):
    monkeypatch.setattr(cuda, "candidates", lambda *args: [
        {"good": lambda: lambda: torch.ones(1)},
        {"breaks": lambda: breaks_on_call(2, RuntimeError("out of memory")), "fine": lambda: lambda: None}])
    rows = cuda.training_rows(common.MINILM, tiny, warmup=1, repeats=2, compile=False, peaks=PEAKS,
                              device="cpu", steps_per_call=1)
    out = capsys.readouterr().out
    assert "breaks: FAILED while timed, row skipped" in out
    assert [n for n in names(rows) if n.endswith("sdpa")] == ["good vs transformers sdpa", "fine vs transformers sdpa"]
    assert not any("breaks" in n for n in names(rows))
    assert rows[-1].unit == "%"


def test_a_cuda_error_that_stays_set_keeps_the_rounds_before_it(tiny, monkeypatch, capsys):
    """The second round's candidate passes its first call, then leaves an error that every later sync raises
    (as an illegal memory access does on a GPU): the first round's rows and the MFU rows of its best remain."""
    poisoned = {"yes": False}

    def sync():
        if poisoned["yes"]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def poisons():
        calls = breaks_on_call(2, RuntimeError("CUDA error: an illegal memory access was encountered"))

        def step():
            try:
                calls()
            except RuntimeError:
                poisoned["yes"] = True
                raise
        return step

    monkeypatch.setattr(cuda, "sync_for", lambda device: sync)
    monkeypatch.setattr(cuda, "candidates", lambda *args: [{"good": lambda: lambda: torch.ones(1)},
                                                           {"poisons": poisons}])
    rows = cuda.training_rows(common.MINILM, tiny, warmup=1, repeats=1, compile=False, peaks=PEAKS,
                              device="cpu", steps_per_call=1)
    out = capsys.readouterr().out
    assert "timing this round FAILED" in out
    assert "good vs transformers sdpa" in names(rows)
    assert not any("poisons" in n for n in names(rows))
    assert "best minibert after round 1: good" in out
    assert rows[-1].unit == "%"


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
