"""``train(cfg)``: the whole training story, top to bottom.

plan (fresh or resume) -> data -> build -> restore -> loop (checkpoints) ->
test -> summary.

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

from checkpoints import verify_in_background, write_text_atomically
from checkpoints.layout import SUMMARY
from checkpoints.reading import to_json
from trainer.config.schema import validate
from trainer.data.folder import fingerprint as folder_fingerprint
from trainer.errors import StopRequested, UserError, storage_errors
from trainer.runs.remote_run import localize, location, publish_run_files
from trainer.runs.resume import StartPlan, describe_resume, plan_start
from trainer.runs.run_dir import RunDirectory, run_directory
from trainer.runs.sweep import plan_sweep_job
from trainer.runs.sweep_dir import current_job_subdir
from trainer.startup import hydra_overrides, import_tensorflow, import_user_modules
from trainer.training.callbacks import build_callbacks, callback_specs, check_callbacks
from trainer.training.gc_policy import startup_objects_frozen


def train(cfg: DictConfig) -> float | None:
    """Train as ``cfg`` says; see the module docstring. Raises UserError on bad input,
    StorageError when the machine refuses a write (disk full, read-only...)."""
    started = time.time()
    validate(cfg)
    import_user_modules(cfg.get("imports") or [])
    cfg = localize(cfg)  # s3:// and gs:// runs train in a local working copy, uploaded
    sweep_job = plan_sweep_job(cfg, current_job_subdir(), hydra_overrides())
    if sweep_job.finished:  # a resumed sweep's job that already ended: its saved result
        return sweep_job.best
    plan, cfg, target = plan_and_import_tensorflow(sweep_job.cfg, own_dir=sweep_job.run_dir)

    # Imported once the run is planned: bad input is refused before TensorFlow starts.
    from trainer.data.pipeline import load_data, show_preparation_progress
    from trainer.training.checkpointer import RunCheckpointer
    from trainer.training.distribute import start_distribution
    from trainer.training.loop import LoopSettings, TrainingLoop
    from trainer.training.reporting import RunReporter, progress_verbosity

    distribution = start_distribution(cfg.trainer)  # before anything else starts TF's devices
    # From here on this process writes into the run: it holds the run's lock (one writer).
    with target.writing(writer=distribution.is_chief) as run_dir, contextlib.ExitStack() as ending:
        files_dir = distribution.files_dir(run_dir)  # only the chief writes into run_dir
        verbose = progress_verbosity(cfg.trainer.verbose)
        show_preparation_progress(verbose == 1)
        data = load_data(cfg.dataset, seed=cfg.seed)
        run = build_planned_run(plan, data.info, distribution)
        state = restore(plan, run, distribution, cfg.trainer.scale_lr_with_replicas)
        checkpointer = RunCheckpointer(
            files_dir,
            cfg,
            run,
            data.info,
            manifest_extra={"num_replicas": distribution.num_replicas},
        )
        # The trackers (logger=...), ended with the block; their run ids go into every
        # checkpoint. Started before the first file is written: one refused (a tracking
        # store it cannot open) leaves the new run's directory as it was.
        loggers = ending.enter_context(start_loggers(cfg, plan, run, files_dir, distribution))
        checkpointer.extra_state["loggers"] = loggers.run_states()
        if not plan.in_place:
            checkpointer.write_run_config()
        reporter = RunReporter(files_dir, run.steps_per_epoch, run.model, verbose, loggers)
        settings = LoopSettings.from_config(cfg, run)
        save = reporter.saving(checkpointer.save)
        names = [name for name, _ in callback_specs(cfg.get("callbacks"))]
        loop = TrainingLoop(
            run,
            data,
            settings,
            state,
            reporter,
            save,
            distribution.strategy,
            callbacks=list(zip(names, build_callbacks(cfg.get("callbacks")), strict=True)),
            best_weights=restored_best_weights(plan, run),
        )
        try:
            # On every way out, an error included: buffered scalars, the last commit.
            # Collections resume, skipping what start-up built (trainer.training.gc_policy).
            with closed_on_exit(reporter.close, checkpointer.close), startup_objects_frozen():
                state = loop.run()
        except StopRequested as stop:  # the checkpoint is committed before we say so
            stop.run_dir = run_dir
            stop.resumes_itself = sweep_job.resumes_itself
            raise

        test = loop.evaluate(data.test())
        print(f"Test: loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}")
        best = state.best if state.best is not None else _last(state, settings.monitor)
        summary = {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "global_step": run.global_step,
            "epochs_completed": state.epochs_completed,
            "stopped_early": state.stopped_early,
            "monitor": settings.monitor,
            "best": best,
            "checkpoint_dir": location(run_dir),
            "latest_checkpoint": checkpointer.latest,
            "best_checkpoint": checkpointer.best,
            "resumed_from": str(plan.checkpoint.path) if plan.checkpoint else None,
            "wall_seconds": round(time.time() - started, 2),
        }
        with storage_errors(f"write {SUMMARY} in {files_dir}", "the checkpoints are intact"):
            write_text_atomically(files_dir / SUMMARY, to_json(summary, indent=2) + "\n")
            publish_run_files(files_dir)
        loggers.summary(summary)
    shown = location(run_dir)
    print(f"Checkpoints: {shown} (latest {checkpointer.latest}, best {checkpointer.best})")
    print(f"Resume with: python train.py +resume={shown}")
    return best


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


def plan_and_import_tensorflow(
    cfg: DictConfig, own_dir: Path | None = None
) -> tuple[StartPlan, DictConfig, RunDirectory]:
    """The start plan, the config it trains with and the run directory; TensorFlow imported
    and (``trainer.deterministic``) deterministic. Nothing is seeded here: each random
    stream is seeded where it is drawn (``trainer.seeds``).

    The checkpoint to resume is picked on its manifest and file sizes; its sha256s
    are checked on a thread while TensorFlow imports (hidden behind the import, not
    added to it), and if one does not match, the start is planned again with
    hashes, which skips or refuses the damaged checkpoint and says so.
    """
    plan, run_cfg, target = plan_run(cfg, hashes=False, own_dir=own_dir)
    hash_check = None if plan.checkpoint is None else verify_in_background(plan.checkpoint.path)
    tf, _ = import_tensorflow()
    if run_cfg.trainer.deterministic:
        tf.config.experimental.enable_op_determinism()
    if hash_check is not None and not hash_check.result().valid:
        plan, run_cfg, target = plan_run(cfg, hashes=True, own_dir=own_dir)
    return plan, run_cfg, target


def plan_run(
    cfg: DictConfig, *, hashes: bool, own_dir: Path | None = None
) -> tuple[StartPlan, DictConfig, RunDirectory]:
    """The start plan (``trainer.runs.resume.plan_start``), its config, the run dir.

    ``own_dir``: a sweep's job restarting in its own run directory
    (``trainer.runs.sweep.SweepJob.run_dir``), which it continues as a resume does.
    """
    plan = plan_start(cfg, hydra_overrides(), hashes=hashes)
    validate(plan.cfg)
    check_callbacks(plan.cfg.get("callbacks"))  # registered names taking those arguments
    # An image folder's layout is checked before the run directory is created and
    # TensorFlow starts (its images are decoded by load_data).
    folder_fingerprint(plan.cfg.dataset)
    chosen = plan.cfg.checkpoint.dir
    own = own_dir is not None and chosen and Path(chosen).expanduser().absolute() == own_dir
    in_place = plan.in_place or bool(own)
    return plan, plan.cfg, run_directory(plan.cfg, in_place=in_place)


def build_planned_run(plan: StartPlan, info: Any, distribution: Any = None) -> Any:
    """``trainer.build.build_run`` for the plan's config and schedule (the saved one when
    resuming); a value a checkpoint saved that cannot be built is one line naming it."""
    from trainer.build import build_run

    try:
        return build_run(
            plan.cfg, info, resolved_schedule=plan.resolved_schedule, distribution=distribution
        )
    except UserError as error:
        if plan.checkpoint is None:
            raise
        raise UserError(f"resuming checkpoint {plan.checkpoint.path}: {error}") from None


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


def restore(plan: StartPlan, run: Any, distribution: Any, scale_lr_with_replicas: bool) -> Any:
    """The loop state to start from: fresh, or restored with ``run``'s variables from the
    plan's checkpoint (weights only when fine-tuning)."""
    from checkpoints.restore import restore_state
    from trainer.training.loop import LoopState

    if plan.checkpoint is None:
        return LoopState()
    saved = restore_state(plan.checkpoint, run.model, None if plan.fine_tune else run.optimizer)
    state = LoopState()
    if not plan.fine_tune:
        state = LoopState.from_dict(saved.get("loop", {}))
        run.lr_scale.assign(state.lr_scale)
    describe_resume(plan, state, run.global_step)
    distribution.describe_resume(plan.checkpoint.manifest, scale_lr_with_replicas)
    return state


def restored_best_weights(plan: StartPlan, run: Any) -> Any:
    """Early stopping's best weights as the plan's checkpoint saved them, or None."""
    from checkpoints.restore import read_best_weights

    if plan.checkpoint is None or plan.fine_tune:
        return None
    return read_best_weights(plan.checkpoint, run.model)


def _last(state: Any, monitor: str) -> float | None:
    return state.history[-1].get(monitor) if state.history else None
