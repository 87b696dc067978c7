"""One way to build a run from its config: its length, schedule, model and optimizer.

Training (``trainer.train``), ``rescue``, ``plot-schedule`` and the benchmarks
all build through these functions, so a run is built the same way everywhere:

1. :func:`run_length`: ``trainer.epochs`` x steps per epoch, capped by
   ``trainer.max_steps``: the optimizer steps of the whole run;
2. :func:`run_schedule`: the ``schedule`` section resolved to that length
   (``trainer.optim.resolve.resolve_schedule``), or the one a checkpoint saved;
3. :func:`build_run`: the model, the schedule (scaled by reduce-on-plateau's
   factor when that is on) and the optimizer, built and ready to restore into.

The tools that use a checkpoint's model (``export``, ``evaluate``, ``predict``)
rebuild it with :func:`build_model_from_checkpoint`: the same model build
(:func:`build_model_for`), then the checkpoint's weights restored as a resume
restores them.

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
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from checkpoints.manifest import ModelShape


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


def build_model_for(cfg: Mapping[str, Any], info: Any, *, precision: str | None = None) -> Any:
    """The model ``cfg.model`` names, for the input shape and classes of ``info`` (a
    ``DataInfo``, or anything with ``input_shape`` and ``num_classes``), its random state
    derived from ``cfg.seed`` alone, under the dtype policy ``precision`` (default:
    ``trainer.precision``'s; see the module docstring)."""
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
    with dtype_policy(precision or precision_of(cfg)):
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


# --------------------------------------------------------------------------- a checkpoint's model


class CheckpointModel(NamedTuple):
    """A checkpoint's model, rebuilt and restored, and what it was built for."""

    model: Any  # keras.Model, float32, the checkpoint's weights (or their moving average)
    input_shape: tuple[int, ...]
    num_classes: int


def build_model_from_checkpoint(checkpoint: Any, config: Mapping[str, Any]) -> CheckpointModel:
    """The model of ``checkpoint`` (a verified ``checkpoints.Checkpoint``) whose config is
    ``config`` (``trainer.config.saved.read_checkpoint_config``), built as training builds
    it (:func:`build_model_for`) and its weights restored with
    ``checkpoints.restore.restore_state``, as a resume restores them.

    The input shape and class count are the manifest's; a checkpoint written before
    the manifest recorded them asks its dataset (never downloading), saying so on stderr.
    The model is float32 whatever ``trainer.precision`` the run trained in: the weights
    are float32 in every precision, and the tools serve and evaluate in float32. With
    ``optimizer.ema`` and ``trainer.evaluate_with_ema`` (:func:`uses_average_weights`) the
    weights are the moving average, as validation and test evaluated them: the run's
    optimizer is rebuilt (:func:`checkpoint_optimizer`), its variables restored by
    position, and Keras' ``finalize_variable_values`` puts the averages into the model.
    """
    from checkpoints.restore import restore_state

    manifest = checkpoint.manifest
    input_shape, num_classes = manifest.get("input_shape"), manifest.get("num_classes")
    if input_shape is None or num_classes is None:
        # Checkpoints written before the manifest recorded them: ask the dataset.
        from trainer.data.pipeline import load_data

        print(
            "The manifest lacks input_shape/num_classes: reading the dataset's info",
            file=sys.stderr,
        )
        dataset = dict(config["dataset"], download=False)
        info = load_data(dataset, seed=int(config.get("seed", 0))).info
        input_shape, num_classes = info.input_shape, info.num_classes
    shape = ModelShape(tuple(input_shape), int(num_classes))
    # The seed only decides the initial weights, which the restore replaces: a checkpoint
    # whose config lacks a usable one is still rebuilt (from seed 0).
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        seed = 0
    model = build_model_for({**config, "seed": seed}, shape, precision="float32")
    if uses_average_weights(config):
        optimizer = checkpoint_optimizer(config)
        restore_state(checkpoint, model, optimizer)
        optimizer.finalize_variable_values(model.trainable_variables)
    else:
        restore_state(checkpoint, model, None)
    return CheckpointModel(model, shape.input_shape, shape.num_classes)


def uses_average_weights(config: Mapping[str, Any]) -> bool:
    """Whether a checkpoint's model is evaluated (and exported) with the moving average of
    its weights: ``optimizer.ema`` with ``trainer.evaluate_with_ema``. False for a
    checkpoint that predates ``optimizer.ema``."""
    trainer = config.get("trainer") or {}
    return bool(config["optimizer"].get("ema")) and bool(trainer.get("evaluate_with_ema", True))


def checkpoint_optimizer(config: Mapping[str, Any]) -> Any:
    """The optimizer of a checkpoint's run, built as :func:`build_run` builds it (its
    variables in the same order), on a placeholder schedule: no step is taken with it,
    only its variables restored."""
    import keras

    from trainer.optim.optimizers import build_optimizer

    placeholder = keras.optimizers.schedules.ExponentialDecay(1.0, 1, 1.0)
    return build_optimizer(config["optimizer"], placeholder, precision_of(config))
