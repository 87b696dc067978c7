"""``trainer list PATH``: the runs and checkpoints under a run directory or a root.

One block per run: each checkpoint with its step, epoch, when it was written,
the monitored metric, the learning rate, its size, whether it verifies
(every file re-hashed, as a resume would) and which pointer (latest, best)
names it. Pure Python: no TensorFlow.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from checkpoints import read_checkpoint, read_pointer, verify
from trainer.exits import OK
from trainer.runs.remote_run import location
from trainer.tools.finding import checkpoints_under, directory_size
from trainer.tools.output import human_size, local_time, print_json, print_table

NAME = "list"
HELP = "list the runs and checkpoints under a directory"
DESCRIPTION = """\
List the runs and checkpoints under PATH: a run directory, a folder of runs
(e.g. runs/ or a sweep), or one checkpoint.

examples:
  python -m trainer list runs/
  python -m trainer list runs/2026-11-26/10-00-00 --json
  python -m trainer list runs/ --no-verify      # skip re-hashing the files

The exit status is 0 even when a checkpoint does not verify (its status says
why); use 'trainer verify' to check."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", metavar="PATH", help="a run directory, a folder of runs, or a checkpoint"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="read the manifests only; do not re-hash every file",
    )


def describe_checkpoint(path: Path, pointers: dict[str, str | None], check: bool) -> dict[str, Any]:
    """What ``list`` shows about one checkpoint, as a JSON-ready dict."""
    checkpoint = verify(path) if check else read_checkpoint(path)
    manifest = checkpoint.manifest or {}
    monitor = manifest.get("monitor")
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
    return {
        "checkpoint": path.name,
        "path": str(path),
        "step": checkpoint.global_step,
        "epoch": manifest.get("epoch"),
        "batches_done": manifest.get("batches_done"),
        "steps_per_epoch": manifest.get("steps_per_epoch"),
        "written_at": manifest.get("written_at"),
        "monitor": monitor,
        "monitor_value": metrics.get(monitor) if monitor else None,
        "metrics": metrics,
        "learning_rate": manifest.get("learning_rate"),
        "size_bytes": directory_size(path),
        "valid": checkpoint.valid,
        "verified": check,
        "problems": checkpoint.problems,
        "pointers": [name for name, target in pointers.items() if target == path.name],
    }


def _epoch_text(entry: dict[str, Any]) -> str | None:
    epoch, batches = entry["epoch"], entry["batches_done"]
    if epoch is None:
        return None
    if batches:
        return f"{epoch}+{batches}/{entry['steps_per_epoch']}"
    return str(epoch)


def _status(entry: dict[str, Any]) -> str:
    if entry["problems"]:
        return "BAD: " + "; ".join(entry["problems"])
    return "ok" if entry["verified"] else "ok (not re-hashed)"


def run(args: argparse.Namespace) -> int:
    runs = []
    for run_dir, paths in checkpoints_under(args.path).items():
        pointers = {name: read_pointer(run_dir, name) for name in ("latest", "best")}
        runs.append(
            {
                "run": location(run_dir),
                "latest": pointers["latest"],
                "best": pointers["best"],
                "checkpoints": [
                    describe_checkpoint(p, pointers, not args.no_verify) for p in paths
                ],
            }
        )
    if args.json:
        print_json({"runs": runs})
        return OK
    for index, entry in enumerate(runs):
        if index:
            print()
        count = len(entry["checkpoints"])
        print(f"{entry['run']}  ({count} checkpoint{'s' * (count != 1)})")
        monitors = {c["monitor"] for c in entry["checkpoints"] if c["monitor"]}
        metric_header = monitors.pop() if len(monitors) == 1 else "monitored"
        print_table(
            [
                "checkpoint",
                "step",
                "epoch",
                "written",
                metric_header,
                "lr",
                "size",
                "pointer",
                "status",
            ],
            [
                [
                    c["checkpoint"],
                    c["step"],
                    _epoch_text(c),
                    local_time(c["written_at"]),
                    c["monitor_value"],
                    c["learning_rate"],
                    human_size(c["size_bytes"]),
                    ", ".join(c["pointers"]) or None,
                    _status(c),
                ]
                for c in entry["checkpoints"]
            ],
        )
    return OK
