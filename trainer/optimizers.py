"""Optimizers a config can name, built through the ``OPTIMIZERS`` registry.

Every optimizer is rebuilt from its config section plus a learning-rate
schedule; its variables (``iterations`` and slots) are then restored from a
checkpoint. Keras' own optimizer serialization is never used, so a custom
schedule can never make a checkpoint unloadable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from trainer.errors import UserError
from trainer.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
OPTIMIZERS.register("adam")(keras.optimizers.Adam)
OPTIMIZERS.register("adamw")(keras.optimizers.AdamW)
OPTIMIZERS.register("sgd")(keras.optimizers.SGD)
OPTIMIZERS.register("rmsprop")(keras.optimizers.RMSprop)

# Config keys that are not constructor arguments of the optimizer class.
_NOT_ARGUMENTS = ("name", "learning_rate")


def build_optimizer(
    cfg: Mapping[str, Any], learning_rate: keras.optimizers.schedules.LearningRateSchedule
) -> keras.optimizers.Optimizer:
    """The optimizer named by ``cfg["name"]`` driven by ``learning_rate`` (a schedule).

    Keys left null in the config keep Keras' defaults. ``weight_decay`` is
    refused for SGD-style optimizers only if Keras refuses it.
    """
    optimizer_class = OPTIMIZERS.get(cfg["name"])
    arguments = {k: v for k, v in cfg.items() if k not in _NOT_ARGUMENTS and v is not None}
    try:
        return optimizer_class(learning_rate=learning_rate, **arguments)
    except (TypeError, ValueError) as error:
        raise UserError(f"optimizer {cfg['name']!r}: {error}") from None
