"""From the user's ``schedule`` section to a schedule, in two steps.

1. ``resolve_schedule(cfg, steps_per_epoch=..., total_steps=...)`` checks the
   user's ``schedule`` section (pure Python, no TensorFlow ops) and turns it
   into concrete step counts: ``*_epochs`` become ``*_steps`` and run-length
   durations left unset become "the rest of the run after warmup". A
   checkpoint saves this resolved section, so a resumed run keeps its length.
2. ``build_schedule(resolved, learning_rate)`` builds the schedule by its
   registry name, wrapped in ``LinearWarmup`` when ``warmup_steps > 0``.

The keys a section may hold come from the schedule's constructor
(:func:`schedule_section_keys`), so a user's registered schedule gets the same
checks as the built-ins.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from trainer.errors import UserError
from trainer.optim.base import LearningRateSchedule, constructor_params
from trainer.optim.checks import ScheduleParamError, is_int, is_number
from trainer.optim.function_schedules import FunctionSchedule
from trainer.optim.schedules import SCHEDULES
from trainer.optim.warmup import LinearWarmup


def schedule_section_keys(cls: type) -> set[str]:
    """The keys a ``schedule`` section for ``cls`` may set, besides ``name``.

    Every constructor parameter but ``learning_rate`` (the optimizer's), each
    duration ``<x>_steps`` also as ``<x>_epochs``, and ``warmup_steps`` /
    ``warmup_epochs`` (``LinearWarmup``'s). A schedule that takes
    ``**kwargs`` accepts any key besides.

    >>> from trainer.optim.schedules import CosineSchedule
    >>> sorted(schedule_section_keys(CosineSchedule))
    ['alpha', 'decay_epochs', 'decay_steps', 'warmup_epochs', 'warmup_steps']
    """
    params = _section_params(cls)
    durations = _durations(params)
    return set(params) | durations | {_epochs_key(d) for d in durations}


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
      parameter (``cls.run_length_params``) becomes ``total_steps - warmup_steps``,
      and a null ``steps_per_epoch`` parameter the run's ``steps_per_epoch``.
    - Parameters are checked against the schedule's constructor (its
      signature and its own checks), so a user's schedule gets the same
      checks as the built-ins. Pure Python: nothing is built on a device.

    Raises ``UserError`` naming the key, the value and what is allowed.

    >>> resolve_schedule({"name": "cosine", "warmup_epochs": 0.5, "alpha": None},
    ...                  steps_per_epoch=10, total_steps=100)
    {'name': 'cosine', 'warmup_steps': 5, 'decay_steps': 95}
    """
    if not (is_int(steps_per_epoch) and steps_per_epoch > 0):
        raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
    if not (is_int(total_steps) and total_steps > 0):
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")

    given = {key: value for key, value in schedule_cfg.items() if value is not None}
    name = given.pop("name", None)
    if name is None:
        raise UserError(f"schedule.name is required; known: {', '.join(SCHEDULES.names())}")
    cls = SCHEDULES.get(name)
    params = _section_params(cls)

    # Which user keys feed which parameter: "<x>_epochs" feeds "<x>_steps".
    durations = _durations(params)
    known_keys = schedule_section_keys(cls)
    unknown = sorted(key for key in given if key not in known_keys)
    if unknown and not _takes_any_keyword(cls):
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
        if value is None:
            value = _from_the_run(param, run_length, total_steps - warmup_steps, steps_per_epoch)
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
    ``LinearWarmup`` when ``warmup_steps > 0``. A schedule written as a
    function is evaluated here, for every step of its table.
    """
    if not (is_number(learning_rate) and learning_rate > 0):
        raise UserError(f"learning_rate must be a positive number, got {learning_rate!r}")
    params = dict(resolved)
    name = params.pop("name", None)
    warmup_steps = params.pop("warmup_steps", 0) or 0
    if not (is_int(warmup_steps) and warmup_steps >= 0):
        raise UserError(f"schedule.warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    cls = SCHEDULES.get(name)
    schedule = _construct(cls, name, float(learning_rate), params)
    if isinstance(schedule, FunctionSchedule):
        schedule.rates()  # the user's function runs now, not while a train step is traced
    if warmup_steps > 0:
        schedule = LinearWarmup(schedule, warmup_steps, float(learning_rate))
    return schedule


def _section_params(cls: type) -> dict[str, Any]:
    """The constructor's parameters a section sets (all but learning_rate), with defaults."""
    return {p: d for p, d in constructor_params(cls).items() if p != "learning_rate"}


def _from_the_run(
    param: str, run_length: set[str], rest_of_run: int, steps_per_epoch: int
) -> int | None:
    """What the run gives a parameter left unset: the rest of the run (after warmup) to a
    run-length duration, the run's steps per epoch to ``steps_per_epoch`` (a schedule
    written as a function of the epoch takes it); None to any other."""
    if param in run_length:
        return rest_of_run
    if param == "steps_per_epoch":
        return steps_per_epoch
    return None


def _durations(params: Mapping[str, Any]) -> set[str]:
    """The ``<x>_steps`` keys, warmup's included, that a user may give as ``<x>_epochs``."""
    return {"warmup_steps"} | {p for p in params if p.endswith("_steps")}


def _takes_any_keyword(cls: type) -> bool:
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(cls).parameters.values()
    )


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
        if not all(is_int(s) and s >= 0 for s in steps):
            raise UserError(f"schedule.{steps_key} must be a list of integers >= 0, got {steps!r}")
        return [int(s) for s in steps]
    if _is_list(epochs):
        if not all(is_number(e) and e >= 0 for e in epochs):
            raise UserError(f"schedule.{epochs_key} must be a list of numbers >= 0, got {epochs!r}")
        return [round(e * steps_per_epoch) for e in epochs]
    low, what = (0, "an integer >= 0") if may_be_zero else (1, "a positive integer")
    if steps is not None:
        if not (is_int(steps) and steps >= low):
            raise UserError(f"schedule.{steps_key} must be {what}, got {steps!r}")
        return int(steps)
    if epochs is not None:
        if not (is_number(epochs) and (epochs >= 0 if may_be_zero else epochs > 0)):
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
