"""The reference: a plain Keras script that trains what train.py trains, with ``model.fit``.

    python -m benchmarks.plain_keras_fit --config CONFIG.yaml --out TIMES.json

``CONFIG.yaml`` is the config train.py composes (``train.py ... --cfg job --resolve``).
Same data (``trainer.data.load_data(...).train_epoch(...)``), same model
(``trainer.models.build_model``), same optimizer and learning-rate schedule
(resolved to the same number of steps), same loss, metrics, seed,
``jit_compile`` and ``steps_per_execution``; validation each epoch and a test
evaluation at the end, as train.py does. No checkpoints, no TensorBoard, no
metrics file: what a user gets from ``fit`` with the default progress bar.

Writes ``{"epoch_seconds": [...], "train_examples": N, ...}``. An epoch's time
runs from its first ``on_train_batch_begin`` (the epoch's iterator exists) to
its last ``on_train_batch_end`` (before validation), as train.py's
``epoch_seconds`` runs from the epoch's iterator to its last step.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from pathlib import Path

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    for module in cfg.get("imports") or []:
        importlib.import_module(module)

    import keras

    from trainer.data import load_data
    from trainer.models import build_model
    from trainer.optimizers import build_optimizer
    from trainer.schedules import build_schedule, resolve_schedule

    keras.utils.set_random_seed(cfg["seed"])
    data = load_data(cfg["dataset"], seed=cfg["seed"])
    info = data.info
    epochs = cfg["trainer"]["epochs"]
    total_steps = epochs * info.steps_per_epoch
    if cfg["trainer"].get("max_steps") is not None:
        total_steps = min(total_steps, cfg["trainer"]["max_steps"])
    resolved = resolve_schedule(
        cfg["schedule"], steps_per_epoch=info.steps_per_epoch, total_steps=total_steps
    )
    model = build_model(cfg["model"], tuple(info.input_shape), info.num_classes)
    schedule = build_schedule(resolved, cfg["optimizer"]["learning_rate"])
    optimizer = build_optimizer(cfg["optimizer"], schedule)
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
    history = model.fit(
        data.train_epoch(0),
        epochs=epochs,
        validation_data=data.validation(),
        callbacks=[timer],
    )
    test_loss, test_accuracy = model.evaluate(data.test())
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
