"""Linear warmup as a wrapper around any registered schedule (Model Garden's way).

Warmup is not a parameter of each schedule: ``LinearWarmup(after, warmup_steps)``
ramps from 0 to ``after``'s starting rate, then hands over to ``after``.
Its config names ``after`` by its registry name, so it is rebuilt through
the registry alone (never by import path), unlike Model Garden's
``LinearWarmup`` whose config cannot rebuild its inner schedule (STYLE.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
from keras import ops

from trainer.optim.base import LearningRateSchedule
from trainer.optim.checks import positive, positive_int
from trainer.optim.schedules import SCHEDULES


@keras.saving.register_keras_serializable(package="trainer_schedule")
class LinearWarmup(LearningRateSchedule):
    """Linear warmup in front of any registered schedule ``after``.

    With ``W = warmup_steps`` and ``target = after(0)``::

        s <  W:  lr(s) = target * s / W
        s >= W:  lr(s) = after(s - W)

    so ``after`` starts where the warmup ends, and a run-length ``after`` is
    resolved to ``total_steps - W`` so that it ends where the run ends
    (unlike Keras ``CosineDecay(warmup_steps=...)``, see STYLE.md).

    ``get_config()`` stores ``after`` by its registry name and its parameters
    (``{"name": ..., "config": ...}``), and the constructor accepts that form
    back, so ``LinearWarmup(**w.get_config())`` (and ``from_config``) rebuild
    the schedule through the registry alone. ``learning_rate`` is the base
    rate ``after`` was built with; it is stored once, at the top level.

    >>> from trainer.optim.schedules import ConstantSchedule, schedule_value
    >>> w = LinearWarmup(ConstantSchedule(0.1), warmup_steps=4)
    >>> [round(schedule_value(w, step), 6) for step in (0, 1, 4, 100)]
    [0.0, 0.025, 0.1, 0.1]
    >>> LinearWarmup(**w.get_config()).get_config() == w.get_config()
    True
    """

    def __init__(
        self,
        after: LearningRateSchedule | Mapping[str, Any],
        warmup_steps: int,
        learning_rate: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(after, Mapping):
            after = _schedule_from_name(after, learning_rate)
        if not isinstance(after, LearningRateSchedule):
            raise TypeError(f"LinearWarmup wraps a LearningRateSchedule, got {after!r}")
        self.after = after
        self.after_name = _registry_name(type(after))
        self.warmup_steps = positive_int("warmup_steps", warmup_steps)
        after_lr = after.get_config().get("learning_rate")
        if learning_rate is None:
            learning_rate = after_lr
        elif after_lr is not None and not math.isclose(learning_rate, after_lr):
            raise ValueError(
                f"learning_rate must be the rate {self.after_name!r} was built with, "
                f"{after_lr!r}, got {learning_rate!r}"
            )
        self.learning_rate = positive("learning_rate", learning_rate)

    def __call__(self, step: Any) -> Any:
        step = ops.convert_to_tensor(step)
        target = self.after(ops.zeros_like(step))
        warming = target * ops.cast(step, "float32") / float(self.warmup_steps)
        # where() evaluates both sides: clamp so `after` never sees a negative step.
        after_warmup = self.after(ops.maximum(step - self.warmup_steps, 0))
        return ops.where(step < self.warmup_steps, warming, after_warmup)

    def get_config(self) -> dict[str, Any]:
        after_config = dict(self.after.get_config())
        after_config.pop("learning_rate", None)
        return {
            "after": {"name": self.after_name, "config": after_config},
            "warmup_steps": self.warmup_steps,
            "learning_rate": self.learning_rate,
        }


def _registry_name(cls: type) -> str:
    for name in SCHEDULES.names():
        if SCHEDULES.get(name) is cls:
            return name
    raise ValueError(
        f"LinearWarmup wraps registered schedules only; {cls.__name__} is not registered "
        "(use trainer.optim.schedules.register_schedule)"
    )


def _schedule_from_name(
    spec: Mapping[str, Any], learning_rate: float | None
) -> LearningRateSchedule:
    """Rebuild ``{"name": ..., "config": {...}}`` through the registry (never by import path)."""
    if set(spec) != {"name", "config"}:
        raise ValueError(f"a wrapped schedule is {{'name': ..., 'config': ...}}, got {spec!r}")
    config = dict(spec["config"])
    if learning_rate is not None:
        config["learning_rate"] = learning_rate
    return SCHEDULES.get(spec["name"])(**config)
