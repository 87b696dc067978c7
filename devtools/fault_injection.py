"""Kill training with SIGKILL at random moments and prove no run is ever lost.

    python -m devtools.fault_injection --trials 50

Each trial trains a small deterministic run that checkpoints every few steps,
SIGKILLs it at a random moment (while training, saving or pruning), restarts
it with ``+resume=RUN_DIR`` and repeats, then lets it finish. A restart is
*resumed* when it continues from a checkpoint that verifies, and *lost* when
checkpoints exist but none can be resumed (what ``BackupAndRestore`` does to
about half of its restarts). Every finished trial's final weights must equal
an uninterrupted run's bit for bit. Prints ``N trials, N resumed, 0 lost``.

Any config can be put through it: overrides after ``--`` are added to every
run (the reference and each restart), e.g.::

    python -m devtools.fault_injection --trials 5 -- model=resnet augment=strong \
        trainer.precision=mixed_bfloat16 optimizer.ema=true

Choosing another model (``model=...``) drops the small CNN's own overrides.

``--s3`` runs every trial on a local S3 endpoint (``devtools.local_s3``: moto on
127.0.0.1): ``checkpoint.dir=s3://.../trialN``, kills land while checkpoints
upload, restarts resume with ``+resume=s3://...``, and the final weights (the
newest committed checkpoint, downloaded) must equal the local reference run's.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from checkpoints import checkpoint_arrays, list_checkpoints
from checkpoints.remote import RemoteStore, is_url

TRAIN = Path(__file__).resolve().parent.parent / "train.py"


# The small CNN of every trial unless the extra overrides choose another model.
SMALL_CNN = ("model.filters=[8]", "model.dense_units=[16]")


def small_run_args(
    data_dir: Path, run_dir: Path, hydra_dir: Path, epochs: int, extra: Sequence[str] = ()
) -> list[str]:
    """Overrides of ``train.py`` for a small deterministic run (also the fuzzer's source),
    then ``extra``; a ``model=`` among ``extra`` replaces the small CNN."""
    other_model = any(o.lstrip("+~").startswith("model=") for o in extra)
    return [
        f"dataset.data_dir={data_dir}",
        f"checkpoint.dir={run_dir}",
        f"hydra.run.dir={hydra_dir}",
        *(() if other_model else SMALL_CNN),
        f"trainer.epochs={epochs}",
        "trainer.deterministic=true",
        *extra,
    ]


def run_args(
    data_dir: Path, run_dir: Path, hydra_dir: Path, extra: Sequence[str] = ()
) -> list[str]:
    """The run each trial kills: 3 epochs, a checkpoint every 4 steps, 2 kept; ``extra``
    overrides after those."""
    return small_run_args(
        data_dir,
        run_dir,
        hydra_dir,
        epochs=3,
        extra=("checkpoint.every_n_steps=4", "checkpoint.keep_last=2", *extra),
    )


def final_weights(run_dir: Path | str) -> dict[str, np.ndarray]:
    """Every array of the newest checkpoint's model and optimizer files (a run on a URL:
    its newest committed checkpoint, downloaded and verified)."""
    if not is_url(run_dir):
        return checkpoint_arrays(list_checkpoints(run_dir)[-1])
    store = RemoteStore(str(run_dir))
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = store.download_checkpoint(store.committed()[-1], Path(scratch))
        return checkpoint_arrays(checkpoint.path)


def checkpoint_names(run_dir: Path | str) -> set[str]:
    """The run's checkpoints: directories, or on a URL the committed ones."""
    if is_url(run_dir):
        return set(RemoteStore(str(run_dir)).committed())
    return {p.name for p in list_checkpoints(run_dir)}


@dataclass
class Tally:
    trials: int = 0
    kills: int = 0
    resumed: int = 0  # restarts that continued from a verified checkpoint
    fresh: int = 0  # restarts before any checkpoint existed: nothing to lose yet
    lost: int = 0
    mismatched: int = 0  # finished runs whose weights differ from the reference
    notes: list[str] = field(default_factory=list)


def start_train(args: list[str], cwd: Path) -> subprocess.Popen:
    """``python train.py ARGS`` started in ``cwd``, its output piped."""
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_while_training(
    process: subprocess.Popen, run_dir: Path, rng: random.Random, max_delay: float
) -> bool:
    """SIGKILL ``process`` at a random moment after it wrote its first new checkpoint.

    Waiting for a new checkpoint puts every kill inside training (between,
    during or just after saves and pruning) rather than in start-up.
    Returns False when the process ended first.
    """
    known = checkpoint_names(run_dir)
    while process.poll() is None:
        if checkpoint_names(run_dir) - known:
            break
        time.sleep(0.05 if is_url(run_dir) else 0.01)
    time.sleep(rng.uniform(0.0, max_delay))
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    return True


def run_trial(
    data_dir: Path,
    work: Path,
    reference: dict[str, np.ndarray],
    rng: random.Random,
    kills: int,
    tally: Tally,
    max_delay: float,
    extra: Sequence[str] = (),
    remote_root: str | None = None,
) -> None:
    """One trial: up to ``kills`` SIGKILLs at random moments, each followed by a restart.

    ``remote_root``: the run goes to ``<remote_root>/<trial folder name>`` (a URL)."""
    run_dir = f"{remote_root}/{work.name}" if remote_root else work / "run"
    hydra_dir = work / "hydra"
    work.mkdir(parents=True, exist_ok=True)
    for attempt in range(kills + 1):
        args = run_args(data_dir, run_dir, hydra_dir, extra)
        had_checkpoints = bool(checkpoint_names(run_dir))
        if had_checkpoints:
            args.append(f"+resume={run_dir}")
        process = start_train(args, work)
        if attempt < kills and kill_while_training(process, run_dir, rng, max_delay):
            tally.kills += 1
        out, err = process.communicate()
        if had_checkpoints and "Resuming from" in out:
            tally.resumed += 1
        elif had_checkpoints:
            tally.lost += 1
            tally.notes.append(f"{run_dir}: could not resume: {err.strip()[-300:]}")
            return
        elif attempt:
            tally.fresh += 1
        if process.returncode == 0:
            break
    if process.returncode != 0:
        tally.notes.append(f"{run_dir}: the last restart failed: {err.strip()[-300:]}")
        tally.mismatched += 1
        return
    weights = final_weights(run_dir)
    if weights.keys() != reference.keys() or any(
        not np.array_equal(weights[k], reference[k]) for k in reference
    ):
        tally.mismatched += 1
        tally.notes.append(f"{run_dir}: final weights differ from the uninterrupted run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs per trial")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-delay",
        type=float,
        default=1.0,
        help="seconds after a new checkpoint within which the kill lands (uniform)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="TFDS data_dir (default: temp)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--s3", action="store_true", help="store every trial's run on a local S3 endpoint (moto)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="train.py overrides added to every run, after `--` (e.g. -- model=resnet)",
    )
    options = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        remote_root = None
        if options.s3:  # children inherit the endpoint and credentials from the environment
            from devtools.local_s3 import environment, local_s3

            server = stack.enter_context(local_s3())
            stack.enter_context(environment(server.env()))
            remote_root = f"s3://{server.bucket}/fault-injection"
        return _trials(options, remote_root)


def _trials(options: argparse.Namespace, remote_root: str | None) -> int:
    rng = random.Random(options.seed)
    with tempfile.TemporaryDirectory() as scratch:
        work = options.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        data_dir = options.data_dir or work / "tfds"
        reference_dir = work / "reference"
        reference_args = run_args(
            data_dir, reference_dir / "run", reference_dir / "hydra", options.overrides
        )
        process = start_train(reference_args, work)
        _, err = process.communicate()
        if process.returncode != 0:
            print(f"the reference run failed:\n{err}", file=sys.stderr)
            return 1
        reference = final_weights(reference_dir / "run")
        tally = Tally()
        for trial in range(options.trials):
            tally.trials += 1
            run_trial(
                data_dir,
                work / f"trial{trial}",
                reference,
                rng,
                options.kills,
                tally,
                options.max_delay,
                options.overrides,
                remote_root,
            )
            print(
                f"trial {trial + 1}/{options.trials}: kills {tally.kills}, resumed "
                f"{tally.resumed}, fresh {tally.fresh}, lost {tally.lost}, "
                f"weights differ {tally.mismatched}",
                flush=True,
            )
    for note in tally.notes:
        print(note, file=sys.stderr)
    print(
        f"{tally.trials} trials, {tally.resumed} resumed, {tally.lost} lost "
        f"({tally.kills} SIGKILLs, {tally.fresh} restarts before a first checkpoint, "
        f"{tally.mismatched} runs whose final weights differ from an uninterrupted run)"
    )
    return 0 if tally.lost == 0 and tally.mismatched == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
