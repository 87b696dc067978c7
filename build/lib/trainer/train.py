"""``train(cfg)``: the whole training story, top to bottom.

plan (fresh or resume: ``trainer.planning``) -> data -> build -> restore
(``trainer.training.restore``) -> loop (checkpoints) -> test -> summary.

Returns the best value of ``checkpoint.monitor`` so Hydra's sweepers can
optimise it. Files of a run (``checkpoint.dir``): the checkpoints,
``config.yaml`` (resolved), ``metrics.csv``, ``tensorboard/``, ``summary.json``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from checkpoints import write_text_atomically
from checkpoints.layout import SUMMARY
from checkpoints.reading import to_json
from trainer.errors import StopRequested, storage_errors
from trainer.planning import plan_and_import_tensorflow, plan_job
from trainer.runs.remote_run import location, publish_run_files
from trainer.runs.resume import StartPlan
from trainer.runs.sweep_dir import current_job_subdir
from trainer.startup import hydra_overrides
from trainer.training.callbacks import build_callbacks, callback_specs
from trainer.training.gc_policy import startup_objects_frozen


def train(cfg: DictConfig) -> float | None:
    """Train as ``cfg`` says; see the module docstring. Raises UserError on bad input,
    StorageError when the machine refuses a write (disk full, read-only...)."""
    started = time.time()
    job = plan_job(cfg)  # checked, the user's modules imported, a sweep's job in its own run
    if job.finished:  # a resumed sweep's job that already ended: its saved result
        return job.best
    plan, cfg, target = plan_and_import_tensorflow(job.cfg, own_dir=job.run_dir)

    # Imported once the run is planned: bad input is refused before TensorFlow starts.
    from trainer.data.pipeline import load_data
    from trainer.data.tfds import show_preparation_progress
    from trainer.training.checkpointer import RunCheckpointer
    from trainer.training.distribute import start_distribution
    from trainer.training.reporting import RunReporter, progress_verbosity
    from trainer.training.restore import build_planned_run, restore

    distribution = start_distribution(cfg.trainer)  # before anything else starts TF's devices
    # From here on this process writes into the run: it holds the run's lock (one writer).
    with target.writing(writer=distribution.is_chief) as run_dir, contextlib.ExitStack() as ending:
        files_dir = distribution.files_dir(run_dir)  # only the chief writes into run_dir
        verbose = progress_verbosity(cfg.trainer.verbose)
        show_preparation_progress(verbose == 1)
        data = load_data(cfg.dataset, seed=cfg.seed)
        run = build_planned_run(plan, data.info, distribution)
        state = restore(plan, run, distribution, cfg.trainer.scale_lr_with_replicas)
        replicas = {"num_replicas": distribution.num_replicas}
        checkpointer = RunCheckpointer(files_dir, cfg, run, data.info, manifest_extra=replicas)
        # The trackers (logger=...), ended with the block; their run ids go into every
        # checkpoint. Started before the first file is written: one refused (a tracking
        # store it cannot open) leaves the new run's directory as it was.
        loggers = ending.enter_context(start_loggers(cfg, plan, run, files_dir, distribution))
        checkpointer.extra_state["loggers"] = loggers.run_states()
        if not plan.in_place:
            checkpointer.write_run_config()
        reporter = RunReporter(files_dir, run.steps_per_epoch, run.model, verbose, loggers)
        loop = build_loop(cfg, plan, run, data, state, reporter, checkpointer, distribution)
        try:
            # On every way out, an error included: buffered scalars, the last commit.
            # Collections resume, skipping what start-up built (trainer.training.gc_policy).
            with closed_on_exit(reporter.close, checkpointer.close), startup_objects_frozen():
                state = loop.run()
        except StopRequested as stop:  # the checkpoint is committed before we say so
            stop.run_dir = run_dir
            stop.resumes_itself = job.resumes_itself
            raise

        test = loop.evaluate(data.test())
        print(f"Test: loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}")
        summary = run_summary(test, state, loop, plan, run_dir, checkpointer, started)
        write_summary(files_dir, summary)
        loggers.summary(summary)
    shown = location(run_dir)
    print(f"Checkpoints: {shown} (latest {checkpointer.latest}, best {checkpointer.best})")
    print(f"Resume with: python train.py +resume={shown}")
    return summary["best"]


@contextlib.contextmanager
def closed_on_exit(*closers: Callable[[], None]) -> Iterator[None]:
    """Run the block, then every closer, whatever happened; none is skipped because
    another failed.

    An error of the block wins over a closer's (it is what ended the run; a full
    disk then fails the closers too), except a StopRequested: it promises a
    saved checkpoint, so a closer that failed to save it must be heard instead.
    """
    ended: BaseException | None = None
    try:
        yield
    except BaseException as error:
        ended = error
        raise
    finally:
        failed: BaseException | None = None
        for close in closers:
            try:
                close()
            except Exception as error:
                failed = failed or error
        if failed is not None and (ended is None or isinstance(ended, StopRequested)):
            raise failed from ended


def start_loggers(
    cfg: DictConfig, plan: StartPlan, run: Any, files_dir: Path, distribution: Any
) -> Any:
    """The trackers ``cfg.logger`` selects (``trainer.loggers``), started for this run: a
    resumed run continues the tracker runs its checkpoint names, from its step on."""
    from checkpoints.reading import read_trainer_state
    from trainer.loggers import build_loggers, tracked_run
    from trainer.training.checkpointer import run_config

    resumed = plan.checkpoint is not None and not plan.fine_tune  # fine-tuning: a new run
    saved = read_trainer_state(plan.checkpoint).get("loggers", {}) if resumed else {}
    tracked = tracked_run(
        cfg,
        files_dir,
        run_config(cfg, run.resolved_schedule),
        saved,
        run.global_step if resumed else None,
        current_job_subdir(),
        hydra_overrides(),
    )
    return build_loggers(cfg, tracked, chief=distribution.is_chief)


def build_loop(
    cfg: DictConfig,
    plan: StartPlan,
    run: Any,
    data: Any,
    state: Any,
    reporter: Any,
    checkpointer: Any,
    distribution: Any,
) -> Any:
    """The ``trainer.training.loop.TrainingLoop`` of the run: its settings from ``cfg``,
    the users' callbacks built by name, saving through ``checkpointer`` (reported), and
    early stopping's best weights as the plan's checkpoint saved them."""
    from trainer.training.loop import LoopSettings, TrainingLoop
    from trainer.training.restore import restored_best_weights

    names = [name for name, _ in callback_specs(cfg.get("callbacks"))]
    return TrainingLoop(
        run,
        data,
        LoopSettings.from_config(cfg, run),
        state,
        reporter,
        reporter.saving(checkpointer.save),
        distribution.strategy,
        callbacks=list(zip(names, build_callbacks(cfg.get("callbacks")), strict=True)),
        best_weights=restored_best_weights(plan, run),
    )


def run_summary(
    test: dict[str, float],
    state: Any,
    loop: Any,
    plan: StartPlan,
    run_dir: Path,
    checkpointer: Any,
    started: float,
) -> dict[str, Any]:
    """What ``summary.json`` holds (``checkpoints.reading.RUN_SUMMARY``): the test metrics,
    how far the run went, its best monitored value, where its checkpoints are."""
    monitor = loop.settings.monitor
    best = state.best
    if best is None:  # nothing monitored improved: the last epoch's value
        best = state.history[-1].get(monitor) if state.history else None
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "global_step": loop.global_step,
        "epochs_completed": state.epochs_completed,
        "stopped_early": state.stopped_early,
        "monitor": monitor,
        "best": best,
        "checkpoint_dir": location(run_dir),
        "latest_checkpoint": checkpointer.latest,
        "best_checkpoint": checkpointer.best,
        "resumed_from": str(plan.checkpoint.path) if plan.checkpoint else None,
        "wall_seconds": round(time.time() - started, 2),
    }


def write_summary(files_dir: Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` into the run (atomically), then upload the run's files when
    it is stored remotely."""
    with storage_errors(f"write {SUMMARY} in {files_dir}", "the checkpoints are intact"):
        write_text_atomically(files_dir / SUMMARY, to_json(summary, indent=2) + "\n")
        publish_run_files(files_dir)
