"""``train(cfg)``: the whole training story, top to bottom.

config -> start plan (fresh or resume) -> data -> model -> schedule ->
optimizer -> restore -> loop (checkpoints) -> test -> summary.

Returns the best value of ``checkpoint.monitor`` so Hydra's sweepers can
optimise it. Files of a run (``checkpoint.dir``): the checkpoints,
``config.yaml`` (resolved), ``metrics.csv``, ``tensorboard/``, ``summary.json``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer.checkpoint import (
    KeepPolicy,
    list_checkpoints,
    verify_in_background,
    write_text_atomically,
)
from trainer.config import validate
from trainer.errors import UserError
from trainer.resume import StartPlan, plan_start
from trainer.sweep import current_job_subdir, plan_sweep_job


def train(cfg: DictConfig) -> float | None:
    """Train as ``cfg`` says; see the module docstring. Raises UserError on bad input."""
    started = time.time()
    validate(cfg)
    import_user_modules(cfg.get("imports") or [])
    sweep_job = plan_sweep_job(cfg, current_job_subdir(), hydra_overrides())
    if sweep_job.finished:  # a resumed sweep's job that already ended: its saved result
        return sweep_job.best
    # The checkpoint to resume is picked on its manifest and file sizes; its sha256s
    # are checked on a thread while TensorFlow imports (hidden behind the import, not
    # added to it), and if one does not match, the start is planned again with
    # hashes, which skips or refuses the damaged checkpoint and says so.
    plan, cfg, run_dir = plan_run(sweep_job.cfg, hashes=False)
    hash_check = None if plan.checkpoint is None else verify_in_background(plan.checkpoint.path)

    tf, keras = import_tensorflow(cfg.trainer.deterministic, cfg.seed)
    if hash_check is not None and not hash_check.result().valid:
        plan, cfg, run_dir = plan_run(sweep_job.cfg, hashes=True)
    import trainer.rescued_model  # noqa: F401  (registers "keras_builtin", for rescued checkpoints)
    from trainer.checkpoint_manager import CheckpointManager
    from trainer.data import load_data
    from trainer.distribute import start_distribution
    from trainer.loop import LoopSettings, LoopState, ScaledSchedule, StopRequested, TrainingLoop
    from trainer.models import build_model
    from trainer.optimizers import build_optimizer
    from trainer.reporting import RunReporter
    from trainer.schedules import build_schedule, resolve_schedule
    from trainer.snapshot import progress_manifest, restore_state, snapshot_state, write_state

    distribution = start_distribution(cfg.trainer)  # before anything else starts TF's devices
    files_dir = distribution.files_dir(run_dir)  # only the chief writes into run_dir
    data = load_data(cfg.dataset, seed=cfg.seed)
    info = data.info
    steps_per_epoch = info.steps_per_epoch
    total_steps = cfg.trainer.epochs * steps_per_epoch
    if cfg.trainer.max_steps is not None:
        total_steps = min(total_steps, cfg.trainer.max_steps)
    monitors = ["loss", "accuracy"] + (
        ["val_loss", "val_accuracy"] if info.validation_examples else []
    )
    if cfg.checkpoint.monitor not in monitors:
        raise UserError(
            f"checkpoint.monitor must be one of {', '.join(monitors)}, "
            f"got {cfg.checkpoint.monitor!r}"
            + ("" if info.validation_examples else " (val_* needs dataset.validation_split > 0)")
        )
    resolved = plan.resolved_schedule or resolve_schedule(
        cfg.schedule, steps_per_epoch=steps_per_epoch, total_steps=total_steps
    )

    with distribution.scope():
        model = build_model(cfg.model, tuple(info.input_shape), info.num_classes)
        base_lr = distribution.learning_rate(
            cfg.optimizer.learning_rate, cfg.trainer.scale_lr_with_replicas
        )
        schedule = build_schedule(resolved, base_lr)
        lr_scale = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="lr_scale")
        if cfg.trainer.reduce_on_plateau_patience:
            schedule = ScaledSchedule(schedule, lr_scale)
        optimizer = build_optimizer(cfg.optimizer, schedule)
        optimizer.build(model.trainable_variables)

    state = LoopState()
    if plan.checkpoint is not None:
        saved = restore_state(plan.checkpoint, model, None if plan.fine_tune else optimizer)
        if not plan.fine_tune:
            state = LoopState.from_dict(saved.get("loop", {}))
            lr_scale.assign(state.lr_scale)
        describe_start(plan, resolved, state, int(optimizer.iterations.numpy()))
        distribution.describe_resume(plan.checkpoint.manifest, cfg.trainer.scale_lr_with_replicas)

    run_config = OmegaConf.to_container(cfg, resolve=True)
    run_config["resolved_schedule"] = dict(resolved)
    config_yaml = OmegaConf.to_yaml(OmegaConf.create(run_config))
    if not plan.in_place:
        write_text_atomically(files_dir / "config.yaml", config_yaml)

    def learning_rate() -> float:
        return float(optimizer.learning_rate.numpy())

    manager = CheckpointManager(
        files_dir,
        KeepPolicy.from_config(cfg.checkpoint),
        asynchronous=cfg.checkpoint["async"],
    )

    # Saving in the background writes the files from a snapshot; the weights file is
    # written from this twin of the model (same config, so the same file layout).
    shadow = None
    if cfg.checkpoint["async"]:
        shadow = build_model(cfg.model, tuple(info.input_shape), info.num_classes)

    def write_files(staging: Path, state_dict: dict[str, Any]):
        if shadow is None:
            return write_state(staging, model, optimizer, {"loop": state_dict}, config_yaml)
        return snapshot_state(model, optimizer, {"loop": state_dict}, config_yaml, shadow=shadow)

    def save(loop_state: LoopState, metrics: Mapping[str, float]) -> None:
        step = int(optimizer.iterations.numpy())
        state_dict = loop_state.to_dict()
        manager.save(
            step,
            lambda staging: write_files(staging, state_dict),
            progress_manifest(
                step,
                state_dict,
                steps_per_epoch,
                metrics,
                learning_rate(),
                cfg.checkpoint.monitor,
                info,
                num_replicas=distribution.num_replicas,
            ),
        )

    reporter = RunReporter(files_dir, steps_per_epoch, model)
    loop = TrainingLoop(
        model,
        optimizer,
        data,
        LoopSettings(
            epochs=cfg.trainer.epochs,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            steps_per_execution=cfg.trainer.steps_per_execution,
            jit_compile=cfg.trainer.jit_compile,
            monitor=cfg.checkpoint.monitor,
            mode=cfg.checkpoint.mode,
            every_n_steps=cfg.checkpoint.every_n_steps,
            every_n_epochs=cfg.checkpoint.every_n_epochs,
            log_every_n_steps=cfg.trainer.log_every_n_steps,
            early_stopping_patience=cfg.trainer.early_stopping_patience,
            reduce_on_plateau_patience=cfg.trainer.reduce_on_plateau_patience,
            reduce_on_plateau_factor=cfg.trainer.reduce_on_plateau_factor,
        ),
        state,
        reporter,
        save,
        learning_rate,
        lr_scale,
        distribution.strategy,
    )
    try:
        state = loop.run()
    except StopRequested as stop:
        manager.close()  # the checkpoint is committed before we say so
        print(f"Stopped by {stop}; checkpoint saved in {run_dir}", file=sys.stderr)
        print(f"Resume with: python train.py +resume={run_dir}", file=sys.stderr)
        sys.exit(stop.exit_code)
    finally:  # on every way out, an error included: buffered scalars, last commit
        reporter.close()
        manager.close()

    test = loop.evaluate(data.test())
    print(f"Test: loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}")
    best = state.best if state.best is not None else _last(state, cfg.checkpoint.monitor)
    summary = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "global_step": int(optimizer.iterations.numpy()),
        "epochs_completed": state.epochs_completed,
        "stopped_early": state.stopped_early,
        "monitor": cfg.checkpoint.monitor,
        "best": best,
        "checkpoint_dir": str(run_dir),
        "latest_checkpoint": manager.latest,
        "best_checkpoint": manager.best,
        "resumed_from": str(plan.checkpoint.path) if plan.checkpoint else None,
        "wall_seconds": round(time.time() - started, 2),
    }
    write_text_atomically(files_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"Checkpoints: {run_dir} (latest {manager.latest}, best {manager.best})")
    print(f"Resume with: python train.py +resume={run_dir}")
    return best


def _last(state: Any, monitor: str) -> float | None:
    return state.history[-1].get(monitor) if state.history else None


def describe_start(plan: StartPlan, resolved: Mapping[str, Any], state: Any, step: int) -> None:
    """Say what a resumed run continues from, and which schedule rule applies."""
    where = plan.checkpoint.path
    if plan.fine_tune:
        print(f"Fine-tuning from {where}: weights restored, fresh optimizer and schedule")
        return
    print(
        f"Resuming from {where}: step {step}, epoch {state.epoch + 1}, "
        f"batch {state.batches_done} of that epoch"
    )
    if plan.resolved_schedule is None:
        print("Schedule: re-fitted to the new run length (trainer.restretch_schedule=true)")
    else:
        print(
            "Schedule: kept as saved (step counts fixed when the run started); "
            "add trainer.restretch_schedule=true to re-fit it to a new length"
        )


def import_user_modules(modules: list[str]) -> None:
    """Import the modules ``imports`` names, so their registry decorators run.

    The working directory is searched first, as ``python -m`` would.
    """
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise UserError(f"imports: cannot import {name!r}: {error}") from None


def hydra_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def checkpoint_dir(cfg: DictConfig, resuming: bool) -> Path:
    """Where this run writes; a fresh run never writes into a directory holding checkpoints.

    ``checkpoint.dir`` if set, else ``<checkpoint.root>/<date>/<time>`` after
    Hydra's run directory, or ``<root>/<date>/<time>/<job number>`` in a multirun.
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


def plan_run(cfg: DictConfig, *, hashes: bool) -> tuple[StartPlan, DictConfig, Path]:
    """The start plan (``trainer.resume.plan_start``), the config it trains with, the run dir."""
    plan = plan_start(cfg, hydra_overrides(), hashes=hashes)
    validate(plan.cfg)
    return plan, plan.cfg, checkpoint_dir(plan.cfg, resuming=plan.in_place)


def import_tensorflow(deterministic: bool, seed: int) -> tuple[Any, Any]:
    """Import TensorFlow and Keras quietly, seed every generator, and set determinism."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import keras
        import tensorflow as tf

        tf.config.list_physical_devices()  # device start-up logs land here, not on the console
    # Hydra's job logging shows INFO from every library; TFDS logs each file it reads
    # and warns about folders it is about to report missing (we say it in one line).
    for name in ("absl", "tensorflow", "tensorflow_datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return tf, keras


class quiet_stderr:  # noqa: N801 (a context manager used like a function)
    """Silence the C++ logs TensorFlow writes to fd 2 before its logging is set up.

    ``TF_CPP_MIN_LOG_LEVEL`` does not reach the lines absl prints before
    ``InitializeLog`` (oneDNN notices, missing CUDA drivers), so the file
    descriptor is pointed at a temporary file while TensorFlow starts; if the
    import fails, what it wrote is replayed so nothing is lost.
    """

    def __enter__(self) -> None:
        import tempfile

        sys.stderr.flush()
        self._saved = os.dup(2)
        self._capture = tempfile.TemporaryFile()
        os.dup2(self._capture.fileno(), 2)

    def __exit__(self, kind, error, traceback) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if kind is not None:
            self._capture.seek(0)
            sys.stderr.write(self._capture.read().decode(errors="replace"))
        self._capture.close()
