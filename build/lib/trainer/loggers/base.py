"""The interface every tracker of a run implements, and what it is told about the run.

A tracker (:class:`Logger`) is called by ``trainer.loggers.Loggers`` only, which
batches per-step points and never sends a step twice (see its docstring). A
tracker that continues a run on resume says where in :meth:`Logger.run_state`
(saved in every checkpoint's ``trainer_state.json``, read back bounded and
validated: ``checkpoints.schemas.LOGGER_STATE``).

No TensorFlow here, and no tracker package: each tracker's module imports its
own package when it starts (``trainer.loggers.LOGGERS``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A point of the per-step series: the global step and the values logged at it.
StepPoint = tuple[int, Mapping[str, float]]

# How a run ended, as the trackers are told (MLflow's RunStatus names).
FINISHED, KILLED, FAILED = "FINISHED", "KILLED", "FAILED"


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker is told about the run it logs when it starts."""

    run_dir: Path
    name: str  # the run's name: its directory's, or <sweep>/<job> in a sweep
    params: Mapping[str, Any]  # the resolved config the checkpoints save (nested)
    # tracker -> its run_state() saved in the checkpoint this run resumes ({} when fresh)
    saved: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    resumed_step: int | None = None  # the global step resumed from; None: a fresh run
    sweep: str | None = None  # the sweep this run is a job of (its directory), or None
    job: str | None = None  # the job's subdir in the sweep
    hparams: Mapping[str, bool | int | float | str] = field(default_factory=dict)


class Logger:
    """One tracker of one run. Every method but :meth:`close` may be called many times;
    none is called after :meth:`close`. The defaults do nothing."""

    name = ""  # the option that selects it: logger=<name>

    def run_state(self) -> dict[str, str] | None:
        """What a resumed run needs to continue this tracker's run (``{"run_id": ...}``),
        or None; saved in every checkpoint. Never a secret."""
        return None

    def last_logged_step(self) -> int | None:
        """On resume: the highest step this tracker already holds for the run (the steps
        logged after the checkpoint, before the run was killed), or None when it cannot
        tell or replaces a step logged again (TensorBoard)."""
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """The run's resolved config (nested), once, when it starts."""

    def log_steps(self, points: Sequence[StepPoint]) -> None:
        """Per-step values (``loss``, ``accuracy``, ``lr``), oldest first."""

    def log_epoch(self, step: int, epoch: int, logs: Mapping[str, float]) -> None:
        """The summary of an epoch (0-based ``epoch``) ending at global ``step``:
        ``loss``, ``accuracy``, ``val_*``, ``lr``, ``epoch_seconds``."""

    def log_checkpoint(self, path: str) -> None:
        """A checkpoint saved (or, saved in the background, being committed) at ``path``."""

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """The run's ``summary.json`` (test metrics, best, checkpoint paths), at its end."""

    def flush(self) -> None:
        """Make what was logged durable (the trackers' own buffers)."""

    def close(self, status: str) -> None:
        """End the tracker's run: ``FINISHED``, ``KILLED`` (stopped by a signal, to be
        resumed) or ``FAILED``."""


def flat_params(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of a nested config, lists as leaves.

    >>> dict(flat_params({"model": {"name": "cnn", "filters": [8]}, "seed": 1}))
    {'model.name': 'cnn', 'model.filters': [8], 'seed': 1}
    """
    for key, value in params.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flat_params(value, f"{dotted}.")
        else:
            yield dotted, value


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``values`` that are numbers (not booleans), as floats.

    >>> numeric({"best": 0.5, "global_step": 82, "stopped_early": False, "path": "x"})
    {'best': 0.5, 'global_step': 82.0}
    """
    return {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
