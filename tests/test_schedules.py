"""Schedules: step -> value tables against NumPy/math references, config round trips,
and the checks resolve_schedule makes on a user's ``schedule`` section.

The references below are written from the formulas (Keras, PyTorch OneCycleLR)
and never call trainer.optim, so a wrong boundary in either shows up.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from tests.conftest import REPO, SCHEDULE_NAMES
from trainer.errors import UserError
from trainer.optim import schedules
from trainer.optim.base import Schedule, constructor_params
from trainer.optim.resolve import build_schedule, resolve_schedule, schedule_section_keys
from trainer.optim.schedules import SCHEDULES, register_schedule, schedule_value
from trainer.optim.warmup import LinearWarmup
from trainer.startup import compose_config

BUILTIN_NAMES = set(SCHEDULE_NAMES)
STEPS_PER_EPOCH = 10
TOTAL_STEPS = 100
LR = 0.2


# ---------------------------------------------------------------------------
# Independent references: float64 math from the formulas, step by step.


def ref_constant(s: int, lr: float) -> float:
    return lr


def ref_cosine(s: int, lr: float, decay_steps: int, alpha: float = 0.0) -> float:
    s = min(s, decay_steps)
    return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * s / decay_steps)) + alpha)


def ref_cosine_restarts(
    s: int, lr: float, first_decay_steps: int, t_mul=2.0, m_mul=1.0, alpha=0.0
) -> float:
    # Walk the periods one by one instead of Keras' closed form with logs.
    start, length, i = 0.0, float(first_decay_steps), 0
    while s >= start + length:
        start, length, i = start + length, length * t_mul, i + 1
    fraction = (s - start) / length
    return lr * ((1 - alpha) * m_mul**i * 0.5 * (1 + math.cos(math.pi * fraction)) + alpha)


def ref_exponential(s: int, lr: float, decay_steps: int, decay_rate: float, staircase=False):
    p = s // decay_steps if staircase else s / decay_steps
    return lr * decay_rate**p


def ref_inverse_time(s: int, lr: float, decay_steps: int, decay_rate: float, staircase=False):
    p = s // decay_steps if staircase else s / decay_steps
    return lr / (1 + decay_rate * p)


def ref_piecewise(s: int, lr: float, boundary_steps: list[int], multipliers: list[float]):
    # Keras: value i holds for boundaries[i-1] < s <= boundaries[i].
    return lr * multipliers[bisect.bisect_left(boundary_steps, s)]


def ref_polynomial(
    s: int, lr: float, decay_steps: int, end_learning_rate=0.0, power=1.0, cycle=False
):
    if cycle:
        decay_steps = decay_steps * max(1, math.ceil(s / decay_steps))
    else:
        s = min(s, decay_steps)
    return (lr - end_learning_rate) * (1 - s / decay_steps) ** power + end_learning_rate


def ref_linear(s: int, lr: float, decay_steps: int, end_learning_rate=0.0):
    s = min(s, decay_steps)
    return lr + (end_learning_rate - lr) * s / decay_steps


def ref_step(s: int, lr: float, every_steps: int, factor=0.1):
    return lr * factor ** (s // every_steps)


def ref_one_cycle(s, lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
    # torch.optim.lr_scheduler.OneCycleLR.get_lr, anneal_strategy="cos", two phases,
    # with the step clamped to the last one instead of raising past the end.
    initial = lr / div_factor
    phases = [
        (float(pct_start * total_steps) - 1, initial, lr),
        (total_steps - 1, lr, initial / final_div_factor),
    ]
    s = min(s, total_steps - 1)
    start_step = 0
    for i, (end_step, start_lr, end_lr) in enumerate(phases):
        if s <= end_step or i == len(phases) - 1:
            pct = (s - start_step) / (end_step - start_step)
            return end_lr + (start_lr - end_lr) / 2.0 * (math.cos(math.pi * pct) + 1)
        start_step = end_step
    raise AssertionError("unreachable")


def with_warmup(reference: Callable[[int], float], warmup_steps: int) -> Callable[[int], float]:
    def warmed(s: int) -> float:
        if s < warmup_steps:
            return reference(0) * s / warmup_steps
        return reference(s - warmup_steps)

    return warmed


# ---------------------------------------------------------------------------
# The table cases: a user config, the reference with the parameters the test
# expects after resolution (written out, not read from resolve_schedule), and
# the schedule-time steps where something happens.


@dataclass
class Case:
    id: str
    cfg: dict[str, Any]
    reference: Callable[..., float]
    # (warmup_steps -> expected params); run-length params depend on warmup.
    params: Callable[[int], dict[str, Any]]
    marks: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.cfg["name"]


def rest(warmup: int) -> int:
    return TOTAL_STEPS - warmup


CASES = [
    Case("constant", {"name": "constant"}, ref_constant, lambda w: {}, [50]),
    Case(
        "cosine-run-length",
        {"name": "cosine", "alpha": 0.1},
        ref_cosine,
        lambda w: {"decay_steps": rest(w), "alpha": 0.1},
        [TOTAL_STEPS, TOTAL_STEPS - 20],  # decay end without / with warmup 20
    ),
    Case(
        "cosine-epochs",
        {"name": "cosine", "decay_epochs": 4},
        ref_cosine,
        lambda w: {"decay_steps": 40},
        [20, 40],
    ),
    Case(
        "cosine_restarts",
        {"name": "cosine_restarts", "first_decay_steps": 10, "m_mul": 0.5, "alpha": 0.1},
        ref_cosine_restarts,
        lambda w: {"first_decay_steps": 10, "m_mul": 0.5, "alpha": 0.1},
        [10, 30, 70, 150],
    ),
    Case(
        "cosine_restarts-t_mul-1",
        {"name": "cosine_restarts", "first_decay_epochs": 1.2, "t_mul": 1.0},
        ref_cosine_restarts,
        lambda w: {"first_decay_steps": 12, "t_mul": 1.0},
        [12, 24, 36, 120],
    ),
    Case(
        "exponential",
        {"name": "exponential", "decay_steps": 10, "decay_rate": 0.5},
        ref_exponential,
        lambda w: {"decay_steps": 10, "decay_rate": 0.5},
        [10, 20, 100],
    ),
    Case(
        "exponential-staircase",
        {"name": "exponential", "decay_epochs": 1, "decay_rate": 0.5, "staircase": True},
        ref_exponential,
        lambda w: {"decay_steps": 10, "decay_rate": 0.5, "staircase": True},
        [10, 20, 100],
    ),
    Case(
        "inverse_time",
        {"name": "inverse_time", "decay_steps": 10, "decay_rate": 2.0},
        ref_inverse_time,
        lambda w: {"decay_steps": 10, "decay_rate": 2.0},
        [10, 20, 100],
    ),
    Case(
        "inverse_time-staircase",
        {"name": "inverse_time", "decay_steps": 10, "decay_rate": 2.0, "staircase": True},
        ref_inverse_time,
        lambda w: {"decay_steps": 10, "decay_rate": 2.0, "staircase": True},
        [10, 20, 100],
    ),
    Case(
        "piecewise",
        {"name": "piecewise", "boundary_steps": [10, 25, 60], "multipliers": [1, 0.5, 0.1, 0.01]},
        ref_piecewise,
        lambda w: {"boundary_steps": [10, 25, 60], "multipliers": [1, 0.5, 0.1, 0.01]},
        [10, 25, 60],
    ),
    Case(
        "piecewise-epochs",
        {"name": "piecewise", "boundary_epochs": [0.5, 2.5], "multipliers": [2, 1, 0.1]},
        ref_piecewise,
        lambda w: {"boundary_steps": [5, 25], "multipliers": [2, 1, 0.1]},
        [5, 25],
    ),
    Case(
        "polynomial-run-length",
        {"name": "polynomial", "end_learning_rate": 0.01, "power": 2.0},
        ref_polynomial,
        lambda w: {"decay_steps": rest(w), "end_learning_rate": 0.01, "power": 2.0},
        [TOTAL_STEPS, TOTAL_STEPS - 20],
    ),
    Case(
        "polynomial-cycle",
        {"name": "polynomial", "decay_steps": 20, "power": 0.5, "cycle": True},
        ref_polynomial,
        lambda w: {"decay_steps": 20, "power": 0.5, "cycle": True},
        [20, 40, 60],
    ),
    Case(
        "linear",
        {"name": "linear", "end_learning_rate": 0.02},
        ref_linear,
        lambda w: {"decay_steps": rest(w), "end_learning_rate": 0.02},
        [TOTAL_STEPS, TOTAL_STEPS - 20],
    ),
    Case(
        "step",
        {"name": "step", "every_epochs": 1.5, "factor": 0.5},
        ref_step,
        lambda w: {"every_steps": 15, "factor": 0.5},
        [15, 30, 45, 150],
    ),
    Case(
        "one_cycle-run-length",
        {"name": "one_cycle", "div_factor": 10.0, "final_div_factor": 100.0},
        ref_one_cycle,
        lambda w: {"total_steps": rest(w), "div_factor": 10.0, "final_div_factor": 100.0},
        # peak at 0.3 * T - 1 and end at T - 1, for T = 100 and T = 80 (warmup 20)
        [29, 99, 23, 79],
    ),
    Case(
        "one_cycle-short",  # peak step 0.3 * 3 - 1 < 0: the ramp is skipped
        {"name": "one_cycle", "total_steps": 3},
        ref_one_cycle,
        lambda w: {"total_steps": 3},
        [2, 3],
    ),
]


def probe_steps(marks: list[float], warmup: int) -> list[int]:
    """0, 1, the middle and both sides of every mark, and far past the end."""
    steps = {0, 1, 1000}
    for mark in marks:
        steps |= {math.floor(mark / 2), math.floor(mark) - 1, math.floor(mark), math.ceil(mark)}
        steps |= {math.ceil(mark) + 1, 2 * math.ceil(mark)}
    steps = {s for s in steps if s >= 0}
    if warmup:
        steps = {warmup + s for s in steps} | {0, 1, warmup // 2, warmup - 1, warmup, warmup + 1}
    return sorted(steps)


def expected_values(case: Case, warmup: int, lr: float, steps: list[int]) -> np.ndarray:
    params = case.params(warmup)

    def reference(s: int) -> float:
        return case.reference(s, lr, **params)

    if warmup:
        reference = with_warmup(reference, warmup)
    return np.array([reference(s) for s in steps])


def assert_table(actual: list[float], expected: np.ndarray, steps: list[int], lr: float) -> None:
    table = "\n".join(
        f"  step {s:5d}: got {a:.8g}, want {e:.8g}"
        for s, a, e in zip(steps, actual, expected, strict=True)
    )
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7 * lr, err_msg="\n" + table)


def test_the_cases_cover_every_builtin_schedule():
    assert set(SCHEDULES.names()) >= BUILTIN_NAMES
    assert {case.name for case in CASES} == BUILTIN_NAMES


@pytest.mark.parametrize("warmup", [0, 20], ids=["no-warmup", "warmup-20"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_step_value_table_matches_reference(case: Case, warmup: int):
    cfg = {**case.cfg, "warmup_steps": warmup}
    resolved = resolve_schedule(cfg, steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL_STEPS)
    assert resolved == {"name": case.name, "warmup_steps": warmup, **case.params(warmup)}

    schedule = build_schedule(resolved, LR)
    assert isinstance(schedule, LinearWarmup) == (warmup > 0)
    steps = probe_steps(case.marks, warmup)
    actual = [schedule_value(schedule, s) for s in steps]
    assert_table(actual, expected_values(case, warmup, LR, steps), steps, LR)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_values_inside_xla_compiled_tf_function(case: Case):
    warmup = 20
    cfg = {**case.cfg, "warmup_steps": warmup}
    resolved = resolve_schedule(cfg, steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL_STEPS)
    schedule = build_schedule(resolved, LR)
    # The optimizer's iterations counter is an int64 variable.
    compiled = tf.function(
        lambda step: schedule(step),
        jit_compile=True,
        input_signature=[tf.TensorSpec([], tf.int64)],
    )
    steps = probe_steps(case.marks, warmup)
    actual = [float(compiled(tf.constant(s, tf.int64))) for s in steps]
    assert_table(actual, expected_values(case, warmup, LR, steps), steps, LR)


def test_optimizer_steps_count_iterations_from_zero():
    resolved = resolve_schedule(
        {"name": "cosine", "warmup_steps": 4}, steps_per_epoch=5, total_steps=20
    )
    optimizer = keras.optimizers.SGD(learning_rate=build_schedule(resolved, 1.0))
    variable = keras.Variable(1.0)
    reference = with_warmup(lambda s: ref_cosine(s, 1.0, decay_steps=16), 4)
    seen = []
    for _ in range(6):
        seen.append(float(optimizer.learning_rate))
        optimizer.apply_gradients([(keras.ops.ones(()), variable)])
    assert seen == pytest.approx([reference(s) for s in range(6)], abs=1e-6)
    assert seen[0] == 0.0 and seen[4] == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# Config round trips.


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_get_config_round_trips_through_the_constructor(case: Case):
    resolved = resolve_schedule(case.cfg, steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL_STEPS)
    schedule = build_schedule(resolved, LR)
    config = schedule.get_config()
    # Plain JSON-able values, the parameters the user set, and the rate.
    assert json.loads(json.dumps(config)) == config
    assert config["learning_rate"] == LR
    assert {k: v for k, v in config.items() if k in case.params(0)} == case.params(0)

    rebuilt = type(schedule)(**config)
    assert type(rebuilt) is SCHEDULES.get(case.name)
    assert rebuilt.get_config() == config
    for step in (0, 7, 55, 500):
        assert schedule_value(rebuilt, step) == schedule_value(schedule, step)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_warmup_config_names_the_wrapped_schedule_and_rebuilds_through_the_registry(case: Case):
    cfg = {**case.cfg, "warmup_epochs": 1.5}
    resolved = resolve_schedule(cfg, steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL_STEPS)
    schedule = build_schedule(resolved, LR)
    config = json.loads(json.dumps(schedule.get_config()))
    assert config["warmup_steps"] == 15
    assert config["learning_rate"] == LR
    assert config["after"]["name"] == case.name  # the registry name, not a class path
    assert "learning_rate" not in config["after"]["config"]

    for rebuilt in (LinearWarmup.from_config(config), LinearWarmup(**config)):
        assert rebuilt.get_config() == config
        assert type(rebuilt.after) is SCHEDULES.get(case.name)
        for step in (0, 14, 15, 16, 500):
            assert schedule_value(rebuilt, step) == schedule_value(schedule, step)


def test_warmup_survives_keras_serialization():
    resolved = resolve_schedule(
        {"name": "step", "every_steps": 5, "warmup_steps": 3}, steps_per_epoch=10, total_steps=50
    )
    schedule = build_schedule(resolved, 0.5)
    restored = keras.optimizers.schedules.deserialize(
        json.loads(json.dumps(keras.optimizers.schedules.serialize(schedule)))
    )
    assert isinstance(restored, LinearWarmup)
    assert restored.get_config() == schedule.get_config()


def test_warmup_refuses_a_rate_other_than_the_wrapped_schedules():
    after = schedules.CosineSchedule(0.1, decay_steps=10)
    with pytest.raises(ValueError, match="learning_rate must be the rate 'cosine' was built with"):
        LinearWarmup(after, warmup_steps=5, learning_rate=0.2)


def test_warmup_refuses_an_unregistered_schedule():
    after = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    with pytest.raises(ValueError, match="ExponentialDecay is not registered"):
        LinearWarmup(after, warmup_steps=5)


# ---------------------------------------------------------------------------
# One declaration: a schedule's parameters are its constructor's. get_config
# reads them from it (Schedule), resolve_schedule accepts the keys it implies,
# and these tests hold the YAML option and its schema dataclass to the same keys.

SCHEDULE_OPTIONS = REPO / "conf" / "schedule"


@pytest.fixture(scope="module")
def schema_store() -> ConfigStore:
    compose_config([])  # stores the schema dataclasses in Hydra's ConfigStore, as train.py does
    return ConfigStore.instance()


def schema_fields(store: ConfigStore, option: dict[str, Any]) -> set[str]:
    """The fields of the dataclass a YAML option extends, found as its defaults list names it."""
    (schema,) = [entry for entry in option["defaults"] if entry != "_self_"]
    path = schema.split("@")[0].lstrip("/")  # schema/schedule/<name>
    return set(store.load(f"{path}.yaml").node)


def test_every_schedule_option_is_a_registered_schedule():
    options = {path.stem for path in SCHEDULE_OPTIONS.glob("*.yaml")} - {"custom"}
    assert options == BUILTIN_NAMES
    assert set(SCHEDULES.names()) >= options


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_yaml_schema_constructor_and_get_config_declare_the_same_parameters(name, schema_store):
    cls = SCHEDULES.get(name)
    params = constructor_params(cls)
    # A section's keys: the constructor's parameters but learning_rate, each *_steps
    # also as *_epochs, and warmup (schedule_section_keys), plus the registry name.
    keys = {"name"} | schedule_section_keys(cls)
    option = yaml.safe_load((SCHEDULE_OPTIONS / f"{name}.yaml").read_text())
    yaml_keys = set(option) - {"defaults"}
    assert yaml_keys == keys, (
        f"conf/schedule/{name}.yaml lacks {sorted(keys - yaml_keys)}, "
        f"has unknown {sorted(yaml_keys - keys)}"
    )
    fields = schema_fields(schema_store, option)
    assert fields == keys, (
        f"the schema dataclass of {name!r} lacks {sorted(keys - fields)}, "
        f"has unknown {sorted(fields - keys)}"
    )
    assert set(cls.run_length_params) <= set(params) - {"learning_rate"}

    # The option as composed builds, and get_config returns the constructor's
    # parameters, in its order (the keys a checkpoint's optimizer config holds).
    section = compose_config([f"schedule={name}"]).schedule
    assert set(section) == keys
    resolved = resolve_schedule(section, steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL_STEPS)
    schedule = build_schedule(resolved, LR)
    assert type(schedule) is cls
    assert list(schedule.get_config()) == list(params)


def test_warmup_get_config_holds_its_constructor_parameters():
    warmed = LinearWarmup(schedules.ConstantSchedule(0.1), warmup_steps=4)
    assert list(warmed.get_config()) == list(constructor_params(LinearWarmup))


def test_schedule_get_config_names_a_parameter_the_constructor_did_not_store():
    class Forgetful(Schedule):
        def __init__(self, learning_rate, period_steps):
            self.learning_rate = learning_rate  # period_steps is not kept

        def __call__(self, step):
            return self.learning_rate

    with pytest.raises(TypeError, match="Forgetful stores no attribute 'period_steps'"):
        Forgetful(0.1, period_steps=3).get_config()


# ---------------------------------------------------------------------------
# resolve_schedule: conversion and defaults.


def resolve(
    cfg: dict[str, Any], steps_per_epoch: int = STEPS_PER_EPOCH, total_steps: int = TOTAL_STEPS
):
    return resolve_schedule(cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps)


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        # fractional epochs round to the nearest step...
        ({"name": "step", "every_epochs": 0.26}, {"every_steps": 3}),
        ({"name": "cosine", "decay_epochs": 2.34}, {"decay_steps": 23}),
        # ...but a positive duration never becomes 0 steps
        ({"name": "step", "every_epochs": 0.01}, {"every_steps": 1}),
        ({"name": "constant", "warmup_epochs": 0.01}, {"warmup_steps": 1}),
        ({"name": "constant", "warmup_epochs": 0}, {"warmup_steps": 0}),
        ({"name": "cosine_restarts", "first_decay_epochs": 3}, {"first_decay_steps": 30}),
        ({"name": "one_cycle", "total_epochs": 5}, {"total_steps": 50}),
        (
            {"name": "piecewise", "boundary_epochs": [0, 1, 2.5], "multipliers": [1, 1, 1, 1]},
            {"boundary_steps": [0, 10, 25]},
        ),
        # an explicit duration is kept even when it outlasts the run
        ({"name": "cosine", "warmup_steps": 10, "decay_steps": 500}, {"decay_steps": 500}),
    ],
)
def test_resolve_converts_epochs_to_steps(cfg, expected):
    resolved = resolve(cfg)
    assert {k: resolved[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("name", "param"),
    [
        ("cosine", "decay_steps"),
        ("polynomial", "decay_steps"),
        ("linear", "decay_steps"),
        ("one_cycle", "total_steps"),
    ],
)
@pytest.mark.parametrize(
    ("warmup", "expected"), [({}, 100), ({"warmup_steps": 10}, 90), ({"warmup_epochs": 2.5}, 75)]
)
def test_run_length_params_default_to_the_rest_of_the_run(name, param, warmup, expected):
    assert resolve({"name": name, **warmup})[param] == expected
    assert resolve({"name": name, param: None, **warmup})[param] == expected


def test_resolve_drops_nulls_so_class_defaults_apply():
    resolved = resolve(
        {
            "name": "step",
            "every_steps": 7,
            "factor": None,
            "warmup_steps": None,
            "warmup_epochs": None,
            "decay_steps": None,
            "alpha": None,
        }
    )
    # Keys of other schedules are ignored when null (a typed schema carries them all).
    assert resolved == {"name": "step", "warmup_steps": 0, "every_steps": 7}
    assert build_schedule(resolved, 1.0).get_config()["factor"] == 0.1


def test_resolve_accepts_omegaconf_and_returns_plain_values():
    cfg = OmegaConf.create(
        {
            "name": "piecewise",
            "boundary_epochs": [1, 2],
            "multipliers": [1.0, 0.5, 0.25],
            "warmup_epochs": None,
        }
    )
    resolved = resolve(cfg)
    assert resolved == {
        "name": "piecewise",
        "warmup_steps": 0,
        "boundary_steps": [10, 20],
        "multipliers": [1.0, 0.5, 0.25],
    }
    assert type(resolved["multipliers"]) is list
    assert json.loads(json.dumps(resolved)) == resolved


def test_resolve_uses_no_tensor_ops(monkeypatch):
    class NoOps:
        def __getattr__(self, name):
            raise AssertionError(f"resolve_schedule called keras.ops.{name}")

    # The modules that compute rates; resolve.py does not import keras.ops at all.
    monkeypatch.setattr("trainer.optim.schedules.ops", NoOps())
    monkeypatch.setattr("trainer.optim.warmup.ops", NoOps())
    for case in CASES:
        assert resolve({**case.cfg, "warmup_epochs": 1})["warmup_steps"] == 10


# ---------------------------------------------------------------------------
# resolve_schedule and build_schedule: every check, as the user reads it.


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            {"name": "cosine", "decay_steps": 10, "decay_epochs": 1},
            "schedule.decay_steps=10 and schedule.decay_epochs=1 are both set; give only one",
        ),
        (
            {"name": "constant", "warmup_steps": 5, "warmup_epochs": 1},
            "schedule.warmup_steps=5 and schedule.warmup_epochs=1 are both set",
        ),
        (
            {"name": "cosine", "decay_step": 10},
            "schedule.decay_step is not a parameter of schedule 'cosine'; accepted: alpha, "
            "decay_epochs, decay_steps, warmup_epochs, warmup_steps",
        ),
        (
            {"name": "constant", "learning_rate": 0.1},
            "schedule.learning_rate is not a parameter of schedule 'constant'; accepted: "
            "warmup_epochs, warmup_steps",
        ),
        (
            {"name": "exponential", "decay_rate": 0.5},
            "schedule.decay_steps (or decay_epochs) is required for schedule 'exponential'",
        ),
        (
            {"name": "exponential", "decay_steps": 10},
            "schedule.decay_rate is required for schedule 'exponential'",
        ),
        (
            {"name": "step"},
            "schedule.every_steps (or every_epochs) is required for schedule 'step'",
        ),
        (
            {"name": "cosine_restarts"},
            "schedule.first_decay_steps (or first_decay_epochs) is required",
        ),
        (
            {"name": "piecewise", "multipliers": [1.0]},
            "schedule.boundary_steps (or boundary_epochs) is required",
        ),
        (
            {"name": "cosine", "decay_steps": 0},
            "schedule.decay_steps must be a positive integer, got 0",
        ),
        (
            {"name": "cosine", "decay_steps": -5},
            "schedule.decay_steps must be a positive integer, got -5",
        ),
        (
            {"name": "cosine", "decay_steps": 1.5},
            "schedule.decay_steps must be a positive integer, got 1.5",
        ),
        (
            {"name": "cosine", "decay_steps": True},
            "schedule.decay_steps must be a positive integer, got True",
        ),
        (
            {"name": "cosine", "decay_epochs": 0},
            "schedule.decay_epochs must be a positive number, got 0",
        ),
        (
            {"name": "step", "every_epochs": "2"},
            "schedule.every_epochs must be a positive number, got '2'",
        ),
        (
            {"name": "cosine_restarts", "first_decay_steps": 0},
            "schedule.first_decay_steps must be a positive integer, got 0",
        ),
        (
            {"name": "one_cycle", "total_steps": 0},
            "schedule.total_steps must be a positive integer, got 0",
        ),
        (
            {"name": "constant", "warmup_steps": 100},
            "schedule.warmup_steps: warmup (100 steps) must be shorter than the run (100 steps)",
        ),
        (
            {"name": "constant", "warmup_epochs": 12},
            "schedule.warmup_epochs: warmup (120 steps) must be shorter than the run (100 steps)",
        ),
        (
            {"name": "constant", "warmup_steps": -1},
            "schedule.warmup_steps must be an integer >= 0, got -1",
        ),
        (
            {"name": "constant", "warmup_epochs": -0.5},
            "schedule.warmup_epochs must be a number >= 0, got -0.5",
        ),
        (
            {"name": "piecewise", "boundary_steps": [10, 20], "multipliers": [1.0, 0.5]},
            "schedule.multipliers must be a list of 3 positive numbers (one more than "
            "boundary_steps), got [1.0, 0.5]",
        ),
        (
            {"name": "piecewise", "boundary_steps": [10], "multipliers": [1.0, -0.5]},
            "schedule.multipliers must be a list of 2 positive numbers",
        ),
        (
            {"name": "piecewise", "boundary_steps": [20, 10], "multipliers": [1, 1, 1]},
            "schedule.boundary_steps must be a non-empty list of strictly increasing "
            "integers >= 0, got [20, 10]",
        ),
        (
            {"name": "piecewise", "boundary_steps": [10, 10], "multipliers": [1, 1, 1]},
            "schedule.boundary_steps must be a non-empty list of strictly increasing",
        ),
        (
            {"name": "piecewise", "boundary_steps": [], "multipliers": [1]},
            "schedule.boundary_steps must be a non-empty list of strictly increasing",
        ),
        (
            {"name": "piecewise", "boundary_steps": [-1, 10], "multipliers": [1, 1, 1]},
            "schedule.boundary_steps must be a list of integers >= 0, got [-1, 10]",
        ),
        (
            {"name": "piecewise", "boundary_epochs": [0.01, 0.02], "multipliers": [1, 1, 1]},
            "schedule.boundary_epochs=[0.01, 0.02] at 10 steps per epoch is [0, 0] steps, but "
            "boundary_steps must be a non-empty list of strictly increasing integers >= 0",
        ),
        (
            {"name": "exponential", "decay_steps": 10, "decay_rate": 0},
            "schedule.decay_rate must be a positive number, got 0",
        ),
        (
            {"name": "inverse_time", "decay_steps": 10, "decay_rate": -1},
            "schedule.decay_rate must be a number >= 0, got -1",
        ),
        (
            {"name": "step", "every_steps": 10, "factor": 0},
            "schedule.factor must be a positive number, got 0",
        ),
        ({"name": "cosine", "alpha": 1.5}, "schedule.alpha must be a number in [0, 1], got 1.5"),
        ({"name": "polynomial", "power": 0}, "schedule.power must be a positive number, got 0"),
        ({"name": "polynomial", "cycle": "yes"}, "schedule.cycle must be true or false, got 'yes'"),
        (
            {"name": "linear", "end_learning_rate": -0.1},
            "schedule.end_learning_rate must be a number >= 0, got -0.1",
        ),
        (
            {"name": "cosine_restarts", "first_decay_steps": 5, "t_mul": 0},
            "schedule.t_mul must be a positive number, got 0",
        ),
        (
            {"name": "one_cycle", "pct_start": 1.0},
            "schedule.pct_start must be a number strictly between 0 and 1, got 1.0",
        ),
        (
            {"name": "one_cycle", "div_factor": 0},
            "schedule.div_factor must be a positive number, got 0",
        ),
        ({"name": "cosin"}, "unknown schedule 'cosin'; known: constant, cosine, cosine_restarts"),
        ({"decay_steps": 10}, "schedule.name is required; known: constant, cosine"),
    ],
)
def test_resolve_rejects_bad_config_with_one_line_naming_key_and_value(cfg, message):
    with pytest.raises(UserError) as raised:
        resolve(cfg)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("learning_rate", [0, -0.1, float("nan"), "0.1", None])
def test_build_rejects_a_rate_that_is_not_positive(learning_rate):
    with pytest.raises(UserError, match=r"^learning_rate must be a positive number, got "):
        build_schedule({"name": "constant", "warmup_steps": 0}, learning_rate)


def test_build_rejects_an_unknown_name_with_the_known_ones():
    with pytest.raises(UserError, match=r"unknown schedule 'nope'; known: .*one_cycle"):
        build_schedule({"name": "nope", "warmup_steps": 0}, 0.1)


def test_build_without_warmup_is_the_schedule_itself():
    schedule = build_schedule({"name": "step", "warmup_steps": 0, "every_steps": 3}, 0.1)
    assert type(schedule) is schedules.StepSchedule
    assert schedule_value(schedule, 3) == pytest.approx(0.01)


# ---------------------------------------------------------------------------
# A user's own schedule, registered from "their module" (this test).


class Halving(keras.optimizers.schedules.LearningRateSchedule):
    """Halve every ``every_steps`` until ``stop_steps``, then hold."""

    run_length_params = ("stop_steps",)

    def __init__(self, learning_rate, every_steps, stop_steps, floor=0.0):
        if every_steps > stop_steps:
            raise ValueError(
                f"every_steps ({every_steps}) must not exceed stop_steps ({stop_steps})"
            )
        self.learning_rate = learning_rate
        self.every_steps = every_steps
        self.stop_steps = stop_steps
        self.floor = floor

    def __call__(self, step):
        step = keras.ops.minimum(keras.ops.cast(step, "float32"), self.stop_steps)
        halvings = keras.ops.floor(step / self.every_steps)
        return keras.ops.maximum(self.learning_rate * keras.ops.power(0.5, halvings), self.floor)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "every_steps": self.every_steps,
            "stop_steps": self.stop_steps,
            "floor": self.floor,
        }


def ref_halving(s, lr, every_steps, stop_steps, floor=0.0):
    return max(lr * 0.5 ** (min(s, stop_steps) // every_steps), floor)


@pytest.fixture
def halving(monkeypatch):
    # Register into a copy of the registry so other tests see only the built-ins.
    monkeypatch.setattr(SCHEDULES, "_entries", dict(SCHEDULES._entries))
    register_schedule("test_halving")(Halving)
    return "test_halving"


def test_custom_schedule_resolves_and_builds_by_name(halving):
    resolved = resolve({"name": halving, "every_epochs": 2, "warmup_steps": 10})
    assert resolved == {"name": halving, "warmup_steps": 10, "every_steps": 20, "stop_steps": 90}

    schedule = build_schedule(resolved, LR)
    steps = [0, 5, 9, 10, 11, 29, 30, 31, 89, 90, 99, 100, 101, 1000]
    reference = with_warmup(lambda s: ref_halving(s, LR, every_steps=20, stop_steps=90), 10)
    assert_table(
        [schedule_value(schedule, s) for s in steps],
        np.array([reference(s) for s in steps]),
        steps,
        LR,
    )

    config = json.loads(json.dumps(schedule.get_config()))
    assert config["after"]["name"] == halving
    rebuilt = LinearWarmup.from_config(config)
    assert type(rebuilt.after) is Halving
    assert schedule_value(rebuilt, 31) == schedule_value(schedule, 31)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            {"every_steps": 5, "halve_steps": 3},
            "schedule.halve_steps is not a parameter of schedule 'test_halving'; accepted: "
            "every_epochs, every_steps, floor, stop_epochs, stop_steps, "
            "warmup_epochs, warmup_steps",
        ),
        ({}, "schedule.every_steps (or every_epochs) is required for schedule 'test_halving'"),
        ({"every_steps": 0}, "schedule.every_steps must be a positive integer, got 0"),
        (
            {"every_steps": 50, "stop_epochs": 2},
            "schedule 'test_halving' rejected its parameters: every_steps (50) must not exceed "
            "stop_steps (20)",
        ),
    ],
)
def test_custom_schedule_gets_the_same_checks(halving, cfg, message):
    with pytest.raises(UserError) as raised:
        resolve({"name": halving, **cfg})
    assert message in str(raised.value)


def test_register_schedule_refuses_what_a_config_could_not_build(monkeypatch):
    monkeypatch.setattr(SCHEDULES, "_entries", dict(SCHEDULES._entries))
    with pytest.raises(TypeError, match="must be a subclass of"):
        register_schedule("not_a_schedule")(dict)

    class NoRate(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, rate):
            self.rate = rate

    with pytest.raises(TypeError, match="must take learning_rate"):
        register_schedule("no_rate")(NoRate)
    assert "not_a_schedule" not in SCHEDULES and "no_rate" not in SCHEDULES


# ---------------------------------------------------------------------------
# A user's schedule written as a plain function (trainer.optim.function_schedules):
# the seed article's cosine decay of the step, and Keras-callback functions of the epoch.

SEED_INITIAL_LEARNING_RATE = 0.01
SEED_DECAY_STEPS = 60
SEED_ALPHA = 0.1


def cosine_decay_schedule(step):
    """The seed article's function, as written there: NumPy, module-level constants."""
    step = min(step, SEED_DECAY_STEPS)
    cosine_decay = 0.5 * (1 + np.cos(np.pi * step / SEED_DECAY_STEPS))
    decayed = (1 - SEED_ALPHA) * cosine_decay + SEED_ALPHA
    return SEED_INITIAL_LEARNING_RATE * decayed


def keras_docs_scheduler(epoch, lr):
    """The example of Keras' LearningRateScheduler documentation."""
    if epoch < 3:
        return lr
    return lr * math.exp(-0.1)


def halve_every_two_epochs(epoch):
    return 0.1 * 0.5 ** (epoch // 2)


@pytest.fixture
def user_registry(monkeypatch):
    """Register into a copy of the registry so other tests see only the built-ins."""
    monkeypatch.setattr(SCHEDULES, "_entries", dict(SCHEDULES._entries))


def keras_scheduler_rates(function, learning_rate: float, epochs: int) -> list[float]:
    """What Keras' own LearningRateScheduler sets at the start of each epoch (reference)."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate), loss="mse")
    callback = keras.callbacks.LearningRateScheduler(function)
    callback.set_model(model)
    rates = []
    for epoch in range(epochs):
        callback.on_epoch_begin(epoch)
        rates.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    return rates


def all_values(schedule, last_step: int) -> np.ndarray:
    """``schedule(step)`` for every step 0..last_step, called on the int64 step tensor."""
    steps = tf.range(last_step + 1, dtype=tf.int64)
    return keras.ops.convert_to_numpy(schedule(steps))


def test_a_function_of_the_step_is_registered_and_returned_unchanged(user_registry):
    assert register_schedule("cosine_decay_schedule")(cosine_decay_schedule) is (
        cosine_decay_schedule
    )
    cls = SCHEDULES.get("cosine_decay_schedule")
    assert issubclass(cls, keras.optimizers.schedules.LearningRateSchedule)
    assert list(constructor_params(cls)) == ["learning_rate", "total_steps"]
    assert cls.run_length_params == ("total_steps",)


@pytest.mark.parametrize("warmup", [0, 20], ids=["no-warmup", "warmup-20"])
def test_a_function_of_the_step_gives_its_own_value_at_every_step(user_registry, warmup):
    register_schedule("cosine_decay_schedule")(cosine_decay_schedule)
    resolved = resolve({"name": "cosine_decay_schedule", "warmup_steps": warmup})
    assert resolved == {
        "name": "cosine_decay_schedule",
        "warmup_steps": warmup,
        "total_steps": TOTAL_STEPS - warmup,  # the rest of the run, like cosine's decay_steps
    }
    # optimizer.learning_rate does not scale it: the function returns the rate itself.
    schedule = build_schedule(resolved, LR)
    last = TOTAL_STEPS + 50  # past the end, the last step's value holds
    reference = with_warmup(lambda s: cosine_decay_schedule(min(s, TOTAL_STEPS - warmup)), warmup)
    expected = np.array([reference(s) for s in range(last + 1)], dtype=np.float32)
    if warmup == 0:  # the function's own value, rounded once to float32, bit for bit
        np.testing.assert_array_equal(all_values(schedule, last), expected)
        assert [schedule_value(schedule, s) for s in (0, 30, 60, 100, 10**6)] == [
            float(np.float32(cosine_decay_schedule(s))) for s in (0, 30, 60, 100, 100)
        ]
    else:  # warmup computes in float32 in front of it
        np.testing.assert_allclose(all_values(schedule, last), expected, rtol=1e-6)


def test_a_function_of_the_step_inside_an_xla_compiled_optimizer_step(user_registry):
    register_schedule("cosine_decay_schedule")(cosine_decay_schedule)
    schedule = build_schedule(resolve({"name": "cosine_decay_schedule"}), LR)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    variable = keras.Variable(1.0)
    optimizer.build([variable])

    @tf.function(jit_compile=True)
    def step():
        rate = optimizer.learning_rate
        optimizer.apply_gradients([(tf.ones(()), variable)])
        return rate

    seen = [float(step()) for _ in range(TOTAL_STEPS + 3)]
    assert seen == [
        float(np.float32(cosine_decay_schedule(min(s, TOTAL_STEPS))))
        for s in range(TOTAL_STEPS + 3)
    ]


@pytest.mark.parametrize(
    "function", [keras_docs_scheduler, halve_every_two_epochs], ids=["epoch-lr", "epoch"]
)
def test_a_function_of_the_epoch_gives_what_keras_learning_rate_scheduler_sets(
    user_registry, function
):
    assert register_schedule("by_epoch", per="epoch")(function) is function
    steps_per_epoch, epochs = 7, 9
    resolved = resolve(
        {"name": "by_epoch"}, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * epochs
    )
    assert resolved == {
        "name": "by_epoch",
        "warmup_steps": 0,
        "total_steps": steps_per_epoch * epochs,
        "steps_per_epoch": steps_per_epoch,  # the run's
    }
    schedule = build_schedule(resolved, LR)
    per_epoch = keras_scheduler_rates(function, LR, epochs + 1)
    expected = np.repeat(np.array(per_epoch, dtype=np.float32), steps_per_epoch)
    last = steps_per_epoch * epochs + 30  # past the end, the last epoch's value holds
    expected = np.concatenate([expected, np.full(last + 1 - len(expected), per_epoch[-1])])
    np.testing.assert_array_equal(all_values(schedule, last), expected.astype(np.float32))


def test_a_function_schedules_config_is_plain_data_and_rebuilds_through_the_registry(
    user_registry,
):
    register_schedule("by_epoch", per="epoch")(keras_docs_scheduler)
    resolved = resolve({"name": "by_epoch", "warmup_steps": 5})
    schedule = build_schedule(resolved, LR)
    config = schedule.get_config()
    assert json.loads(json.dumps(config)) == config
    assert config["after"] == {
        "name": "by_epoch",
        "config": {"total_steps": 95, "steps_per_epoch": 10},
    }
    rebuilt = LinearWarmup.from_config(config)
    np.testing.assert_array_equal(all_values(rebuilt, 120), all_values(schedule, 120))

    after = schedule.after
    assert type(after)(**after.get_config()).get_config() == after.get_config()
    serialized = keras.optimizers.schedules.serialize(after)
    assert serialized["registered_name"] == "trainer_schedule>by_epoch"
    assert json.loads(json.dumps(serialized)) == serialized  # no code in it: names and numbers
    again = keras.optimizers.schedules.deserialize(serialized)
    np.testing.assert_array_equal(all_values(again, 120), all_values(after, 120))


def test_a_function_schedule_is_resolved_without_tensor_ops(user_registry, monkeypatch):
    class NoOps:
        def __getattr__(self, name):
            raise AssertionError(f"resolve_schedule called keras.ops.{name}")

    monkeypatch.setattr("trainer.optim.function_schedules.ops", NoOps())
    register_schedule("cosine_decay_schedule")(cosine_decay_schedule)
    register_schedule("by_epoch", per="epoch")(halve_every_two_epochs)
    assert resolve({"name": "cosine_decay_schedule", "total_epochs": 3})["total_steps"] == 30
    assert resolve({"name": "by_epoch"}, steps_per_epoch=4)["steps_per_epoch"] == 4


def test_a_function_schedules_keys_are_checked_like_any_others(user_registry):
    register_schedule("cosine_decay_schedule")(cosine_decay_schedule)
    with pytest.raises(UserError) as raised:
        resolve({"name": "cosine_decay_schedule", "decay_steps": 5})
    assert str(raised.value) == (
        "schedule.decay_steps is not a parameter of schedule 'cosine_decay_schedule'; "
        "accepted: total_epochs, total_steps, warmup_epochs, warmup_steps"
    )


def _two_steps(step, other):
    return 0.1


def _no_argument():
    return 0.1


def _three_arguments(epoch, lr, other):
    return lr


@pytest.mark.parametrize(
    ("function", "per", "message"),
    [
        (
            _two_steps,
            None,
            "schedule 'bad': _two_steps(step, other) must take one argument, the step "
            "(for a function of the epoch, register it with per='epoch')",
        ),
        (_no_argument, "step", "schedule 'bad': _no_argument() must take one argument"),
        (
            _three_arguments,
            "epoch",
            "schedule 'bad': _three_arguments(epoch, lr, other) must take (epoch) or "
            "(epoch, lr), as Keras' LearningRateScheduler calls it",
        ),
        (halve_every_two_epochs, "batch", "schedule 'bad': per must be 'step' or 'epoch', got"),
    ],
)
def test_a_function_that_cannot_be_called_so_is_refused_in_one_line(
    user_registry, function, per, message
):
    with pytest.raises(UserError) as raised:
        register_schedule("bad", per=per)(function)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert "bad" not in SCHEDULES


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (lambda step: float("nan") if step == 7 else 0.1, "<lambda>(7) returned nan; "),
        (lambda step: np.inf, "<lambda>(0) returned inf; a learning rate must be a finite"),
        (lambda step: -0.1, "<lambda>(0) returned -0.1; a learning rate must be a finite number"),
        (lambda step: None, "<lambda>(0) returned None (NoneType); a learning rate is a number"),
        (lambda step: "0.1", "<lambda>(0) returned '0.1' (str); a learning rate is a number"),
        (lambda step: True, "<lambda>(0) returned True (bool); a learning rate is a number"),
        (lambda step: np.ones(2), "<lambda>(0) returned array([1., 1.]) (ndarray); a learning"),
        (lambda step: 1 / (3 - step), "<lambda>(3) raised ZeroDivisionError: division by zero"),
    ],
)
def test_a_function_that_returns_no_finite_number_is_refused_in_one_line(
    user_registry, function, message
):
    register_schedule("bad")(function)
    resolved = resolve({"name": "bad"})  # checks the parameters; the function runs at build
    with pytest.raises(UserError) as raised:
        build_schedule(resolved, LR)
    assert str(raised.value).startswith(f"schedule 'bad': {message}")
    assert "\n" not in str(raised.value)


def test_an_epoch_function_is_refused_at_the_epoch_that_fails(user_registry):
    register_schedule("bad", per="epoch")(lambda epoch, lr: lr if epoch < 4 else float("inf"))
    with pytest.raises(UserError, match=r"^schedule 'bad': <lambda>\(4, 0\.2\d*\) returned inf"):
        build_schedule(resolve({"name": "bad"}), LR)


def test_per_is_for_functions_and_an_instance_is_not_a_class(user_registry):
    with pytest.raises(TypeError, match="per= is for functions"):
        register_schedule("halving", per="epoch")(Halving)
    with pytest.raises(TypeError, match="register the class, not an instance"):
        register_schedule("instance")(schedules.ConstantSchedule(0.1))
    assert "halving" not in SCHEDULES and "instance" not in SCHEDULES
