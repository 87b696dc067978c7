"""``logger=mlflow``: one MLflow run per training run, through ``MlflowClient``.

- the run: in experiment ``logger.mlflow.experiment_name`` of the tracking store
  ``logger.mlflow.tracking_uri`` (None: ``MLFLOW_TRACKING_URI``, else MLflow's
  default, ``sqlite:///mlflow.db``; a database store: MLflow 3 refuses its file store
  by default), named after the run directory; a sweep's jobs are tagged ``sweep`` (the
  sweep's directory) and ``sweep_job``, so one search (``tags.sweep = '...'``) lists a sweep;
- params: the resolved config, flattened (``optimizer.learning_rate``); a resumed run
  adds the keys it did not have, and a value it changed (``trainer.epochs``) as the tag
  ``resumed.<key>``: MLflow never changes a logged param;
- metrics: ``step/<name>`` per logged step, ``epoch/<name>`` per epoch, at the global
  step; the summary's numbers (``test_accuracy``, ``test_loss``, ``best``...) at the
  last step, its other values (checkpoint paths) as tags ``summary.<key>``; tag
  ``checkpoint.latest`` follows every checkpoint saved;
- resume: the MLflow run id is saved in every checkpoint (:meth:`MlflowLogger.run_state`);
  a resumed run logs into that run again (status back to RUNNING) and does not log the
  steps the store already holds (:meth:`MlflowLogger.last_logged_step`, see
  ``trainer.loggers``). A saved run id that this store does not hold starts a new
  MLflow run, saying so.

The package is optional: ``pip install 'keras-hydra-trainer[mlflow]'`` (mlflow-skinny,
and SQLAlchemy and Alembic for the database store). No TensorFlow here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from trainer.errors import UserError
from trainer.loggers import require_package
from trainer.loggers.base import FINISHED, Logger, StepPoint, TrackedRun, flat_params, numeric

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param's value
BATCH_METRICS, BATCH_PARAMS = 1000, 100  # MLflow's limits per log_batch call


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class MlflowLogger(Logger):
    """One MLflow run; see the module docstring."""

    name = "mlflow"

    def __init__(self, settings: Mapping[str, Any], run: TrackedRun) -> None:
        require_package("mlflow", "mlflow", "mlflow")
        from mlflow import MlflowClient

        uri = settings.get("tracking_uri")
        self.resumed = False
        try:
            self.client = MlflowClient(tracking_uri=uri)
            saved = (run.saved.get("mlflow") or {}).get("run_id")
            self.run_id = self._continued(saved) if saved else None
            if self.run_id is None:
                self.run_id = self._created(settings, run)
        except UserError:
            raise
        except Exception as error:  # the store refused: a wrong URI, a database it cannot open
            shown = uri or "MLflow's default"
            raise UserError(
                f"logger.mlflow: cannot use the tracking store {shown}: {_first_line(error)}"
            ) from None

    def _continued(self, run_id: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            print(
                f"logger.mlflow: the checkpoint's MLflow run {run_id} is not in "
                f"{self.client.tracking_uri}; starting a new MLflow run",
                flush=True,
            )
            return None
        self.client.update_run(run_id, status="RUNNING")
        self.resumed = True
        return run_id

    def _created(self, settings: Mapping[str, Any], run: TrackedRun) -> str:
        tags = {"run_dir": str(run.run_dir)}
        if run.sweep is not None:
            tags.update(sweep=run.sweep, sweep_job=str(run.job))
        experiment = self._experiment_id(settings["experiment_name"])
        created = self.client.create_run(
            experiment, run_name=settings.get("run_name") or run.name, tags=tags
        )
        return created.info.run_id

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # created meanwhile by another job of a parallel sweep
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def run_state(self) -> dict[str, str]:
        return {"run_id": self.run_id}

    def last_logged_step(self) -> int | None:
        if not self.resumed:
            return None
        steps = [
            metric.step
            for key in self.client.get_run(self.run_id).data.metrics
            for metric in self.client.get_metric_history(self.run_id, key)
        ]
        return max(steps, default=None)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        ours = {key: str(value)[:MAX_PARAM_CHARS] for key, value in flat_params(params)}
        logged = self.client.get_run(self.run_id).data.params if self.resumed else {}
        new = [Param(k, v) for k, v in ours.items() if k not in logged]
        changed = [RunTag(f"resumed.{k}", v) for k, v in ours.items() if logged.get(k, v) != v]
        for chunk in _chunks(new, BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=chunk)
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def _log_metrics(self, points: Sequence[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value, step in points]
        for chunk in _chunks(metrics, BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_steps(self, points: Sequence[StepPoint]) -> None:
        self._log_metrics(
            [(f"step/{k}", v, step) for step, values in points for k, v in values.items()]
        )

    def log_epoch(self, step: int, epoch: int, logs: Mapping[str, float]) -> None:
        self._log_metrics([(f"epoch/{k}", v, step) for k, v in {"epoch": epoch, **logs}.items()])

    def log_checkpoint(self, path: str) -> None:
        self.client.set_tag(self.run_id, "checkpoint.latest", str(path))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        step = int(summary.get("global_step") or 0)
        numbers = numeric(summary)
        self._log_metrics([(k, v, step) for k, v in numbers.items()])
        tags = [RunTag(f"summary.{k}", str(v)) for k, v in summary.items() if k not in numbers]
        self.client.log_batch(self.run_id, tags=tags)

    def close(self, status: str = FINISHED) -> None:
        self.client.set_terminated(self.run_id, status)
