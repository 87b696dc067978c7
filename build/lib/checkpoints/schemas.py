"""The schemas of what is read from a run: declarative field kinds and the records built of them.

A few field kinds (:class:`Integer`, :class:`Number`, :class:`Text`, :class:`Flag`,
:class:`Nullable`, :class:`ListOf`, :class:`MappingOf`, :class:`Record`,
:class:`SizedData`) rather than a JSON-Schema library: none is a dependency, and
these add what such a schema would need custom code for anyway (finite numbers,
bool is not an int, one line naming the field). ``spec.problem(value, where)`` is
None when ``value`` fits, else that line.

The records of a run's files live here too: the trainer state
(:data:`TRAINER_STATE`, its loop and loggers) and the run summary
(:data:`RUN_SUMMARY`); the manifest's is ``checkpoints.manifest.MANIFEST_SCHEMA``.
The readers that apply them are in ``checkpoints.reading``. Nothing here reads a
file; no TensorFlow.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from checkpoints.layout import MAX_GLOBAL_STEP

MAX_TEXT = 4096  # characters of a name, a path or a version string in a schema


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Spec:
    """One field kind: ``problem(value, where)`` is None when ``value`` fits."""

    def problem(self, value: Any, where: str) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Integer(Spec):
    low: int = 0
    high: int = MAX_GLOBAL_STEP

    def problem(self, value: Any, where: str) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{where} is {_shown(value)}, not an integer"
        if not self.low <= value <= self.high:
            return f"{where} is {value}, outside [{self.low}, {self.high}]"
        return None


@dataclass(frozen=True)
class Number(Spec):
    low: float = -math.inf
    high: float = math.inf

    def problem(self, value: Any, where: str) -> str | None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"{where} is {_shown(value)}, not a number"
        if not (math.isfinite(value) and self.low <= value <= self.high):
            return f"{where} is {value}, outside [{self.low}, {self.high}]"
        return None


@dataclass(frozen=True)
class Text(Spec):
    max_length: int = MAX_TEXT
    pattern: str | None = None

    def problem(self, value: Any, where: str) -> str | None:
        if not isinstance(value, str):
            return f"{where} is {_shown(value)}, not a string"
        if len(value) > self.max_length:
            return f"{where} is longer than {self.max_length} characters"
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"{where} is {_shown(value)}, not of the form {self.pattern}"
        return None


@dataclass(frozen=True)
class Flag(Spec):
    def problem(self, value: Any, where: str) -> str | None:
        return None if isinstance(value, bool) else f"{where} is {_shown(value)}, not a boolean"


@dataclass(frozen=True)
class Nullable(Spec):
    inner: Spec

    def problem(self, value: Any, where: str) -> str | None:
        return None if value is None else self.inner.problem(value, where)


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    max_length: int = 100_000

    def problem(self, value: Any, where: str) -> str | None:
        if not isinstance(value, list):
            return f"{where} is {_shown(value)}, not a list"
        if len(value) > self.max_length:
            return f"{where} has more than {self.max_length} items"
        for index, item in enumerate(value):
            if found := self.item.problem(item, f"{where}[{index}]"):
                return found
        return None


@dataclass(frozen=True)
class MappingOf(Spec):
    value: Spec
    max_length: int = 10_000
    key: Spec = Text(256)

    def problem(self, value: Any, where: str) -> str | None:
        if not isinstance(value, dict):
            return f"{where} is {_shown(value)}, not a mapping"
        if len(value) > self.max_length:
            return f"{where} has more than {self.max_length} entries"
        for key, item in value.items():
            found = self.key.problem(key, f"a key of {where}") or self.value.problem(
                item, f"{where}.{key}"
            )
            if found:
                return found
        return None


@dataclass(frozen=True)
class Record(Spec):
    """A mapping with known fields; ``required`` ones must be there. Other keys are
    tolerated (a newer trainer may add fields) but are plain data, like everything read."""

    fields: Mapping[str, Spec]
    required: tuple[str, ...] = ()
    name: str = field(default="", compare=False)

    def problem(self, value: Any, where: str) -> str | None:
        if not isinstance(value, dict):
            return f"{where or self.name} is {_shown(value)}, not a mapping"
        for key in self.required:
            if key not in value:
                return f"{_join(where, key)} is missing"
        for key, spec in self.fields.items():
            if key in value and (found := spec.problem(value[key], _join(where, key))):
                return found
        return None


@dataclass(frozen=True)
class SizedData(Spec):
    """Any plain data (the reader made it so) of at most ``max_bytes`` as JSON."""

    max_bytes: int

    def problem(self, value: Any, where: str) -> str | None:
        size = len(json.dumps(value).encode())
        if size > self.max_bytes:
            return f"{where} is {size} bytes as JSON, more than {self.max_bytes}"
        return None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# --------------------------------------------------------------------------- trainer state

# One user callback's get_state() as JSON, at most (its saver refuses to save more).
MAX_CALLBACK_STATE_BYTES = 1 << 20
COUNT = Integer(0, MAX_GLOBAL_STEP)
# trainer.training.state.LoopState, field by field (tests check that every field is here).
LOOP_STATE = Record(
    {
        "epoch": COUNT,
        "batches_done": COUNT,
        "epochs_completed": COUNT,
        "best": Nullable(Number()),
        "epochs_without_improvement": COUNT,
        "early_stopping_best": Nullable(Number()),
        "early_stopping_best_epoch": COUNT,
        "epochs_since_lr_cut": COUNT,
        "plateau_best": Nullable(Number()),
        "plateau_cooldown": COUNT,
        "lr_scale": Number(1e-30, 1.0),  # reduce-on-plateau's factor: in (0, 1]
        "stopped_early": Flag(),
        "history": ListOf(MappingOf(Nullable(Number()), max_length=1000)),
        "callbacks": ListOf(
            Record(
                {"name": Text(256), "state": SizedData(MAX_CALLBACK_STATE_BYTES)},
                required=("name", "state"),
            ),
            max_length=1000,
        ),
        "epoch_metrics": ListOf(Number(), max_length=64),
    },
    required=("epoch", "batches_done", "epochs_completed"),
)
# trainer.loggers.Loggers.run_states: per tracker (its option name), the run to continue.
# Ids are what MLflow (32 hex digits) and W&B (letters, digits, - and _) make; a value
# read back is only ever handed to the tracker's client as that run's id.
LOGGER_STATE = MappingOf(
    Record({"run_id": Text(128, pattern=r"[A-Za-z0-9_-]+")}, required=("run_id",)),
    max_length=16,
    key=Text(32, pattern=r"[a-z_]+"),
)
TRAINER_STATE = Record(
    {
        "loop": LOOP_STATE,
        "loggers": LOGGER_STATE,
        "rng": ListOf(
            Record(
                {"path": Text(), "state": ListOf(Integer(-(2**63), 2**64 - 1), max_length=64)},
                required=("path", "state"),
            ),
            max_length=100_000,
        ),
    },
    required=("loop",),
)


# --------------------------------------------------------------------------- run summary

# What trainer.train.train writes into <run>/summary.json when a run ends.
RUN_SUMMARY = Record(
    {
        "test_accuracy": Nullable(Number()),
        "test_loss": Nullable(Number()),
        "global_step": COUNT,
        "epochs_completed": COUNT,
        "stopped_early": Flag(),
        "monitor": Text(256),
        "best": Nullable(Number()),
        "checkpoint_dir": Text(),
        "latest_checkpoint": Nullable(Text()),
        "best_checkpoint": Nullable(Text()),
        "resumed_from": Nullable(Text()),
        "wall_seconds": Nullable(Number(0)),
    }
)
