"""Build data, model and optimizer from a composed config the way ``trainer.run`` does.

Shared by the two in-process references (``plain_keras_fit.py``,
``alternating_epochs.py``), so that what ``model.fit`` trains is built exactly
like what our loop trains: same seed, pipeline, model, schedule and optimizer.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml


def read_config(path: Path) -> dict[str, Any]:
    """The config train.py composed (``--cfg job --resolve``), its ``imports`` imported."""
    cfg = yaml.safe_load(Path(path).read_text())
    for module in cfg.get("imports") or []:
        importlib.import_module(module)
    return cfg


def build_as_train_does(
    cfg: dict[str, Any], epochs: int, max_steps: int | None = None
) -> tuple[Any, Any, Any]:
    """``(data, model, optimizer)``; the schedule spans ``epochs`` (capped by ``max_steps``)."""
    import keras

    from trainer.data import load_data
    from trainer.models import build_model
    from trainer.optimizers import build_optimizer
    from trainer.schedules import build_schedule, resolve_schedule

    keras.utils.set_random_seed(cfg["seed"])
    data = load_data(cfg["dataset"], seed=cfg["seed"])
    info = data.info
    total_steps = epochs * info.steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    resolved = resolve_schedule(
        cfg["schedule"], steps_per_epoch=info.steps_per_epoch, total_steps=total_steps
    )
    model = build_model(cfg["model"], tuple(info.input_shape), info.num_classes)
    schedule = build_schedule(resolved, cfg["optimizer"]["learning_rate"])
    return data, model, build_optimizer(cfg["optimizer"], schedule)
