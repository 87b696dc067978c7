"""Ours and ``model.fit`` in one process, one epoch each in turn: the low-noise throughput check.

    python -m benchmarks.alternating_epochs --config CONFIG.yaml --rounds 10 --out TIMES.json

Run by ``python -m benchmarks.throughput --in-process``. On a shared machine the
load changes from one process to the next; alternating epochs of the two
inside one process (ABBA order, first round discarded) puts both under the
same load. One model and optimizer, built as ``trainer.train`` builds them from
the composed config (``--cfg job --resolve``; single device), are trained by
``trainer.training.loop.TrainingLoop`` (with ``trainer.training.reporting.RunReporter`` and the
config's ``log_every_n_steps``, as train.py wires them; checkpoints off) and,
in turn, by ``model.fit`` on the same pipeline (``compile`` with the same
loss, metrics, ``jit_compile`` and ``steps_per_execution``). The model is
built in the run's ``trainer.precision``, so fit trains in it too; with
``augment`` on, fit's batches get the same augmentation mapped over the
pipeline (where a Keras user puts it), as ours does on one device.

Ours: each epoch's ``epoch_seconds`` from the run's ``metrics.csv``; fit: first
``on_train_batch_begin`` to last ``on_train_batch_end``, as in
``plain_keras_fit.py``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.same_build import build_as_train_does, read_config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cfg = read_config(args.config)

    import dataclasses

    import keras
    import tensorflow as tf

    from trainer.training.loop import LoopSettings, TrainingLoop
    from trainer.training.reporting import RunReporter
    from trainer.training.state import LoopState

    epochs = 2 * (args.rounds + 1)
    data, run = build_as_train_does(cfg, epochs)
    info, model, optimizer = data.info, run.model, run.optimizer
    trainer_cfg = cfg["trainer"]
    run_dir = Path(tempfile.mkdtemp(prefix="alternating-"))
    no_checkpoints = {
        **cfg,
        "checkpoint": {
            **cfg["checkpoint"],
            "monitor": "loss",
            "mode": "min",
            "every_n_steps": None,
            "every_n_epochs": None,
        },
    }
    settings = LoopSettings.from_config(no_checkpoints, run)
    loop = TrainingLoop(
        run,
        data,
        # epochs raised by one before each of our epochs; fit steps the optimizer too
        dataclasses.replace(settings, epochs=0, total_steps=10**12),
        LoopState(),
        RunReporter(run_dir, info.steps_per_epoch, model),
        lambda state, logs: None,  # no checkpoints: not what is compared
    )
    augmentation = run.augmentation
    soft = bool(augmentation) and augmentation.soft_labels
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=trainer_cfg.get("label_smoothing") or 0.0
        )
        if soft
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=trainer_cfg["jit_compile"],
        steps_per_execution=trainer_cfg["steps_per_execution"],
    )

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None) -> None:
            self.start = None

        def on_train_batch_begin(self, batch, logs=None) -> None:
            if self.start is None:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.last = time.perf_counter()

    timer = EpochTimer()

    def fit_data(epoch: int):
        """Epoch ``epoch``'s batches in a pipeline of its own, as our loop builds one per
        ``run()`` (here: per epoch); reusing one pipeline would spare fit the start of a
        new one (~0.25 s a digits epoch) that ours pays every epoch of this harness."""
        batches = data.train_epoch(epoch)
        if not augmentation:
            return batches
        # The same augmentation (trainer.data.augment) where a Keras user puts it for fit: mapped
        # over the batches of the pipeline, each batch seeded by its position as ours is.
        start = epoch * info.steps_per_epoch
        return batches.enumerate(start=start).map(
            lambda position, batch: augmentation(*batch, position),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    ours: list[float] = []
    fit: list[float] = []
    for round_index in range(args.rounds + 1):
        sides = ("ours", "fit") if round_index % 2 == 0 else ("fit", "ours")
        for side in sides:
            if side == "ours":
                loop.settings = dataclasses.replace(loop.settings, epochs=loop.settings.epochs + 1)
                loop.run()
            else:
                model.fit(
                    fit_data(round_index),
                    epochs=1,
                    validation_data=data.validation(),
                    callbacks=[timer],
                )
                fit.append(timer.last - timer.start)
    loop.reporter.close()
    with open(run_dir / "metrics.csv") as handle:
        import csv

        ours = [float(row["epoch_seconds"]) for row in csv.DictReader(handle)]
    args.out.write_text(
        yaml.safe_dump(
            {
                "ours_epoch_seconds": ours[1:],  # round 0: tracing, compiling, caches
                "fit_epoch_seconds": fit[1:],
                "train_examples": info.train_examples,
            }
        )
    )


if __name__ == "__main__":
    main()
