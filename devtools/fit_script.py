"""A plain ``model.fit`` script, as a Keras user writes it, for the SIGKILL tests.

    python -m devtools.fit_script DIR --out RESULT.json [--keeper ours|backup|none]
        [--save-freq 5|epoch] [--async] [--extras] [--width 8] [--epochs 3]

A small CNN (one dropout layer) on the digits scikit-learn ships (offline),
``Adam`` with a ``CosineDecay`` schedule (``--extras``: a constant rate driven by
``LearningRateScheduler``, with ``EarlyStopping`` and ``ReduceLROnPlateau`` beside
it), deterministic on CPU (``keras.utils.set_random_seed`` and op determinism).
``--keeper`` picks what keeps the run: ``ResumableCheckpoint`` into DIR (the data
from its ``dataset``), Keras' ``BackupAndRestore`` into DIR (the same epochs'
order, from the same per-epoch function), or nothing.

Fault injection by environment: ``FIT_KILL_AT_STEP=k`` SIGKILLs the process after
optimizer step ``k``; ``FIT_KILL_IN_SAVE=k`` SIGKILLs it inside the first save
after step ``k`` (its files staged, not committed; ``BackupAndRestore``: its
weights file truncated). ``FIT_PROGRESS=FILE`` keeps the count of steps trained in
FILE. RESULT.json gets the final weights' sha256, ``iterations``, the learning
rate, the steps this process trained and the callbacks' counters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SEED = 1234
BATCH = 64
TRAIN, VAL = 512, 256


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_in_save(after_step: int, model) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL inside the first commit after ``after_step`` (files staged, not renamed)."""
    import checkpoints.manager

    commit = checkpoints.manager.commit_checkpoint

    def commit_or_die(staging, final, manifest):  # type: ignore[no-untyped-def]
        if int(model.optimizer.iterations.numpy()) > after_step:
            _die()
        return commit(staging, final, manifest)

    checkpoints.manager.commit_checkpoint = commit_or_die


def _kill_in_backup(after_step: int, model) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL ``BackupAndRestore`` inside its first save after ``after_step``: the weights
    file it overwrites in place is truncated, not yet rewritten."""
    save_weights = type(model).save_weights

    def save_or_die(self, filepath, *args, **kwargs):  # type: ignore[no-untyped-def]
        if int(self.optimizer.iterations.numpy()) > after_step:
            open(filepath, "wb").close()
            _die()
        return save_weights(self, filepath, *args, **kwargs)

    type(model).save_weights = save_or_die


def _model(width: int):  # type: ignore[no-untyped-def]
    import keras

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(width, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10),
        ]
    )


def _extras() -> list:
    """Keras' callbacks whose state must continue: the rate by epoch, and two counters."""
    import keras

    return [
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9),
        keras.callbacks.EarlyStopping("val_loss", patience=5, min_delta=1e-3),
        keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=0.5),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--out", required=True)
    parser.add_argument("--keeper", choices=("ours", "backup", "none"), default="ours")
    parser.add_argument("--save-freq", default="5")
    parser.add_argument("--async", dest="asynchronous", action="store_true")
    parser.add_argument("--extras", action="store_true")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    options = parser.parse_args(argv)

    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from checkpoints.errors import UserError
    from checkpoints.keras import ResumableCheckpoint

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    x_train, y_train = x[:TRAIN], y[:TRAIN]
    validation = (x[TRAIN : TRAIN + VAL], y[TRAIN : TRAIN + VAL])
    steps_per_epoch = TRAIN // BATCH

    def epoch_data(epoch):  # type: ignore[no-untyped-def]
        return (
            tf.data.Dataset.from_tensor_slices((x_train, y_train))
            .shuffle(TRAIN, seed=SEED + epoch)
            .batch(BATCH, drop_remainder=True)
        )

    model = _model(options.width)
    learning_rate = 3e-3
    if not options.extras:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            3e-3, decay_steps=2 * steps_per_epoch * options.epochs
        )
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    extras = _extras() if options.extras else []
    save_freq = options.save_freq if options.save_freq == "epoch" else int(options.save_freq)
    keeper = []
    data = epoch_data(0)
    if options.keeper == "ours":
        checkpoint = ResumableCheckpoint(
            options.directory,
            save_freq=save_freq,
            keep_last=2,
            keep_best=1,
            monitor="val_loss",
            async_=options.asynchronous,
            callbacks=extras,
        )
        keeper, data = [checkpoint], checkpoint.dataset(epoch_data)
    elif options.keeper == "backup":
        keeper = [keras.callbacks.BackupAndRestore(options.directory, save_freq=save_freq)]

    class Faults(keras.callbacks.Callback):
        """Counts the optimizer steps this process takes (a batch read and skipped is
        none); SIGKILLs the process after step ``kill_at``."""

        trained, last = 0, None

        def on_train_batch_end(self, batch, logs=None):  # type: ignore[no-untyped-def]
            step = int(self.model.optimizer.iterations.numpy())
            if step != Faults.last:
                Faults.trained += 1
            Faults.last = step
            if progress:  # what a killed run trained, for devtools.fit_kill_trials
                with open(progress, "w") as handle:
                    handle.write(str(Faults.trained))
            if step == kill_at:
                _die()

    kill_at = int(os.environ.get("FIT_KILL_AT_STEP", "-1"))
    progress = os.environ.get("FIT_PROGRESS")
    if os.environ.get("FIT_KILL_IN_SAVE"):
        inject = _kill_in_backup if options.keeper == "backup" else _kill_in_save
        inject(int(os.environ["FIT_KILL_IN_SAVE"]), model)
    try:
        model.fit(
            data,
            epochs=options.epochs,
            validation_data=validation,
            batch_size=None,
            callbacks=[*keeper, *extras, Faults()],
            verbose=0,
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    result = {
        "weights_sha256": digest.hexdigest(),
        "iterations": int(model.optimizer.iterations.numpy()),
        "learning_rate": float(model.optimizer.learning_rate.numpy()),
        "trained_steps": Faults.trained,
        "counters": [
            {k: getattr(c, k, None) for k in ("wait", "cooldown_counter", "stopped_epoch")}
            for c in extras
        ],
    }
    with open(options.out, "w") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
