"""``conf/optimizer/``: the optimizers' schemas and their value checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainer.config.checks import int_or_none, is_number, require


@dataclass
class OptimizerConfig:
    name: str = "adam"
    learning_rate: float = 1e-3  # the base (peak) rate the schedule scales
    weight_decay: float | None = None
    clipnorm: float | None = None
    global_clipnorm: float | None = None
    ema: bool = False  # keep an exponential moving average of the weights (Keras use_ema)
    ema_momentum: float = 0.99  # average = momentum * average + (1 - momentum) * weights
    gradient_accumulation_steps: int | None = None  # update once every N batches (null: 1)


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


def validate_optimizer(opt: Mapping[str, Any]) -> None:
    """The ``optimizer`` section's rates, decays, clipping and moments."""
    require(opt["learning_rate"] > 0, "optimizer.learning_rate", opt["learning_rate"], "> 0")
    value = opt.get("weight_decay")
    require(value is None or value >= 0, "optimizer.weight_decay", value, "null or >= 0")
    for key in ("clipnorm", "global_clipnorm", "epsilon"):
        value = opt.get(key)
        require(value is None or value > 0, f"optimizer.{key}", value, "null or > 0")
    for key in ("beta_1", "beta_2", "rho", "momentum"):
        value = opt.get(key)
        require(value is None or 0 <= value < 1, f"optimizer.{key}", value, "in [0, 1)")
    momentum = opt.get("ema_momentum")
    require(
        momentum is None or (is_number(momentum) and 0 <= momentum < 1),
        "optimizer.ema_momentum",
        momentum,
        "in [0, 1)",
    )
    require(
        int_or_none(opt.get("gradient_accumulation_steps")),
        "optimizer.gradient_accumulation_steps",
        opt.get("gradient_accumulation_steps"),
        "null or an integer >= 1",
    )
    require(
        not (opt.get("clipnorm") and opt.get("global_clipnorm")),
        "optimizer.clipnorm",
        opt.get("clipnorm"),
        "null when optimizer.global_clipnorm is set (pick one)",
    )
