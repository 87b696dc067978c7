"""``trainer compare RUN... | SWEEP``: final metrics and key hyperparameters across runs.

For each run: ``summary.json`` (test accuracy and loss, best monitored
metric, steps) and ``config.yaml`` (read with a safe YAML loader). The table
shows the optimizer, learning rate and schedule of every run, plus every
other hyperparameter whose value differs between the runs (what a sweep
varied), sorted best first by the monitored metric. ``--plot`` draws the
monitored metric per epoch (``metrics.csv``) and the best value per run.
Pure Python (matplotlib only for ``--plot``): no TensorFlow.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from checkpoints import list_checkpoints, read_checkpoint
from checkpoints.layout import SUMMARY
from checkpoints.reading import read_bounded, read_mapping, read_run_summary
from trainer.errors import UserError
from trainer.exits import OK
from trainer.tools.finding import existing_path, find_runs
from trainer.tools.output import print_json, print_table
from trainer.tools.plots import add_force_argument, figure_output, pyplot, save_figure

NAME = "compare"
HELP = "compare the final metrics and hyperparameters of runs or a sweep"
DESCRIPTION = """\
Compare runs: final metrics (summary.json) and key hyperparameters
(config.yaml), best first by the monitored metric. Give run directories, or a
folder that holds runs (a sweep, or runs/).

examples:
  python -m trainer compare runs/2026-11-26/10-00-00
  python -m trainer compare runs/2026-11-26/10-00-00 runs/2026-11-26/11-30-00
  python -m trainer compare runs/ --plot runs.png --show dataset.batch_size"""

MAX_FILE_BYTES = 1 << 20
ALWAYS_SHOWN = ("optimizer.name", "optimizer.learning_rate", "schedule.name")
# Keys that say where or how a run was recorded, not what it trained.
NOT_HYPERPARAMETERS = (
    "checkpoint.",
    "paths.",
    "dataset.data_dir",
    "dataset.download",
    "dataset.cache",
    "imports",
    "resume",
    "model.keras_config",
    "resolved_schedule.",
    "trainer.log_every_n_steps",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", metavar="PATH", nargs="+", help="run directories or a folder of runs"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw the runs' monitored metric into FILE (.png, .pdf, .svg...)",
    )
    add_force_argument(parser, "--plot")
    parser.add_argument(
        "--show",
        metavar="KEY",
        action="append",
        default=[],
        help="a config key to show as a column even if it does not vary (repeatable)",
    )


def _read_yaml(path: Path) -> dict[str, Any] | None:
    """A run's config.yaml as plain data (``checkpoints.reading``), None if unsound."""
    try:
        return read_mapping(path, MAX_FILE_BYTES)
    except ValueError:
        return None


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def describe_run(run_dir: Path) -> dict[str, Any]:
    """One run's metrics and flattened config, from its files (no checkpoint is hashed)."""
    summary = read_run_summary(run_dir / SUMMARY)
    checkpoints = list_checkpoints(run_dir)
    scanned = (read_checkpoint(path) for path in checkpoints)
    manifests = [checkpoint.manifest for checkpoint in scanned if checkpoint.valid]
    config = _read_yaml(run_dir / "config.yaml")
    if config is None and checkpoints:
        config = _read_yaml(checkpoints[-1] / "config.yaml")
    config = config or {}
    checkpoint_cfg = config.get("checkpoint") if isinstance(config.get("checkpoint"), dict) else {}
    monitor = (summary or {}).get("monitor") or checkpoint_cfg.get("monitor")
    monitor = monitor if isinstance(monitor, str) else None
    mode = "min" if checkpoint_cfg.get("mode") == "min" else "max"
    best = (summary or {}).get("best")
    if best is None and monitor:  # an unfinished run: the best of its checkpoints so far
        values = [
            m["metrics"][monitor]
            for m in manifests
            if isinstance(m.get("metrics"), dict)
            and isinstance(m["metrics"].get(monitor), int | float)
        ]
        best = (max if mode == "max" else min)(values) if values else None
    flat = {
        key: value
        for key, value in flatten(config).items()
        if not any(key == p.rstrip(".") or key.startswith(p) for p in NOT_HYPERPARAMETERS)
    }
    return {
        "run": str(run_dir),
        "status": "finished" if summary else "unfinished",
        "monitor": monitor,
        "mode": mode,
        "best": best,
        "test_accuracy": (summary or {}).get("test_accuracy"),
        "test_loss": (summary or {}).get("test_loss"),
        "global_step": (summary or {}).get("global_step")
        or (manifests[-1]["global_step"] if manifests else None),
        "epochs_completed": (summary or {}).get("epochs_completed")
        or (manifests[-1].get("epochs_completed") if manifests else None),
        "wall_seconds": (summary or {}).get("wall_seconds"),
        "hyperparameters": flat,
        "history": _history(run_dir / "metrics.csv", monitor),
    }


def _history(path: Path, monitor: str | None) -> list[float]:
    """The monitored metric per epoch, from metrics.csv (empty if absent or unsound)."""
    if not monitor:
        return []
    try:
        text = read_bounded(path, MAX_FILE_BYTES).decode("utf-8")
        rows = csv.DictReader(io.StringIO(text, newline=""))
        values = [float(row[monitor]) for row in rows if row.get(monitor)]
    except (ValueError, csv.Error):  # UnicodeDecodeError is a ValueError
        return []
    return [value for value in values if math.isfinite(value)]


def sort_key(run: dict[str, Any]) -> tuple:
    best = run["best"]
    if not isinstance(best, int | float):
        return (1, 0.0)
    return (0, -best if run["mode"] == "max" else best)


def collect(paths: list[str]) -> list[dict[str, Any]]:
    run_dirs: list[Path] = []
    for text in paths:
        path = existing_path(text)
        found = find_runs(path) if path.is_dir() else []
        if not found and path.is_dir() and (path / SUMMARY).is_file():
            found = [path]
        if not found:
            raise UserError(f"no runs under {text!r} (a run directory holds step-* checkpoints)")
        run_dirs.extend(p for p in found if p not in run_dirs)
    return sorted((describe_run(p) for p in run_dirs), key=sort_key)


def varying_keys(runs: list[dict[str, Any]], shown: list[str]) -> list[str]:
    """The always-shown keys, the requested ones, then every key whose value differs."""
    keys = list(ALWAYS_SHOWN) + [k for k in shown if k not in ALWAYS_SHOWN]
    all_keys = sorted({k for r in runs for k in r["hyperparameters"]})
    for key in all_keys:
        values = {json.dumps(r["hyperparameters"].get(key), sort_keys=True) for r in runs}
        if len(values) > 1 and key not in keys:
            keys.append(key)
    return keys


def labels(runs: list[dict[str, Any]]) -> list[str]:
    """Run paths relative to their common folder (the sweep), or their names."""
    paths = [r["run"] for r in runs]
    if len(paths) == 1:
        return [Path(paths[0]).name]
    common = os.path.commonpath(paths)
    return [os.path.relpath(p, common) for p in paths]


def run(args: argparse.Namespace) -> int:
    runs = collect(args.paths)
    keys = varying_keys(runs, args.show)
    names = labels(runs)
    if args.plot:
        plot(runs, names, keys, args.plot, args.force)
    if args.json:
        print_json(
            {
                "keys": keys,
                "runs": [
                    {
                        **{k: v for k, v in r.items() if k != "hyperparameters"},
                        "label": name,
                        "hyperparameters": {k: r["hyperparameters"].get(k) for k in keys},
                    }
                    for r, name in zip(runs, names, strict=True)
                ],
                "plot": args.plot,
            }
        )
        return OK
    monitors = {r["monitor"] for r in runs}
    best_header = f"best {monitors.pop()}" if len(monitors) == 1 else "best (monitor)"
    print_table(
        ["run", best_header, "test_acc", "test_loss", "step", "epochs", "status", *keys],
        [
            [
                name,
                r["best"] if len(monitors) <= 1 else f"{r['best']} ({r['monitor']})",
                r["test_accuracy"],
                r["test_loss"],
                r["global_step"],
                r["epochs_completed"],
                r["status"],
                *[_value(r["hyperparameters"].get(k)) for k in keys],
            ]
            for r, name in zip(runs, names, strict=True)
        ],
    )
    if args.plot:
        print(f"Plot: {args.plot}")
    return OK


def _value(value: Any) -> Any:
    """A hyperparameter as the user would type it (0.001, not 1e-03; lists as [8,16])."""
    if isinstance(value, list):
        return "[" + ",".join(str(_value(v)) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return value


def plot(
    runs: list[dict[str, Any]], names: list[str], keys: list[str], out: str, force: bool = False
) -> None:
    """Monitored metric per epoch (left) and best value per run (right) into ``out``."""
    plt = pyplot()
    path = figure_output(out, "--plot", force)
    monitor = runs[0]["monitor"] or "monitored metric"
    figure, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for r, name in zip(runs, names, strict=True):
        if r["history"]:
            epochs = range(1, len(r["history"]) + 1)
            curves.plot(epochs, r["history"], marker="o", markersize=3, label=name)
    curves.set_xlabel("epoch")
    curves.set_ylabel(monitor)
    curves.set_title(f"{monitor} per epoch")
    curves.grid(alpha=0.3)
    if any(r["history"] for r in runs):
        curves.legend(fontsize="small")
    values = [r["best"] if isinstance(r["best"], int | float) else 0.0 for r in runs]
    varied = [k for k in keys if k not in ALWAYS_SHOWN] or list(keys)
    tick_labels = [
        name
        + "\n"
        + " ".join(f"{k.split('.')[-1]}={_value(r['hyperparameters'].get(k))}" for k in varied[:3])
        for r, name in zip(runs, names, strict=True)
    ]
    positions = list(range(len(runs)))[::-1]  # best at the top
    bars.barh(positions, values, color="tab:blue")
    bars.set_yticks(positions, tick_labels, fontsize="small")
    bars.set_xlabel(f"best {monitor}")
    bars.set_title("best value per run (best first)")
    bars.grid(axis="x", alpha=0.3)
    save_figure(plt, figure, path, "--plot", force)
