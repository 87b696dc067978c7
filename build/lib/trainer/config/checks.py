"""The small predicates every config group's value checks share, and the one wording of
a bad value (:func:`require`): ``<key> must be <allowed>, got <value>``.

Internal to :mod:`trainer.config`: other packages check a config through
:func:`trainer.config.validate` and the ``validate_<group>`` functions.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from trainer.errors import UserError


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """The one wording of a bad value: ``<key> must be <allowed>, got <value>``."""
    if not ok:
        raise UserError(f"{key} must be {allowed}, got {value!r}")


def is_int(value: Any) -> bool:
    """An integer, and not a bool (``True`` is an ``Integral`` to Python)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number, and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(value: Any) -> bool:
    """An integer >= 1."""
    return is_int(value) and value >= 1


def int_or_none(value: Any) -> bool:
    """None, or an integer >= 1 (an optional count)."""
    return value is None or positive_int(value)


def plain_data(value: Any) -> Any:
    """``value`` as plain lists and dicts if it is an OmegaConf node, else as it is."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def option_name(section: Mapping[str, Any]) -> Any:
    """The option a section names (``schedule.name``); None while it is ``???``."""
    if OmegaConf.is_config(section) and OmegaConf.is_missing(section, "name"):
        return None  # `name: ???` (schedule=custom before schedule.name is given)
    return section.get("name")
