"""What a run shows and records: progress bar, metrics CSV, TensorBoard scalars.

- the console: a Keras ``Progbar`` per epoch with loss, accuracy and the lr;
- ``<run>/metrics.csv``: one row per epoch (Keras' ``CSVLogger``, appending on resume);
- ``<run>/tensorboard/{train,validation}``: per-step loss, accuracy and lr, per-epoch
  metrics, so ``tensorboard --logdir checkpoints/`` shows the runs of a sweep side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import keras
import tensorflow as tf


class RunReporter:
    def __init__(self, run_dir: Path, steps_per_epoch: int, model: keras.Model) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.csv = keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"), append=True)
        self.csv.set_model(model)
        self.csv.on_train_begin()
        self.train_writer = tf.summary.create_file_writer(str(run_dir / "tensorboard" / "train"))
        self.validation_writer = tf.summary.create_file_writer(
            str(run_dir / "tensorboard" / "validation")
        )
        self.bar: keras.utils.Progbar | None = None

    def start_epoch(self, epoch: int, epochs: int, batches_done: int) -> None:
        print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        self.bar = keras.utils.Progbar(
            self.steps_per_epoch, stateful_metrics=["loss", "accuracy", "lr"]
        )
        if batches_done:
            self.bar.update(batches_done)

    def step(
        self, batch_in_epoch: int, global_step: int, values: Mapping[str, float], log_scalars: bool
    ) -> None:
        if batch_in_epoch < self.steps_per_epoch:  # end_epoch() draws the final bar
            self.bar.update(batch_in_epoch, values=list(values.items()))
        if log_scalars:
            with self.train_writer.as_default(step=global_step):
                for name, value in values.items():
                    tf.summary.scalar(f"step/{name}", value)

    def end_epoch(self, epoch: int, global_step: int, logs: Mapping[str, float]) -> None:
        if self.bar is not None:
            shown = [(k, v) for k, v in logs.items() if k != "epoch_seconds"]
            self.bar.update(self.steps_per_epoch, values=shown, finalize=True)
        self.csv.on_epoch_end(epoch, dict(logs))
        for writer, prefix in ((self.train_writer, ""), (self.validation_writer, "val_")):
            with writer.as_default(step=global_step):
                for name, value in logs.items():
                    if prefix and name.startswith(prefix):
                        tf.summary.scalar(f"epoch/{name[len(prefix) :]}", value)
                    elif not prefix and not name.startswith("val_"):
                        tf.summary.scalar(f"epoch/{name}", value)
            writer.flush()

    def close(self) -> None:
        self.csv.on_train_end()
        self.train_writer.close()
        self.validation_writer.close()
