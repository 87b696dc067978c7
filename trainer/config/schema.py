"""The typed schema of an experiment, and the checks that run before TensorFlow.

Every option of a config group (``conf/optimizer/adam.yaml``, ...) extends a
dataclass registered here in Hydra's ConfigStore under ``schema/<group>/<name>``,
so a misspelt key, a wrong type or a value outside a closed choice (an Enum:
``model.pooling``, ``checkpoint.mode``, ``trainer.strategy``,
``trainer.precision``) fails when Hydra composes the config, with OmegaConf's
own message.

The schema is closed: :func:`check_known_keys` refuses any key the schema of
its section does not know, anywhere in the tree, ``+key=value`` included (Hydra
adds those even to a typed node). The top level knows :data:`TOP_LEVEL_KEYS`
(``resume`` among them: the primary config, ``conf/config.yaml``, is no
dataclass, so that ``+resume=PATH`` works as written). An option without a
schema (a user's registered schedule or model) may take any key in its own
section. :func:`typed_section` applies the same check, and the types, to a
section read back from a checkpoint.

Value checks that a type cannot express (``learning_rate > 0``, ``epochs >=
1``) live in one function per config group (:func:`validate_dataset`, ...),
which :func:`validate` runs in turn; each raises a one-line
:class:`~trainer.errors.UserError` worded by :func:`_require`.

This module never imports TensorFlow: ``--help``, ``--cfg job`` and the
checkpoint tools use it.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer.errors import UserError
from trainer.seeds import MAX_SEED

# Closed choices. StrEnum: a member equals, formats and serialises as its string, so
# code that compares with "max" and configs saved as plain strings both keep working.


class Pooling(StrEnum):
    max = "max"
    avg = "avg"
    none = "none"


class MonitorMode(StrEnum):
    max = "max"
    min = "min"


class ResNetBlock(StrEnum):
    basic = "basic"  # two 3x3 convs (ResNet-18/34)
    bottleneck = "bottleneck"  # 1x1 -> 3x3 -> 1x1 with 4x expansion (ResNet-50 and deeper)


class ResNetStem(StrEnum):
    auto = "auto"  # small for inputs of at most RESNET_SMALL_STEM_MAX_SIZE pixels, else imagenet
    small = "small"  # 3x3 conv, stride 1, no pooling (CIFAR-style)
    imagenet = "imagenet"  # 7x7 conv, stride 2, then 3x3 max-pool, stride 2


class KerasWeights(StrEnum):
    imagenet = "imagenet"  # from the Keras cache only: never downloaded by a run


class Strategy(StrEnum):
    default = "default"
    mirrored = "mirrored"
    multi_worker = "multi_worker"


class Precision(StrEnum):
    """Keras dtype policies (``keras.mixed_precision``): variables always float32."""

    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"  # bfloat16 compute
    mixed_float16 = "mixed_float16"  # float16 compute, dynamic loss scaling


class Flip(StrEnum):  # keras.layers.RandomFlip's modes
    horizontal = "horizontal"
    vertical = "vertical"
    horizontal_and_vertical = "horizontal_and_vertical"


# The names keras.activations.get takes (keras 3 ALL_OBJECTS_DICT), kept here so the
# config is checked without importing Keras; tests compare it with Keras' own.
# "threshold" is left out: it needs arguments a name cannot give.
ACTIVATIONS = (
    "celu",
    "elu",
    "exponential",
    "gelu",
    "glu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softmax",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
    "squareplus",
    "swish",
    "tanh",
    "tanh_shrink",
)

# The ResNet depths of He et al. (2016), Table 1: depth -> (block, blocks per stage).
RESNET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
RESNET_SMALL_STEM_MAX_SIZE = 64  # stem=auto: inputs up to this side (CIFAR's 32) keep their size

# The constructors of keras.applications (Keras 3.15), kept here so the config is checked
# without importing Keras; tests compare it with Keras' own.
KERAS_APPLICATIONS = (
    "ConvNeXtBase",
    "ConvNeXtLarge",
    "ConvNeXtSmall",
    "ConvNeXtTiny",
    "ConvNeXtXLarge",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
    "EfficientNetB0",
    "EfficientNetB1",
    "EfficientNetB2",
    "EfficientNetB3",
    "EfficientNetB4",
    "EfficientNetB5",
    "EfficientNetB6",
    "EfficientNetB7",
    "EfficientNetV2B0",
    "EfficientNetV2B1",
    "EfficientNetV2B2",
    "EfficientNetV2B3",
    "EfficientNetV2L",
    "EfficientNetV2M",
    "EfficientNetV2S",
    "InceptionResNetV2",
    "InceptionV3",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "NASNetLarge",
    "NASNetMobile",
    "ResNet101",
    "ResNet101V2",
    "ResNet152",
    "ResNet152V2",
    "ResNet50",
    "ResNet50V2",
    "VGG16",
    "VGG19",
    "Xception",
)

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
    limit_train_examples: int | None = None  # the first N training examples only (debug=overfit)


@dataclass
class FolderDatasetConfig(DatasetConfig):
    """``dataset=folder``: one subfolder of images per class (``trainer.data.folder``)."""

    name: str = "folder"
    path: str | None = None  # the folder (required); on resume it may move, the files the same
    image_size: list[int] = field(default_factory=lambda: [32, 32])  # [height, width]
    channels: int | None = None  # 1 or 3; None: from the images (all must agree)
    test_split: float = 0.2  # fraction held out as test when there is no test/ subfolder


@dataclass
class TfdsDatasetConfig(DatasetConfig):
    """``dataset=tfds``: any TFDS image classification dataset, by its catalog name."""

    name: str = "tfds"
    tfds_name: str | None = None  # required: mnist, tf_flowers, oxford_flowers102, "name/config"
    tfds_train_split: str = "train"  # TFDS split names; slices too: "train[:80%]"
    tfds_test_split: str = "test"  # e.g. "train[80%:]" for a dataset with one split
    image_key: str = "image"
    label_key: str = "label"
    image_size: list[int] | None = None  # [height, width]; None: the dataset's fixed size


IMAGE_CHANNELS = (1, 3)


# --------------------------------------------------------------------------- model


@dataclass
class CNNConfig:
    name: str = "cnn"
    filters: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    pooling: Pooling = Pooling.max
    batch_norm: bool = False
    activation: str = "relu"  # one of ACTIVATIONS
    dropout: float = 0.25
    dense_units: list[int] = field(default_factory=lambda: [128])


@dataclass
class ResNetConfig:
    """Either ``depth`` (one of RESNET_DEPTHS) or, with ``depth: null``, both ``block`` and
    ``stage_blocks``; stage i has ``width * 2**i`` filters (x4 out of a bottleneck)."""

    name: str = "resnet"
    depth: int | None = 18
    block: ResNetBlock | None = None
    stage_blocks: list[int] | None = None
    width: int = 16
    stem: ResNetStem = ResNetStem.auto
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    zero_init_residual: bool = False  # last BN gamma of each block starts at 0
    dropout: float = 0.0  # before the logits layer; 0 disables


@dataclass
class KerasAppConfig:
    name: str = "keras_app"
    application: str = "MobileNetV3Small"  # one of KERAS_APPLICATIONS
    weights: KerasWeights | None = None  # None: random init; imagenet: from the Keras cache
    trainable_base: bool = True  # false: the application is frozen (BN in inference mode)
    image_size: int | None = None  # None: as they come, or the application's minimum side
    bn_momentum: float | None = None  # None: the application's own (MobileNets: 0.999)
    dropout: float = 0.0  # before the logits layer; 0 disables


# --------------------------------------------------------------------------- optimizer


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


# --------------------------------------------------------------------------- augment


@dataclass
class RandAugmentConfig:
    num_ops: int = 2  # operations applied in turn to each batch
    factor: float = 0.5  # strength in [0, 1]


@dataclass
class AugmentConfig:
    """Training-time augmentation (trainer.data.augment); every transform is off at its zero."""

    name: str = "none"
    flip: Flip | None = None
    translate: float = 0.0  # fraction of height and width, RandomTranslation
    rotate: float = 0.0  # fraction of a full turn, RandomRotation
    zoom: float = 0.0  # fraction of the size, RandomZoom
    rand_augment: RandAugmentConfig | None = None
    mixup_alpha: float = 0.0  # MixUp's Beta(alpha, alpha); 0: off
    cutmix_alpha: float = 0.0  # CutMix's factor: its alpha is drawn from U(0, cutmix_alpha); 0: off
    mix_probability: float = 1.0  # chance that a batch is mixed (MixUp or CutMix)


# --------------------------------------------------------------------------- checkpoint


@dataclass
class CheckpointConfig:
    dir: str | None = None  # None: the run's folder, Hydra's output dir (see PathsConfig)
    every_n_steps: int | None = None
    every_n_epochs: int | None = 1
    keep_last: int = 3  # newest checkpoints kept
    keep_best: int = 1  # best checkpoints by monitor kept besides those
    keep_every_n_steps: int | None = None  # also keep one checkpoint every N steps forever
    monitor: str = "val_accuracy"  # a metric of the epoch summary (val_* needs a validation split)
    mode: MonitorMode = MonitorMode.max
    # `async` (a Python keyword, so not a dataclass field) is added in _checkpoint_node().


# --------------------------------------------------------------------------- paths


@dataclass
class PathsConfig:
    """One folder per run: Hydra's output directory (``hydra.run.dir: ${paths.run_dir}``,
    ``hydra.sweep.dir: ${paths.sweep_dir}``) is where the run writes everything, its
    checkpoints included, unless ``checkpoint.dir`` is given."""

    # The values, interpolations of root and the time, are in conf/paths/default.yaml: a
    # schema node is also used on its own (check_known_keys), where ${paths.root} is not.
    root: str = "runs"
    run_dir: str | None = None  # runs/<date>/<time>
    sweep_dir: str | None = None  # runs/<date>/<time>, one <job number>/ per job


# --------------------------------------------------------------------------- logger


@dataclass
class TensorBoardLoggerConfig:
    """``logger=tensorboard``: ``<run>/tensorboard/{train,validation}``, and in a sweep the
    job's hyperparameters and results for TensorBoard's HParams dashboard."""

    hparams: bool = True  # in a sweep: write the HParams summary of the job


@dataclass
class CsvLoggerConfig:
    """``logger=csv``: ``<run>/steps.csv``, one row per logged step (metrics.csv, one row
    per epoch, is written by every run). No settings: the file is one of the run's own
    (``checkpoints.layout.RUN_FILES``), which a fresh run never writes over."""


@dataclass
class MlflowLoggerConfig:
    """``logger=mlflow``: an MLflow run per training run (``trainer.loggers.mlflow_logger``)."""

    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else MLflow's default
    experiment_name: str = "keras-hydra-trainer"
    run_name: str | None = None  # None: the run directory's name (a sweep's: <sweep>/<job>)


@dataclass
class WandbLoggerConfig:
    """``logger=wandb``: a W&B run per training run (``trainer.loggers.wandb_logger``).
    Credentials come from the environment (WANDB_API_KEY), never from the config."""

    project: str = "keras-hydra-trainer"
    entity: str | None = None
    mode: str | None = None  # online | offline | disabled; None: WANDB_MODE, else online
    run_name: str | None = None  # None: the run directory's name (a sweep's: <sweep>/<job>)


# The trackers a run can log to, by the option name that selects them
# (`logger=[tensorboard,mlflow]`); each option's keys live under its own name.
LOGGERS = {
    "tensorboard": TensorBoardLoggerConfig,
    "csv": CsvLoggerConfig,
    "mlflow": MlflowLoggerConfig,
    "wandb": WandbLoggerConfig,
}
WANDB_MODES = ("online", "offline", "disabled")


SCHEMAS: dict[str, dict[str, type]] = {
    # Catalog datasets other than these (mnist, cifar10, ...) share DatasetConfig.
    "dataset": {"digits": DatasetConfig, "folder": FolderDatasetConfig, "tfds": TfdsDatasetConfig},
    "model": {"cnn": CNNConfig, "resnet": ResNetConfig, "keras_app": KerasAppConfig},
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
    "augment": {"default": AugmentConfig},
    "paths": {"default": PathsConfig},
    "logger": LOGGERS,
}

# The config groups, each a section of the composed config checked against its schema.
SECTIONS = (
    "dataset",
    "model",
    "optimizer",
    "schedule",
    "trainer",
    "checkpoint",
    "augment",
    "paths",
    "logger",
)


# The top level: the sections, then the keys of conf/config.yaml itself.
TOP_LEVEL_KEYS = (*SECTIONS, "seed", "imports", "callbacks", "resume")
# The sections a checkpoint saves and a resumed run trains with: all of them but where a
# command writes (``paths``: each command's own) and where it logs (``logger``: never saved,
# trainer.training.checkpointer.run_config), neither ever taken from a checkpoint.
SAVED_SECTIONS = tuple(section for section in SECTIONS if section not in ("paths", "logger"))


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


# --------------------------------------------------------------------------- the closed schema


def schema_node(group: str, section: Mapping[str, Any]) -> DictConfig | None:
    """The schema ``section`` of ``group`` follows, as a typed node; None for an option
    without one (a user's registered schedule or model), whose keys its builder checks."""
    if group == "checkpoint":
        return _checkpoint_node()
    if group == "logger":  # several options at once, each under its own name
        return OmegaConf.create({name: OmegaConf.structured(c) for name, c in LOGGERS.items()})
    if group == "dataset":  # a dataset without a schema of its own shares DatasetConfig
        schema = SCHEMAS["dataset"].get(_name_of(section), DatasetConfig)
        return OmegaConf.structured(schema)
    options = SCHEMAS.get(group, {})
    schema = options.get("default") or options.get(_name_of(section))
    return None if schema is None else OmegaConf.structured(schema)


def _name_of(section: Mapping[str, Any]) -> Any:
    if OmegaConf.is_config(section) and OmegaConf.is_missing(section, "name"):
        return None  # `name: ???` (schedule=custom before schedule.name is given)
    return section.get("name")


def check_known_keys(cfg: Mapping[str, Any]) -> None:
    """Refuse, in one line, any key of ``cfg`` that the schema does not know, at any depth:
    the top level knows :data:`TOP_LEVEL_KEYS`, each section the keys of its schema."""
    unknown = [key for key in cfg if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise UserError(_unknown_keys_message("", unknown, TOP_LEVEL_KEYS))
    for group in SECTIONS:
        section = cfg.get(group)
        schema = None if section is None else schema_node(group, section)
        if schema is not None:
            _check_section_keys(_where(group, section), group, section, schema)


def _check_section_keys(
    where: str, path: str, section: Mapping[str, Any], schema: Mapping[str, Any]
) -> None:
    unknown = [key for key in section if key not in schema]
    for key in unknown:
        if message := retired_key_message(path, key):
            raise UserError(message)
    if unknown:
        raise UserError(_unknown_keys_message(path, unknown, list(schema), where))
    for key in section:
        if OmegaConf.is_config(schema[key]) and isinstance(section[key], Mapping):
            _check_section_keys(f"{where}.{key}", f"{path}.{key}", section[key], schema[key])


def _where(group: str, section: Mapping[str, Any]) -> str:
    """How a message names a section: ``trainer``, or ``schedule=cosine`` for a group whose
    keys depend on the option chosen."""
    if group in ("model", "optimizer", "schedule") and _name_of(section) is not None:
        return f"{group}={_name_of(section)}"
    return group


def _unknown_keys_message(
    path: str, unknown: Iterable[Any], known: Iterable[Any], where: str = ""
) -> str:
    known_text = ", ".join(map(str, known))
    if not path:
        return f"unknown top-level key(s) {', '.join(map(str, unknown))}; known: {known_text}"
    keys = [f"{path}.{key}" for key in unknown]
    noun = "key" if len(keys) == 1 else "keys"
    return f"unknown {noun} {', '.join(keys)}; known keys of {where or path}: {known_text}"


# Keys an older version wrote into a checkpoint's config, by section: each is moved to
# its new key in the same section (or dropped, None: it no longer means anything) when
# the section is read back, so those checkpoints still resume as they ran; given on the
# command line, it is refused in one line that names the new key (check_retired_keys).
RETIRED_KEYS: dict[str, dict[str, str | None]] = {
    "checkpoint": {"root": None},  # where runs went; now paths.root (a run's folder)
    "trainer": {
        "early_stopping_patience": "early_stopping.patience",
        "reduce_on_plateau_patience": "reduce_on_plateau.patience",
        "reduce_on_plateau_factor": "reduce_on_plateau.factor",
    },
}


def retired_key_message(group: str, key: str) -> str | None:
    """The one line refusing ``group.key`` if it is retired (:data:`RETIRED_KEYS`), else None."""
    if key not in RETIRED_KEYS.get(group, {}):
        return None
    new = RETIRED_KEYS[group][key]
    if new is None:
        return f"{group}.{key} is retired: it no longer means anything, leave it out"
    return f"{group}.{key} is retired: use {group}.{new} instead"


def check_retired_keys(overrides: Iterable[str]) -> None:
    """Refuse, in one line, a command-line override (``a.b=1``, ``+a.b=1``) of a retired
    key, before Hydra refuses it as an unknown one without saying what replaced it."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        group, _, rest = key.partition(".")
        message = retired_key_message(group, rest)
        if message:
            raise UserError(message)


def _move_retired_keys(group: str, section: Mapping[str, Any]) -> dict[str, Any]:
    """``section`` with its retired keys moved to their new place (a value already there
    wins) or dropped (:data:`RETIRED_KEYS`)."""
    retired = RETIRED_KEYS.get(group, {})
    moved = {key: value for key, value in section.items() if key not in retired}
    for key, new in retired.items():
        if key not in section or new is None:
            continue
        parent, _, leaf = new.rpartition(".")
        inner = dict(moved.get(parent) or {}) if parent else moved
        inner.setdefault(leaf, section[key])
        if parent:
            moved[parent] = inner
    return moved


# Sections that name what builds them (a registry entry): the name is never defaulted.
NAMED_SECTIONS = ("dataset", "model", "optimizer", "schedule")


def typed_section(group: str, section: Mapping[str, Any]) -> DictConfig:
    """``section`` (e.g. read back from a checkpoint) checked against its group's schema:
    its keys (:func:`check_known_keys`' rule) and their types, missing keys filled in.

    The schema is chosen by the section's ``name`` among the known options; a
    section whose name has no schema (a user's own registered schedule) is
    returned as an untyped config, to be checked by its builder. Closed
    choices come back as their Enum members (equal to their strings); use
    ``OmegaConf.to_container(..., enum_to_str=True)`` for plain data. Keys of
    :data:`RETIRED_KEYS` are moved to their new place or dropped.
    """
    section = _move_retired_keys(group, section)
    name = section.get("name", "")
    if group in NAMED_SECTIONS and not (isinstance(name, str) and name):
        raise UserError(
            f"{group} config is not valid: {group}.name must be a registered name, got {name!r}"
        )
    schema = schema_node(group, section)
    if schema is None:
        return OmegaConf.create(dict(section))
    try:
        _check_section_keys(_where(group, section), group, section, schema)
        return OmegaConf.merge(schema, section)
    except UserError as error:
        raise UserError(f"{group} config is not valid: {error}") from None
    except Exception as error:  # OmegaConf's ValidationError and friends
        first_line = str(error).splitlines()[0]
        raise UserError(f"{group} config is not valid: {first_line}") from None


# --------------------------------------------------------------------------- value checks


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """The one wording of a bad value: ``<key> must be <allowed>, got <value>``."""
    if not ok:
        raise UserError(f"{key} must be {allowed}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value >= 1


def _int_or_none(value: Any) -> bool:
    return value is None or _positive_int(value)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def validate(cfg: DictConfig) -> None:
    """Check the keys (:func:`check_known_keys`) and the values a schema cannot, group by
    group; raise a one-line UserError for the first bad one.

    Schedule parameters are checked by ``trainer.optim.schedules.resolve_schedule``
    once the steps per epoch are known (still before training starts).
    """
    check_given(cfg)
    check_known_keys(cfg)
    validate_seed(cfg.seed)
    validate_dataset(cfg.dataset)
    validate_model(cfg.model)
    validate_optimizer(cfg.optimizer)
    validate_trainer(cfg.trainer)
    validate_accumulation(cfg.optimizer, cfg.trainer)
    validate_checkpoint(cfg.checkpoint, cfg.dataset)
    validate_plateau_callbacks(cfg.trainer, cfg.dataset)
    validate_augment(cfg.get("augment") or {})
    validate_callbacks(cfg.get("callbacks") or [])
    validate_logger(cfg.get("logger") or {})


def check_given(cfg: DictConfig) -> None:
    """Refuse, in one line, a config with mandatory values left out (``???``), such as
    ``model.name`` of ``model=custom`` or ``schedule.name`` of ``schedule=custom``."""
    missing = sorted(OmegaConf.missing_keys(cfg)) if OmegaConf.is_config(cfg) else []
    if missing:
        raise UserError(
            f"no value given for {', '.join(missing)}: add {missing[0]}=VALUE to the command "
            "line (for model=custom or schedule=custom, the name your module registered)"
        )


def validate_seed(seed: Any) -> None:
    """``seed``: what every random stream is derived from (``trainer.seeds``)."""
    _require(
        _is_int(seed) and 0 <= seed <= MAX_SEED,
        "seed",
        seed,
        f"an integer >= 0 and <= {MAX_SEED} (2**32 - 1, the largest seed NumPy takes)",
    )


def validate_dataset(data: Mapping[str, Any]) -> None:
    """The ``dataset`` section; what depends on the data itself is checked by
    ``trainer.data.pipeline.load_data``."""
    _require(
        _positive_int(data.get("batch_size")),
        "dataset.batch_size",
        data.get("batch_size"),
        "an integer >= 1",
    )
    split = data.get("validation_split", 0.0)
    _require(_is_number(split) and 0 <= split < 1, "dataset.validation_split", split, "in [0, 1)")
    buffer = data.get("shuffle_buffer")
    _require(
        buffer is None or (_is_int(buffer) and buffer >= 0),
        "dataset.shuffle_buffer",
        buffer,
        "null (whole split), 0 (no shuffling) or a positive integer",
    )
    limit = data.get("limit_train_examples")
    _require(
        _int_or_none(limit),
        "dataset.limit_train_examples",
        limit,
        "null (every training example) or an integer >= 1",
    )
    data_dir = data.get("data_dir")
    _require(
        data_dir is None or (isinstance(data_dir, str | os.PathLike) and os.fspath(data_dir) != ""),
        "dataset.data_dir",
        data_dir,
        "a directory path or null (TFDS' default)",
    )
    _validate_dataset_source(data)


def _validate_dataset_source(data: Mapping[str, Any]) -> None:
    """The keys of ``dataset=folder`` and ``dataset=tfds``, checked where present; ``path``
    (folder) and ``tfds_name`` (tfds) are required by their option."""
    required = {"folder": "path", "tfds": "tfds_name"}.get(data.get("name"))
    for key in (
        "path",
        "tfds_name",
        "tfds_train_split",
        "tfds_test_split",
        "image_key",
        "label_key",
    ):
        value = data.get(key)
        if key in data and (value is not None or key == required):
            _require(
                isinstance(value, str | os.PathLike) and os.fspath(value).strip() != "",
                f"dataset.{key}",
                value,
                "a non-empty string"
                + (f" (dataset={data.get('name')} needs it)" if key == required else ""),
            )
    size = _plain(data.get("image_size"))
    if size is not None or data.get("name") == "folder":
        _require(
            isinstance(size, list | tuple) and len(size) == 2 and all(map(_positive_int, size)),
            "dataset.image_size",
            size,
            "[height, width]: two integers >= 1",
        )
    channels = data.get("channels")
    _require(
        channels is None or (_is_int(channels) and channels in IMAGE_CHANNELS),
        "dataset.channels",
        channels,
        "1 (grayscale), 3 (RGB) or null (from the images)",
    )
    test = data.get("test_split", 0.0)
    _require(_is_number(test) and 0 <= test < 1, "dataset.test_split", test, "in [0, 1)")
    validation = data.get("validation_split", 0.0)
    _require(
        validation + test < 1,
        "dataset.test_split",
        test,
        f"< 1 - dataset.validation_split ({validation}), to leave examples to train on",
    )


def validate_model(model: Mapping[str, Any]) -> None:
    """The ``model`` section, checked by the family its name picks (:data:`MODEL_CHECKS`);
    a model of the user's own (``model=custom``) is checked by its builder."""
    check = MODEL_CHECKS.get(_name_of(model))
    if check is not None:
        check(model)


def _validate_dropout(model: Mapping[str, Any]) -> None:
    dropout = model.get("dropout")
    _require(_is_number(dropout) and 0 <= dropout < 1, "model.dropout", dropout, "in [0, 1)")


def validate_cnn(model: Mapping[str, Any]) -> None:
    """``model=cnn``: filters, kernel size, dropout, dense units, activation."""
    if "filters" in model:
        filters = _plain(model["filters"])
        _require(
            len(filters) > 0 and all(_positive_int(f) for f in filters),
            "model.filters",
            filters,
            "a non-empty list of positive integers",
        )
    if "kernel_size" in model:
        _require(
            _positive_int(model["kernel_size"]),
            "model.kernel_size",
            model["kernel_size"],
            "an integer >= 1",
        )
    if "dropout" in model:
        _validate_dropout(model)
    if "dense_units" in model:
        units = _plain(model["dense_units"])
        _require(
            all(_positive_int(u) for u in units),
            "model.dense_units",
            units,
            "a list of positive integers",
        )
    if "activation" in model:
        _require(
            model["activation"] in ACTIVATIONS,
            "model.activation",
            model["activation"],
            "one of " + ", ".join(ACTIVATIONS),
        )


def validate_resnet(model: Mapping[str, Any]) -> None:
    """``model=resnet``: a standard ``depth``, or ``depth: null`` with ``block`` and
    ``stage_blocks``; width, batch norm and dropout."""
    depth, stages = model["depth"], _plain(model["stage_blocks"])
    block = None if model["block"] is None else str(model["block"])  # the name, not the Enum
    depths = ", ".join(map(str, RESNET_DEPTHS))
    _require(
        depth is None or (_is_int(depth) and depth in RESNET_DEPTHS),
        "model.depth",
        depth,
        f"one of {depths}, or null with model.block and model.stage_blocks",
    )
    if depth is not None:
        for key, value in (("block", block), ("stage_blocks", stages)):
            _require(
                value is None, f"model.{key}", value, f"null when model.depth is set ({depth})"
            )
    else:
        blocks = " or ".join(ResNetBlock)
        _require(block is not None, "model.block", block, f"{blocks} when model.depth is null")
        _require(
            isinstance(stages, list) and len(stages) > 0 and all(map(_positive_int, stages)),
            "model.stage_blocks",
            stages,
            "a non-empty list of positive integers (residual blocks per stage) when "
            "model.depth is null",
        )
    _require(_positive_int(model["width"]), "model.width", model["width"], "an integer >= 1")
    momentum, epsilon = model["bn_momentum"], model["bn_epsilon"]
    _require(0 <= momentum < 1, "model.bn_momentum", momentum, "in [0, 1)")
    _require(epsilon > 0, "model.bn_epsilon", epsilon, "> 0")
    _validate_dropout(model)


def validate_keras_app(model: Mapping[str, Any]) -> None:
    """``model=keras_app``: a constructor of keras.applications, image size and dropout
    (whether the application takes that size, and whether its ImageNet weights are in the
    Keras cache, is checked when it is built)."""
    application = model["application"]
    _require(
        application in KERAS_APPLICATIONS,
        "model.application",
        application,
        "one of " + ", ".join(KERAS_APPLICATIONS),
    )
    size = model["image_size"]
    _require(_int_or_none(size), "model.image_size", size, "null or an integer >= 1")
    momentum = model["bn_momentum"]
    _require(
        momentum is None or 0 <= momentum < 1,
        "model.bn_momentum",
        momentum,
        "null (the application's own) or in [0, 1)",
    )
    _validate_dropout(model)


# The value checks of each model family that has a schema, by model.name.
MODEL_CHECKS = {"cnn": validate_cnn, "resnet": validate_resnet, "keras_app": validate_keras_app}


def validate_optimizer(opt: Mapping[str, Any]) -> None:
    """The ``optimizer`` section's rates, decays, clipping and moments."""
    _require(opt["learning_rate"] > 0, "optimizer.learning_rate", opt["learning_rate"], "> 0")
    value = opt.get("weight_decay")
    _require(value is None or value >= 0, "optimizer.weight_decay", value, "null or >= 0")
    for key in ("clipnorm", "global_clipnorm", "epsilon"):
        value = opt.get(key)
        _require(value is None or value > 0, f"optimizer.{key}", value, "null or > 0")
    for key in ("beta_1", "beta_2", "rho", "momentum"):
        value = opt.get(key)
        _require(value is None or 0 <= value < 1, f"optimizer.{key}", value, "in [0, 1)")
    momentum = opt.get("ema_momentum")
    _require(
        momentum is None or (_is_number(momentum) and 0 <= momentum < 1),
        "optimizer.ema_momentum",
        momentum,
        "in [0, 1)",
    )
    _require(
        _int_or_none(opt.get("gradient_accumulation_steps")),
        "optimizer.gradient_accumulation_steps",
        opt.get("gradient_accumulation_steps"),
        "null or an integer >= 1",
    )
    _require(
        not (opt.get("clipnorm") and opt.get("global_clipnorm")),
        "optimizer.clipnorm",
        opt.get("clipnorm"),
        "null when optimizer.global_clipnorm is set (pick one)",
    )


def validate_trainer(run: Mapping[str, Any]) -> None:
    """The ``trainer`` section: lengths, cadences, callbacks and devices."""
    _require(_positive_int(run["epochs"]), "trainer.epochs", run["epochs"], "an integer >= 1")
    _require(
        _int_or_none(run.get("max_steps")),
        "trainer.max_steps",
        run.get("max_steps"),
        "null or an integer >= 1",
    )
    for key in ("steps_per_execution", "log_every_n_steps"):
        _require(_positive_int(run[key]), f"trainer.{key}", run[key], "an integer >= 1")
    _require(
        str(run.get("verbose", "auto")) in VERBOSITIES,
        "trainer.verbose",
        run.get("verbose"),
        "auto (a progress bar on a terminal, one line per epoch otherwise), 0 (silent), "
        "1 (a progress bar) or 2 (one line per epoch)",
    )
    devices = run.get("cpu_devices")
    _require(_int_or_none(devices), "trainer.cpu_devices", devices, "null or an integer >= 1")
    _require(
        devices is None or run["strategy"] == Strategy.mirrored,
        "trainer.cpu_devices",
        devices,
        f"null unless trainer.strategy=mirrored (strategy is {run['strategy']})",
    )
    # XLA compiles for one CPU device: variables on the other logical CPUs are refused
    # (tensorflow.org/xla/known_issues, "tf.Variable on a different device").
    _require(
        not (run["jit_compile"] and (devices or 1) > 1),
        "trainer.jit_compile",
        run["jit_compile"],
        "false with trainer.cpu_devices > 1 (XLA cannot compile across logical CPUs)",
    )
    smoothing = run.get("label_smoothing", 0.0)
    _require(
        _is_number(smoothing) and 0 <= smoothing < 1,
        "trainer.label_smoothing",
        smoothing,
        "in [0, 1)",
    )


def validate_accumulation(opt: Mapping[str, Any], run: Mapping[str, Any]) -> None:
    """``optimizer.gradient_accumulation_steps`` > 1 needs the single-device path: Keras
    applies the accumulated update inside a ``cond`` whose branch all-reduces, which a
    ``tf.distribute`` strategy refuses ("merge_call called while defining a new graph")."""
    steps = opt.get("gradient_accumulation_steps")
    _require(
        steps is None or steps <= 1 or run["strategy"] == Strategy.default,
        "optimizer.gradient_accumulation_steps",
        steps,
        f"null or 1 with trainer.strategy={run['strategy']} (Keras' accumulation cannot "
        "run under a tf.distribute strategy; grow dataset.batch_size instead)",
    )


def validate_checkpoint(ckpt: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """The ``checkpoint`` section: cadences, what is kept, and the monitored metric, which
    must be one the epoch summary has (``val_*`` only with a validation split)."""
    for key in ("every_n_steps", "every_n_epochs", "keep_every_n_steps"):
        _require(
            _int_or_none(ckpt.get(key)),
            f"checkpoint.{key}",
            ckpt.get(key),
            "null or an integer >= 1",
        )
    _require(
        _positive_int(ckpt["keep_last"]),
        "checkpoint.keep_last",
        ckpt["keep_last"],
        "an integer >= 1 (the newest checkpoint is always kept)",
    )
    _require(
        _is_int(ckpt["keep_best"]) and ckpt["keep_best"] >= 0,
        "checkpoint.keep_best",
        ckpt["keep_best"],
        "an integer >= 0",
    )
    _require(
        isinstance(ckpt.get("async"), bool), "checkpoint.async", ckpt.get("async"), "true or false"
    )
    _require_monitor(ckpt["monitor"], "checkpoint.monitor", data)


def _require_monitor(monitor: Any, key: str, data: Mapping[str, Any]) -> None:
    """``monitor`` (at ``key``) must be a metric of the epoch summary of ``data``'s run."""
    validation = data.get("validation_split", 0.0) > 0
    monitors = ("loss", "accuracy", *(("val_loss", "val_accuracy") if validation else ()))
    _require(
        monitor in monitors,
        key,
        monitor,
        "one of "
        + ", ".join(monitors)
        + ("" if validation else " (val_* needs dataset.validation_split > 0)"),
    )


def validate_plateau_callbacks(run: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """``trainer.early_stopping`` and ``trainer.reduce_on_plateau`` (Keras' ranges)."""
    for name in ("early_stopping", "reduce_on_plateau"):
        section = run.get(name) or {}
        where = f"trainer.{name}"
        patience = section.get("patience")
        _require(
            patience is None or (_is_int(patience) and patience >= 0),
            f"{where}.patience",
            patience,
            "null (off) or an integer >= 0",
        )
        if section.get("monitor") is not None:
            _require_monitor(section["monitor"], f"{where}.monitor", data)
        delta = section.get("min_delta", 0.0)
        _require(_is_number(delta) and delta >= 0, f"{where}.min_delta", delta, "a number >= 0")
        for key in ("start_from_epoch", "cooldown"):
            value = section.get(key, 0)
            _require(_is_int(value) and value >= 0, f"{where}.{key}", value, "an integer >= 0")
    plateau = run.get("reduce_on_plateau") or {}
    factor = plateau.get("factor", 0.5)
    _require(
        _is_number(factor) and 0 < factor < 1,
        "trainer.reduce_on_plateau.factor",
        factor,
        "in (0, 1)",
    )
    min_lr = plateau.get("min_lr", 0.0)
    _require(
        _is_number(min_lr) and min_lr >= 0,
        "trainer.reduce_on_plateau.min_lr",
        min_lr,
        "a number >= 0",
    )


def validate_augment(augment: Mapping[str, Any]) -> None:
    """The ``augment`` section: fractions, RandAugment's parameters, mixing."""
    for key in ("translate", "rotate", "zoom"):
        value = augment.get(key, 0.0)
        _require(
            _is_number(value) and 0 <= value < 1, f"augment.{key}", value, "in [0, 1) (0: off)"
        )
    rand_augment = augment.get("rand_augment")
    if rand_augment is not None:
        _require(
            _positive_int(rand_augment.get("num_ops")),
            "augment.rand_augment.num_ops",
            rand_augment.get("num_ops"),
            "an integer >= 1",
        )
        factor = rand_augment.get("factor")
        _require(
            _is_number(factor) and 0 < factor <= 1,
            "augment.rand_augment.factor",
            factor,
            "in (0, 1]",
        )
    for key in ("mixup_alpha", "cutmix_alpha"):  # the bounds Keras' MixUp and CutMix document
        value = augment.get(key, 0.0)
        _require(
            _is_number(value) and 0 <= value <= 1, f"augment.{key}", value, "in [0, 1] (0: off)"
        )
    probability = augment.get("mix_probability", 1.0)
    _require(
        _is_number(probability) and 0 <= probability <= 1,
        "augment.mix_probability",
        probability,
        "in [0, 1]",
    )


def validate_callbacks(callbacks: Any) -> None:
    """``callbacks``: a list of registered names, each alone (``my_callback``) or with its
    keyword arguments (``{name: my_callback, every: 2}``). Whether the names are
    registered and take those arguments is checked once ``imports`` ran
    (``trainer.training.callbacks.check_callbacks``)."""
    callbacks = _plain(callbacks)
    allowed = "a list of callback names or {name: NAME, <argument>: <value>...} mappings"
    _require(isinstance(callbacks, list), "callbacks", callbacks, allowed)
    for index, item in enumerate(callbacks):
        where = f"callbacks[{index}]"
        if isinstance(item, Mapping):
            name = item.get("name")
            bad_keys = [k for k in item if not (isinstance(k, str) and k.isidentifier())]
            _require(not bad_keys, f"{where}", item, "a mapping whose keys are argument names")
        else:
            name = item
        _require(
            isinstance(name, str) and name != "",
            f"{where}.name" if isinstance(item, Mapping) else where,
            name,
            "a registered callback name (a non-empty string)",
        )


def validate_logger(loggers: Mapping[str, Any]) -> None:
    """The ``logger`` section: one entry per selected tracker (its keys checked by the
    schema); W&B's mode is one of :data:`WANDB_MODES`."""
    wandb = loggers.get("wandb")
    if wandb is not None:
        mode = wandb.get("mode")
        _require(
            mode is None or mode in WANDB_MODES,
            "logger.wandb.mode",
            mode,
            "null (WANDB_MODE, else online) or one of " + ", ".join(WANDB_MODES),
        )
    for name in ("mlflow", "wandb"):
        section = loggers.get(name) or {}
        for key in ("experiment_name", "project"):
            if key in section:
                value = section[key]
                _require(
                    isinstance(value, str) and value.strip() != "",
                    f"logger.{name}.{key}",
                    value,
                    "a non-empty string",
                )
