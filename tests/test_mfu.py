"""What the MFU rows count (benchmarks/mfu.py): the goal's own FLOP count and peaks, so its 45% is read as set.

The reference, transformers' distilbert-base step at 32 x 512 on one H200, is stated as "19.6 ms = 240 TFLOP/s,
counting 6 x non-embedding params x tokens + attention".
Which parameters are "non-embedding" moves the count by 1.24%: these tests pin it to transformers' own, which gives
that step 239.9 TFLOP/s (the encoder blocks alone, the FLOPs a step performs: 237.0).
"""

import json

import pytest
import torch

from benchmarks import common, mfu
from test_benchmark_steps import tiny_model


def distilbert_base_on_meta():
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        return common.build_ours(common.DISTILBERT, "meta", pretrained=False)


def test_the_reference_step_is_240_tflops_in_transformers_count_and_237_without_the_head():
    model = distilbert_base_on_meta()
    reference_seconds = 19.6e-3  # the reference: transformers' distilbert-base train step at 32 x 512 on one H200
    assert round(mfu.step_flops(model, 32, 512) / reference_seconds / 1e12) == 240
    assert round(mfu.step_flops(model, 32, 512, blocks_only=True) / reference_seconds / 1e12) == 237


@pytest.mark.parametrize("family", ["distilbert", "bert"])  # bert: token-type embeddings, a pooler as the head
def test_non_embedding_parameters_are_those_transformers_counts(family):
    ours = tiny_model() if family == "distilbert" else common.build_ours(common.MINILM, pretrained=False)
    theirs = common.theirs_from(ours)["sdpa"]
    expected = theirs.num_parameters(exclude_embeddings=True)
    assert mfu.non_embedding_params(ours) == expected
    assert mfu.non_embedding_params(theirs) == expected  # any nn.Module
    assert expected < sum(p.numel() for p in ours.parameters())


def test_the_goal_is_judged_on_790_tflops_on_an_h200_and_on_the_measured_peak_elsewhere():
    h200 = mfu.peaks("NVIDIA H200", measured=805.0)
    assert [(p.tflops, p.goal) for p in h200] == [(790.0, mfu.GOAL), (805.0, ""), (989.4, "")]
    for other in ("NVIDIA H100 80GB HBM3", "NVIDIA GH200 480GB", "NVIDIA H200 NVL"):  # not the goal's H200
        found = mfu.peaks(other, measured=700.0)
        assert found[0] == mfu.Peak("measured matmul peak 700 TFLOP/s", 700.0, mfu.GOAL)
        assert [p.tflops for p in found] == [700.0, 989.4]
    assert mfu.peaks("a GPU with no data sheet here", measured=50.0) == [
        mfu.Peak("measured matmul peak 50 TFLOP/s", 50.0, mfu.GOAL)]


def test_recorded_results_are_recounted_row_by_row(tmp_path):
    step = "CUDA train step distilbert-base 32x512 bf16: minibert fast + compile vs transformers sdpa"
    rows = [{"name": step, "minibert": 13.0, "reference": 19.6, "unit": "ms", "ratio": 13.0 / 19.6},
            {"name": "CUDA MFU distilbert-base 32x512 bf16 vs measured matmul peak 800 TFLOP/s (best minibert)",
             "minibert": 44.0, "reference": 30.0, "unit": "%", "ratio": 1.47},
            {"name": "CUDA train step MiniLM 32x256 bf16: minibert vs transformers sdpa", "minibert": 6.0,
             "reference": 14.0, "unit": "ms", "ratio": 0.43}]  # another model: not counted
    flash = {**rows[0], "name": step + " [flash attention]", "minibert": 13.5}  # bench.py --attention flash
    (tmp_path / "one.json").write_text(json.dumps({"meta": {}, "rows": rows}))
    (tmp_path / "many.json").write_text(json.dumps({"runs": [{"call": "K", "process": 1, "rows": [flash]}]}))
    (tmp_path / "report.json").write_text(json.dumps({"test_accuracy": 0.9}))  # a train.py report: no rows
    lines = mfu.recount([tmp_path / "one.json", tmp_path / "many.json", tmp_path / "report.json"])
    model = distilbert_base_on_meta()
    full, blocks = mfu.step_flops(model, 32, 512), mfu.step_flops(model, 32, 512, blocks_only=True)
    one, many, skipped = lines[2:]
    assert one.startswith("one.json ") and " minibert fast + compile " in one
    assert many.startswith("many.json K1 ") and " minibert fast + compile [flash attention] " in many
    assert skipped == "(no distilbert-base 32x512 step rows in: report.json)"
    tflops, strict = full / 13.0e-3 / 1e12, blocks / 13.0e-3 / 1e12
    assert f"{tflops:7.1f} {100 * tflops / 790:6.2f}% {100 * tflops / 800:6.2f}%" in one
    assert f"{strict:7.1f} {100 * strict / 790:6.2f}% |" in one
    assert f"{full / 13.5e-3 / 1e12:7.1f} {100 * full / 13.5e-3 / 1e12 / 790:6.2f}%       -" in many  # no peak timed
    assert one.endswith(f"19.60 ms {100 * full / 19.6e-3 / 1e12 / 790:6.2f}%")  # transformers: ~30%, as stated
