"""Parameter checks shared by the schedule constructors.

Each check returns the value in its plain type or raises a
:class:`ScheduleParamError` that names the parameter, the value received and
what is allowed; ``resolve_schedule`` and ``build_schedule``
(``trainer.optim.resolve``) turn it into one line about ``schedule.<param>``.
Pure Python: nothing here touches a tensor.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any


class ScheduleParamError(ValueError):
    """A schedule parameter with a value the schedule does not accept."""

    def __init__(self, param: str, value: Any, allowed: str) -> None:
        self.param, self.value, self.allowed = param, value, allowed
        super().__init__(f"{param} must be {allowed}, got {value!r}")


def is_int(value: Any) -> bool:
    """An integer, and not a bool (``True`` is not a step count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number, and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(param: str, value: Any) -> int:
    if not (is_int(value) and value > 0):
        raise ScheduleParamError(param, value, "a positive integer")
    return int(value)


def number(param: str, value: Any, allowed: str, ok: Callable[[float], bool]) -> float:
    """``value`` as a float when it is a finite number that ``ok`` accepts."""
    if not (is_number(value) and ok(value)):
        raise ScheduleParamError(param, value, allowed)
    return float(value)


def positive(param: str, value: Any) -> float:
    return number(param, value, "a positive number", lambda v: v > 0)


def non_negative(param: str, value: Any) -> float:
    return number(param, value, "a number >= 0", lambda v: v >= 0)


def fraction(param: str, value: Any) -> float:
    return number(param, value, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def boolean(param: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ScheduleParamError(param, value, "true or false")
    return value


def increasing_steps(param: str, value: Any) -> list[int]:
    """Step positions, such as piecewise boundaries: a non-empty, strictly increasing list."""
    allowed = "a non-empty list of strictly increasing integers >= 0"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ScheduleParamError(param, value, allowed)
    steps = list(value)
    if not all(is_int(b) and b >= 0 for b in steps) or any(
        a >= b for a, b in itertools.pairwise(steps)
    ):
        raise ScheduleParamError(param, steps, allowed)
    return [int(b) for b in steps]


def piecewise_multipliers(value: Any, count: int) -> list[float]:
    """Piecewise ``multipliers``: ``count`` positive numbers (one more than the boundaries)."""
    allowed = f"a list of {count} positive numbers (one more than boundary_steps)"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ScheduleParamError("multipliers", value, allowed)
    values = list(value)
    if len(values) != count or not all(is_number(m) and m > 0 for m in values):
        raise ScheduleParamError("multipliers", values, allowed)
    return [float(m) for m in values]
