"""``logger=wandb``: one Weights & Biases run per training run.

- the run: in ``logger.wandb.project`` (and ``entity``), named after the run
  directory; a sweep's jobs share the W&B ``group`` (the sweep's directory), so W&B
  shows a sweep as one group; ``logger.wandb.mode`` (None: ``WANDB_MODE``, else online;
  ``offline`` writes ``<run>/wandb/offline-run-*`` for ``wandb sync``);
- config: the resolved config (nested); metrics: ``step/<name>`` per logged step and
  ``epoch/<name>`` per epoch, at W&B step = the global step; the run summary
  (test metrics, checkpoint paths) and ``checkpoint/latest`` in the W&B summary;
- resume: the W&B run id is saved in every checkpoint (:meth:`WandbLogger.run_state`)
  and a resumed run calls ``wandb.init(id=..., resume="allow")``: online, W&B continues
  that run and drops a step below its current one (so each step is there once, with
  the value first logged, as with MLflow); offline, W&B cannot resume (it starts a
  second offline run of the same id, which ``wandb sync`` adds to the same run).

Credentials (``WANDB_API_KEY``) are read by W&B from the environment; nothing of them
is in the config or a checkpoint. The package is optional:
``pip install 'keras-hydra-trainer[wandb]'``. No TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trainer.errors import UserError
from trainer.loggers import require_package
from trainer.loggers.base import FINISHED, Logger, StepPoint, TrackedRun


class WandbLogger(Logger):
    """One W&B run; see the module docstring."""

    name = "wandb"

    def __init__(self, settings: Mapping[str, Any], run: TrackedRun) -> None:
        wandb = require_package("wandb", "wandb", "wandb")
        saved = (run.saved.get("wandb") or {}).get("run_id")
        try:
            self.run = wandb.init(
                project=settings.get("project"),
                entity=settings.get("entity"),
                mode=settings.get("mode"),
                id=saved,
                resume="allow" if saved else None,
                group=run.sweep,
                name=settings.get("run_name") or run.name,
                dir=str(run.run_dir),
                # No console capture or system metrics: the run's own log has the console.
                settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
            )
        except Exception as error:
            lines = str(error).strip().splitlines() or [type(error).__name__]
            raise UserError(f"logger.wandb: cannot start the W&B run: {lines[0]}") from None
        self.run_id = self.run.id

    def run_state(self) -> dict[str, str]:
        return {"run_id": self.run_id}

    def last_logged_step(self) -> int | None:
        if not self.run.resumed or not self.run.step:
            return None
        return int(self.run.step) - 1

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_steps(self, points: Sequence[StepPoint]) -> None:
        for step, values in points:
            self.run.log({f"step/{k}": v for k, v in values.items()}, step=step)

    def log_epoch(self, step: int, epoch: int, logs: Mapping[str, float]) -> None:
        values = {f"epoch/{k}": v for k, v in {"epoch": epoch, **logs}.items()}
        self.run.log(values, step=step)

    def log_checkpoint(self, path: str) -> None:
        self.run.summary["checkpoint/latest"] = str(path)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self.run.summary.update(dict(summary))

    def close(self, status: str = FINISHED) -> None:
        self.run.finish(exit_code=0 if status == FINISHED else 1)
