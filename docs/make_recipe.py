"""The table and the figure of docs/defaults.md, rebuilt from committed run summaries: never typed by hand.

    python docs/make_recipe.py docs/results/recipe/*                      # print the table
    python docs/make_recipe.py docs/results/recipe/* --into docs/defaults.md --section candidates \
        --plot docs/figures/recipe.png

Each folder holds what train.py wrote and is small enough to commit: run_config.json (what was asked), report.json
(what was measured) and metrics.jsonl. Runs that differ only in their seed are one candidate: one row, with the
mean and the spread (min-max) over its seeds. A candidate is named by the settings in which it differs from the
others; the settings every run shares are listed under the table. Dev is the development split carved from the
train reviews (the recipe was chosen on it); test is the held-out test reviews (2,000 for the recipe; a run that
scored fewer than 1,000 shows "not scored").
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import make_results  # docs/make_results.py, beside this file: the run reader and the page's section markers

IGNORED = {"seed", "out", "resume", "overwrite", "debug", "data"}  # not part of what a candidate is
MIN_TEST = 1000  # fewer test reviews than this (a screening run's 16) is not a test score worth a column


def read_run(folder: Path) -> dict:
    """What was asked (run_config.json) and what was measured (report.json) kept apart: both have a `device`.
    make_results.read_run first refuses, by name, a folder that is not a finished run."""
    make_results.read_run(folder)
    config, report = (json.loads((folder / name).read_text()) for name in ("run_config.json", "report.json"))
    return {"config": config, "report": report, "folder": folder}


def candidates(runs: list[dict]) -> tuple[list[tuple[dict, list[dict]]], dict]:
    """[(how this candidate differs from the first run given, its runs)] in the order given, and the settings
    every run shares."""
    keys = sorted({k for run in runs for k in run["config"]} - IGNORED)
    shared = {k: runs[0]["config"].get(k) for k in keys if len({str(r["config"].get(k)) for r in runs}) == 1}
    baseline = runs[0]["config"]
    groups: dict[str, tuple[dict, list[dict]]] = {}
    for run in runs:
        own = {k: run["config"].get(k) for k in keys if str(run["config"].get(k)) != str(baseline.get(k))}
        groups.setdefault(json.dumps(own, sort_keys=True), (own, []))[1].append(run)
    return list(groups.values()), shared


def spread(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}"
    return (f"{scale * statistics.mean(values):.{digits}f} ({scale * min(values):.{digits}f}-"
            f"{scale * max(values):.{digits}f})")


def table(runs: list[dict], memory: bool = False) -> str:
    """One row per candidate; `memory` adds what trains and what the weights and the process take."""
    groups, shared = candidates(runs)
    columns = ["run", "change from the first row", "seeds", "dev acc. %", "test acc. %", "wall s", "train s"]
    columns += ["trainable", "weights MB", "peak RSS MB"] if memory else []
    columns += ["machine"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    baseline = runs[0]["config"]
    for own, members in groups:
        name = ", ".join(f"{k}={v}" for k, v in own.items()) or "(the first row)"
        seeds = ",".join(str(m["config"]["seed"]) for m in members)
        dev = [m["report"]["val_accuracy"] for m in members]
        test = [m["report"]["test_accuracy"] for m in members if m["report"]["n_test"] >= MIN_TEST]
        wall = [m["report"]["wall_seconds"] for m in members if "wall_seconds" in m["report"]]
        train = [m["report"]["train_seconds"] for m in members]
        machines = sorted({m["report"]["device"] for m in members})
        folders = ", ".join(f"`{m['folder'].name}`" for m in members)
        row = (f"| {folders} | {name} | {seeds} | {spread(dev)} | {spread(test) if test else 'not scored'} | "
               f"{spread(wall, 1, 0) if wall else '-'} | {spread(train, 1, 0)} |")
        if memory:
            report = members[0]["report"]  # the same for every seed of a candidate, but the peak
            row += (f" {report['trainable_params']:,} of {report['total_params']:,} | {report['weight_memory_mb']:.1f} | "
                    f"{spread([m['report']['peak_memory_mb'] for m in members], 1, 0)} |")
        lines.append(row + f" {'; '.join(machines)} |")
    first = ", ".join(f"{k}={baseline.get(k)}" for k in sorted(set(baseline) - IGNORED - set(shared)))
    note = ", ".join(f"{k}={v}" for k, v in shared.items())
    first = f"\n\nThe first row: {first}." if first else ""
    return "\n".join(lines) + f"{first}\n\nShared by every row: {note}.\n"


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, _ = candidates(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for own, members in groups:
        label = ", ".join(f"{k}={v}" for k, v in own.items()) or "(all shared)"
        x = [m["report"]["wall_seconds"] / 60 for m in members if "wall_seconds" in m["report"]]
        y = [100 * m["report"]["val_accuracy"] for m in members if "wall_seconds" in m["report"]]
        ax.scatter(x, y, label=label[:60], s=22)
    ax.set_xlabel("wall time of the whole run, minutes (this CPU, imports to export)")
    ax.set_ylabel("dev accuracy, % (the split the recipe was chosen on)")
    ax.set_title("train.py candidates: accuracy against wall time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (report.json + run_config.json)")
    parser.add_argument("--into", type=Path, help="a docs page whose results section is replaced")
    parser.add_argument("--section", default="candidates")
    parser.add_argument("--plot", type=Path, help="write the accuracy-against-time figure here")
    parser.add_argument("--memory", action="store_true", help="add trainable parameters, weight memory and the "
                        "process's peak resident memory (RSS on a CPU)")
    args = parser.parse_args(argv)
    runs = [read_run(folder) for folder in args.runs]
    text = table(runs, args.memory)
    if args.into:
        make_results.replace_section(args.into, args.section, text)
    else:
        print(text)
    if args.plot:
        plot(runs, args.plot)


if __name__ == "__main__":
    try:
        main()
    except make_results.ResultsError as err:
        sys.exit(f"error: {err}")
