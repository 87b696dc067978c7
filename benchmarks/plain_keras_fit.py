"""The reference: a plain Keras script that trains what train.py trains, with ``model.fit``.

    python -m benchmarks.plain_keras_fit --config CONFIG.yaml --out TIMES.json
    python -m benchmarks.plain_keras_fit --config CONFIG.yaml --out TIMES.json --checkpoint-dir D

``CONFIG.yaml`` is the config train.py composes (``train.py ... --cfg job --resolve``).
Same data (``trainer.data.pipeline.load_data(...).train_epoch(...)``), same model
(``trainer.models.registry.build_model``), same optimizer and learning-rate schedule
(resolved to the same number of steps), same loss, metrics, seed,
``jit_compile`` and ``steps_per_execution``; validation each epoch and a test
evaluation at the end, as train.py does. No checkpoints, no TensorBoard, no
metrics file: what a user gets from ``fit`` with the default progress bar.
With ``--checkpoint-dir D``, what a Keras user adds to keep one: Keras'
``ModelCheckpoint`` at its defaults, the whole model (weights and optimizer) as
``D/epoch-NNN.keras`` after every epoch (not fsynced, none pruned).

Writes ``{"epoch_seconds": [...], "train_examples": N, ...}``. An epoch's time
runs from its first ``on_train_batch_begin`` (the epoch's iterator exists) to
its last ``on_train_batch_end`` (before validation), as train.py's
``epoch_seconds`` runs from the epoch's iterator to its last step.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.same_build import build_as_train_does, read_config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path, help="ModelCheckpoint every epoch here")
    args = parser.parse_args()
    cfg = read_config(args.config)

    import keras

    epochs = cfg["trainer"]["epochs"]
    data, run = build_as_train_does(cfg, epochs, cfg["trainer"].get("max_steps"))
    model, optimizer = run.model, run.optimizer
    info = data.info
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=cfg["trainer"]["jit_compile"],
        steps_per_execution=cfg["trainer"]["steps_per_execution"],
    )

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epoch_seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self._start = None

        def on_train_batch_begin(self, batch, logs=None) -> None:
            if self._start is None:  # the epoch's iterator exists now, as in train.py's timing
                self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None) -> None:
            self._last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.epoch_seconds.append(self._last - self._start)

    timer = EpochTimer()
    callbacks: list[keras.callbacks.Callback] = [timer]
    if args.checkpoint_dir is not None:  # after the timer: its epoch ends before the save
        callbacks.append(
            keras.callbacks.ModelCheckpoint(str(args.checkpoint_dir / "epoch-{epoch:03d}.keras"))
        )
    history = model.fit(
        data.train_epoch(0),
        epochs=epochs,
        validation_data=data.validation(),
        callbacks=callbacks,
    )
    _, test_accuracy = model.evaluate(data.test())
    args.out.write_text(
        json.dumps(
            {
                "epoch_seconds": timer.epoch_seconds,
                "train_examples": info.train_examples,
                "steps_per_epoch": info.steps_per_epoch,
                "final_loss": history.history["loss"][-1],
                "test_accuracy": test_accuracy,
            }
        )
    )


if __name__ == "__main__":
    main()
