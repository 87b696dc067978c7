"""Optimizers a config can name, built through the ``OPTIMIZERS`` registry.

Every optimizer is rebuilt from its config section plus a learning-rate
schedule; its variables (the step and slots) are then restored from a
checkpoint. Keras' own optimizer serialization is never used, so a custom
schedule can never make a checkpoint unloadable.

Three training options are Keras' own optimizer features, so their state is
optimizer variables, saved and restored by position with the rest:

- ``optimizer.ema`` / ``ema_momentum``: Keras' ``use_ema`` moving average of
  the trainable weights (:func:`averaged_weights` swaps it in for evaluation);
- ``optimizer.gradient_accumulation_steps``: Keras' accumulators; the model is
  updated on every N-th batch with the mean of the N batches' gradients;
- ``trainer.precision=mixed_float16``: the optimizer is wrapped in
  :class:`LossScaleOptimizer` (dynamic loss scaling).

The run's step (:func:`step_counter`) counts batches trained on, whatever the
options: it is the optimizer's first variable, which ``optimizer.h5`` stores
first and the manifest's ``global_step`` equals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import keras

from trainer.errors import UserError
from trainer.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
OPTIMIZERS.register("adam")(keras.optimizers.Adam)
OPTIMIZERS.register("adamw")(keras.optimizers.AdamW)
OPTIMIZERS.register("sgd")(keras.optimizers.SGD)
OPTIMIZERS.register("rmsprop")(keras.optimizers.RMSprop)

# Config keys that are not constructor arguments of the optimizer class as they are
# (the base arguments below are mapped to Keras' names by _base_arguments).
_NOT_ARGUMENTS = ("name", "learning_rate", "ema", "ema_momentum", "gradient_accumulation_steps")


class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling, whose own ``iterations`` counts every step it is given.

    Keras' wrapper leaves its own step variable (its ``variables[0]``) at 0 and
    reports the inner optimizer's, which skips the steps whose gradients were
    not finite (the loss scale is halved instead). Here the wrapper's own
    counts every step, skipped ones included, so the run's step counts batches
    as it does for every other optimizer: the loop's lengths, the checkpoint
    cadence and ``optimizer.h5``'s first dataset (the manifest's step) are the
    same mechanism for all precisions. The inner optimizer's step, which its
    schedule follows, counts the updates applied, as in Keras.
    """

    def build(self, var_list):
        # Keras' wrapper adds its variables again on every call (its inner optimizers
        # return once built); restoring a checkpoint builds an optimizer that is built.
        if not self.built:
            super().build(var_list)

    def apply(self, grads, trainable_variables=None):
        super().apply(grads, trainable_variables)
        self._iterations.assign_add(1)

    @property
    def iterations(self):
        return self._iterations


def build_optimizer(
    cfg: Mapping[str, Any],
    learning_rate: keras.optimizers.schedules.LearningRateSchedule,
    precision: str = "float32",
) -> keras.optimizers.Optimizer:
    """The optimizer named by ``cfg["name"]`` driven by ``learning_rate`` (a schedule).

    Keys left null in the config keep Keras' defaults. ``weight_decay`` is
    refused for SGD-style optimizers only if Keras refuses it. ``precision``
    (``trainer.precision``): ``mixed_float16`` wraps the optimizer in
    :class:`LossScaleOptimizer`.
    """
    optimizer_class = OPTIMIZERS.get(cfg["name"])
    arguments = {k: v for k, v in cfg.items() if k not in _NOT_ARGUMENTS and v is not None}
    try:
        optimizer = optimizer_class(
            learning_rate=learning_rate, **arguments, **_base_arguments(cfg)
        )
    except (TypeError, ValueError) as error:
        raise UserError(f"optimizer {cfg['name']!r}: {error}") from None
    if precision == "mixed_float16":
        return LossScaleOptimizer(optimizer)
    return optimizer


def _base_arguments(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config's EMA and accumulation keys as Keras' base optimizer arguments."""
    arguments: dict[str, Any] = {}
    if cfg.get("ema"):
        arguments["use_ema"] = True
        if cfg.get("ema_momentum") is not None:  # else Keras' default, 0.99
            arguments["ema_momentum"] = float(cfg["ema_momentum"])
    steps = cfg.get("gradient_accumulation_steps")
    if steps is not None and int(steps) > 1:  # Keras takes >= 2; 1 means no accumulation
        arguments["gradient_accumulation_steps"] = int(steps)
    return arguments


def step_counter(optimizer: keras.optimizers.Optimizer) -> keras.Variable:
    """The variable that counts the run's steps: one per batch trained on.

    It is the optimizer's first variable (what ``optimizer.h5`` stores first).
    Keras' ``optimizer.iterations`` is the same variable except under gradient
    accumulation (then it counts updates: steps // N) and loss scaling (see
    :class:`LossScaleOptimizer`).
    """
    return optimizer.variables[0]


def uses_ema(optimizer: keras.optimizers.Optimizer) -> bool:
    """Whether ``optimizer`` (or the one a loss-scale wrapper drives) keeps a weight average."""
    return bool(getattr(getattr(optimizer, "inner_optimizer", optimizer), "use_ema", False))


@contextlib.contextmanager
def averaged_weights(
    optimizer: keras.optimizers.Optimizer, variables: Sequence[keras.Variable]
) -> Iterator[None]:
    """Within the block, ``variables`` (the trainable variables the optimizer was built on)
    hold the optimizer's moving averages; after it, their own values again, bit for bit.

    Keras' ``finalize_variable_values`` overwrites the variables with the
    averages for good; the values are copied aside first and put back, so
    evaluating with the average never changes what is trained. A no-op for an
    optimizer without EMA.
    """
    if not uses_ema(optimizer):
        yield
        return
    import numpy as np

    # Host copies: taken once per evaluation, and unaffected by the assignments below.
    own = [np.array(variable) for variable in variables]
    optimizer.finalize_variable_values(list(variables))
    try:
        yield
    finally:
        for variable, value in zip(variables, own, strict=True):
            variable.assign(value)
