"""What a run shows and records: progress bar, metrics CSV, TensorBoard scalars.

- the console: a Keras ``Progbar`` per epoch with loss, accuracy and the lr, or,
  when stdout is not a terminal (a Slurm log, a sweep job, ``> file``), one line
  per epoch with its metrics, Keras' ``verbose=2`` (see :func:`progress_verbosity`);
- ``<run>/metrics.csv``: one row per epoch (Keras' ``CSVLogger``, appending on resume);
- ``<run>/tensorboard/{train,validation}``: per-step loss, accuracy and lr, per-epoch
  metrics, so ``tensorboard --logdir runs/`` shows the runs of a sweep side by side.

Per-step scalars are held in memory and written together at the end of every
epoch, on ``close()``, and whenever ``STEP_SCALARS_EVERY_S`` seconds have passed
since the last write (so a long epoch still shows up live). Written one by one
with ``tf.summary.scalar`` they cost about 0.4 ms each, 1.2 ms per logged
step: 4% of a digits step, paid inside the training loop. All scalars are
written with ``tf.summary.write`` and the scalar plugin's metadata made once,
0.17 ms each (a compiled writer costs 0.05 ms a point but 0.4 s to trace,
more than a typical run logs). TensorBoard sees no difference: its file
writer only flushes to disk every two minutes anyway.

A write the machine refuses (disk full, read-only...) raises a one-line
``StorageError`` naming the file: ``metrics.csv`` or the TensorBoard events.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

import keras
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from trainer.errors import storage_errors

STEP_SCALARS_EVERY_S = 30.0
_SCALAR = scalar_metadata.create_summary_metadata(display_name=None, description=None)


def write_scalars(
    writer: tf.summary.SummaryWriter, points: Iterable[tuple[str, float, int]]
) -> None:
    """Write ``(tag, value, step)`` scalars as ``tf.summary.scalar`` would, with less Python."""
    with writer.as_default():
        for tag, value, step in points:
            tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_SCALAR)


class StepScalars:
    """Per-step scalars of one writer, held and written in batches (see the module docstring)."""

    def __init__(self, writer: tf.summary.SummaryWriter) -> None:
        self.writer = writer
        self.points: list[tuple[str, float, int]] = []
        self.written_at = time.monotonic()

    def add(self, step: int, values: Mapping[str, float]) -> None:
        self.points.extend((f"step/{name}", float(value), step) for name, value in values.items())
        if time.monotonic() - self.written_at >= STEP_SCALARS_EVERY_S:
            self.write()

    def write(self) -> None:
        write_scalars(self.writer, self.points)
        self.points = []
        self.written_at = time.monotonic()


def progress_verbosity(setting: str | int, stream: TextIO | None = None) -> int:
    """Keras' ``verbose`` for ``trainer.verbose``: 0 silent, 1 a progress bar, 2 one line
    per epoch. ``auto`` is 1 when ``stream`` (stdout) is a terminal and 2 otherwise: a
    bar redrawn in a file is a stream of escape codes, which is what Keras' own "auto"
    writes there.

    >>> import io
    >>> progress_verbosity("auto", io.StringIO()), progress_verbosity("1", io.StringIO())
    (2, 1)
    """
    if str(setting) != "auto":
        return int(setting)
    stream = sys.stdout if stream is None else stream
    return 1 if stream.isatty() else 2


class RunReporter:
    """The console, ``metrics.csv`` and TensorBoard of one run; ``verbose`` as Keras'
    (see :func:`progress_verbosity`)."""

    def __init__(
        self, run_dir: Path, steps_per_epoch: int, model: keras.Model, verbose: int = 1
    ) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self.writing_csv = f"write metrics.csv in {run_dir}"
        self.writing_events = f"write TensorBoard events in {run_dir / 'tensorboard'}"
        with storage_errors(self.writing_csv):
            self.csv = keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"), append=True)
            self.csv.set_model(model)
            self.csv.on_train_begin()
        with storage_errors(self.writing_events):
            self.train_writer = tf.summary.create_file_writer(
                str(run_dir / "tensorboard" / "train")
            )
            self.validation_writer = tf.summary.create_file_writer(
                str(run_dir / "tensorboard" / "validation")
            )
        self.bar: keras.utils.Progbar | None = None
        self.step_scalars = StepScalars(self.train_writer)

    def start_epoch(self, epoch: int, epochs: int, batches_done: int) -> None:
        if self.verbose:
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        self.bar = keras.utils.Progbar(
            self.steps_per_epoch, verbose=self.verbose, stateful_metrics=["loss", "accuracy", "lr"]
        )
        if batches_done:
            self.bar.update(batches_done)

    def step(
        self, batch_in_epoch: int, global_step: int, values: Mapping[str, float], log_scalars: bool
    ) -> None:
        if batch_in_epoch < self.steps_per_epoch:  # end_epoch() draws the final bar
            self.bar.update(batch_in_epoch, values=list(values.items()))
        if log_scalars:
            with storage_errors(self.writing_events):
                self.step_scalars.add(global_step, values)

    def end_epoch(self, epoch: int, global_step: int, logs: Mapping[str, float]) -> None:
        if self.bar is not None:
            shown = [(k, v) for k, v in logs.items() if k != "epoch_seconds"]
            self.bar.update(self.steps_per_epoch, values=shown, finalize=True)
        with storage_errors(self.writing_csv):
            self.csv.on_epoch_end(epoch, dict(logs))
        train = [(k, v) for k, v in logs.items() if not k.startswith("val_")]
        validation = [(k[len("val_") :], v) for k, v in logs.items() if k.startswith("val_")]
        with storage_errors(self.writing_events):
            self.step_scalars.write()
            for writer, values in (
                (self.train_writer, train),
                (self.validation_writer, validation),
            ):
                write_scalars(writer, [(f"epoch/{k}", v, global_step) for k, v in values])
                writer.flush()

    def close(self) -> None:
        """Write what is held and close every file, all of them even if one fails."""
        with storage_errors(self.writing_events):
            try:
                self.step_scalars.write()
            finally:
                self.train_writer.close()
                self.validation_writer.close()
        with storage_errors(self.writing_csv):
            self.csv.on_train_end()
