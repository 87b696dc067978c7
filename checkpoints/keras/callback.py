"""``ResumableCheckpoint``: never lose a ``model.fit`` run.

::

    from checkpoints.keras import ResumableCheckpoint

    checkpoint = ResumableCheckpoint("checkpoints/run1", save_freq=50, keep_last=3)
    model.fit(checkpoint.dataset(epoch_data), epochs=10,
              validation_data=val, callbacks=[checkpoint])   # the checkpoint first

Run the same script again and it goes on from the newest checkpoint that
verifies (one that does not is skipped, and said so): the weights, every
optimizer variable (slots, ``iterations``, loss scale, EMA), the RNG state of
the model's dropout layers, the epoch and the batch within it, the metrics of
the epoch so far, the best value of ``monitor``, and the state of the callbacks
given as ``callbacks=[...]`` (Keras' ``EarlyStopping`` and ``ReduceLROnPlateau``,
or any with ``get_state``/``set_state``; ``LearningRateScheduler`` needs only
the epoch). Once the run has finished, running it again trains nothing.

The checkpoints are the project's (``checkpoints.manager.CheckpointManager``):
atomic, with a verified manifest, pruned by ``keep_last``/``keep_best``, committed
in the background with ``async_=True``; one process writes a directory at a time
(``checkpoints.lock``). ``python -m trainer list|verify DIR`` read them, and
``model.weights.h5`` loads with plain ``model.load_weights``.

Mid-epoch (``save_freq=N`` optimizer steps) resumes train each batch exactly
once: the training data comes from :meth:`ResumableCheckpoint.dataset` (each
epoch's order a function of the epoch: ``checkpoints.keras.data``), and the
resumed epoch reads the batches before the checkpoint without training on them
(``checkpoints.keras.internals``). ``save_freq=N`` without it is refused in one
line before anything trains. A checkpoint is also written at the end of every
epoch (after validation: what ``keep_best`` ranks by).

The optimizer is never deserialized: the script builds it, the checkpoint's
variables are restored into it, after checking that it is the one the checkpoint
was written from (``checkpoints.keras.match``); a different model or optimizer is
one line (:class:`~checkpoints.errors.UserError`), and nothing is trained or loaded.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import yaml

from checkpoints.callback_state import check_callback_state, has_state
from checkpoints.errors import UserError
from checkpoints.keep import KeepPolicy
from checkpoints.keras import internals
from checkpoints.keras.data import EpochData
from checkpoints.keras.match import built_record, mismatch
from checkpoints.listing import latest_valid_checkpoint
from checkpoints.lock import run_lock
from checkpoints.manager import CheckpointManager
from checkpoints.manifest import Checkpoint, ModelShape
from checkpoints.reading import read_plain_config
from checkpoints.restore import read_best_weights, restore_state
from checkpoints.state import progress_manifest, snapshot_state


class ResumableCheckpoint(keras.callbacks.Callback):
    """Checkpoints ``model.fit`` into ``directory``; running the script again resumes it.

    Args:
        directory: where the checkpoints go (created if need be); one run per directory.
        save_freq: ``"epoch"``, or a number of optimizer steps (and every epoch's end).
        keep_last: how many of the newest checkpoints pruning keeps.
        keep_best: how many of the best by ``monitor`` it keeps besides.
        monitor: the metric ``keep_best`` and the best-so-far value follow.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (max for accuracy and AUC, else min).
        async_: commit each checkpoint in the background while training goes on.
        callbacks: the other callbacks of the ``fit`` whose state the checkpoints keep.
        report: where the one-line messages go (resumed from, skipped checkpoints).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        save_freq: str | int = "epoch",
        *,
        keep_last: int = 3,
        keep_best: int = 1,
        monitor: str = "val_loss",
        mode: str = "auto",
        async_: bool = False,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        report: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        if save_freq != "epoch" and not (
            isinstance(save_freq, int) and not isinstance(save_freq, bool) and save_freq > 0
        ):
            raise ValueError(f"save_freq must be 'epoch' or a positive integer, got {save_freq!r}")
        if mode == "auto":
            mode = "max" if any(k in monitor for k in ("acc", "auc")) else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.directory = Path(directory)
        self.save_freq = save_freq
        self.policy = KeepPolicy(
            keep_last=keep_last, keep_best=keep_best, monitor=monitor, mode=mode
        )
        self.asynchronous = bool(async_)
        self.tracked = list(callbacks)
        self.report = report
        self.best: float | None = None  # the best value of `monitor` so far
        self.resumed_from: Checkpoint | None = None
        self._data: EpochData | None = None
        self._stack = contextlib.ExitStack()
        self._manager: CheckpointManager | None = None
        self._reset_position(None)

    # ------------------------------------------------------------------ public

    def dataset(self, make_epoch: Callable[[tf.Tensor], tf.data.Dataset]) -> tf.data.Dataset:
        """The training data for ``fit``: ``make_epoch(epoch)`` gives one epoch's batches,
        their order a function of the epoch (see ``checkpoints.keras.data``)."""
        self._data = EpochData(make_epoch)
        return self._data.dataset

    @property
    def initial_epoch(self) -> int:
        """The epoch a ``fit`` started now begins at: the newest valid checkpoint's (0 if
        none). Pass it as ``fit(..., initial_epoch=...)`` where this Keras needs it."""
        found = (
            latest_valid_checkpoint(self.directory, lambda _: None)
            if self.directory.is_dir()
            else None
        )
        return int((found.manifest or {}).get("epoch", 0)) if found else 0

    # ------------------------------------------------------------------ fit's calls

    def on_train_begin(self, logs: dict | None = None) -> None:
        model = self.model
        if not model.built or model.optimizer is None:
            raise UserError("ResumableCheckpoint: build and compile the model before fit")
        if self.save_freq != "epoch" and self._data is None:
            raise UserError(
                f"ResumableCheckpoint(save_freq={self.save_freq}) resumes mid-epoch only with "
                "the training data from checkpoint.dataset(make_epoch) (the same batches in "
                "the same order); use it, or save_freq='epoch'"
            )
        if self.save_freq != "epoch" and getattr(model, "steps_per_execution", 1) != 1:
            raise UserError(
                f"ResumableCheckpoint(save_freq={self.save_freq}) needs compile(steps_per_"
                "execution=1); use save_freq='epoch' with more steps per execution"
            )
        self._reset_position(None)
        with contextlib.ExitStack() as stack:
            self.directory.mkdir(parents=True, exist_ok=True)
            stack.enter_context(run_lock(self.directory, self.report))
            self._record = built_record(model, model.optimizer)
            self._shape = ModelShape(
                tuple(int(n) for n in model.inputs[0].shape[1:]) if model.inputs else (),
                int(model.outputs[0].shape[-1]) if model.outputs else 0,
            )
            self._config_yaml = yaml.safe_dump(self._record, sort_keys=False)
            self._manager = CheckpointManager(
                self.directory, self.policy, asynchronous=self.asynchronous, report=self.report
            )
            found = latest_valid_checkpoint(self.directory, self.report)
            if found is not None:
                self._resume(found)
            self._stack = stack.pop_all()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._save_epoch_end()
        if self._expected_epoch is not None:
            self._check_first_epoch(epoch)
        if self._data is not None:
            self._data.set_epoch(epoch)
        self._epoch, self._batches_done = epoch, self._skip

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch < self._skip:
            if self._skipper is None or self._skipper.skipped != batch + 1:
                raise RuntimeError(
                    f"keras {keras.__version__} trained batch {batch}, which checkpoint "
                    f"{self.resumed_from.path} had trained on: see checkpoints.keras.internals"
                )
            return
        if self._epoch_metrics is not None:
            self._add_epoch_metrics()
        self._batches_done = batch + 1
        steps = self.params.get("steps")
        step = self._global_step()
        if (
            self.save_freq != "epoch"
            and step % self.save_freq == 0
            and (steps is None or self._batches_done < steps)  # the epoch's end saves it
        ):
            self._save(logs or {})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._skip, self._skipper = 0, None
        self._epoch, self._batches_done = epoch + 1, 0
        value = (logs or {}).get(self.policy.monitor)
        if value is not None and math.isfinite(float(value)):
            score = self.policy.score({"metrics": {self.policy.monitor: float(value)}})
            if self.best is None or score > self.policy.score(
                {"metrics": {self.policy.monitor: self.best}}
            ):
                self.best = float(value)
        # Saved once every callback's on_epoch_end has run (EarlyStopping's counters,
        # ReduceLROnPlateau's cut): at the next epoch's begin (this callback first in
        # fit's list, so before LearningRateScheduler's) or at the end of training.
        self._epoch_end_logs = dict(logs or {})

    def _save_epoch_end(self) -> None:
        logs, self._epoch_end_logs = self._epoch_end_logs, None
        if logs is not None:
            self._save(logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        try:
            if self._manager is not None:
                # EarlyStopping (or any callback) ended the run before its last epoch: the
                # last checkpoint says so, and running the script again trains nothing.
                self._stopped_early = bool(getattr(self.model, "stop_training", False))
                self._save_epoch_end()
                self._manager.close()
        finally:
            self._manager = None
            self._stack.close()

    # ------------------------------------------------------------------ resume

    def _reset_position(self, expected_epoch: int | None) -> None:
        self._epoch, self._batches_done, self._skip = 0, 0, 0
        self._skipper: internals.BatchSkipper | None = None
        self._expected_epoch = expected_epoch
        self._pending: dict[str, Any] | None = None
        self._epoch_metrics: list[float] | None = None
        self._epoch_end_logs: dict[str, Any] | None = None
        self._stopped_early = False

    def _resume(self, checkpoint: Checkpoint) -> None:
        """Check that the script built what ``checkpoint`` holds, then load it into it."""
        model = self.model
        saved = read_plain_config(checkpoint)
        problem = mismatch(saved, self._record)
        if problem:
            raise UserError(
                f"checkpoint {checkpoint.path} does not fit what this script builds: {problem}; "
                "build the same model and optimizer, or use another directory"
            )
        loop = restore_state(checkpoint, model, model.optimizer)["loop"]
        self._check_callbacks(checkpoint, loop.get("callbacks", []))
        self.resumed_from = checkpoint
        self.best = loop.get("best")
        epoch, self._skip = int(loop["epoch"]), int(loop["batches_done"])
        if loop.get("stopped_early"):  # the run is over: fit trains no epoch
            epoch, self._skip = int(self.params.get("epochs") or epoch), 0
            self.report(f"{checkpoint.path}: the run stopped early at epoch {loop['epoch']}")
        if self._skip and self._data is None:
            raise UserError(
                f"checkpoint {checkpoint.path} was written mid-epoch: resuming it needs the "
                "training data from checkpoint.dataset(make_epoch)"
            )
        self._expected_epoch = epoch
        self._pending = {"loop": loop, "checkpoint": checkpoint}
        if internals.can_set_initial_epoch(model):
            internals.set_initial_epoch(model, epoch)
        else:
            self.report(
                f"keras {keras.__version__} does not take the first epoch from the model: pass "
                "initial_epoch=checkpoint.initial_epoch to model.fit"
            )
        if self._skip:
            self._skipper = internals.skip_batches(model, self._skip)
        where = f"epoch {epoch}" + (f", batch {self._skip}" if self._skip else "")
        self.report(f"Resuming from {checkpoint.path} (step {checkpoint.global_step}, {where})")

    def _check_first_epoch(self, epoch: int) -> None:
        """``fit`` must start where the checkpoint left off; then the rest is restored."""
        expected, self._expected_epoch = self._expected_epoch, None
        if internals.can_set_initial_epoch(self.model):
            internals.set_initial_epoch(self.model, None)  # a later fit starts as it says
        if epoch != expected:
            raise UserError(
                f"model.fit started at epoch {epoch}, checkpoint {self.resumed_from.path} at "
                f"epoch {expected}: pass initial_epoch=checkpoint.initial_epoch to model.fit"
            )
        pending, self._pending = self._pending, None
        loop = pending["loop"]
        # Keras' callbacks reset their counters in on_train_begin: given back now.
        for callback, entry in zip(self.tracked, loop.get("callbacks", []), strict=True):
            if entry["state"] is not None:
                self._set_callback_state(callback, entry["state"])
        weights = read_best_weights(pending["checkpoint"], self.model)
        if weights is not None:  # early stopping's best weights: for its restore_best_weights
            for callback in self.tracked:
                if internals.best_weights_of(callback) is None:
                    internals.set_best_weights(callback, weights)
        if self._skip:
            self._epoch_metrics = loop.get("epoch_metrics", [])

    def _add_epoch_metrics(self) -> None:
        """Add the metrics of the epoch before the checkpoint to those of the first batch
        trained after it. Keras builds the compiled metrics in the first step, so they
        cannot be set before; their variables are sums (Keras' ``Mean`` and ``Sum``
        metrics, confusion counts), and float addition commutes, so the epoch's logs are
        the bits the uninterrupted run logs. That one batch's own logs are its alone."""
        values, self._epoch_metrics = self._epoch_metrics, None
        variables = self.model.metrics_variables
        if len(values) != sum(int(np.prod(v.shape)) for v in variables):
            raise UserError(
                f"checkpoint {self.resumed_from.path} holds {len(values)} metric values, the "
                "metrics this script compiled have another number"
            )
        offset = 0
        for variable in variables:
            size = int(np.prod(variable.shape))
            saved = np.asarray(values[offset : offset + size], dtype=variable.dtype)
            variable.assign(np.asarray(variable) + saved.reshape(variable.shape))
            offset += size

    def _check_callbacks(self, checkpoint: Checkpoint, saved: list[dict[str, Any]]) -> None:
        names = [type(c).__name__ for c in self.tracked]
        if [entry.get("name") for entry in saved] != names:
            raise UserError(
                f"checkpoint {checkpoint.path} kept the state of callbacks "
                f"{[entry.get('name') for entry in saved]}, this fit tracks {names}"
            )

    # ------------------------------------------------------------------ save

    def _global_step(self) -> int:
        return int(np.asarray(self.model.optimizer.iterations))

    def _loop_state(self) -> dict[str, Any]:
        metrics: list[float] = []
        if self._batches_done:
            for variable in self.model.metrics_variables:
                metrics.extend(float(x) for x in np.asarray(variable).ravel())
        return {
            "epoch": self._epoch,
            "batches_done": self._batches_done,
            "epochs_completed": self._epoch,
            "best": self.best,
            "callbacks": [
                {"name": type(c).__name__, "state": self._callback_state(i, c)}
                for i, c in enumerate(self.tracked)
            ],
            "epoch_metrics": metrics,
            "stopped_early": self._stopped_early,
        }

    def _save(self, logs: dict[str, Any]) -> None:
        model, optimizer = self.model, self.model.optimizer
        loop = self._loop_state()
        best_weights = next(
            (w for c in self.tracked if (w := internals.best_weights_of(c)) is not None), None
        )
        metrics = {
            key: float(value)
            for key, value in logs.items()
            if isinstance(value, int | float | np.number) and math.isfinite(float(value))
        }
        files = (model, optimizer, {"loop": loop}, self._config_yaml, best_weights)

        def write_files(staging: Path) -> Callable[[Path], None] | None:
            write = snapshot_state(*files)
            if self.asynchronous:
                return write  # the manager writes the held values on its thread
            write(staging)
            return None

        manifest = progress_manifest(
            self._global_step(),
            loop,
            int(self.params.get("steps") or 0),
            metrics,
            float(np.asarray(optimizer.learning_rate)),
            self.policy.monitor,
            self._shape,
        )
        self._manager.save(self._global_step(), write_files, manifest)

    # ------------------------------------------------------------------ other callbacks

    def _callback_state(self, index: int, callback: Any) -> Any:
        if internals.is_keras_stateful(callback):
            return internals.keras_callback_state(callback)
        if not has_state(callback):
            return None
        state = callback.get_state()
        check_callback_state(f"callbacks[{index}] ({type(callback).__name__})", state)
        return state

    def _set_callback_state(self, callback: Any, state: Any) -> None:
        if internals.is_keras_stateful(callback):
            internals.set_keras_callback_state(callback, state)
        elif callable(getattr(callback, "set_state", None)):
            callback.set_state(state)
