"""1. One training step of the classifier (forward + backward + clip + AdamW), minibert vs transformers.

Both sides hold the same weights (common.theirs_from: one safetensors file read by both), see the same batch of real
IMDB reviews (8 x 256 tokens by default, so some rows are padded), and run the same step function. transformers
runs with attn_implementation="sdpa" (its default) and, as a note, "eager" (the explicit formula).
One more row times train.py's `--cls-only` (minibert.model.set_cls_only: the last layer at [CLS] only, the one
position the head reads) against transformers.
`profile_step` prints where the time of one of our steps goes (torch.profiler, top ops by self time).
"""

import copy

from minibert.model import set_cls_only

from . import common
from .timing import Row, interleaved, median


def train_step_rows(model_name: str, batch: dict, warmup: int, repeats: int, eager: bool,
                    cls_only: bool) -> list[Row]:
    ours = common.build_ours(model_name)
    impls = ("sdpa", "eager") if eager else ("sdpa",)
    theirs = {impl: common.Logits(m) for impl, m in common.theirs_from(ours, impls).items()}
    candidates = {"minibert": common.stepper(ours, batch)}
    candidates |= {impl: common.stepper(m, batch) for impl, m in theirs.items()}
    if cls_only:
        candidates["minibert cls only"] = common.stepper(set_cls_only(copy.deepcopy(ours)), batch)
    seconds = {k: median(v) for k, v in interleaved(candidates, warmup, repeats).items()}
    B, T = batch["input_ids"].shape
    short = "MiniLM" if model_name == common.MINILM else "distilbert-base"
    rows = [Row(f"train step {short} {B}x{T} (fp32) vs transformers sdpa", seconds["minibert"], seconds["sdpa"],
                "s", "<= 1.0")]
    if eager:
        rows.append(Row(f"train step {short} {B}x{T} vs transformers eager (note)", seconds["minibert"],
                        seconds["eager"], "s", ""))
    if cls_only:
        rows.append(Row(f"train step {short} {B}x{T}: last layer at [CLS] only vs transformers sdpa",
                        seconds["minibert cls only"], seconds["sdpa"], "s", "<= 1.0"))
    return rows


def profile_step(model_name: str, batch: dict, top: int = 15) -> str:
    """The top ops of one minibert training step (after one warm-up step), as torch.profiler's table."""
    from torch.profiler import ProfilerActivity, profile

    step = common.stepper(common.build_ours(model_name), batch)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
