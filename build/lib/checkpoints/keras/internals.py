"""Every Keras detail the ``model.fit`` callback relies on that Keras does not document.

DESIGN.md contract 13: private names live here, each beside its public path and
behind a check that says so, once, when the installed Keras behaves otherwise.
``tests/test_fit_callback.py`` fails loudly when an installed Keras changes one.
Checked against Keras 3.15 (``keras/src/backend/tensorflow/trainer.py``, ``fit``):

- **the first epoch**: ``fit`` starts at ``model._initial_epoch or initial_epoch``,
  read after ``on_train_begin`` (``BackupAndRestore`` sets it the same way). Public
  path: ``model.fit(..., initial_epoch=checkpoint.initial_epoch)``. The callback
  checks at the first ``on_epoch_begin`` that ``fit`` started where it should, and
  refuses to go on (one line, nothing trained yet) when it did not.
- **skipping trained batches**: ``fit`` calls ``model.train_function(iterator)``
  once per batch (``steps_per_execution=1``), looking the attribute up each time,
  after ``on_train_batch_begin``. :func:`skip_batches` puts a function there that
  takes a batch from the iterator without training on it, for the first ``count``
  batches of the resumed epoch, then puts Keras' own back. The callback checks at
  each skipped batch's ``on_train_batch_end`` that it was skipped. No public path
  gives this (``BackupAndRestore`` trains those batches again).
- **Keras' own callbacks' counters**: ``EarlyStopping`` keeps ``wait``,
  ``stopped_epoch``, ``best``, ``best_epoch``, ``best_weights``;
  ``ReduceLROnPlateau`` keeps ``wait``, ``cooldown_counter``, ``best``: attributes
  without ``get_state``, which their ``on_train_begin`` resets.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

INITIAL_EPOCH = "_initial_epoch"

# The counters of Keras' own callbacks that a resumed run must continue, by class.
KERAS_CALLBACK_COUNTERS: dict[type, tuple[str, ...]] = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter"),
}


def can_set_initial_epoch(model: keras.Model) -> bool:
    """Whether ``fit`` of this Keras reads the first epoch from the model (see above)."""
    return hasattr(model, INITIAL_EPOCH)


def set_initial_epoch(model: keras.Model, epoch: int | None) -> None:
    """Make the ``fit`` now starting begin at ``epoch`` (None: as its argument says)."""
    setattr(model, INITIAL_EPOCH, epoch)


class BatchSkipper:
    """Stands in for ``model.train_function`` for the first ``count`` batches of an epoch:
    each call takes one batch from the iterator (read, not trained on) and returns no
    logs; then Keras' function is put back. ``skipped`` counts the calls."""

    def __init__(self, model: keras.Model, count: int) -> None:
        self.model, self.count, self.skipped = model, count, 0
        self.train_function = model.train_function

    def __call__(self, iterator: Any) -> dict[str, Any]:
        next(iterator)
        self.skipped += 1
        if self.skipped >= self.count:
            self.model.train_function = self.train_function
        return {}


def skip_batches(model: keras.Model, count: int) -> BatchSkipper:
    """Have ``fit`` read the next ``count`` batches without training on them (see above).

    Call it after ``fit`` has made its train function (from ``on_train_begin`` on).
    """
    if not callable(getattr(model, "train_function", None)):
        raise RuntimeError(
            f"keras {keras.__version__}: model.train_function is not set when training "
            "begins; the batches a checkpoint already trained on cannot be skipped"
        )
    skipper = BatchSkipper(model, count)
    model.train_function = skipper
    return skipper


def _counters(callback: Any) -> tuple[str, ...] | None:
    return next((c for t, c in KERAS_CALLBACK_COUNTERS.items() if isinstance(callback, t)), None)


def is_keras_stateful(callback: Any) -> bool:
    """Whether ``callback`` is one of Keras' own whose counters are saved here."""
    return _counters(callback) is not None


def keras_callback_state(callback: Any) -> dict[str, Any]:
    """The counters of one of Keras' own callbacks as JSON data (``best``: None
    while it has none, or when it is infinite, as ReduceLROnPlateau starts)."""
    state = {name: int(getattr(callback, name)) for name in _counters(callback) or ()}
    best = getattr(callback, "best", None)
    best = None if best is None else float(np.asarray(best))
    state["best"] = best if best is not None and np.isfinite(best) else None
    return state


def set_keras_callback_state(callback: Any, state: dict[str, Any]) -> None:
    """Give one of Keras' own callbacks the counters :func:`keras_callback_state` saved."""
    for name in _counters(callback) or ():
        setattr(callback, name, int(state[name]))
    if state.get("best") is not None:
        callback.best = float(state["best"])


def best_weights_of(callback: Any) -> list[np.ndarray] | None:
    """``EarlyStopping(restore_best_weights=True)``'s best weights, if it holds any."""
    if isinstance(callback, keras.callbacks.EarlyStopping) and callback.restore_best_weights:
        return callback.best_weights
    return None


def set_best_weights(callback: Any, weights: list[np.ndarray]) -> None:
    """Give ``EarlyStopping(restore_best_weights=True)`` the best weights a checkpoint kept."""
    if isinstance(callback, keras.callbacks.EarlyStopping) and callback.restore_best_weights:
        callback.best_weights = weights
