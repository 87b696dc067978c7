"""The typed schema of an experiment, and the checks that run before TensorFlow.

One module per config group of ``conf/``, each holding that group's dataclasses and
value checks: :mod:`~trainer.config.dataset`, :mod:`~trainer.config.model`,
:mod:`~trainer.config.optimizer`, :mod:`~trainer.config.schedule`,
:mod:`~trainer.config.trainer_group` (the ``trainer:`` section),
:mod:`~trainer.config.checkpoint`, :mod:`~trainer.config.augment`,
:mod:`~trainer.config.paths`, :mod:`~trainer.config.logger`. Above them,
:mod:`~trainer.config.closed` ties each section to its schema and refuses unknown keys,
and :mod:`~trainer.config.top_level` checks the keys of ``conf/config.yaml`` itself and
runs every check (:func:`validate`). :mod:`~trainer.config.saved` reads a checkpoint's
config back through the same schema.

Closed choices are StrEnums: a member equals, formats and serialises as its string, so
code that compares with ``"max"`` and configs saved as plain strings both keep working.

Other packages import from here (``from trainer.config import validate``). Nothing in
this package imports TensorFlow: ``--help``, ``--cfg job`` and the checkpoint tools use it.
"""

from trainer.config.augment import AugmentConfig, Flip, RandAugmentConfig, validate_augment
from trainer.config.checkpoint import CheckpointConfig, MonitorMode, validate_checkpoint
from trainer.config.closed import (
    RETIRED_KEYS,
    SAVED_SECTIONS,
    SCHEMAS,
    SECTIONS,
    TOP_LEVEL_KEYS,
    check_known_keys,
    check_retired_keys,
    register_schemas,
    retired_key_message,
    schema_node,
    typed_section,
)
from trainer.config.dataset import (
    DatasetConfig,
    FolderDatasetConfig,
    TfdsDatasetConfig,
    validate_dataset,
)
from trainer.config.logger import LOGGERS, WANDB_MODES, validate_logger
from trainer.config.model import (
    ACTIVATIONS,
    KERAS_APPLICATIONS,
    RESNET_DEPTHS,
    RESNET_SMALL_STEM_MAX_SIZE,
    CNNConfig,
    KerasAppConfig,
    KerasWeights,
    Pooling,
    ResNetBlock,
    ResNetConfig,
    ResNetStem,
    validate_model,
)
from trainer.config.optimizer import OptimizerConfig, validate_optimizer
from trainer.config.paths import PathsConfig
from trainer.config.schedule import ScheduleConfig
from trainer.config.top_level import check_given, validate, validate_callbacks, validate_seed
from trainer.config.trainer_group import (
    EarlyStoppingConfig,
    Precision,
    ReduceOnPlateauConfig,
    Strategy,
    TrainerConfig,
    validate_trainer,
)

__all__ = [
    "ACTIVATIONS",
    "KERAS_APPLICATIONS",
    "LOGGERS",
    "RESNET_DEPTHS",
    "RESNET_SMALL_STEM_MAX_SIZE",
    "RETIRED_KEYS",
    "SAVED_SECTIONS",
    "SCHEMAS",
    "SECTIONS",
    "TOP_LEVEL_KEYS",
    "WANDB_MODES",
    "AugmentConfig",
    "CNNConfig",
    "CheckpointConfig",
    "DatasetConfig",
    "EarlyStoppingConfig",
    "Flip",
    "FolderDatasetConfig",
    "KerasAppConfig",
    "KerasWeights",
    "MonitorMode",
    "OptimizerConfig",
    "PathsConfig",
    "Pooling",
    "Precision",
    "RandAugmentConfig",
    "ReduceOnPlateauConfig",
    "ResNetBlock",
    "ResNetConfig",
    "ResNetStem",
    "ScheduleConfig",
    "Strategy",
    "TfdsDatasetConfig",
    "TrainerConfig",
    "check_given",
    "check_known_keys",
    "check_retired_keys",
    "register_schemas",
    "retired_key_message",
    "schema_node",
    "typed_section",
    "validate",
    "validate_augment",
    "validate_callbacks",
    "validate_checkpoint",
    "validate_dataset",
    "validate_logger",
    "validate_model",
    "validate_optimizer",
    "validate_seed",
    "validate_trainer",
]
