"""``trainer verify PATH``: re-hash every file of one checkpoint, a run, or all runs under a root.

Each checkpoint is checked as a resume would check it
(``checkpoints.verify``: manifest readable and typed, every listed file
a regular file with its size and sha256, no symlinks, HDF5 files without
external storage or links and with numeric datasets); for a run, the
``latest`` and ``best`` pointers must be small regular files naming a
checkpoint that exists. Exit status 1 if anything is wrong.
Pure Python (h5py for the HDF5 files): no TensorFlow.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from checkpoints import POINTERS, is_checkpoint_name, verify
from checkpoints.reading import read_pointer_file
from trainer.exits import BAD, OK
from trainer.runs.remote_run import location
from trainer.tools.finding import checkpoints_under, existing_path, is_checkpoint_dir
from trainer.tools.output import print_json

NAME = "verify"
HELP = "re-hash checkpoints and report corruption (exit 1 if any)"
DESCRIPTION = """\
Re-hash every file of a checkpoint, of every checkpoint of a run, or of every
run under a folder, against the sha256 and size in each manifest; check that
the run's latest/best pointers name existing checkpoints. Prints what is
wrong, and which checkpoint a resume of the run would use.

examples:
  python -m trainer verify runs/2026-11-26/10-00-00
  python -m trainer verify runs/ --json

exit status: 0 all verify, 1 something does not, 2 bad input."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="a checkpoint, a run, or a folder of runs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only what is wrong")


def pointer_problems(run_dir: Path) -> list[str]:
    """What is wrong with a run's pointer files (absent pointers are fine)."""
    problems = []
    for pointer in POINTERS:
        path = run_dir / pointer
        if not os.path.lexists(path):
            continue
        try:
            name = read_pointer_file(path)
        except ValueError as error:
            problems.append(f"pointer {pointer!r} cannot be read: {error}")
            continue
        if not is_checkpoint_name(name):
            problems.append(f"pointer {pointer!r} does not name a checkpoint: {name[:60]!r}")
        elif not (run_dir / name).is_dir():
            problems.append(f"pointer {pointer!r} names {name}, which does not exist")
    return problems


def check(text: str) -> list[dict[str, Any]]:
    """One entry per run: its checkpoints' problems and its pointers' problems."""
    single = is_checkpoint_dir(existing_path(text))
    runs = []
    for run_dir, paths in checkpoints_under(text).items():
        checkpoints = []
        for path in paths:
            checkpoint = verify(path)
            checkpoints.append(
                {
                    "checkpoint": path.name,
                    "path": str(path),
                    "valid": checkpoint.valid,
                    "problems": checkpoint.problems,
                }
            )
        valid = [c["checkpoint"] for c in checkpoints if c["valid"]]
        runs.append(
            {
                "run": location(run_dir),
                "single": single,
                "checkpoints": checkpoints,
                "pointer_problems": [] if single else pointer_problems(run_dir),
                "resume_would_use": None if single else (valid[-1] if valid else None),
                "stale_staging": (
                    [] if single else sorted(p.name for p in run_dir.glob(".step-*.tmp-*"))
                ),
            }
        )
    return runs


def run(args: argparse.Namespace) -> int:
    runs = check(args.path)
    bad_checkpoints = sum(not c["valid"] for r in runs for c in r["checkpoints"])
    bad_pointers = sum(len(r["pointer_problems"]) for r in runs)
    total = sum(len(r["checkpoints"]) for r in runs)
    ok = bad_checkpoints == 0 and bad_pointers == 0
    if args.json:
        print_json({"ok": ok, "checked": total, "bad": bad_checkpoints, "runs": runs})
        return OK if ok else BAD
    for entry in runs:
        bad_here = [c for c in entry["checkpoints"] if not c["valid"]] or entry["pointer_problems"]
        if args.quiet and not bad_here:
            continue
        print(entry["run"])
        for checkpoint in entry["checkpoints"]:
            if checkpoint["valid"]:
                if not args.quiet:
                    print(f"  ok   {checkpoint['checkpoint']}")
            else:
                print(f"  BAD  {checkpoint['checkpoint']}: {'; '.join(checkpoint['problems'])}")
        for problem in entry["pointer_problems"]:
            print(f"  BAD  {problem}")
        if entry["stale_staging"] and not args.quiet:
            print(
                f"  note {len(entry['stale_staging'])} half-written checkpoint(s) "
                "(hidden .step-*.tmp-*) left by a crash; the next run removes them"
            )
        if not entry["single"] and any(not c["valid"] for c in entry["checkpoints"]):
            target = entry["resume_would_use"]
            print(
                f"  a resume of this run would use {target}, the newest that verifies"
                if target
                else "  no checkpoint of this run verifies: it cannot be resumed"
            )
    summary = f"{total} checkpoint{'s' * (total != 1)} checked: {total - bad_checkpoints} ok"
    summary += f", {bad_checkpoints} bad" if bad_checkpoints else ""
    summary += f"; {bad_pointers} bad pointer{'s' * (bad_pointers != 1)}" if bad_pointers else ""
    print(summary)
    return OK if ok else BAD
