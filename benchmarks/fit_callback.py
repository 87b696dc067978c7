"""What ``ResumableCheckpoint`` costs a ``model.fit`` script, beside Keras' own callbacks.

    python -m benchmarks.fit_callback [--repeats 5] [--params 8e6] [--json OUT.json]

One process, one model (an MLP of ``--params`` float32 parameters, Adam: the
checkpoint holds about 3x that in bytes), one epoch of ``STEPS`` small batches per
``fit``. Each round measures, in ABBA order:

- ``plain``: ``fit`` with no callback (the reference);
- ``ours_idle``: ``fit`` with ``ResumableCheckpoint(save_freq=10**9)``, which saves only
  at the epoch's end: its steps (``steps / plain``, first batch to last) are what the
  callback costs a step that does not save (target: no measurable time);
- ``ours_sync`` / ``ours_async``: ``fit`` with ``ResumableCheckpoint`` saving at the
  epoch's end, synchronously or committed in the background;
- ``model_checkpoint``: ``keras.callbacks.ModelCheckpoint(save_weights_only=True)``
  at the epoch's end (weights only, not fsynced);
- ``backup_and_restore``: ``keras.callbacks.BackupAndRestore`` at the epoch's end
  (weights and optimizer, overwritten in place, not fsynced);
- ``disk_limit``: writing and fsyncing as many bytes as our checkpoint holds, in
  8 MiB writes, into the same directory: what the disk allows.

A save's cost is its ``fit`` time minus the same round's ``plain``; ratios are per
round, to ``disk_limit`` (target for ``ours_sync``: at most 1.25, the checkpoint
manager's own). ``ours_async`` is what ``fit`` waits for; the commit goes on after.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from benchmarks import common
from benchmarks.checkpoint_io import CHUNK, disk_limit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STEPS = 4
BATCH = 32
FEATURES = 256


def build_model(keras, params: float):
    """An MLP of about ``params`` parameters, compiled with Adam."""
    width = max(64, int((params / 2) ** 0.5))
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        keras.optimizers.Adam(1e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def checkpoint_bytes(run: Path) -> int:
    """The bytes of the newest checkpoint of ``run``."""
    from checkpoints import list_checkpoints

    newest = list_checkpoints(run)[-1]
    return sum(f.stat().st_size for f in newest.iterdir() if f.is_file())


def callbacks_of(keras, side: str, directory: Path) -> list:
    """The callbacks of one side of the comparison, writing into ``directory``."""
    from checkpoints.keras import ResumableCheckpoint

    if side == "ours_idle":
        return [ResumableCheckpoint(directory, save_freq=10**9, report=lambda _: None)]
    if side in ("ours_sync", "ours_async"):
        return [ResumableCheckpoint(directory, async_=side == "ours_async", report=lambda _: None)]
    if side == "model_checkpoint":
        return [
            keras.callbacks.ModelCheckpoint(
                str(directory / "weights.weights.h5"), save_weights_only=True
            )
        ]
    if side == "backup_and_restore":
        return [keras.callbacks.BackupAndRestore(str(directory), delete_checkpoint=False)]
    return []


def step_timer(keras):
    """A callback whose ``seconds`` run from the epoch's first batch to its last batch's
    end: the training steps alone, without ``fit``'s start, the epoch's end or a save."""

    class StepTimer(keras.callbacks.Callback):
        seconds = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.seconds = time.perf_counter() - self.started

    return StepTimer()


def main(argv: list[str] | None = None) -> common.Report:
    parser = common.argument_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--params", type=float, default=8e6, help="model parameters")
    options = parser.parse_args(argv)
    if options.quick:
        options.repeats, options.params = 1, 2e5

    import keras
    import numpy as np
    import tensorflow as tf

    x = np.random.default_rng(0).random((STEPS * BATCH, FEATURES), dtype=np.float32)
    y = (np.arange(STEPS * BATCH) % 10).astype("int32")

    def epoch(_):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)

    model = build_model(keras, options.params)
    model.fit(epoch(0), epochs=1, verbose=0)  # traced once, before any timing

    with common.workdir(options.workdir) as root:

        def timed_fit(side: str, index: int) -> float:
            directory = root / f"{side}-{index}"
            directory.mkdir()
            timer = step_timer(keras)
            callbacks = [*callbacks_of(keras, side, directory), timer]
            data = callbacks[0].dataset(epoch) if side.startswith("ours") else epoch(0)
            started = time.perf_counter()
            model.fit(data, epochs=1, verbose=0, callbacks=callbacks)
            found_steps[side].append(timer.seconds)
            return time.perf_counter() - started

        sides = [
            "plain",
            "ours_idle",
            "ours_sync",
            "ours_async",
            "model_checkpoint",
            "backup_and_restore",
        ]
        found: dict[str, list[float]] = {s: [] for s in [*sides, "disk_limit"]}
        found_steps: dict[str, list[float]] = {s: [] for s in sides}
        size, buffer = 0, memoryview(os.urandom(CHUNK))
        for index in range(options.repeats):
            for side in common.alternate(index, *sides):
                found[side].append(timed_fit(side, index))
            size = checkpoint_bytes(root / f"ours_sync-{index}")
            found["disk_limit"].append(disk_limit(root, size, buffer))
            for side in sides:
                shutil.rmtree(root / f"{side}-{index}", ignore_errors=True)

    plain, limit = found["plain"], found["disk_limit"]
    report = common.Report(
        "fit_callback",
        "python -m benchmarks.fit_callback " + " ".join(argv or sys.argv[1:]),
        options.repeats,
    )
    for side in sides[1:]:
        cost = [t - p for t, p in zip(found[side], plain, strict=True)]
        report.cases.append(
            {
                "case": side,
                "fit_seconds": common.summary(found[side]),
                "fit_ratio_to_plain": common.summary(common.paired_ratios(found[side], plain)),
                "steps_ratio_to_plain": common.summary(
                    common.paired_ratios(found_steps[side], found_steps["plain"])
                ),
                "save_seconds": common.summary(cost),
                "save_ratio_to_disk_limit": common.summary(common.paired_ratios(cost, limit)),
            }
        )
    report.notes.append(
        f"checkpoint {size / 2**20:.1f} MiB; plain fit {common.median(plain):.3f} s "
        f"({STEPS} steps); disk_limit {common.median(limit):.3f} s"
    )
    report.print(
        [
            ("case", "case"),
            ("steps_ratio_to_plain.median", "steps / plain"),
            ("fit_ratio_to_plain.median", "fit / plain"),
            ("save_seconds.median", "save s"),
            ("save_ratio_to_disk_limit.median", "save / disk"),
            ("save_ratio_to_disk_limit.max", "max"),
        ]
    )
    report.save(options.json)
    return report


if __name__ == "__main__":
    main()
