"""The typed schema of an experiment, and the checks that run before TensorFlow.

Every option of a config group (``conf/optimizer/adam.yaml``, ...) extends a
dataclass registered here in Hydra's ConfigStore under ``schema/<group>/<name>``,
so a misspelt key or a wrong type fails when Hydra composes the config, with
OmegaConf's own message. Value checks that a type cannot express
(``learning_rate > 0``, ``epochs >= 1``) live in :func:`validate`, which raises a
one-line :class:`~trainer.errors.UserError`.

This module never imports TensorFlow: ``--help``, ``--cfg job`` and the
checkpoint tools use it.

The primary config (``conf/config.yaml``) itself is not a dataclass, so that
Hydra's ``+resume=PATH`` can add the ``resume`` key exactly as written;
:func:`validate` checks its top-level keys instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer.errors import UserError

# --------------------------------------------------------------------------- dataset


@dataclass
class DatasetConfig:
    name: str = "digits"
    data_dir: str | None = None  # None: TFDS' default, ~/tensorflow_datasets
    batch_size: int = 32
    validation_split: float = 0.1  # fraction of the train split held out
    shuffle_buffer: int | None = None  # None: shuffle the whole split; 0: no shuffling
    cache: bool = True
    download: bool = True  # catalog datasets only; digits never downloads


# --------------------------------------------------------------------------- model


@dataclass
class CNNConfig:
    name: str = "cnn"
    filters: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    pooling: str = "max"  # max | avg | none
    batch_norm: bool = False
    activation: str = "relu"
    dropout: float = 0.25
    dense_units: list[int] = field(default_factory=lambda: [128])


# --------------------------------------------------------------------------- optimizer


@dataclass
class OptimizerConfig:
    name: str = "adam"
    learning_rate: float = 1e-3  # the base (peak) rate the schedule scales
    weight_decay: float | None = None
    clipnorm: float | None = None
    global_clipnorm: float | None = None


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    amsgrad: bool = False


@dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"
    weight_decay: float | None = 0.004


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class RMSpropConfig(OptimizerConfig):
    name: str = "rmsprop"
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7
    centered: bool = False


# --------------------------------------------------------------------------- schedule


@dataclass
class ScheduleConfig:
    """Any duration ``<x>_steps`` may be given as ``<x>_epochs`` instead (not both)."""

    name: str = "constant"
    warmup_steps: int | None = None  # linear warmup from 0 to the schedule's start
    warmup_epochs: float | None = None


@dataclass
class CosineConfig(ScheduleConfig):
    name: str = "cosine"
    decay_steps: int | None = None  # None: the rest of the run after warmup
    decay_epochs: float | None = None
    alpha: float = 0.0  # final rate as a fraction of learning_rate


@dataclass
class CosineRestartsConfig(ScheduleConfig):
    name: str = "cosine_restarts"
    first_decay_steps: int | None = None
    first_decay_epochs: float | None = None
    t_mul: float = 2.0  # each period is t_mul times longer than the previous
    m_mul: float = 1.0  # each restart peaks at m_mul times the previous peak
    alpha: float = 0.0


@dataclass
class ExponentialConfig(ScheduleConfig):
    name: str = "exponential"
    decay_steps: int | None = None
    decay_epochs: float | None = None
    decay_rate: float = 0.9  # lr * decay_rate ** (step / decay_steps)
    staircase: bool = False


@dataclass
class InverseTimeConfig(ScheduleConfig):
    name: str = "inverse_time"
    decay_steps: int | None = None
    decay_epochs: float | None = None
    decay_rate: float = 0.5  # lr / (1 + decay_rate * step / decay_steps)
    staircase: bool = False


@dataclass
class PiecewiseConfig(ScheduleConfig):
    name: str = "piecewise"
    boundary_steps: list[int] | None = None
    boundary_epochs: list[float] | None = None
    multipliers: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.01])


@dataclass
class PolynomialConfig(ScheduleConfig):
    name: str = "polynomial"
    decay_steps: int | None = None  # None: the rest of the run after warmup
    decay_epochs: float | None = None
    end_learning_rate: float = 0.0
    power: float = 2.0
    cycle: bool = False


@dataclass
class LinearConfig(ScheduleConfig):
    name: str = "linear"
    decay_steps: int | None = None  # None: the rest of the run after warmup
    decay_epochs: float | None = None
    end_learning_rate: float = 0.0


@dataclass
class StepConfig(ScheduleConfig):
    name: str = "step"
    every_steps: int | None = None
    every_epochs: float | None = None
    factor: float = 0.1  # lr * factor ** floor(step / every_steps)


@dataclass
class OneCycleConfig(ScheduleConfig):
    name: str = "one_cycle"
    total_steps: int | None = None  # None: the rest of the run after warmup
    total_epochs: float | None = None
    pct_start: float = 0.3  # fraction of the cycle spent rising to learning_rate
    div_factor: float = 25.0  # starts at learning_rate / div_factor
    final_div_factor: float = 1e4  # ends at learning_rate / (div_factor * final_div_factor)


# --------------------------------------------------------------------------- trainer


@dataclass
class TrainerConfig:
    epochs: int = 15
    max_steps: int | None = None  # optional cap on optimizer steps over the whole run
    deterministic: bool = False  # seeds + TF op determinism: bitwise-reproducible on CPU
    jit_compile: bool = False  # XLA-compile the train step
    steps_per_execution: int = 1  # optimizer steps per call into the compiled graph
    log_every_n_steps: int = 10  # TensorBoard per-step scalars
    early_stopping_patience: int | None = None  # epochs without improvement of monitor
    reduce_on_plateau_patience: int | None = None  # epochs before scaling the lr down
    reduce_on_plateau_factor: float = 0.5
    restretch_schedule: bool = False  # on resume: re-resolve the schedule to the new length
    fine_tune: bool = False  # on resume: keep weights, fresh optimizer/schedule from the command
    # Beyond one device (trainer.distribute); dataset.batch_size is the global batch.
    strategy: str = "default"  # default | mirrored | multi_worker
    cpu_devices: int | None = None  # mirrored only: split the CPU into N logical devices
    scale_lr_with_replicas: bool = False  # linear rule: learning_rate * number of replicas


# --------------------------------------------------------------------------- checkpoint


@dataclass
class CheckpointConfig:
    dir: str | None = None  # None: <root>/<date>/<time>[/<job number>], mirroring Hydra's
    root: str = "checkpoints"
    every_n_steps: int | None = None
    every_n_epochs: int | None = 1
    keep_last: int = 3  # newest checkpoints kept
    keep_best: int = 1  # best checkpoints by monitor kept besides those
    keep_every_n_steps: int | None = None  # also keep one checkpoint every N steps forever
    monitor: str = "val_accuracy"  # a metric of the epoch summary (val_* needs a validation split)
    mode: str = "max"  # max | min
    # `async` (a Python keyword, so not a dataclass field) is added in _checkpoint_node().


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"digits": DatasetConfig},
    "model": {"cnn": CNNConfig},
    "optimizer": {
        "adam": AdamConfig,
        "adamw": AdamWConfig,
        "sgd": SGDConfig,
        "rmsprop": RMSpropConfig,
    },
    "schedule": {
        "constant": ScheduleConfig,
        "cosine": CosineConfig,
        "cosine_restarts": CosineRestartsConfig,
        "exponential": ExponentialConfig,
        "inverse_time": InverseTimeConfig,
        "piecewise": PiecewiseConfig,
        "polynomial": PolynomialConfig,
        "linear": LinearConfig,
        "step": StepConfig,
        "one_cycle": OneCycleConfig,
    },
    "trainer": {"default": TrainerConfig},
}

TOP_LEVEL_KEYS = (
    "dataset",
    "model",
    "optimizer",
    "schedule",
    "trainer",
    "checkpoint",
    "seed",
    "imports",
    "resume",
)


def _checkpoint_node() -> DictConfig:
    """CheckpointConfig plus the ``async`` key, which a dataclass cannot declare."""
    node = OmegaConf.structured(CheckpointConfig)
    OmegaConf.set_struct(node, False)
    node["async"] = False  # commit checkpoints from a background writer
    OmegaConf.set_struct(node, True)
    return node


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore as ``schema/<group>/<name>``."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, options in SCHEMAS.items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
    store.store(group="schema/checkpoint", name="default", node=_checkpoint_node())


def typed_section(group: str, section: Mapping[str, Any]) -> DictConfig:
    """``section`` (e.g. read back from a checkpoint) checked against its group's schema.

    The schema is chosen by the section's ``name`` among the known options; a
    section whose name has no schema (a user's own registered schedule) is
    returned as an untyped config, to be checked by its builder.
    """
    options = SCHEMAS.get(group, {})
    name = section.get("name") if group in ("dataset", "model", "optimizer", "schedule") else None
    schema = options.get(name) if name is not None else options.get("default")
    try:
        if group == "checkpoint":
            return OmegaConf.merge(_checkpoint_node(), section)
        if group == "dataset":  # any registered dataset shares one schema
            return OmegaConf.merge(OmegaConf.structured(DatasetConfig), section)
        if schema is None:
            return OmegaConf.create(dict(section))
        return OmegaConf.merge(OmegaConf.structured(schema), section)
    except Exception as error:  # OmegaConf's ValidationError and friends
        first_line = str(error).splitlines()[0]
        raise UserError(f"{group} config is not valid: {first_line}") from None


# --------------------------------------------------------------------------- checks


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise UserError(f"{key} must be {allowed}, got {value!r}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def validate(cfg: DictConfig) -> None:
    """Check the values a schema cannot; raise a one-line UserError for the first bad one.

    Schedule parameters are checked by ``trainer.schedules.resolve_schedule``
    once the steps per epoch are known (still before training starts).
    """
    unknown = sorted(set(cfg.keys()) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise UserError(
            f"unknown top-level key(s) {', '.join(unknown)}; known: {', '.join(TOP_LEVEL_KEYS)}"
        )
    _require(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")

    data = cfg.dataset
    _require(
        _positive_int(data.batch_size), "dataset.batch_size", data.batch_size, "an integer >= 1"
    )
    _require(
        0 <= data.validation_split < 1,
        "dataset.validation_split",
        data.validation_split,
        "in [0, 1)",
    )
    _require(
        data.shuffle_buffer is None or data.shuffle_buffer >= 0,
        "dataset.shuffle_buffer",
        data.shuffle_buffer,
        "null (whole split), 0 (no shuffling) or a positive integer",
    )

    model = cfg.model
    if "filters" in model:
        _require(
            len(model.filters) > 0 and all(f >= 1 for f in model.filters),
            "model.filters",
            list(model.filters),
            "a non-empty list of positive integers",
        )
        _require(model.kernel_size >= 1, "model.kernel_size", model.kernel_size, "an integer >= 1")
        _require(
            model.pooling in ("max", "avg", "none"),
            "model.pooling",
            model.pooling,
            "one of max, avg, none",
        )
        _require(0 <= model.dropout < 1, "model.dropout", model.dropout, "in [0, 1)")
        _require(
            all(u >= 1 for u in model.dense_units),
            "model.dense_units",
            list(model.dense_units),
            "a list of positive integers",
        )

    opt = cfg.optimizer
    _require(opt.learning_rate > 0, "optimizer.learning_rate", opt.learning_rate, "> 0")
    for key in ("weight_decay",):
        value = opt.get(key)
        _require(value is None or value >= 0, f"optimizer.{key}", value, "null or >= 0")
    for key in ("clipnorm", "global_clipnorm", "epsilon"):
        value = opt.get(key)
        _require(value is None or value > 0, f"optimizer.{key}", value, "null or > 0")
    for key in ("beta_1", "beta_2", "rho", "momentum"):
        value = opt.get(key)
        _require(value is None or 0 <= value < 1, f"optimizer.{key}", value, "in [0, 1)")
    _require(
        not (opt.get("clipnorm") and opt.get("global_clipnorm")),
        "optimizer.clipnorm",
        opt.get("clipnorm"),
        "null when optimizer.global_clipnorm is set (pick one)",
    )

    run = cfg.trainer
    _require(_positive_int(run.epochs), "trainer.epochs", run.epochs, "an integer >= 1")
    _require(
        run.max_steps is None or _positive_int(run.max_steps),
        "trainer.max_steps",
        run.max_steps,
        "null or an integer >= 1",
    )
    for key in ("steps_per_execution", "log_every_n_steps"):
        _require(_positive_int(run[key]), f"trainer.{key}", run[key], "an integer >= 1")
    for key in ("early_stopping_patience", "reduce_on_plateau_patience"):
        value = run.get(key)
        _require(
            value is None or _positive_int(value),
            f"trainer.{key}",
            value,
            "null or an integer >= 1",
        )
    _require(
        0 < run.reduce_on_plateau_factor < 1,
        "trainer.reduce_on_plateau_factor",
        run.reduce_on_plateau_factor,
        "in (0, 1)",
    )
    strategies = ("default", "mirrored", "multi_worker")
    _require(
        run.strategy in strategies,
        "trainer.strategy",
        run.strategy,
        "one of " + ", ".join(strategies),
    )
    _require(
        run.cpu_devices is None or _positive_int(run.cpu_devices),
        "trainer.cpu_devices",
        run.cpu_devices,
        "null or an integer >= 1",
    )
    _require(
        run.cpu_devices is None or run.strategy == "mirrored",
        "trainer.cpu_devices",
        run.cpu_devices,
        f"null unless trainer.strategy=mirrored (strategy is {run.strategy})",
    )
    # XLA compiles for one CPU device: variables on the other logical CPUs are refused
    # (tensorflow.org/xla/known_issues, "tf.Variable on a different device").
    _require(
        not (run.jit_compile and (run.cpu_devices or 1) > 1),
        "trainer.jit_compile",
        run.jit_compile,
        "false with trainer.cpu_devices > 1 (XLA cannot compile across logical CPUs)",
    )

    ckpt = cfg.checkpoint
    for key in ("every_n_steps", "every_n_epochs", "keep_every_n_steps"):
        value = ckpt.get(key)
        _require(
            value is None or _positive_int(value),
            f"checkpoint.{key}",
            value,
            "null or an integer >= 1",
        )
    _require(
        _positive_int(ckpt.keep_last),
        "checkpoint.keep_last",
        ckpt.keep_last,
        "an integer >= 1 (the newest checkpoint is always kept)",
    )
    _require(
        isinstance(ckpt.keep_best, int) and ckpt.keep_best >= 0,
        "checkpoint.keep_best",
        ckpt.keep_best,
        "an integer >= 0",
    )
    _require(ckpt.mode in ("min", "max"), "checkpoint.mode", ckpt.mode, "min or max")
    _require(
        isinstance(ckpt.get("async"), bool), "checkpoint.async", ckpt.get("async"), "true or false"
    )
