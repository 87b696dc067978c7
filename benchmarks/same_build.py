"""Build data, model and optimizer from a composed config through ``trainer.build``.

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


def build_as_train_does(cfg: dict[str, Any], epochs: int, max_steps: int | None = None):
    """``(data, run)``: ``trainer.build.build_run`` on the run's data, as training does; the
    schedule spans ``epochs`` (capped by ``max_steps``)."""
    from trainer.build import build_run
    from trainer.data.pipeline import load_data

    cfg = {**cfg, "trainer": {**cfg["trainer"], "epochs": epochs, "max_steps": max_steps}}
    data = load_data(cfg["dataset"], seed=cfg["seed"])
    return data, build_run(cfg, data.info)
