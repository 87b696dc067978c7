"""Learning-rate schedules: pure functions of the optimizer step and their config.

A schedule is a ``keras.optimizers.schedules.LearningRateSchedule``: the
optimizer calls ``schedule(iterations)`` with ``iterations`` counting from 0,
so the rate depends on nothing but the step and the constructor arguments, and
resuming a run needs only the saved step and the config (no schedule state).

Every registered schedule follows one convention: the constructor takes
``learning_rate`` (the base or peak rate) plus keyword parameters, durations
are counted in optimizer steps and named ``*_steps``, and
``cls(**schedule.get_config())`` rebuilds an equal schedule. The constructor's
signature is where a schedule declares its parameters: :class:`Schedule`
reads ``get_config()`` from it, ``trainer.optim.resolve`` reads the keys a
user may set from it, and ``tests/test_schedules.py`` checks that
``conf/schedule/<name>.yaml`` and its schema dataclass list the same keys.

This module holds the formulas and the registry; a user's module adds to it
with ``register_schedule`` (a class, or a plain function of the step or the
epoch: ``trainer.optim.function_schedules``). Warmup is the ``LinearWarmup``
wrapper around any schedule (``trainer.optim.warmup``); the user's ``schedule``
section becomes a schedule in ``trainer.optim.resolve``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from trainer.optim.base import LearningRateSchedule, Schedule
from trainer.optim.checks import (
    boolean,
    fraction,
    increasing_steps,
    non_negative,
    number,
    piecewise_multipliers,
    positive,
    positive_int,
)
from trainer.optim.function_schedules import schedule_class_of_function
from trainer.registry import Registry

SCHEDULES: Registry[type[LearningRateSchedule]] = Registry("schedule")


def register_schedule(name: str, per: str | None = None) -> Callable[[Any], Any]:
    """Decorator that makes a schedule selectable as ``schedule.name=<name>``.

    On a class: a ``keras.optimizers.schedules.LearningRateSchedule`` that takes
    ``learning_rate`` plus keyword parameters (durations named ``*_steps``,
    which users may also give as ``*_epochs``) and returns them all from
    ``get_config()`` (subclass :class:`Schedule` to derive it from the
    constructor). Durations that default to the rest of the run are named in a
    ``run_length_params`` class attribute; a ``ValueError`` from the
    constructor reaches the user.

    On a plain function, returned unchanged: ``fn(step)`` returning the rate
    (``per="step"``, the default), or ``fn(epoch)`` / ``fn(epoch, lr)`` as
    Keras' ``LearningRateScheduler`` calls it (``per="epoch"``); its rates are
    tabulated for the run (``trainer.optim.function_schedules``). A function
    that cannot be called so is refused in one line (``UserError``).

    The schedule class is also registered with Keras serialization (as
    ``trainer_schedule>NAME``). A class example is in ``docs/schedules.md``;
    a function, in the user's own module::

        @register_schedule("decay_after_ten", per="epoch")
        def decay_after_ten(epoch, lr):
            return lr if epoch < 10 else lr * math.exp(-0.1)

    then ``schedule.name=decay_after_ten`` (with ``imports=[their_module]``).
    """
    add_to_registry = SCHEDULES.register(name)

    def decorator(target: Any) -> Any:
        if isinstance(target, LearningRateSchedule):
            raise TypeError(f"schedule {name!r}: register the class, not an instance of it")
        if callable(target) and not isinstance(target, type):
            cls = schedule_class_of_function(name, target, per or "step")
            keras.saving.register_keras_serializable(package="trainer_schedule", name=name)(cls)
            add_to_registry(cls)
            return target
        if not (isinstance(target, type) and issubclass(target, LearningRateSchedule)):
            raise TypeError(
                f"schedule {name!r} must be a subclass of "
                f"keras.optimizers.schedules.LearningRateSchedule or a function, got {target!r}"
            )
        if per is not None:
            raise TypeError(f"schedule {name!r}: per= is for functions; a class takes the step")
        if "learning_rate" not in inspect.signature(target).parameters:
            raise TypeError(
                f"schedule {name!r}: {target.__name__}.__init__ must take learning_rate"
            )
        keras.saving.register_keras_serializable(package="trainer_schedule", name=name)(target)
        return add_to_registry(target)

    return decorator


def _float_step(step: Any) -> Any:
    return ops.cast(step, "float32")


# ---------------------------------------------------------------------------
# The schedules. Where Keras has the formula, the class subclasses the Keras
# schedule and only adapts the constructor to the convention above
# (learning_rate + *_steps, each stored under its own name for get_config).


@register_schedule("constant")
class ConstantSchedule(Schedule):
    """The same rate at every step: ``lr(s) = learning_rate``.

    Keras has no constant schedule (a plain float does the job there), but a
    class lets a constant rate be wrapped in ``LinearWarmup`` like any other.

    >>> round(schedule_value(ConstantSchedule(0.1), 10_000), 6)
    0.1
    """

    def __init__(self, learning_rate: float) -> None:
        super().__init__()
        self.learning_rate = positive("learning_rate", learning_rate)

    def __call__(self, step: Any) -> Any:
        return ops.full_like(_float_step(step), self.learning_rate)


@register_schedule("cosine")
class CosineSchedule(Schedule, keras.optimizers.schedules.CosineDecay):
    """Half a cosine from ``learning_rate`` down to ``alpha * learning_rate``.

    ``lr(s) = learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * min(s, D) / D)) + alpha)``
    with ``D = decay_steps``; it stays at ``alpha * learning_rate`` from step D on.

    >>> round(schedule_value(CosineSchedule(0.1, decay_steps=100), 50), 6)
    0.05
    """

    run_length_params = ("decay_steps",)

    def __init__(self, learning_rate: float, decay_steps: int, alpha: float = 0.0) -> None:
        self.learning_rate = positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            decay_steps=positive_int("decay_steps", decay_steps),
            alpha=fraction("alpha", alpha),
        )


@register_schedule("cosine_restarts")
class CosineRestartsSchedule(Schedule, keras.optimizers.schedules.CosineDecayRestarts):
    """Cosine decay with warm restarts (SGDR, Keras ``CosineDecayRestarts``).

    Period ``i`` (from 0) lasts ``first_decay_steps * t_mul**i`` steps; within
    it, at fraction ``f`` of the period,
    ``lr = learning_rate * ((1 - alpha) * m_mul**i * 0.5 * (1 + cos(pi * f)) + alpha)``.
    A restart jumps back to ``learning_rate * m_mul**i``.

    >>> s = CosineRestartsSchedule(0.1, first_decay_steps=10)  # periods 10, 20, 40...
    >>> [round(schedule_value(s, step), 6) for step in (0, 5, 10, 20)]
    [0.1, 0.05, 0.1, 0.05]
    """

    # The first period is a choice about restarts, not the length of the run.
    run_length_params = ()

    def __init__(
        self,
        learning_rate: float,
        first_decay_steps: int,
        t_mul: float = 2.0,
        m_mul: float = 1.0,
        alpha: float = 0.0,
    ) -> None:
        self.learning_rate = positive("learning_rate", learning_rate)
        first_decay_steps = positive_int("first_decay_steps", first_decay_steps)
        # Keras keeps these as _t_mul and _m_mul; get_config reads them by their own names.
        self.t_mul = positive("t_mul", t_mul)
        self.m_mul = positive("m_mul", m_mul)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            first_decay_steps=first_decay_steps,
            t_mul=self.t_mul,
            m_mul=self.m_mul,
            alpha=fraction("alpha", alpha),
        )


@register_schedule("exponential")
class ExponentialSchedule(Schedule, keras.optimizers.schedules.ExponentialDecay):
    """Exponential decay: ``lr(s) = learning_rate * decay_rate ** (s / decay_steps)``.

    With ``staircase`` the exponent is ``floor(s / decay_steps)``. The rate
    keeps changing past any step count; ``decay_rate > 1`` makes it grow.

    >>> s = ExponentialSchedule(0.1, decay_steps=10, decay_rate=0.5)
    >>> [round(schedule_value(s, step), 6) for step in (0, 10, 20)]
    [0.1, 0.05, 0.025]
    """

    def __init__(
        self,
        learning_rate: float,
        decay_steps: int,
        decay_rate: float,
        staircase: bool = False,
    ) -> None:
        self.learning_rate = positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            decay_steps=positive_int("decay_steps", decay_steps),
            decay_rate=positive("decay_rate", decay_rate),
            staircase=boolean("staircase", staircase),
        )


@register_schedule("inverse_time")
class InverseTimeSchedule(Schedule, keras.optimizers.schedules.InverseTimeDecay):
    """Inverse-time decay: ``lr(s) = learning_rate / (1 + decay_rate * s / decay_steps)``.

    With ``staircase`` the ratio is ``floor(s / decay_steps)``.

    >>> s = InverseTimeSchedule(0.1, decay_steps=10, decay_rate=1.0)
    >>> [round(schedule_value(s, step), 6) for step in (0, 10, 30)]
    [0.1, 0.05, 0.025]
    """

    def __init__(
        self,
        learning_rate: float,
        decay_steps: int,
        decay_rate: float,
        staircase: bool = False,
    ) -> None:
        self.learning_rate = positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            decay_steps=positive_int("decay_steps", decay_steps),
            decay_rate=non_negative("decay_rate", decay_rate),
            staircase=boolean("staircase", staircase),
        )


@register_schedule("piecewise")
class PiecewiseSchedule(Schedule, keras.optimizers.schedules.PiecewiseConstantDecay):
    """Constant pieces: ``learning_rate * multipliers[i]`` between boundaries.

    Keras ``PiecewiseConstantDecay`` semantics: with boundaries ``b`` the rate
    is ``learning_rate * multipliers[0]`` for ``s <= b[0]``,
    ``learning_rate * multipliers[i]`` for ``b[i-1] < s <= b[i]`` and
    ``learning_rate * multipliers[-1]`` for ``s > b[-1]``; so the rate changes
    at step ``b[i] + 1``.

    >>> s = PiecewiseSchedule(0.1, boundary_steps=[10, 20], multipliers=[1.0, 0.5, 0.1])
    >>> [round(schedule_value(s, step), 6) for step in (10, 11, 20, 21)]
    [0.1, 0.05, 0.05, 0.01]
    """

    def __init__(
        self,
        learning_rate: float,
        boundary_steps: Sequence[int],
        multipliers: Sequence[float],
    ) -> None:
        self.learning_rate = positive("learning_rate", learning_rate)
        self.boundary_steps = increasing_steps("boundary_steps", boundary_steps)
        self.multipliers = piecewise_multipliers(multipliers, len(self.boundary_steps) + 1)
        super().__init__(
            boundaries=self.boundary_steps,
            values=[self.learning_rate * m for m in self.multipliers],
        )


@register_schedule("polynomial")
class PolynomialSchedule(Schedule, keras.optimizers.schedules.PolynomialDecay):
    """Polynomial decay from ``learning_rate`` to ``end_learning_rate`` (Keras semantics).

    ``lr(s) = (learning_rate - end_learning_rate) * (1 - min(s, D) / D) ** power
    + end_learning_rate`` with ``D = decay_steps``. With ``cycle``, D is
    replaced by ``D * ceil(s / D)`` (``D`` at step 0), so the decay restarts
    at each multiple of D after reaching the end.

    >>> s = PolynomialSchedule(0.1, decay_steps=10, power=2.0)
    >>> [round(schedule_value(s, step), 6) for step in (0, 5, 10, 15)]
    [0.1, 0.025, 0.0, 0.0]
    """

    run_length_params = ("decay_steps",)

    def __init__(
        self,
        learning_rate: float,
        decay_steps: int,
        end_learning_rate: float = 0.0,
        power: float = 1.0,
        cycle: bool = False,
    ) -> None:
        self.learning_rate = positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            decay_steps=positive_int("decay_steps", decay_steps),
            end_learning_rate=non_negative("end_learning_rate", end_learning_rate),
            power=positive("power", power),
            cycle=boolean("cycle", cycle),
        )


@register_schedule("linear")
class LinearSchedule(Schedule, keras.optimizers.schedules.PolynomialDecay):
    """Straight line from ``learning_rate`` to ``end_learning_rate`` over ``decay_steps``.

    ``lr(s) = learning_rate + (end_learning_rate - learning_rate) * min(s, D) / D``
    (polynomial decay with power 1, no cycle).

    >>> s = LinearSchedule(0.1, decay_steps=10)
    >>> [round(schedule_value(s, step), 6) for step in (0, 5, 10, 20)]
    [0.1, 0.05, 0.0, 0.0]
    """

    run_length_params = ("decay_steps",)

    def __init__(
        self, learning_rate: float, decay_steps: int, end_learning_rate: float = 0.0
    ) -> None:
        self.learning_rate = positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            decay_steps=positive_int("decay_steps", decay_steps),
            end_learning_rate=non_negative("end_learning_rate", end_learning_rate),
            power=1.0,
            cycle=False,
        )


@register_schedule("step")
class StepSchedule(Schedule):
    """Multiply by ``factor`` every ``every_steps`` steps.

    ``lr(s) = learning_rate * factor ** floor(s / every_steps)``.
    Keras' ``ExponentialDecay(staircase=True)`` computes the same curve, but
    in float32 division; integer division keeps the drop at exactly the step
    it names however long the run.

    >>> s = StepSchedule(0.1, every_steps=10, factor=0.5)
    >>> [round(schedule_value(s, step), 6) for step in (0, 9, 10, 20)]
    [0.1, 0.1, 0.05, 0.025]
    """

    def __init__(self, learning_rate: float, every_steps: int, factor: float = 0.1) -> None:
        super().__init__()
        self.learning_rate = positive("learning_rate", learning_rate)
        self.every_steps = positive_int("every_steps", every_steps)
        self.factor = positive("factor", factor)

    def __call__(self, step: Any) -> Any:
        drops = ops.floor_divide(ops.cast(step, "int64"), self.every_steps)
        return self.learning_rate * ops.power(self.factor, ops.cast(drops, "float32"))


@register_schedule("one_cycle")
class OneCycleSchedule(Schedule):
    """One cycle (Smith & Topin): cosine up to ``learning_rate``, cosine down to nearly 0.

    PyTorch ``OneCycleLR(anneal_strategy="cos", three_phase=False)``, which
    Keras lacks, with the step clamped at the end instead of raising. With
    ``T = total_steps``, ``p = pct_start * T - 1`` (the peak step),
    ``start = learning_rate / div_factor``,
    ``final = start / final_div_factor`` and
    ``cos_anneal(a, b, f) = b + (a - b) * 0.5 * (1 + cos(pi * f))``::

        s <= p:  lr(s) = cos_anneal(start, learning_rate, s / p)
        s >  p:  lr(s) = cos_anneal(learning_rate, final, (min(s, T - 1) - p) / (T - 1 - p))

    so the rate is ``final`` from step ``T - 1`` on.

    >>> s = OneCycleSchedule(1.0, total_steps=10, pct_start=0.5, div_factor=10.0)
    >>> [round(schedule_value(s, step), 6) for step in (0, 2, 4, 9, 100)]  # peak at p = 4
    [0.1, 0.55, 1.0, 1e-05, 1e-05]
    """

    run_length_params = ("total_steps",)

    def __init__(
        self,
        learning_rate: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        super().__init__()
        self.learning_rate = positive("learning_rate", learning_rate)
        self.total_steps = positive_int("total_steps", total_steps)
        self.pct_start = number(
            "pct_start", pct_start, "a number strictly between 0 and 1", lambda v: 0 < v < 1
        )
        self.div_factor = positive("div_factor", div_factor)
        self.final_div_factor = positive("final_div_factor", final_div_factor)

    def __call__(self, step: Any) -> Any:
        start_lr = self.learning_rate / self.div_factor
        final_lr = start_lr / self.final_div_factor
        peak_step = self.pct_start * self.total_steps - 1  # may be <= 0 for short runs
        last_step = self.total_steps - 1  # > peak_step since pct_start < 1

        s = ops.clip(_float_step(step), 0.0, float(last_step))
        # PyTorch divides 0 by 0 when the peak is step 0; the limit is the peak rate.
        up_fraction = s / peak_step if peak_step > 0 else ops.ones_like(s)
        down_fraction = (s - peak_step) / (last_step - peak_step)
        return ops.where(
            s <= peak_step,
            _cos_anneal(start_lr, self.learning_rate, up_fraction),
            _cos_anneal(self.learning_rate, final_lr, down_fraction),
        )


def _cos_anneal(start: float, end: float, progress: Any) -> Any:
    return end + (start - end) * 0.5 * (1.0 + ops.cos(math.pi * progress))


# ---------------------------------------------------------------------------
# Not registered: never named in a config, only wrapped around a schedule.


class ScaledSchedule(LearningRateSchedule):
    """``schedule(step) * scale``: how reduce-on-plateau lowers a schedule's rate.

    ``scale`` is a variable the training loop sets; it is loop state, saved with
    the checkpoint, so the schedule itself stays a pure function of the step.
    """

    def __init__(self, schedule: LearningRateSchedule, scale: Any) -> None:
        self.schedule = schedule
        self.scale = scale

    def __call__(self, step: Any) -> Any:
        return self.schedule(step) * ops.cast(self.scale, "float32")

    def get_config(self) -> dict[str, Any]:
        return {"schedule": self.schedule.get_config(), "scale": float(self.scale.numpy())}


def schedule_value(schedule: LearningRateSchedule, step: int) -> float:
    """The learning rate at ``step`` as a Python float (for logs and tests)."""
    return float(ops.convert_to_numpy(schedule(step)))
