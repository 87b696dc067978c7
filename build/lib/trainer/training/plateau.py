"""Early stopping and reduce-on-plateau: Keras' semantics, our state.

Why not Keras' own ``EarlyStopping`` and ``ReduceLROnPlateau`` driven by the
loop's ``CallbackList``: ``ReduceLROnPlateau`` assigns a constant to
``optimizer.learning_rate``, which replaces the run's schedule (and
``model.optimizer``, which it reads, is not set on an uncompiled model); both
keep their counters in attributes that ``on_train_begin`` resets and that no
``get_state`` exposes, so a resumed run would restart them. Here the same
decisions are pure functions of the epoch's value and a few numbers kept in
``trainer.training.state.LoopState`` (saved with every checkpoint, bounded when read back
by ``checkpoints.reading``); ``tests/test_callbacks.py`` checks them
epoch by epoch against Keras' callbacks on the same logs. Reduce-on-plateau
scales the schedule (``trainer.optim.schedules.ScaledSchedule``) instead of
replacing it.

Keras' rules (``keras.callbacks.MonitorCallback._is_improvement``):
``value`` improves on ``reference`` when ``value - min_delta > reference``
(mode max) or ``value + min_delta < reference`` (mode min); anything improves on
``None``. Values are compared as Python floats (Keras compares float32 tensors:
values closer than float32 can tell apart may be decided differently).

This module never imports TensorFlow.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


def is_improvement(value: float, reference: float | None, mode: str, min_delta: float) -> bool:
    """Keras' test of ``value`` against ``reference`` (see the module docstring).

    >>> is_improvement(0.5, None, "max", 0.0)
    True
    >>> is_improvement(0.51, 0.5, "max", 0.02), is_improvement(0.49, 0.5, "min", 0.0)
    (False, True)
    """
    if reference is None:
        return True
    delta = abs(min_delta)
    if mode == "max":
        return value - delta > reference
    return value + delta < reference


class EarlyStoppingState(Protocol):
    """What :meth:`EarlyStopping.update` reads and changes (``LoopState`` has these)."""

    epochs_without_improvement: int  # Keras' `wait`
    early_stopping_best: float | None
    early_stopping_best_epoch: int
    stopped_early: bool


class PlateauState(Protocol):
    """What :meth:`ReduceOnPlateau.update` reads and changes (``LoopState`` has these)."""

    epochs_since_lr_cut: int  # Keras' `wait`
    plateau_best: float | None
    plateau_cooldown: int  # Keras' `cooldown_counter`
    lr_scale: float


def _monitored(logs: Mapping[str, Any], monitor: str) -> float | None:
    value = logs.get(monitor)
    if value is None or not isinstance(value, int | float) or math.isnan(value):
        return None  # Keras skips a missing value; a NaN never improves nor counts
    return float(value)


@dataclass(frozen=True)
class EarlyStopping:
    """``keras.callbacks.EarlyStopping``'s decisions (``trainer.early_stopping``).

    Each epoch from ``start_from_epoch`` on that has a value of ``monitor``
    counts one more epoch without improvement; an improvement on the best so far
    resets the count, unless ``baseline`` is set and not beaten. Training stops
    when the count reaches ``patience`` (never after the first epoch, as in Keras).
    ``restore_best_weights``: the epoch of the best value is recorded
    (``early_stopping_best_epoch``) so the loop can keep those weights.
    """

    patience: int
    monitor: str
    mode: str
    min_delta: float = 0.0
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: int = 0

    def update(self, state: EarlyStoppingState, epoch: int, logs: Mapping[str, Any]) -> str:
        """Take epoch ``epoch``'s (0-based) ``logs``; returns ``"skip"`` when the epoch is not
        watched (no value, or before ``start_from_epoch``), ``"best"`` when it is the best so
        far, ``"stop"`` when training stops after it, ``""`` otherwise."""
        value = _monitored(logs, self.monitor)
        if value is None or epoch < self.start_from_epoch:
            return "skip"
        state.epochs_without_improvement += 1
        if is_improvement(value, state.early_stopping_best, self.mode, self.min_delta):
            state.early_stopping_best = value
            state.early_stopping_best_epoch = epoch
            if self.baseline is None or is_improvement(
                value, self.baseline, self.mode, self.min_delta
            ):
                state.epochs_without_improvement = 0
            return "best"
        if state.epochs_without_improvement >= self.patience and epoch > 0:
            state.stopped_early = True
            return "stop"
        return ""


@dataclass(frozen=True)
class ReduceOnPlateau:
    """``keras.callbacks.ReduceLROnPlateau``'s decisions (``trainer.reduce_on_plateau``).

    After ``patience`` epochs without improvement of ``monitor`` (not counted
    during ``cooldown`` epochs after a cut), the rate is multiplied by
    ``factor``, but not below ``min_lr``, and not cut at all once at or below it.
    The rate is that of the schedule at the epoch's end; the cut is kept as a
    factor on the schedule (``lr_scale``), so the schedule goes on from there.
    """

    patience: int
    factor: float
    monitor: str
    mode: str
    min_delta: float = 0.0
    cooldown: int = 0
    min_lr: float = 0.0

    def update(self, state: PlateauState, logs: Mapping[str, Any], learning_rate: float) -> bool:
        """Take one epoch's ``logs`` and the rate in effect (``learning_rate``, scaled);
        returns whether the rate was cut (``state.lr_scale`` then holds the new factor)."""
        value = _monitored(logs, self.monitor)
        if value is None:
            return False
        if state.plateau_cooldown > 0:
            state.plateau_cooldown -= 1
            state.epochs_since_lr_cut = 0
        if is_improvement(value, state.plateau_best, self.mode, self.min_delta):
            state.plateau_best = value
            state.epochs_since_lr_cut = 0
            return False
        if state.plateau_cooldown > 0:
            return False
        state.epochs_since_lr_cut += 1
        if state.epochs_since_lr_cut < self.patience:
            return False
        # Keras compares with float32(min_lr): the optimizer's rate is a float32.
        if not learning_rate > float(_float32(self.min_lr)):
            return False
        cut = max(learning_rate * self.factor, self.min_lr)
        state.lr_scale = state.lr_scale * cut / learning_rate
        state.plateau_cooldown = self.cooldown
        state.epochs_since_lr_cut = 0
        return True


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _monitor_and_mode(section: Mapping[str, Any], checkpoint: Mapping[str, Any]) -> dict[str, str]:
    """``monitor: null`` follows ``checkpoint.monitor`` and ``checkpoint.mode``; a monitor of
    its own with ``mode: null`` is minimised if it is a loss, else maximised (Keras' auto)."""
    monitor, mode = section.get("monitor"), section.get("mode")
    if monitor is None:
        monitor, mode = checkpoint["monitor"], mode or checkpoint["mode"]
    if mode is None:
        mode = "min" if str(monitor).endswith("loss") else "max"
    return {"monitor": str(monitor), "mode": str(mode)}


def early_stopping_from_config(
    trainer: Mapping[str, Any], checkpoint: Mapping[str, Any]
) -> EarlyStopping | None:
    """``trainer.early_stopping`` as an :class:`EarlyStopping`; None while it is off."""
    section = trainer.get("early_stopping") or {}
    if section.get("patience") is None:
        return None
    return EarlyStopping(
        patience=int(section["patience"]),
        min_delta=float(section.get("min_delta", 0.0)),
        baseline=None if section.get("baseline") is None else float(section["baseline"]),
        restore_best_weights=bool(section.get("restore_best_weights", False)),
        start_from_epoch=int(section.get("start_from_epoch", 0)),
        **_monitor_and_mode(section, checkpoint),
    )


def reduce_on_plateau_from_config(
    trainer: Mapping[str, Any], checkpoint: Mapping[str, Any]
) -> ReduceOnPlateau | None:
    """``trainer.reduce_on_plateau`` as a :class:`ReduceOnPlateau`; None while it is off."""
    section = trainer.get("reduce_on_plateau") or {}
    if section.get("patience") is None:
        return None
    return ReduceOnPlateau(
        patience=int(section["patience"]),
        factor=float(section.get("factor", 0.5)),
        min_delta=float(section.get("min_delta", 0.0)),
        cooldown=int(section.get("cooldown", 0)),
        min_lr=float(section.get("min_lr", 0.0)),
        **_monitor_and_mode(section, checkpoint),
    )
