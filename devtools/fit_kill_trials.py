"""SIGKILL a plain ``model.fit`` script at random moments: ``ResumableCheckpoint`` beside
Keras' ``BackupAndRestore``.

    python -m devtools.fit_kill_trials --trials 20 [--jobs 2] [--seed 0]

Each trial picks a step ``k`` (uniform over the run's steps but the last) and a
moment: after step ``k`` while training, or inside the first save after it (for
``BackupAndRestore`` its weights file, overwritten in place, is then truncated).
``devtools.fit_script`` runs with each callback, checkpointing every 3 steps, is
killed there, then started again to the end. A trial is *lost* when the restart
fails (nothing to resume from) or ends with weights that differ from the same
callback's uninterrupted run; the steps trained are counted against the
uninterrupted run's. Prints one line per callback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KEEPERS = ("ours", "backup")
SAVE_FREQ = "3"
STEPS = 24  # devtools.fit_script: 3 epochs of 8 steps


def _run(directory: Path, out: Path, keeper: str, env: dict[str, str]) -> int:
    command = [sys.executable, "-m", "devtools.fit_script", str(directory), "--out", str(out)]
    command += ["--keeper", keeper, "--save-freq", SAVE_FREQ]
    result = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    return result.returncode


def _result(out: Path) -> dict | None:
    return json.loads(out.read_text()) if out.exists() else None


def trial(root: Path, keeper: str, step: int, in_save: bool) -> dict:
    """One killed run and its restart; what came of it."""
    directory, out = root / "run", root / "result.json"
    root.mkdir(parents=True)
    progress = root / "progress"
    fault = {"FIT_KILL_IN_SAVE" if in_save else "FIT_KILL_AT_STEP": str(step)}
    killed = _run(directory, out, keeper, {**fault, "FIT_PROGRESS": str(progress)})
    before = int(progress.read_text()) if progress.exists() else 0
    restarted = _run(directory, out, keeper, {})
    result = _result(out) if restarted == 0 else None
    return {"killed_rc": killed, "restart_rc": restarted, "result": result, "before": before}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)
    rng = random.Random(options.seed)
    plan = [(rng.randrange(1, STEPS - 1), rng.random() < 0.5) for _ in range(options.trials)]
    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(options.jobs) as pool:
        root = Path(scratch)
        references = {
            keeper: pool.submit(
                _run, root / f"ref-{keeper}", root / f"ref-{keeper}.json", keeper, {}
            )
            for keeper in KEEPERS
        }
        jobs = {
            (keeper, index): pool.submit(trial, root / f"{keeper}-{index}", keeper, step, in_save)
            for index, (step, in_save) in enumerate(plan)
            for keeper in KEEPERS
        }
        for keeper in KEEPERS:
            references[keeper].result()
            reference = _result(root / f"ref-{keeper}.json")
            outcomes = [jobs[(keeper, index)].result() for index in range(options.trials)]
            lost = [o for o in outcomes if o["result"] is None]
            equal = [
                o
                for o in outcomes
                if o["result"] and o["result"]["weights_sha256"] == reference["weights_sha256"]
            ]
            trained = [o["before"] + o["result"]["trained_steps"] for o in outcomes if o["result"]]
            print(
                f"{keeper:6s}: {options.trials} trials, {len(lost)} lost (restart failed), "
                f"{len(equal)} bitwise equal to the uninterrupted run; steps trained "
                f"{min(trained, default=0)}-{max(trained, default=0)} "
                f"(mean {sum(trained) / max(len(trained), 1):.1f}) against {STEPS} uninterrupted"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
