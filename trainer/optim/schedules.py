"""Learning-rate schedules: pure functions of the optimizer step and their config.

A schedule is a ``keras.optimizers.schedules.LearningRateSchedule``: the
optimizer calls ``schedule(iterations)`` with ``iterations`` counting from 0,
so the rate depends on nothing but the step and the constructor arguments, and
resuming a run needs only the saved step and the config (no schedule state).

Every registered schedule follows one convention: the constructor takes
``learning_rate`` (the base or peak rate) plus keyword parameters, durations
are counted in optimizer steps and named ``*_steps``, and
``cls(**schedule.get_config())`` rebuilds an equal schedule. Warmup is not a
parameter of each schedule but the ``LinearWarmup`` wrapper around any of them.

From config to schedule, in two steps:

1. ``resolve_schedule(cfg, steps_per_epoch=..., total_steps=...)`` checks the
   user's ``schedule`` section (pure Python, no TensorFlow ops) and turns it
   into concrete step counts: ``*_epochs`` become ``*_steps`` and run-length
   durations left unset become "the rest of the run after warmup".
2. ``build_schedule(resolved, learning_rate)`` builds the schedule by its
   registry name, wrapped in ``LinearWarmup`` when ``warmup_steps > 0``.

A user adds a schedule from their own module with ``register_schedule`` and
selects it with ``schedule.name=...``; it gets the same checks as the built-ins.
"""

from __future__ import annotations

import inspect
import itertools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
from keras import ops

from trainer.errors import UserError
from trainer.registry import Registry

LearningRateSchedule = keras.optimizers.schedules.LearningRateSchedule

SCHEDULES: Registry[type[LearningRateSchedule]] = Registry("schedule")


def register_schedule(
    name: str,
) -> Callable[[type[LearningRateSchedule]], type[LearningRateSchedule]]:
    """Class decorator that makes a schedule selectable as ``schedule.name=<name>``.

    The class must subclass ``keras.optimizers.schedules.LearningRateSchedule``,
    take ``learning_rate`` plus keyword parameters (durations named ``*_steps``,
    which users may also give as ``*_epochs``) and return them all from
    ``get_config()``. Name duration parameters that should default to the rest
    of the run in a ``run_length_params`` class attribute. Raise ``ValueError``
    from the constructor for bad values: the message reaches the user.

    The class is also registered with Keras serialization (as
    ``trainer_schedule>NAME``) so a saved optimizer that uses it can be loaded.

    Example, in the user's own module (imported before training starts)::

        from trainer.optim.schedules import register_schedule

        @register_schedule("halving")
        class Halving(keras.optimizers.schedules.LearningRateSchedule):
            run_length_params = ()

            def __init__(self, learning_rate, every_steps):
                self.learning_rate = learning_rate
                self.every_steps = every_steps

            def __call__(self, step):
                halvings = ops.floor(ops.cast(step, "float32") / self.every_steps)
                return self.learning_rate * ops.power(0.5, halvings)

            def get_config(self):
                return {"learning_rate": self.learning_rate, "every_steps": self.every_steps}

    then ``schedule.name=halving schedule.every_epochs=2``.
    """
    add_to_registry = SCHEDULES.register(name)

    def decorator(cls: type[LearningRateSchedule]) -> type[LearningRateSchedule]:
        if not (isinstance(cls, type) and issubclass(cls, LearningRateSchedule)):
            raise TypeError(
                f"schedule {name!r} must be a subclass of "
                f"keras.optimizers.schedules.LearningRateSchedule, got {cls!r}"
            )
        if "learning_rate" not in inspect.signature(cls).parameters:
            raise TypeError(f"schedule {name!r}: {cls.__name__}.__init__ must take learning_rate")
        keras.saving.register_keras_serializable(package="trainer_schedule", name=name)(cls)
        return add_to_registry(cls)

    return decorator


# ---------------------------------------------------------------------------
# Parameter checks shared by the constructors. They raise a ValueError that
# names the parameter, the value and what is allowed; resolve_schedule and
# build_schedule turn it into a one-line UserError about "schedule.<param>".


class ScheduleParamError(ValueError):
    """A schedule parameter with a value the schedule does not accept."""

    def __init__(self, param: str, value: Any, allowed: str) -> None:
        self.param, self.value, self.allowed = param, value, allowed
        super().__init__(f"{param} must be {allowed}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(param: str, value: Any) -> int:
    if not (_is_int(value) and value > 0):
        raise ScheduleParamError(param, value, "a positive integer")
    return int(value)


def _number(param: str, value: Any, allowed: str, ok: Callable[[float], bool]) -> float:
    if not (_is_number(value) and ok(value)):
        raise ScheduleParamError(param, value, allowed)
    return float(value)


def _positive(param: str, value: Any) -> float:
    return _number(param, value, "a positive number", lambda v: v > 0)


def _non_negative(param: str, value: Any) -> float:
    return _number(param, value, "a number >= 0", lambda v: v >= 0)


def _fraction(param: str, value: Any) -> float:
    return _number(param, value, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def _boolean(param: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ScheduleParamError(param, value, "true or false")
    return value


def _float_step(step: Any) -> Any:
    return ops.cast(step, "float32")


# ---------------------------------------------------------------------------
# The schedules. Where Keras has the formula, the class subclasses the Keras
# schedule and only adapts the constructor to the convention above
# (learning_rate + *_steps, get_config that round-trips through __init__).


@register_schedule("constant")
class ConstantSchedule(LearningRateSchedule):
    """The same rate at every step: ``lr(s) = learning_rate``.

    Keras has no constant schedule (a plain float does the job there), but a
    class lets a constant rate be wrapped in ``LinearWarmup`` like any other.

    >>> round(schedule_value(ConstantSchedule(0.1), 10_000), 6)
    0.1
    """

    run_length_params: tuple[str, ...] = ()

    def __init__(self, learning_rate: float) -> None:
        super().__init__()
        self.learning_rate = _positive("learning_rate", learning_rate)

    def __call__(self, step: Any) -> Any:
        return ops.full_like(_float_step(step), self.learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}


@register_schedule("cosine")
class CosineSchedule(keras.optimizers.schedules.CosineDecay):
    """Half a cosine from ``learning_rate`` down to ``alpha * learning_rate``.

    ``lr(s) = learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * min(s, D) / D)) + alpha)``
    with ``D = decay_steps``; it stays at ``alpha * learning_rate`` from step D on.

    >>> round(schedule_value(CosineSchedule(0.1, decay_steps=100), 50), 6)
    0.05
    """

    run_length_params: tuple[str, ...] = ("decay_steps",)

    def __init__(self, learning_rate: float, decay_steps: int, alpha: float = 0.0) -> None:
        self.learning_rate = _positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            decay_steps=_positive_int("decay_steps", decay_steps),
            alpha=_fraction("alpha", alpha),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
        }


@register_schedule("cosine_restarts")
class CosineRestartsSchedule(keras.optimizers.schedules.CosineDecayRestarts):
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
    run_length_params: tuple[str, ...] = ()

    def __init__(
        self,
        learning_rate: float,
        first_decay_steps: int,
        t_mul: float = 2.0,
        m_mul: float = 1.0,
        alpha: float = 0.0,
    ) -> None:
        self.learning_rate = _positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            first_decay_steps=_positive_int("first_decay_steps", first_decay_steps),
            t_mul=_positive("t_mul", t_mul),
            m_mul=_positive("m_mul", m_mul),
            alpha=_fraction("alpha", alpha),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "first_decay_steps": self.first_decay_steps,
            "t_mul": self._t_mul,
            "m_mul": self._m_mul,
            "alpha": self.alpha,
        }


@register_schedule("exponential")
class ExponentialSchedule(keras.optimizers.schedules.ExponentialDecay):
    """Exponential decay: ``lr(s) = learning_rate * decay_rate ** (s / decay_steps)``.

    With ``staircase`` the exponent is ``floor(s / decay_steps)``. The rate
    keeps changing past any step count; ``decay_rate > 1`` makes it grow.

    >>> s = ExponentialSchedule(0.1, decay_steps=10, decay_rate=0.5)
    >>> [round(schedule_value(s, step), 6) for step in (0, 10, 20)]
    [0.1, 0.05, 0.025]
    """

    run_length_params: tuple[str, ...] = ()

    def __init__(
        self,
        learning_rate: float,
        decay_steps: int,
        decay_rate: float,
        staircase: bool = False,
    ) -> None:
        self.learning_rate = _positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            decay_steps=_positive_int("decay_steps", decay_steps),
            decay_rate=_positive("decay_rate", decay_rate),
            staircase=_boolean("staircase", staircase),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
        }


@register_schedule("inverse_time")
class InverseTimeSchedule(keras.optimizers.schedules.InverseTimeDecay):
    """Inverse-time decay: ``lr(s) = learning_rate / (1 + decay_rate * s / decay_steps)``.

    With ``staircase`` the ratio is ``floor(s / decay_steps)``.

    >>> s = InverseTimeSchedule(0.1, decay_steps=10, decay_rate=1.0)
    >>> [round(schedule_value(s, step), 6) for step in (0, 10, 30)]
    [0.1, 0.05, 0.025]
    """

    run_length_params: tuple[str, ...] = ()

    def __init__(
        self,
        learning_rate: float,
        decay_steps: int,
        decay_rate: float,
        staircase: bool = False,
    ) -> None:
        self.learning_rate = _positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            decay_steps=_positive_int("decay_steps", decay_steps),
            decay_rate=_non_negative("decay_rate", decay_rate),
            staircase=_boolean("staircase", staircase),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
        }


@register_schedule("piecewise")
class PiecewiseSchedule(keras.optimizers.schedules.PiecewiseConstantDecay):
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

    run_length_params: tuple[str, ...] = ()

    def __init__(
        self,
        learning_rate: float,
        boundary_steps: Sequence[int],
        multipliers: Sequence[float],
    ) -> None:
        self.learning_rate = _positive("learning_rate", learning_rate)
        self.boundary_steps = _increasing_steps("boundary_steps", boundary_steps)
        self.multipliers = _multipliers(multipliers, len(self.boundary_steps) + 1)
        super().__init__(
            boundaries=self.boundary_steps,
            values=[self.learning_rate * m for m in self.multipliers],
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "boundary_steps": list(self.boundary_steps),
            "multipliers": list(self.multipliers),
        }


def _increasing_steps(param: str, value: Any) -> list[int]:
    allowed = "a non-empty list of strictly increasing integers >= 0"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ScheduleParamError(param, value, allowed)
    steps = list(value)
    if not all(_is_int(b) and b >= 0 for b in steps) or any(
        a >= b for a, b in itertools.pairwise(steps)
    ):
        raise ScheduleParamError(param, steps, allowed)
    return [int(b) for b in steps]


def _multipliers(value: Any, count: int) -> list[float]:
    allowed = f"a list of {count} positive numbers (one more than boundary_steps)"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ScheduleParamError("multipliers", value, allowed)
    multipliers = list(value)
    if len(multipliers) != count or not all(_is_number(m) and m > 0 for m in multipliers):
        raise ScheduleParamError("multipliers", multipliers, allowed)
    return [float(m) for m in multipliers]


@register_schedule("polynomial")
class PolynomialSchedule(keras.optimizers.schedules.PolynomialDecay):
    """Polynomial decay from ``learning_rate`` to ``end_learning_rate`` (Keras semantics).

    ``lr(s) = (learning_rate - end_learning_rate) * (1 - min(s, D) / D) ** power
    + end_learning_rate`` with ``D = decay_steps``. With ``cycle``, D is
    replaced by ``D * ceil(s / D)`` (``D`` at step 0), so the decay restarts
    at each multiple of D after reaching the end.

    >>> s = PolynomialSchedule(0.1, decay_steps=10, power=2.0)
    >>> [round(schedule_value(s, step), 6) for step in (0, 5, 10, 15)]
    [0.1, 0.025, 0.0, 0.0]
    """

    run_length_params: tuple[str, ...] = ("decay_steps",)

    def __init__(
        self,
        learning_rate: float,
        decay_steps: int,
        end_learning_rate: float = 0.0,
        power: float = 1.0,
        cycle: bool = False,
    ) -> None:
        self.learning_rate = _positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            decay_steps=_positive_int("decay_steps", decay_steps),
            end_learning_rate=_non_negative("end_learning_rate", end_learning_rate),
            power=_positive("power", power),
            cycle=_boolean("cycle", cycle),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "cycle": self.cycle,
        }


@register_schedule("linear")
class LinearSchedule(keras.optimizers.schedules.PolynomialDecay):
    """Straight line from ``learning_rate`` to ``end_learning_rate`` over ``decay_steps``.

    ``lr(s) = learning_rate + (end_learning_rate - learning_rate) * min(s, D) / D``
    (polynomial decay with power 1, no cycle).

    >>> s = LinearSchedule(0.1, decay_steps=10)
    >>> [round(schedule_value(s, step), 6) for step in (0, 5, 10, 20)]
    [0.1, 0.05, 0.0, 0.0]
    """

    run_length_params: tuple[str, ...] = ("decay_steps",)

    def __init__(
        self, learning_rate: float, decay_steps: int, end_learning_rate: float = 0.0
    ) -> None:
        self.learning_rate = _positive("learning_rate", learning_rate)
        super().__init__(
            initial_learning_rate=self.learning_rate,
            decay_steps=_positive_int("decay_steps", decay_steps),
            end_learning_rate=_non_negative("end_learning_rate", end_learning_rate),
            power=1.0,
            cycle=False,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
        }


@register_schedule("step")
class StepSchedule(LearningRateSchedule):
    """Multiply by ``factor`` every ``every_steps`` steps.

    ``lr(s) = learning_rate * factor ** floor(s / every_steps)``.
    Keras' ``ExponentialDecay(staircase=True)`` computes the same curve, but
    in float32 division; integer division keeps the drop at exactly the step
    it names however long the run.

    >>> s = StepSchedule(0.1, every_steps=10, factor=0.5)
    >>> [round(schedule_value(s, step), 6) for step in (0, 9, 10, 20)]
    [0.1, 0.1, 0.05, 0.025]
    """

    run_length_params: tuple[str, ...] = ()

    def __init__(self, learning_rate: float, every_steps: int, factor: float = 0.1) -> None:
        super().__init__()
        self.learning_rate = _positive("learning_rate", learning_rate)
        self.every_steps = _positive_int("every_steps", every_steps)
        self.factor = _positive("factor", factor)

    def __call__(self, step: Any) -> Any:
        drops = ops.floor_divide(ops.cast(step, "int64"), self.every_steps)
        return self.learning_rate * ops.power(self.factor, ops.cast(drops, "float32"))

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "every_steps": self.every_steps,
            "factor": self.factor,
        }


@register_schedule("one_cycle")
class OneCycleSchedule(LearningRateSchedule):
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

    run_length_params: tuple[str, ...] = ("total_steps",)

    def __init__(
        self,
        learning_rate: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        super().__init__()
        self.learning_rate = _positive("learning_rate", learning_rate)
        self.total_steps = _positive_int("total_steps", total_steps)
        self.pct_start = _number(
            "pct_start", pct_start, "a number strictly between 0 and 1", lambda v: 0 < v < 1
        )
        self.div_factor = _positive("div_factor", div_factor)
        self.final_div_factor = _positive("final_div_factor", final_div_factor)

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

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


def _cos_anneal(start: float, end: float, fraction: Any) -> Any:
    return end + (start - end) * 0.5 * (1.0 + ops.cos(math.pi * fraction))


# ---------------------------------------------------------------------------
# Warmup wrapper.


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
        self.warmup_steps = _positive_int("warmup_steps", warmup_steps)
        after_lr = after.get_config().get("learning_rate")
        if learning_rate is None:
            learning_rate = after_lr
        elif after_lr is not None and not math.isclose(learning_rate, after_lr):
            raise ValueError(
                f"learning_rate must be the rate {self.after_name!r} was built with, "
                f"{after_lr!r}, got {learning_rate!r}"
            )
        self.learning_rate = _positive("learning_rate", learning_rate)

    def __call__(self, step: Any) -> Any:
        step = ops.convert_to_tensor(step)
        target = self.after(ops.zeros_like(step))
        warming = target * _float_step(step) / float(self.warmup_steps)
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


class ScaledSchedule(LearningRateSchedule):
    """``schedule(step) * scale``: how reduce-on-plateau lowers a schedule's rate.

    ``scale`` is a variable the training loop sets; it is loop state, saved with
    the checkpoint, so the schedule itself stays a pure function of the step.
    Not registered: it is never named in a config, only wrapped around one.
    """

    def __init__(self, schedule: LearningRateSchedule, scale: Any) -> None:
        self.schedule = schedule
        self.scale = scale

    def __call__(self, step: Any) -> Any:
        return self.schedule(step) * ops.cast(self.scale, "float32")

    def get_config(self) -> dict[str, Any]:
        return {"schedule": self.schedule.get_config(), "scale": float(self.scale.numpy())}


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


# ---------------------------------------------------------------------------
# From the user's config section to a schedule.


def resolve_schedule(
    schedule_cfg: Mapping[str, Any], *, steps_per_epoch: int, total_steps: int
) -> dict[str, Any]:
    """The user's ``schedule`` section as concrete values: ``{"name", "warmup_steps", **params}``.

    - Any duration ``<x>_steps`` may be given as ``<x>_epochs`` instead (also
      ``warmup_epochs``, and lists such as ``boundary_epochs``); epochs may be
      fractional and become ``round(epochs * steps_per_epoch)`` steps, at
      least 1 for a positive duration.
    - Keys set to null are dropped, so the schedule's defaults apply (a typed
      schema may therefore carry every schedule's keys); a null run-length
      parameter (``cls.run_length_params``) becomes ``total_steps - warmup_steps``.
    - Parameters are checked against the schedule's constructor (its
      signature and its own checks), so a user's schedule gets the same
      checks as the built-ins. Pure Python: nothing is built on a device.

    Raises ``UserError`` naming the key, the value and what is allowed.

    >>> resolve_schedule({"name": "cosine", "warmup_epochs": 0.5, "alpha": None},
    ...                  steps_per_epoch=10, total_steps=100)
    {'name': 'cosine', 'warmup_steps': 5, 'decay_steps': 95}
    """
    if not (_is_int(steps_per_epoch) and steps_per_epoch > 0):
        raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
    if not (_is_int(total_steps) and total_steps > 0):
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")

    given = {key: value for key, value in schedule_cfg.items() if value is not None}
    name = given.pop("name", None)
    if name is None:
        raise UserError(f"schedule.name is required; known: {', '.join(SCHEDULES.names())}")
    cls = SCHEDULES.get(name)
    params, takes_any = _constructor_params(cls)

    # Which user keys feed which parameter: "<x>_epochs" feeds "<x>_steps".
    durations = {"warmup_steps"} | {p for p in params if p.endswith("_steps")}
    known_keys = set(params) | durations | {_epochs_key(d) for d in durations}
    unknown = sorted(key for key in given if key not in known_keys)
    if unknown and not takes_any:
        accepted = ", ".join(sorted(known_keys - {"name"}))
        raise UserError(
            f"schedule.{unknown[0]} is not a parameter of schedule {name!r}; accepted: {accepted}"
        )

    warmup_steps = _take_duration(given, "warmup_steps", steps_per_epoch, may_be_zero=True) or 0
    if warmup_steps >= total_steps:
        raise UserError(
            f"schedule.{_source_key(schedule_cfg, 'warmup_steps')}: warmup ({warmup_steps} steps) "
            f"must be shorter than the run ({total_steps} steps)"
        )

    resolved: dict[str, Any] = {"name": name, "warmup_steps": warmup_steps}
    origins: dict[str, str] = {}  # param -> the "<x>_epochs" setting it came from
    run_length = set(getattr(cls, "run_length_params", ()))
    for param, default in params.items():
        if param in durations:
            epochs_key = _epochs_key(param)
            if epochs_key in given:
                origins[param] = (
                    f"schedule.{epochs_key}={_plain_lists(given[epochs_key])!r} "
                    f"at {steps_per_epoch} steps per epoch"
                )
            value = _take_duration(given, param, steps_per_epoch)
        else:
            value = given.pop(param, None)
        if value is None and param in run_length:
            value = total_steps - warmup_steps
        if value is None:
            if default is inspect.Parameter.empty:
                also = f" (or {_epochs_key(param)})" if param in durations else ""
                raise UserError(f"schedule.{param}{also} is required for schedule {name!r}")
            continue
        resolved[param] = _plain_lists(value)
    resolved.update(
        (key, _plain_lists(value)) for key, value in given.items()
    )  # **kwargs schedules

    # Let the class check its own parameters now rather than at build time; the
    # constructors are pure Python, and the rate is not known yet (1.0 stands in).
    params_only = {k: v for k, v in resolved.items() if k not in ("name", "warmup_steps")}
    _construct(cls, name, 1.0, params_only, origins)
    return resolved


def build_schedule(resolved: Mapping[str, Any], learning_rate: float) -> LearningRateSchedule:
    """The schedule that ``resolved`` (from ``resolve_schedule``) names, at ``learning_rate``.

    Looked up by name in ``SCHEDULES`` (never by import path) and wrapped in
    ``LinearWarmup`` when ``warmup_steps > 0``.
    """
    if not (_is_number(learning_rate) and learning_rate > 0):
        raise UserError(f"learning_rate must be a positive number, got {learning_rate!r}")
    params = dict(resolved)
    name = params.pop("name", None)
    warmup_steps = params.pop("warmup_steps", 0) or 0
    if not (_is_int(warmup_steps) and warmup_steps >= 0):
        raise UserError(f"schedule.warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    cls = SCHEDULES.get(name)
    schedule = _construct(cls, name, float(learning_rate), params)
    if warmup_steps > 0:
        schedule = LinearWarmup(schedule, warmup_steps, float(learning_rate))
    return schedule


def schedule_value(schedule: LearningRateSchedule, step: int) -> float:
    """The learning rate at ``step`` as a Python float (for logs and tests)."""
    return float(ops.convert_to_numpy(schedule(step)))


def _constructor_params(cls: type) -> tuple[dict[str, Any], bool]:
    """The constructor's keyword parameters (except learning_rate) with their defaults,
    and whether it also takes ``**kwargs``."""
    params: dict[str, Any] = {}
    takes_any = False
    for param in inspect.signature(cls).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            takes_any = True
        elif param.kind is not inspect.Parameter.VAR_POSITIONAL and param.name != "learning_rate":
            params[param.name] = param.default
    return params, takes_any


def _epochs_key(steps_key: str) -> str:
    return steps_key.removesuffix("_steps") + "_epochs"


def _source_key(cfg: Mapping[str, Any], steps_key: str) -> str:
    epochs_key = _epochs_key(steps_key)
    return epochs_key if cfg.get(epochs_key) is not None else steps_key


def _take_duration(
    given: dict[str, Any], steps_key: str, steps_per_epoch: int, *, may_be_zero: bool = False
) -> Any:
    """Pop ``<x>_steps`` / ``<x>_epochs`` from ``given`` and return the steps (None if unset).

    A scalar is a duration (positive, or >= 0 for warmup); a list holds step
    positions (each >= 0), such as piecewise boundaries.
    """
    epochs_key = _epochs_key(steps_key)
    steps = given.pop(steps_key, None)
    epochs = given.pop(epochs_key, None)
    if steps is not None and epochs is not None:
        raise UserError(
            f"schedule.{steps_key}={steps!r} and schedule.{epochs_key}={epochs!r} are both set; "
            "give only one"
        )
    if _is_list(steps):
        if not all(_is_int(s) and s >= 0 for s in steps):
            raise UserError(f"schedule.{steps_key} must be a list of integers >= 0, got {steps!r}")
        return [int(s) for s in steps]
    if _is_list(epochs):
        if not all(_is_number(e) and e >= 0 for e in epochs):
            raise UserError(f"schedule.{epochs_key} must be a list of numbers >= 0, got {epochs!r}")
        return [round(e * steps_per_epoch) for e in epochs]
    low, what = (0, "an integer >= 0") if may_be_zero else (1, "a positive integer")
    if steps is not None:
        if not (_is_int(steps) and steps >= low):
            raise UserError(f"schedule.{steps_key} must be {what}, got {steps!r}")
        return int(steps)
    if epochs is not None:
        if not (_is_number(epochs) and (epochs >= 0 if may_be_zero else epochs > 0)):
            what = "a number >= 0" if may_be_zero else "a positive number"
            raise UserError(f"schedule.{epochs_key} must be {what}, got {epochs!r}")
        # A positive duration never rounds down to nothing.
        return max(1, round(epochs * steps_per_epoch)) if epochs > 0 else 0
    return None


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _plain_lists(value: Any) -> Any:
    """Plain Python containers (a Hydra ListConfig becomes a list)."""
    return [_plain_lists(v) for v in value] if _is_list(value) else value


def _construct(
    cls: type[LearningRateSchedule],
    name: str,
    learning_rate: float,
    params: Mapping[str, Any],
    origins: Mapping[str, str] | None = None,
) -> LearningRateSchedule:
    """``cls(learning_rate, **params)`` with its complaints turned into a UserError.

    ``origins`` names the user's key for parameters converted from epochs.
    """
    try:
        return cls(learning_rate=learning_rate, **params)
    except ScheduleParamError as error:
        origin = (origins or {}).get(error.param)
        if origin is None:
            raise UserError(f"schedule.{error}") from None
        raise UserError(
            f"{origin} is {error.value!r} steps, but {error.param} must be {error.allowed}"
        ) from None
    except (TypeError, ValueError) as error:
        raise UserError(f"schedule {name!r} rejected its parameters: {error}") from None
