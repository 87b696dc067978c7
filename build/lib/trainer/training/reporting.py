"""What a run shows and records: progress bar, metrics CSV, and the trackers it logs to.

- the console: a Keras ``Progbar`` per epoch with loss, accuracy and the lr, or,
  when stdout is not a terminal (a Slurm log, a sweep job, ``> file``), one line
  per epoch with its metrics, Keras' ``verbose=2`` (see :func:`progress_verbosity`);
- ``<run>/metrics.csv``: one row per epoch (Keras' ``CSVLogger``, appending on resume),
  written by every run whatever the loggers: the run's own record, which ``compare``,
  ``evaluate``'s check and the benchmarks read;
- the trackers ``logger=...`` selects (``trainer.loggers``; TensorBoard by default):
  per-step values every ``trainer.log_every_n_steps`` steps, the epoch summaries, the
  checkpoints saved (:meth:`RunReporter.saving`) and the run's summary.

A write the machine refuses (disk full, read-only...) raises a one-line
``StorageError`` naming the file: ``metrics.csv`` or the tracker's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import keras

from trainer.errors import storage_errors
from trainer.loggers import Loggers


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
    """The console, ``metrics.csv`` and the trackers (``loggers``) of one run; ``verbose``
    as Keras' (see :func:`progress_verbosity`). ``loggers`` None: TensorBoard alone, the
    default ``logger=tensorboard`` (its events in ``run_dir``), ended by :meth:`close`.

    The trackers of ``loggers`` given are ended by their owner (``with loggers:``):
    they outlive the loop, to be sent the run's summary.
    """

    def __init__(
        self,
        run_dir: Path,
        steps_per_epoch: int,
        model: keras.Model,
        verbose: int = 1,
        loggers: Loggers | None = None,
    ) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self.writing_csv = f"write metrics.csv in {run_dir}"
        with storage_errors(self.writing_csv):
            self.csv = keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"), append=True)
            self.csv.set_model(model)
            self.csv.on_train_begin()
        self.owns_loggers = loggers is None
        self.loggers = _tensorboard_only(run_dir) if loggers is None else loggers
        self.bar: keras.utils.Progbar | None = None

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
            self.loggers.step(global_step, values)

    def end_epoch(self, epoch: int, global_step: int, logs: Mapping[str, float]) -> None:
        if self.bar is not None:
            shown = [(k, v) for k, v in logs.items() if k != "epoch_seconds"]
            self.bar.update(self.steps_per_epoch, values=shown, finalize=True)
        with storage_errors(self.writing_csv):
            self.csv.on_epoch_end(epoch, dict(logs))
        self.loggers.epoch(global_step, epoch, logs)

    def saving(self, save: Callable[..., Any]) -> Callable[..., Any]:
        """``save`` (the loop's checkpoint callback) that first sends every step logged so
        far to the trackers, so a checkpoint's steps are all in them, then tells them
        where the checkpoint went (``save`` returns its path)."""

        def save_reported(state: Any, logs: Mapping[str, float], **options: Any) -> Any:
            self.loggers.flush()
            path = save(state, logs, **options)
            self.loggers.checkpoint(str(path))
            return path

        return save_reported

    def close(self) -> None:
        """Send what is held, close ``metrics.csv`` (and the trackers this reporter made),
        all of them even if one fails."""
        try:
            if self.owns_loggers:
                self.loggers.close()
            else:
                self.loggers.flush()
        finally:
            with storage_errors(self.writing_csv):
                self.csv.on_train_end()


def _tensorboard_only(run_dir: Path) -> Loggers:
    from trainer.loggers.base import TrackedRun
    from trainer.loggers.tensorboard_logger import TensorBoardLogger

    run = TrackedRun(run_dir=Path(run_dir), name=Path(run_dir).name, params={})
    return Loggers([TensorBoardLogger({}, run)])
