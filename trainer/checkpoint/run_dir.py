"""Where a run writes: the run directory a config names, made ready for one writer.

``checkpoint.dir`` if set, else ``<checkpoint.root>/<date>/<time>`` after
Hydra's run directory, or ``<root>/<date>/<time>/<job number>`` in a multirun.
A fresh run never writes into a directory that already holds checkpoints.

No TensorFlow here.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from trainer.checkpoint.format import list_checkpoints
from trainer.errors import UserError


def run_directory(cfg: DictConfig, resuming: bool) -> Path:
    """The run directory of ``cfg``, created; a UserError if a fresh run may not write there.

    A resumed run records the absolute path in ``cfg.checkpoint.dir``.
    """
    if cfg.checkpoint.dir:
        path = Path(cfg.checkpoint.dir)
    else:
        path = Path(cfg.checkpoint.root) / default_run_name()
    path = path.expanduser().absolute()
    if not resuming and list_checkpoints(path):
        raise UserError(
            f"checkpoint.dir {str(path)!r} already holds checkpoints; resume it with "
            f"+resume={path} or choose another checkpoint.dir"
        )
    path.mkdir(parents=True, exist_ok=True)
    if resuming:
        cfg.checkpoint.dir = str(path)
    return path


def default_run_name() -> str:
    """``<date>/<time>`` of Hydra's run directory (``<date>/<time>/<job>`` in a multirun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return time.strftime("%Y-%m-%d/%H-%M-%S")
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep = Path(hydra_cfg.sweep.dir)
        return str(Path(sweep.parent.name) / sweep.name / str(hydra_cfg.sweep.subdir))
    run = Path(hydra_cfg.run.dir)
    return str(Path(run.parent.name) / run.name)
