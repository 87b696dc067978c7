"""``conf/logger/``: the trackers a run logs to, their schemas and value checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainer.config.checks import require


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


def validate_logger(loggers: Mapping[str, Any]) -> None:
    """The ``logger`` section: one entry per selected tracker (its keys checked by the
    schema); W&B's mode is one of :data:`WANDB_MODES`."""
    wandb = loggers.get("wandb")
    if wandb is not None:
        mode = wandb.get("mode")
        require(
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
                require(
                    isinstance(value, str) and value.strip() != "",
                    f"logger.{name}.{key}",
                    value,
                    "a non-empty string",
                )
