"""The keys of ``conf/config.yaml`` itself (``seed``, ``callbacks``), and :func:`validate`,
which checks a whole composed config: its keys against the closed schema, then the
values a type cannot express (``learning_rate > 0``, ``epochs >= 1``), one function per
config group, in turn. Each raises a one-line :class:`~trainer.errors.UserError`
worded by :func:`trainer.config.checks.require`.

Like every module of :mod:`trainer.config`, it never imports TensorFlow: ``--help``,
``--cfg job`` and the checkpoint tools use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer.config.augment import validate_augment
from trainer.config.checkpoint import validate_checkpoint
from trainer.config.checks import is_int, plain_data, require
from trainer.config.closed import check_known_keys
from trainer.config.dataset import validate_dataset
from trainer.config.logger import validate_logger
from trainer.config.model import validate_model
from trainer.config.optimizer import validate_optimizer
from trainer.config.trainer_group import (
    validate_accumulation,
    validate_plateau_callbacks,
    validate_trainer,
)
from trainer.errors import UserError
from trainer.seeds import MAX_SEED


def validate(cfg: DictConfig) -> None:
    """Check the keys (:func:`check_known_keys`) and the values a schema cannot, group by
    group; raise a one-line UserError for the first bad one.

    Schedule parameters are checked by ``trainer.optim.resolve.resolve_schedule``
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
    require(
        is_int(seed) and 0 <= seed <= MAX_SEED,
        "seed",
        seed,
        f"an integer >= 0 and <= {MAX_SEED} (2**32 - 1, the largest seed NumPy takes)",
    )


def validate_callbacks(callbacks: Any) -> None:
    """``callbacks``: a list of registered names, each alone (``my_callback``) or with its
    keyword arguments (``{name: my_callback, every: 2}``). Whether the names are
    registered and take those arguments is checked once ``imports`` ran
    (``trainer.training.callbacks.check_callbacks``)."""
    callbacks = plain_data(callbacks)
    allowed = "a list of callback names or {name: NAME, <argument>: <value>...} mappings"
    require(isinstance(callbacks, list), "callbacks", callbacks, allowed)
    for index, item in enumerate(callbacks):
        where = f"callbacks[{index}]"
        if isinstance(item, Mapping):
            name = item.get("name")
            bad_keys = [k for k in item if not (isinstance(k, str) and k.isidentifier())]
            require(not bad_keys, f"{where}", item, "a mapping whose keys are argument names")
        else:
            name = item
        require(
            isinstance(name, str) and name != "",
            f"{where}.name" if isinstance(item, Mapping) else where,
            name,
            "a registered callback name (a non-empty string)",
        )
