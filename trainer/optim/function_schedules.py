"""Schedules written as plain Python functions, the way users write them outside this project.

``register_schedule(name, per=...)`` (``trainer.optim.schedules``) accepts a
function as well as a class, and turns it into a schedule class here. Two
kinds, declared when the function is registered:

- ``per="step"`` (a function's default): ``fn(step) -> rate``, ``step`` a
  Python int counting optimizer steps from 0, NumPy or ``math`` inside
  (nanoGPT's ``get_lr(it)``, a cosine decay over module-level constants);
- ``per="epoch"``: ``fn(epoch)`` or ``fn(epoch, lr)``, as Keras'
  ``LearningRateScheduler`` calls it: every step of epoch
  ``e = step // steps_per_epoch`` gets ``fn(e)``, or ``fn(e, previous)``
  where ``previous`` is the rate of epoch ``e - 1`` (``optimizer.learning_rate``
  before epoch 0), rounded to float32 as Keras reads it back from the optimizer.

**Why a table.** The optimizer calls its schedule on the step *tensor* inside
the compiled train step, and a Python function of a Python int cannot be
traced. The run's length is known when the schedule is resolved, so the
function is called once for every step (or epoch) of the run, in plain Python,
when the schedule is built; the rates become a float32 constant that the step
looks up with one gather, clamped at the end of the table. That keeps training
bitwise reproducible and fast: the same bits in every process that builds the
schedule (fresh, resumed, plotted), whatever device computes the step, no
host round trip per step, and XLA compiles it. ``tf.numpy_function`` would call
back into Python on every step (a host sync that stalls the device), cannot be
XLA-compiled and is lost in an exported model. The cost is one call of the
function per step when the run starts (about a second per million steps) and
4 bytes per step of memory.

The function stays the user's code: it is imported with their module
(``imports``) and found again by its registry name on resume. A schedule's
``get_config()`` (derived from its constructor, as for every ``Schedule``)
holds plain numbers (``learning_rate``, ``total_steps``, ``steps_per_epoch``),
and a checkpoint holds the resolved ``schedule`` section (the registry name and
those numbers), never the function.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from keras import ops

from trainer.errors import UserError
from trainer.optim.base import Schedule
from trainer.optim.checks import positive, positive_int

PER = ("step", "epoch")


class FunctionSchedule(Schedule):
    """A registered function's rates, one per step (or epoch) of the run, looked up by step.

    ``total_steps``: the last step the table covers (default: the rest of the
    run after warmup, as for cosine's ``decay_steps``); from there on the rate
    of ``total_steps`` holds. The table covers steps ``0..total_steps``
    inclusive, so a run's last step (and plot-schedule's last point) is the
    function's own value. A resumed run that trains longer keeps its table
    unless ``trainer.restretch_schedule=true`` evaluates the function again.
    """

    function: ClassVar[Callable[..., Any]]  # the user's function, set per registered name
    registered_name: ClassVar[str]
    run_length_params: ClassVar[tuple[str, ...]] = ("total_steps",)

    _rates: np.ndarray | None = None

    def rates(self) -> np.ndarray:
        """The function's rates, one per step (or epoch) of the table, as float32.

        Computed on first use and kept: ``build_schedule`` asks for them, so a
        failing function is reported when the run is built, at the run's own
        ``learning_rate``, not while the train step is traced (nor by
        ``resolve_schedule``, which only checks the parameters).
        """
        if self._rates is None:
            # Rounded once, as the optimizer's float32 learning rate rounds a Python float.
            self._rates = np.asarray(self._tabulate(), dtype=np.float64).astype(np.float32)
        return self._rates

    def __call__(self, step: Any) -> Any:
        rates = self.rates()
        index = ops.clip(self._index(ops.cast(step, "int64")), 0, len(rates) - 1)
        return ops.take(ops.convert_to_tensor(rates), index)

    def _index(self, step: Any) -> Any:
        raise NotImplementedError

    def _tabulate(self) -> list[float]:
        raise NotImplementedError

    def _rate(self, *args: Any) -> float:
        """``function(*args)`` as a float, or a one-line UserError saying what went wrong."""
        call = f"{type(self).__name__}({', '.join(repr(a) for a in args)})"  # the function's name
        try:
            value = self.function(*args)
        except Exception as error:  # the user's code: any failure is reported in one line
            raise UserError(
                f"schedule {self.registered_name!r}: {call} raised "
                f"{type(error).__name__}: {_one_line(error)}"
            ) from None
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)):
            raise UserError(
                f"schedule {self.registered_name!r}: {call} returned {_one_line(value)} "
                f"({type(value).__name__}); a learning rate is a number"
            )
        rate = float(value)
        if not (np.isfinite(rate) and rate >= 0):
            raise UserError(
                f"schedule {self.registered_name!r}: {call} returned {rate!r}; "
                "a learning rate must be a finite number >= 0"
            )
        return rate


class StepFunctionSchedule(FunctionSchedule):
    """``lr(s) = function(min(s, total_steps))``: a registered function of the step.

    ``learning_rate`` is not used by the rates (the function returns the rate
    itself); it is kept for the configs and warmup.
    """

    def __init__(self, learning_rate: float, total_steps: int) -> None:
        super().__init__()
        self.learning_rate = positive("learning_rate", learning_rate)
        self.total_steps = positive_int("total_steps", total_steps)

    def _index(self, step: Any) -> Any:
        return step

    def _tabulate(self) -> list[float]:
        return [self._rate(step) for step in range(self.total_steps + 1)]


class EpochFunctionSchedule(FunctionSchedule):
    """``lr(s) = rate of epoch min(s, total_steps) // steps_per_epoch``: a registered
    function of the epoch, called as Keras' ``LearningRateScheduler`` calls it.

    ``steps_per_epoch`` is the run's (filled in by ``resolve_schedule``).
    With ``fn(epoch, lr)``, ``learning_rate`` is the ``lr`` given at epoch 0.
    """

    takes_rate: ClassVar[bool]  # fn(epoch, lr) rather than fn(epoch)

    def __init__(self, learning_rate: float, total_steps: int, steps_per_epoch: int) -> None:
        super().__init__()
        self.learning_rate = positive("learning_rate", learning_rate)
        self.total_steps = positive_int("total_steps", total_steps)
        self.steps_per_epoch = positive_int("steps_per_epoch", steps_per_epoch)

    def _index(self, step: Any) -> Any:
        return ops.floor_divide(step, self.steps_per_epoch)

    def _tabulate(self) -> list[float]:
        rates = []
        # Keras passes float(optimizer.learning_rate): the float32 variable's value.
        previous = float(np.float32(self.learning_rate))
        for epoch in range(self.total_steps // self.steps_per_epoch + 1):
            rate = self._rate(epoch, previous) if self.takes_rate else self._rate(epoch)
            previous = float(np.float32(rate))
            rates.append(rate)
        return rates


def schedule_class_of_function(
    name: str, function: Callable[..., Any], per: str
) -> type[FunctionSchedule]:
    """The schedule class that tabulates ``function``, a function of the step or the epoch.

    Refuses, in one line (``UserError``), a ``per`` other than ``"step"`` or
    ``"epoch"`` and a function that cannot be called as that kind is called:
    ``fn(step)``; ``fn(epoch, lr)`` or ``fn(epoch)``.
    """
    if per not in PER:
        raise UserError(f"schedule {name!r}: per must be 'step' or 'epoch', got {per!r}")
    label = getattr(function, "__name__", type(function).__name__)
    attributes: dict[str, Any] = {
        "function": staticmethod(function),
        "registered_name": name,
        "__module__": getattr(function, "__module__", __name__),
        "__doc__": getattr(function, "__doc__", None),
    }
    if per == "step":
        if not _accepts(function, (0,)):
            raise UserError(
                f"schedule {name!r}: {label}{_signature(function)} must take one argument, "
                "the step (for a function of the epoch, register it with per='epoch')"
            )
        return type(label, (StepFunctionSchedule,), attributes)
    # Keras' LearningRateScheduler tries fn(epoch, lr) first, then fn(epoch).
    if _accepts(function, (0, 0.1)):
        attributes["takes_rate"] = True
    elif _accepts(function, (0,)):
        attributes["takes_rate"] = False
    else:
        raise UserError(
            f"schedule {name!r}: {label}{_signature(function)} must take (epoch) or "
            "(epoch, lr), as Keras' LearningRateScheduler calls it"
        )
    return type(label, (EpochFunctionSchedule,), attributes)


def _accepts(function: Callable[..., Any], args: Sequence[Any]) -> bool:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # no signature to read (some built-ins): let the call tell
        return True
    try:
        signature.bind(*args)
    except TypeError:
        return False
    return True


def _signature(function: Callable[..., Any]) -> str:
    try:
        return str(inspect.signature(function))
    except (TypeError, ValueError):
        return "(...)"


def _one_line(value: Any) -> str:
    text = " ".join(str(value).split()) if isinstance(value, BaseException) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."
