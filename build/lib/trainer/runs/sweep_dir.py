"""Which sweep this process is a job of, and which directories are a sweep's.

The ground floor of ``trainer.runs``: the run-directory rules (``run_dir``), the
working copies of URL runs (``remote_run``) and the sweep's resume rules (``sweep``)
all ask these two questions, and all know :data:`AUTO`. Never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from checkpoints import MANIFEST, is_checkpoint_name, list_checkpoints
from checkpoints.layout import CONFIG_FILE, SUMMARY

# +resume=auto: continue checkpoint.dir's run, or start it (trainer.runs.sweep).
AUTO = "auto"


def current_job_subdir() -> str | None:
    """This job's ``hydra.sweep.subdir`` (its number by default) in a multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return str(hydra_cfg.sweep.subdir)


def _is_run_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    return (
        (path / CONFIG_FILE).is_file() or (path / SUMMARY).is_file() or bool(list_checkpoints(path))
    )


def is_sweep_dir(path: str | Path) -> bool:
    """Whether ``path`` is a sweep's checkpoint directory: no checkpoint of its own, runs inside.

    A run directory (which holds ``step-*`` checkpoints) or a checkpoint is not one.
    Hidden folders are never runs: Hydra's ``.hydra/`` holds a config.yaml, and it is
    in every run's folder (``trainer.runs.run_dir`` rule 1).
    """
    path = Path(path).expanduser()
    if not path.is_dir() or (path / MANIFEST).exists() or is_checkpoint_name(path.name):
        return False
    if list_checkpoints(path):
        return False
    return any(_is_run_dir(child) for child in path.iterdir() if not child.name.startswith("."))
