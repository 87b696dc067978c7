"""One way to build a run from its config: its length, schedule, model and optimizer.

Training (``trainer.train``), ``rescue``, ``plot-schedule`` and the benchmarks
all build through these functions, so a run is built the same way everywhere:

1. :func:`run_length`: ``trainer.epochs`` x steps per epoch, capped by
   ``trainer.max_steps``: the optimizer steps of the whole run;
2. :func:`run_schedule`: the ``schedule`` section resolved to that length
   (``trainer.optim.resolve.resolve_schedule``), or the one a checkpoint saved;
3. :func:`build_run`: the model, the schedule (scaled by reduce-on-plateau's
   factor when that is on) and the optimizer, built and ready to restore into.

The model is a function of the config alone (``trainer.seeds``): its initial
weights come from global generators seeded with ``derive_seed(seed, "init")``
just before it is built, and its seed generators (dropout) start from
``derive_seed(seed, "dropout", i)``, whatever the process drew before. It is
built under the Keras dtype policy ``trainer.precision`` names
(:func:`dtype_policy`), which is set for the build only.

``cfg`` is any mapping with the config's sections (a ``DictConfig`` composed
by Hydra, or a plain ``dict``). Importing this module does not import
TensorFlow; :func:`build_run` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


def run_length(trainer_cfg: Mapping[str, Any], steps_per_epoch: int) -> int:
    """The optimizer steps of the whole run.

    >>> run_length({"epochs": 3, "max_steps": None}, 100)
    300
    >>> run_length({"epochs": 3, "max_steps": 250}, 100)
    250
    """
    total = int(trainer_cfg["epochs"]) * steps_per_epoch
    if trainer_cfg.get("max_steps") is not None:
        total = min(total, int(trainer_cfg["max_steps"]))
    return total


def run_schedule(
    cfg: Mapping[str, Any], steps_per_epoch: int, saved: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The run's schedule resolved to steps: ``saved`` if given (a resumed run keeps the
    schedule it started with), else ``cfg.schedule`` resolved to :func:`run_length`."""
    if saved is not None:
        return dict(saved)
    from trainer.optim.resolve import resolve_schedule

    return resolve_schedule(
        cfg["schedule"],
        steps_per_epoch=steps_per_epoch,
        total_steps=run_length(cfg["trainer"], steps_per_epoch),
    )


@dataclass
class BuiltRun:
    """The objects of one run, built from its config and not yet trained or restored."""

    steps_per_epoch: int
    total_steps: int
    resolved_schedule: dict[str, Any]  # the schedule section resolved to steps
    model: Any  # keras.Model
    schedule: Any  # what the optimizer follows: the resolved schedule, maybe scaled
    optimizer: Any  # keras.optimizers.Optimizer, its variables built
    lr_scale: Any  # tf.Variable: reduce-on-plateau's factor on the schedule (loop state)
    augmentation: Any = None  # trainer.data.augment.Augmentation of the training batches, or None

    @property
    def global_step(self) -> int:
        """Batches trained on (``trainer.optim.optimizers.step_counter``)."""
        from trainer.optim.optimizers import step_counter

        return int(step_counter(self.optimizer).numpy())

    def learning_rate(self) -> float:
        """The optimizer's learning rate at its current step."""
        return float(self.optimizer.learning_rate.numpy())


def precision_of(cfg: Mapping[str, Any]) -> str:
    """``trainer.precision`` of ``cfg`` (float32 for a config that predates the key)."""
    return str((cfg.get("trainer") or {}).get("precision") or "float32")


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Within the block, layers are created under the Keras dtype policy ``precision``
    (``float32``, ``mixed_bfloat16``, ``mixed_float16``); after it, the policy is what it was.

    A layer keeps the policy it was created with, so a model built here computes
    in that precision (variables float32) while other models of the process
    (tools, tests, an async checkpoint's twin built elsewhere) are not affected.
    Keras' global policy is per thread.
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model_for(cfg: Mapping[str, Any], info: Any) -> Any:
    """The model ``cfg.model`` names, for the input shape and classes of ``info`` (DataInfo),
    its random state derived from ``cfg.seed`` alone, under ``trainer.precision``'s dtype
    policy (see the module docstring)."""
    import keras

    import trainer.models.keras_builtin  # noqa: F401  (registers "keras_builtin", for rescued checkpoints)
    from checkpoints.state import seed_generator_variables
    from trainer.models.registry import build_model
    from trainer.seeds import derive_seed

    seed = int(cfg["seed"])
    # Keras initializers without a seed draw theirs from Python's `random` when they are
    # created, and ops from TensorFlow's and Keras' generators: all are reset here, so
    # what ran before (dataset preparation, a tool) cannot shift the weights.
    keras.utils.set_random_seed(derive_seed(seed, "init"))
    with dtype_policy(precision_of(cfg)):
        model = build_model(cfg["model"], tuple(info.input_shape), int(info.num_classes))
    # By position, as checkpoints save them; whatever seeds the builder gave its layers.
    for index, state in enumerate(seed_generator_variables(model)):
        state.assign([derive_seed(seed, "dropout", index), 0])
    return model


def build_run(
    cfg: Mapping[str, Any],
    info: Any,
    *,
    resolved_schedule: Mapping[str, Any] | None = None,
    distribution: Any = None,
) -> BuiltRun:
    """Build the run ``cfg`` describes on the data ``info`` describes (a ``DataInfo``).

    ``resolved_schedule``: the schedule a checkpoint saved (see :func:`run_schedule`).
    ``distribution``: a ``trainer.training.distribute.Distribution``; every variable is
    created in its scope, and the base rate follows
    ``trainer.scale_lr_with_replicas``. None: one device.
    """
    import contextlib

    import tensorflow as tf

    from trainer.data.augment import build_augmentation
    from trainer.optim.optimizers import build_optimizer
    from trainer.optim.resolve import build_schedule
    from trainer.optim.schedules import ScaledSchedule

    steps_per_epoch = info.steps_per_epoch
    resolved = run_schedule(cfg, steps_per_epoch, resolved_schedule)
    base_lr = float(cfg["optimizer"]["learning_rate"])
    scope = contextlib.nullcontext() if distribution is None else distribution.scope()
    with scope:
        model = build_model_for(cfg, info)
        if distribution is not None:
            base_lr = distribution.learning_rate(base_lr, cfg["trainer"]["scale_lr_with_replicas"])
        schedule = build_schedule(resolved, base_lr)
        lr_scale = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="lr_scale")
        if (cfg["trainer"].get("reduce_on_plateau") or {}).get("patience") is not None:
            schedule = ScaledSchedule(schedule, lr_scale)
        optimizer = build_optimizer(cfg["optimizer"], schedule, precision_of(cfg))
        optimizer.build(model.trainable_variables)
    return BuiltRun(
        steps_per_epoch=steps_per_epoch,
        total_steps=run_length(cfg["trainer"], steps_per_epoch),
        resolved_schedule=resolved,
        model=model,
        schedule=schedule,
        optimizer=optimizer,
        lr_scale=lr_scale,
        augmentation=build_augmentation(
            cfg.get("augment"),
            seed=int(cfg["seed"]),
            num_classes=int(info.num_classes),
            label_smoothing=float(cfg["trainer"].get("label_smoothing", 0.0)),
        ),
    )
