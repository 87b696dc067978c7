"""The closed schema: which schema each section of a composed config follows, and the
rule that every key anywhere in the tree is one that schema knows.

Every option of a config group (``conf/optimizer/adam.yaml``, ...) extends a dataclass
of its group's module (:mod:`trainer.config.optimizer`, ...), registered by
:func:`register_schemas` in Hydra's ConfigStore under ``schema/<group>/<name>``, so a
misspelt key, a wrong type or a value outside a closed choice (an Enum:
``model.pooling``, ``checkpoint.mode``, ``trainer.strategy``, ``trainer.precision``)
fails when Hydra composes the config, with OmegaConf's own message.

:func:`check_known_keys` refuses any key the schema of its section does not know,
anywhere in the tree, ``+key=value`` included (Hydra adds those even to a typed node).
The top level knows :data:`TOP_LEVEL_KEYS` (``resume`` among them: the primary config,
``conf/config.yaml``, is no dataclass, so that ``+resume=PATH`` works as written). An
option without a schema (a user's registered schedule or model) may take any key in its
own section. :func:`typed_section` applies the same check, and the types, to a section
read back from a checkpoint, moving the keys an older version wrote
(:data:`RETIRED_KEYS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer.config.augment import AugmentConfig
from trainer.config.checkpoint import checkpoint_node
from trainer.config.checks import option_name
from trainer.config.dataset import DatasetConfig, FolderDatasetConfig, TfdsDatasetConfig
from trainer.config.logger import LOGGERS
from trainer.config.model import CNNConfig, KerasAppConfig, ResNetConfig
from trainer.config.optimizer import AdamConfig, AdamWConfig, RMSpropConfig, SGDConfig
from trainer.config.paths import PathsConfig
from trainer.config.schedule import (
    CosineConfig,
    CosineRestartsConfig,
    ExponentialConfig,
    InverseTimeConfig,
    LinearConfig,
    OneCycleConfig,
    PiecewiseConfig,
    PolynomialConfig,
    ScheduleConfig,
    StepConfig,
)
from trainer.config.trainer_group import TrainerConfig
from trainer.errors import UserError

# Each group's options, by the name a user selects (``optimizer=adamw``); a group with
# one schema for all its options has it under "default".
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


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore as ``schema/<group>/<name>``."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, options in SCHEMAS.items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
    store.store(group="schema/checkpoint", name="default", node=checkpoint_node())


def schema_node(group: str, section: Mapping[str, Any]) -> DictConfig | None:
    """The schema ``section`` of ``group`` follows, as a typed node; None for an option
    without one (a user's registered schedule or model), whose keys its builder checks."""
    if group == "checkpoint":
        return checkpoint_node()
    if group == "logger":  # several options at once, each under its own name
        return OmegaConf.create({name: OmegaConf.structured(c) for name, c in LOGGERS.items()})
    if group == "dataset":  # a dataset without a schema of its own shares DatasetConfig
        schema = SCHEMAS["dataset"].get(option_name(section), DatasetConfig)
        return OmegaConf.structured(schema)
    options = SCHEMAS.get(group, {})
    schema = options.get("default") or options.get(option_name(section))
    return None if schema is None else OmegaConf.structured(schema)


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
    if group in ("model", "optimizer", "schedule") and option_name(section) is not None:
        return f"{group}={option_name(section)}"
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
