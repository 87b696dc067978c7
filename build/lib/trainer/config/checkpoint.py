"""``conf/checkpoint/``: what a run saves, when and what it keeps; the schema and its
value checks, and the rule every monitored metric follows (:func:`require_monitor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer.config.checks import int_or_none, is_int, positive_int, require


class MonitorMode(StrEnum):
    max = "max"
    min = "min"


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
    # `async` (a Python keyword, so not a dataclass field) is added in checkpoint_node().


def checkpoint_node() -> DictConfig:
    """CheckpointConfig plus the ``async`` key, which a dataclass cannot declare."""
    node = OmegaConf.structured(CheckpointConfig)
    OmegaConf.set_struct(node, False)
    node["async"] = False  # commit checkpoints from a background writer
    OmegaConf.set_struct(node, True)
    return node


def validate_checkpoint(ckpt: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """The ``checkpoint`` section: cadences, what is kept, and the monitored metric, which
    must be one the epoch summary has (``val_*`` only with a validation split)."""
    for key in ("every_n_steps", "every_n_epochs", "keep_every_n_steps"):
        require(
            int_or_none(ckpt.get(key)),
            f"checkpoint.{key}",
            ckpt.get(key),
            "null or an integer >= 1",
        )
    require(
        positive_int(ckpt["keep_last"]),
        "checkpoint.keep_last",
        ckpt["keep_last"],
        "an integer >= 1 (the newest checkpoint is always kept)",
    )
    require(
        is_int(ckpt["keep_best"]) and ckpt["keep_best"] >= 0,
        "checkpoint.keep_best",
        ckpt["keep_best"],
        "an integer >= 0",
    )
    require(
        isinstance(ckpt.get("async"), bool), "checkpoint.async", ckpt.get("async"), "true or false"
    )
    require_monitor(ckpt["monitor"], "checkpoint.monitor", data)


def require_monitor(monitor: Any, key: str, data: Mapping[str, Any]) -> None:
    """``monitor`` (at ``key``) must be a metric of the epoch summary of ``data``'s run."""
    validation = data.get("validation_split", 0.0) > 0
    monitors = ("loss", "accuracy", *(("val_loss", "val_accuracy") if validation else ()))
    require(
        monitor in monitors,
        key,
        monitor,
        "one of "
        + ", ".join(monitors)
        + ("" if validation else " (val_* needs dataset.validation_split > 0)"),
    )
