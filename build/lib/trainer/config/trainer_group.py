"""``conf/trainer/`` (the ``trainer:`` section): lengths, cadences, the plateau
callbacks, devices and precision; the schema and its value checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from trainer.config.checkpoint import MonitorMode, require_monitor
from trainer.config.checks import int_or_none, is_int, is_number, positive_int, require


class Strategy(StrEnum):
    default = "default"
    mirrored = "mirrored"
    multi_worker = "multi_worker"


class Precision(StrEnum):
    """Keras dtype policies (``keras.mixed_precision``): variables always float32."""

    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"  # bfloat16 compute
    mixed_float16 = "mixed_float16"  # float16 compute, dynamic loss scaling


@dataclass
class EarlyStoppingConfig:
    """``keras.callbacks.EarlyStopping``'s options (``trainer.training.plateau.EarlyStopping``); off
    while ``patience`` is null. ``monitor: null``: ``checkpoint.monitor`` and its mode."""

    patience: int | None = None  # epochs without improvement before stopping
    monitor: str | None = None
    mode: MonitorMode | None = None  # null: checkpoint.mode with its monitor, else by the name
    min_delta: float = 0.0  # a smaller change is no improvement
    baseline: float | None = None  # the count restarts only on values better than this
    restore_best_weights: bool = False  # end the run with the best epoch's weights
    start_from_epoch: int = 0  # epochs ignored at the start (warm-up)


@dataclass
class ReduceOnPlateauConfig:
    """``keras.callbacks.ReduceLROnPlateau``'s options
    (``trainer.training.plateau.ReduceOnPlateau``); off while ``patience`` is null.
    ``monitor: null``: ``checkpoint.monitor`` and its mode.
    ``min_delta`` defaults to 0 here (Keras: 1e-4), as it was before these options existed."""

    patience: int | None = None  # epochs without improvement before cutting the rate
    factor: float = 0.5  # the rate is multiplied by this, in (0, 1)
    monitor: str | None = None
    mode: MonitorMode | None = None
    min_delta: float = 0.0
    cooldown: int = 0  # epochs after a cut before counting again
    min_lr: float = 0.0  # never cut below this rate


@dataclass
class TrainerConfig:
    epochs: int = 15
    max_steps: int | None = None  # optional cap on optimizer steps over the whole run
    deterministic: bool = False  # seeds + TF op determinism: bitwise-reproducible on CPU
    jit_compile: bool = False  # XLA-compile the train step
    steps_per_execution: int = 1  # optimizer steps per call into the compiled graph
    log_every_n_steps: int = 10  # TensorBoard per-step scalars
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    reduce_on_plateau: ReduceOnPlateauConfig = field(default_factory=ReduceOnPlateauConfig)
    restretch_schedule: bool = False  # on resume: re-resolve the schedule to the new length
    fine_tune: bool = False  # on resume: keep weights, fresh optimizer/schedule from the command
    # Beyond one device (trainer.training.distribute); dataset.batch_size is the global batch.
    strategy: Strategy = Strategy.default
    cpu_devices: int | None = None  # mirrored only: split the CPU into N logical devices
    scale_lr_with_replicas: bool = False  # linear rule: learning_rate * number of replicas
    precision: Precision = Precision.float32  # a Keras dtype policy; fixed on resume
    evaluate_with_ema: bool = True  # with optimizer.ema: validate, test and export the average
    label_smoothing: float = 0.0  # in [0, 1): CategoricalCrossentropy's, training loss only
    # Console progress, as Keras' `verbose`: auto, 0 (silent), 1 (bar), 2 (one line per epoch).
    verbose: str = "auto"


# trainer.verbose: Keras' values, as strings (an int 2 on the command line becomes "2").
VERBOSITIES = ("auto", "0", "1", "2")


def validate_trainer(run: Mapping[str, Any]) -> None:
    """The ``trainer`` section: lengths, cadences, callbacks and devices."""
    require(positive_int(run["epochs"]), "trainer.epochs", run["epochs"], "an integer >= 1")
    require(
        int_or_none(run.get("max_steps")),
        "trainer.max_steps",
        run.get("max_steps"),
        "null or an integer >= 1",
    )
    for key in ("steps_per_execution", "log_every_n_steps"):
        require(positive_int(run[key]), f"trainer.{key}", run[key], "an integer >= 1")
    require(
        str(run.get("verbose", "auto")) in VERBOSITIES,
        "trainer.verbose",
        run.get("verbose"),
        "auto (a progress bar on a terminal, one line per epoch otherwise), 0 (silent), "
        "1 (a progress bar) or 2 (one line per epoch)",
    )
    devices = run.get("cpu_devices")
    require(int_or_none(devices), "trainer.cpu_devices", devices, "null or an integer >= 1")
    require(
        devices is None or run["strategy"] == Strategy.mirrored,
        "trainer.cpu_devices",
        devices,
        f"null unless trainer.strategy=mirrored (strategy is {run['strategy']})",
    )
    # XLA compiles for one CPU device: variables on the other logical CPUs are refused
    # (tensorflow.org/xla/known_issues, "tf.Variable on a different device").
    require(
        not (run["jit_compile"] and (devices or 1) > 1),
        "trainer.jit_compile",
        run["jit_compile"],
        "false with trainer.cpu_devices > 1 (XLA cannot compile across logical CPUs)",
    )
    smoothing = run.get("label_smoothing", 0.0)
    require(
        is_number(smoothing) and 0 <= smoothing < 1,
        "trainer.label_smoothing",
        smoothing,
        "in [0, 1)",
    )


def validate_accumulation(opt: Mapping[str, Any], run: Mapping[str, Any]) -> None:
    """``optimizer.gradient_accumulation_steps`` > 1 needs the single-device path: Keras
    applies the accumulated update inside a ``cond`` whose branch all-reduces, which a
    ``tf.distribute`` strategy refuses ("merge_call called while defining a new graph")."""
    steps = opt.get("gradient_accumulation_steps")
    require(
        steps is None or steps <= 1 or run["strategy"] == Strategy.default,
        "optimizer.gradient_accumulation_steps",
        steps,
        f"null or 1 with trainer.strategy={run['strategy']} (Keras' accumulation cannot "
        "run under a tf.distribute strategy; grow dataset.batch_size instead)",
    )


def validate_plateau_callbacks(run: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """``trainer.early_stopping`` and ``trainer.reduce_on_plateau`` (Keras' ranges)."""
    for name in ("early_stopping", "reduce_on_plateau"):
        section = run.get(name) or {}
        where = f"trainer.{name}"
        patience = section.get("patience")
        require(
            patience is None or (is_int(patience) and patience >= 0),
            f"{where}.patience",
            patience,
            "null (off) or an integer >= 0",
        )
        if section.get("monitor") is not None:
            require_monitor(section["monitor"], f"{where}.monitor", data)
        delta = section.get("min_delta", 0.0)
        require(is_number(delta) and delta >= 0, f"{where}.min_delta", delta, "a number >= 0")
        for key in ("start_from_epoch", "cooldown"):
            value = section.get(key, 0)
            require(is_int(value) and value >= 0, f"{where}.{key}", value, "an integer >= 0")
    plateau = run.get("reduce_on_plateau") or {}
    factor = plateau.get("factor", 0.5)
    require(
        is_number(factor) and 0 < factor < 1,
        "trainer.reduce_on_plateau.factor",
        factor,
        "in (0, 1)",
    )
    min_lr = plateau.get("min_lr", 0.0)
    require(
        is_number(min_lr) and min_lr >= 0,
        "trainer.reduce_on_plateau.min_lr",
        min_lr,
        "a number >= 0",
    )
