"""Turn train.py run folders into the markdown table of docs/adapt.md: never type a result by hand.

    python docs/make_results.py runs/exp/*                                  # print the table
    python docs/make_results.py runs/exp/* --out docs/results.md            # write it as a page
    python docs/make_results.py runs/exp/a runs/exp/b --into docs/input-format.md --section special-tokens

Each folder must hold run_config.json (what was asked) and report.json (what was measured; written when a run
finishes). One row per folder, in the order given. `--into PAGE --section NAME` replaces the lines between
`<!-- results:NAME -->` and `<!-- /results:NAME -->` in PAGE, so the table lives inside the page that discusses it.

A comparison is only fair on the same data, seed and budget: the settings below (DATA_SETTINGS) are checked, those
shared by every run are listed under the table, and any that differ are named there in bold.
"""

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

# Settings that must agree for rows to compare (beyond the columns, which are meant to differ).
# The learning rate is a column instead: train.py's default depends on the method (1e-4 full, 1e-3 otherwise).
DATA_SETTINGS = ("data", "train_samples", "val_samples", "eval_samples", "seed", "max_len", "truncation", "epochs",
                 "batch_size", "grad_accum", "warmup", "n_train", "n_val", "n_test")
COLUMNS = ("run", "model (init)", "method", "lr", "pooling", "[CLS]/[SEP]", "val acc.", "test acc.",
           "trainable params", "weight memory", "peak memory", "train time", "machine")


class ResultsError(ValueError):
    """A run folder that cannot be reported; the message names it and says why."""


def read_run(folder: Path) -> dict:
    """run_config.json and report.json of one run folder merged into one dict (the report's keys win)."""
    config, report = folder / "run_config.json", folder / "report.json"
    if not config.is_file():
        raise ResultsError(f"{folder} is not a train.py run folder (no run_config.json)")
    if not report.is_file():
        raise ResultsError(f"{folder} has no report.json: the run has not finished "
                           f"(continue it with `python train.py --resume {folder}`)")
    try:
        return {**json.loads(config.read_text()), **json.loads(report.read_text()), "folder": folder}
    except json.JSONDecodeError as err:
        raise ResultsError(f"{folder}: a JSON file is not valid: {err}") from None


def method(run: dict) -> str:
    """'full', 'head only', 'LoRA r=8 (q_lin,v_lin)', 'QLoRA r=8, NF4 + double quant'."""
    if run["method"] in ("lora", "qlora"):
        targets = run.get("lora_targets") or "q,v"
        text = f"LoRA r={run['lora_r']} alpha={run['lora_alpha']:g} ({targets})"
        if run["method"] == "qlora":
            text = "Q" + text + ", NF4 base" + (" + double quant" if run.get("double_quant") else "")
        return text
    return {"full": "full fine-tuning", "head": "head only"}.get(run["method"], run["method"])


def row(run: dict) -> list[str]:
    trainable, total = run["trainable_params"], run["total_params"]
    minutes = run["train_seconds"] / 60
    return [
        f"`{run['folder'].name}`",
        f"{Path(run['model']).name} ({run['init']})",
        method(run),
        f"{run['lr']:g}",
        run["pooling"],
        "yes" if run.get("special_tokens", True) else "**no**",
        f"{100 * run['val_accuracy']:.2f}%",
        f"{100 * run['test_accuracy']:.2f}%",
        f"{trainable:,} ({100 * trainable / total:.2f}%)",
        f"{run['weight_memory_mb']:.1f} MB",
        f"{run['peak_memory_mb']:,.0f} MB",
        f"{run['train_seconds']:.0f} s ({minutes:.1f} min, {run['steps']} steps)",
        run["device"] + (f" x {run['processes']}" if run.get("processes", 1) > 1 else ""),
    ]


def settings_note(runs: list[dict]) -> str:
    """Lines under the table: the settings all runs share, and (in bold) those that differ."""
    shared, differ = [], []
    for name in DATA_SETTINGS:
        values = [run.get(name) for run in runs]
        if all(v == values[0] for v in values):
            shared.append(f"{name}={values[0]}")
        else:
            differ.append(f"{name}: " + ", ".join(f"{run['folder'].name}={run.get(name)}" for run in runs))
    lines = ["Shared by every row: " + ", ".join(shared) + "."]
    if differ:
        lines.append("**Not comparable: these settings differ between rows:** " + "; ".join(differ) + ".")
    return "\n".join(lines)


def table(folders: list[Path], command: str) -> str:
    """The markdown table (plus the settings note, and the `command` that regenerates it) for these run folders."""
    if not folders:
        raise ResultsError("give at least one run folder")
    runs = [read_run(Path(f)) for f in folders]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * 3 + "---:|" + "---|" * 2 + "---:|" * 6 + "---|"]
    lines += ["| " + " | ".join(row(run)) + " |" for run in runs]
    return "\n".join(lines) + "\n\n" + settings_note(runs) + f"\nGenerated by `{command}`.\n"


def replace_section(page: Path, section: str, text: str) -> None:
    """Put `text` between the page's `<!-- results:section -->` and `<!-- /results:section -->` lines."""
    source = page.read_text()
    pattern = re.compile(rf"(<!-- results:{re.escape(section)} -->\n).*?(<!-- /results:{re.escape(section)} -->)",
                         re.DOTALL)
    if not pattern.search(source):
        raise ResultsError(f"{page} has no section '{section}': add the two lines "
                           f"<!-- results:{section} --> and <!-- /results:{section} --> where the table goes")
    page.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), source, count=1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="train.py run folders, one row each, in this order")
    parser.add_argument("--out", type=Path, help="write a markdown page holding the table (e.g. docs/results.md)")
    parser.add_argument("--into", type=Path, help="a markdown page whose results section receives the table")
    parser.add_argument("--section", default="experiments", help="with --into: the section's name")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    try:
        text = table(args.runs, "python docs/make_results.py " + " ".join(map(shlex.quote, argv)))
        if args.into:
            replace_section(args.into, args.section, text)
            print(f"updated section '{args.section}' of {args.into}")
        if args.out:
            args.out.write_text("# Results\n\nGenerated from the run folders' report.json and run_config.json; "
                                "do not edit by hand.\n\n" + text)
            print(f"wrote {args.out}")
        if not (args.into or args.out):
            print(text, end="")
    except (ResultsError, OSError) as err:
        parser.error(str(err))  # one line and exit code 2, no traceback


if __name__ == "__main__":
    sys.exit(main())
