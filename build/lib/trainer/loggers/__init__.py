"""The trackers a run logs to (``logger=tensorboard|csv|mlflow|wandb``, or several at once:
``'logger=[tensorboard,mlflow]'``), called as one by the run's reporter.

Each tracker is a :class:`~trainer.loggers.base.Logger` in a module of its own,
imported only when the config selects it (:data:`LOGGERS`), so ``--help``,
``--cfg job`` and runs without MLflow or W&B never import those packages; a
selected tracker whose package is missing is one line naming the pip extra.

:class:`Loggers` is the one place that decides what a tracker is sent:

- per-step points are held and sent together at the end of every epoch, before
  every checkpoint, on close, and whenever :data:`STEP_POINTS_EVERY_S` seconds
  have passed (one tracker call per batch, not per step: a ``tf.summary`` write or
  an MLflow store commit per step would slow the step down);
- before a checkpoint is saved everything held is sent, so every step up to a
  checkpoint is in every tracker: a run resumed from it misses none;
- a resumed run (from step S) trains steps S+1... again, some of which a tracker
  may already hold (logged after the checkpoint, before a SIGKILL). A tracker
  that says which (``last_logged_step``: MLflow asks its store, the CSV logger
  reads its file) is not sent those steps again, so it holds each step once,
  with the values first logged (bit for bit the same with
  ``trainer.deterministic=true``). TensorBoard is sent them again: its reader
  keeps the newest value of a step written again (it purges the older ones).
  W&B online does the same as MLflow by itself (it drops a step below its
  current one).

The trackers' run ids (:meth:`Loggers.run_states`) go into every checkpoint's
``trainer_state.json``, so ``+resume`` (and ``+resume=auto``, a sweep's resume)
continues the same MLflow or W&B run. Ids a checkpoint holds for trackers this
command does not select are carried on unchanged. Credentials are never saved:
they come from the environment, which the tracker packages read themselves.

No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from trainer.errors import UserError
from trainer.loggers.base import FAILED, FINISHED, KILLED, Logger, StepPoint, TrackedRun

STEP_POINTS_EVERY_S = 30.0

# logger option -> (module, class): imported only when selected.
LOGGERS = {
    "tensorboard": ("trainer.loggers.tensorboard_logger", "TensorBoardLogger"),
    "csv": ("trainer.loggers.csv_logger", "CsvLogger"),
    "mlflow": ("trainer.loggers.mlflow_logger", "MlflowLogger"),
    "wandb": ("trainer.loggers.wandb_logger", "WandbLogger"),
}
# Trackers outside the run directory: only the chief of a multi-worker run logs to them.
EXTERNAL = ("mlflow", "wandb")
# Override keys that say where a job writes or logs, not what it trains: not hyperparameters.
NOT_HPARAMS = (
    "hydra",
    "resume",
    "imports",
    "logger",
    "paths",
    "checkpoint.dir",
    "dataset.data_dir",
    "dataset.path",
)


def require_package(package: str, option: str, extra: str) -> Any:
    """``import package``; a missing one is a UserError naming the pip extra."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise UserError(
            f"logger={option} needs the {package} package: pip install "
            f"'keras-hydra-trainer[{extra}]' (or pick another logger)"
        ) from None


class Loggers:
    """The trackers of one run, called as one; see the module docstring."""

    def __init__(
        self,
        loggers: Sequence[Logger],
        run: TrackedRun | None = None,
    ) -> None:
        self.loggers = list(loggers)
        self.saved = dict(run.saved) if run is not None else {}
        resumed = run is not None and run.resumed_step is not None
        # Per tracker: the steps up to this one it holds already (see the module docstring).
        self.held_through = {
            id(logger): logger.last_logged_step() if resumed else None for logger in self.loggers
        }
        self.held: list[StepPoint] = []
        self.sent_at = time.monotonic()
        if run is not None:
            for logger in self.loggers:
                logger.log_params(run.params)

    def _new_to(self, logger: Logger, step: int) -> bool:
        through = self.held_through[id(logger)]
        return through is None or step > through

    def step(self, step: int, values: Mapping[str, float]) -> None:
        """A logged step's values; sent with the next batch."""
        self.held.append((step, dict(values)))
        if time.monotonic() - self.sent_at >= STEP_POINTS_EVERY_S:
            self.send_steps()

    def send_steps(self) -> None:
        """Send the held steps to every tracker (those it does not hold yet)."""
        points, self.held = self.held, []
        self.sent_at = time.monotonic()
        for logger in self.loggers:
            new = [point for point in points if self._new_to(logger, point[0])]
            if new:
                logger.log_steps(new)

    def epoch(self, step: int, epoch: int, logs: Mapping[str, float]) -> None:
        self.send_steps()
        for logger in self.loggers:
            if self._new_to(logger, step):
                logger.log_epoch(step, epoch, logs)

    def checkpoint(self, path: str) -> None:
        for logger in self.loggers:
            logger.log_checkpoint(path)

    def flush(self) -> None:
        """Send what is held and make every tracker's log durable (before a checkpoint)."""
        self.send_steps()
        for logger in self.loggers:
            logger.flush()

    def summary(self, summary: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_summary(summary)

    def run_states(self) -> dict[str, dict[str, str]]:
        """What every checkpoint saves under ``loggers``: each tracker's run to continue."""
        states = {name: dict(state) for name, state in self.saved.items()}
        for logger in self.loggers:
            state = logger.run_state()
            if state is not None:
                states[logger.name] = dict(state)
        return states

    def __enter__(self) -> Loggers:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        """End the trackers' runs: FINISHED, KILLED when a signal stopped the run (it is to
        be resumed), else FAILED. An error that ended the run is what the run says: a
        tracker failing to close then (a full disk fails it too) is not heard over it."""
        from trainer.errors import StopRequested

        if error is None:
            self.close(FINISHED)
            return
        with contextlib.suppress(Exception):
            self.close(KILLED if isinstance(error, StopRequested) else FAILED)

    def close(self, status: str = FINISHED) -> None:
        """Send what is held and end every tracker's run, all of them even if one fails."""
        failed: BaseException | None = None
        try:
            self.send_steps()
        finally:
            for logger in self.loggers:
                try:
                    logger.close(status)
                except Exception as error:
                    failed = failed or error
        if failed is not None:
            raise failed


def selected(cfg: Mapping[str, Any]) -> list[str]:
    """The trackers ``cfg.logger`` selects, in the order of :data:`LOGGERS`."""
    section = cfg.get("logger") or {}
    return [name for name in LOGGERS if section.get(name) is not None]


def build_loggers(cfg: Mapping[str, Any], run: TrackedRun, *, chief: bool = True) -> Loggers:
    """The trackers ``cfg.logger`` selects, started for ``run`` (only the chief of a
    multi-worker run logs to the trackers outside its directory: :data:`EXTERNAL`).

    Those outside the run directory start first: one that refuses to start (a store
    it cannot reach) then leaves the run directory as it was, so the same command
    with the setting fixed starts the run there."""
    names = selected(cfg)
    outside = [name for name in names if name in EXTERNAL]
    inside = [name for name in names if name not in EXTERNAL]
    loggers: list[Logger] = []
    try:
        for name in (outside if chief else []) + inside:
            module, cls = LOGGERS[name]
            settings = OmegaConf.to_container(OmegaConf.create(dict(cfg.logger[name])))
            loggers.append(getattr(importlib.import_module(module), cls)(settings, run))
        return Loggers(loggers, run)
    except BaseException:
        for logger in loggers:  # those already started: a run refused is not left open
            logger.close(FAILED)
        raise


def tracked_run(
    cfg: Mapping[str, Any],
    run_dir: Path,
    params: Mapping[str, Any],
    saved: Mapping[str, Mapping[str, str]],
    resumed_step: int | None,
    job: str | None,
    overrides: Sequence[str] = (),
) -> TrackedRun:
    """What the trackers are told about the run in ``run_dir``; ``job``: this job's
    ``hydra.sweep.subdir`` in a multirun (``trainer.runs.sweep_dir.current_job_subdir``), whose
    sweep is the directory holding the jobs' runs, and ``overrides`` its overrides
    (its hyperparameters: :func:`job_hparams`)."""
    run_dir = Path(run_dir)
    sweep = None
    if job is not None:
        depth = len(Path(job).parts)
        sweep = _shown_path(run_dir.parents[depth - 1]) if depth else None
    return TrackedRun(
        run_dir=run_dir,
        name=f"{sweep}/{job}" if sweep else run_dir.name,
        params=params,
        saved=saved,
        resumed_step=resumed_step,
        sweep=sweep,
        job=job,
        hparams=job_hparams(cfg, overrides) if job is not None else {},
    )


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (``runs/<date>/
    <time>``, the same for every job of a sweep), else absolute."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def job_hparams(cfg: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The values a sweep job's overrides set, as the config has them (a group choice
    ``schedule=cosine`` by its ``name``), without the keys of :data:`NOT_HPARAMS`.

    >>> cfg = OmegaConf.create({"optimizer": {"learning_rate": 0.003}, "schedule":
    ...     {"name": "cosine"}, "model": {"filters": [8]}, "checkpoint": {"dir": "x"}})
    >>> job_hparams(cfg, ["optimizer.learning_rate=3e-3", "schedule=cosine",
    ...     "model.filters=[8]", "checkpoint.dir=x"])
    {'optimizer.learning_rate': 0.003, 'schedule': 'cosine', 'model.filters': '[8]'}
    """
    hparams: dict[str, Any] = {}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if any(key == p or key.startswith(f"{p}.") or key.startswith(f"{p}/") for p in NOT_HPARAMS):
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_dict(value) and "name" in value:
            value = value.name
        elif OmegaConf.is_config(value):  # a list (model.filters=[8,16]): shown as written
            value = OmegaConf.to_container(value)
        if value is None or not isinstance(value, bool | int | float | str):
            value = str(value)
        hparams[key] = value
    return hparams
