"""``RunCheckpointer``: the checkpoints of one built run, wired in one place.

It joins the pieces every writer of a run needs (training and ``rescue``):
the run's config as YAML (with the schedule resolved to steps), the state
files (``checkpoints.state``), the manifest's progress fields, and a
``CheckpointManager`` with the run's ``KeepPolicy`` that commits them, in the
background with ``checkpoint.async=true``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from checkpoints.durable import write_text_atomically
from checkpoints.keep import KeepPolicy
from checkpoints.layout import RUN_CONFIG
from checkpoints.state import progress_manifest, snapshot_state, write_state
from trainer.build import BuiltRun
from trainer.errors import storage_errors
from trainer.runs.remote_run import checkpoint_manager, publish_run_files


def run_config(cfg: Any, resolved_schedule: Mapping[str, Any]) -> dict[str, Any]:
    """The config a checkpoint saves: ``cfg`` resolved to plain data, plus
    ``resolved_schedule`` (the schedule in steps, which a resume keeps), less ``logger``:
    where this command logs, never read back (a resume logs where its own command says),
    and the place a tracking URI with credentials would be."""
    saved = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    saved.pop("logger", None)
    saved["resolved_schedule"] = dict(resolved_schedule)
    return saved


def run_config_yaml(cfg: Any, resolved_schedule: Mapping[str, Any]) -> str:
    """:func:`run_config` as YAML."""
    return OmegaConf.to_yaml(OmegaConf.create(run_config(cfg, resolved_schedule)))


class RunCheckpointer:
    """Saves checkpoints of ``run`` into ``files_dir``, as ``cfg.checkpoint`` says.

    ``info`` is the dataset's ``DataInfo`` (the manifest records the input
    shape and classes, so tools can rebuild the model); ``manifest_extra`` adds
    fields to every manifest (``num_replicas``, ``rescued_from``).
    """

    def __init__(
        self,
        files_dir: Path,
        cfg: Any,
        run: BuiltRun,
        info: Any,
        *,
        manifest_extra: Mapping[str, Any] | None = None,
        report: Callable[[str], None] = print,
    ) -> None:
        self.files_dir = Path(files_dir)
        self.run, self.info = run, info
        self.monitor = cfg["checkpoint"]["monitor"]
        self.manifest_extra = dict(manifest_extra or {})
        self.config_yaml = run_config_yaml(cfg, run.resolved_schedule)
        self.asynchronous = bool(cfg["checkpoint"]["async"])
        # More sections of every checkpoint's trainer_state.json, besides the loop's own
        # ("loggers": the trackers' run ids, trainer.loggers), set before the first save.
        self.extra_state: dict[str, Any] = {}
        # A working copy of a URL (trainer.runs.remote_run) gets an uploading manager.
        self.manager = checkpoint_manager(
            self.files_dir,
            KeepPolicy.from_config(cfg["checkpoint"]),
            asynchronous=self.asynchronous,
            report=report,
        )

    def write_run_config(self) -> None:
        """Write the run's ``config.yaml`` at the top of the run directory."""
        with storage_errors(f"write {RUN_CONFIG} in {self.files_dir}"):
            write_text_atomically(self.files_dir / RUN_CONFIG, self.config_yaml)
        publish_run_files(self.files_dir)

    def save(self, loop_state: Any, metrics: Mapping[str, float], best_weights: Any = None) -> Path:
        """Checkpoint the run now; ``loop_state`` is the loop's ``LoopState``;
        ``best_weights``: early stopping's, to restore (``checkpoints.state``)."""
        run = self.run
        step = run.global_step
        state = {**self.extra_state, "loop": loop_state.to_dict()}
        files = (run.model, run.optimizer, state, self.config_yaml, best_weights)

        def write_files(staging: Path):
            # Saving in the background writes the files from a snapshot.
            if not self.asynchronous:
                return write_state(staging, *files)
            return snapshot_state(*files)

        manifest = progress_manifest(
            step,
            state["loop"],
            run.steps_per_epoch,
            metrics,
            run.learning_rate(),
            self.monitor,
            self.info,
            **self.manifest_extra,
        )
        return self.manager.save(step, write_files, manifest)

    def close(self) -> None:
        """Wait for the commit in flight; raise its error if it failed; upload the run's
        files when it is stored remotely."""
        self.manager.close()
        publish_run_files(self.files_dir)

    @property
    def latest(self) -> str | None:
        return self.manager.latest

    @property
    def best(self) -> str | None:
        return self.manager.best
