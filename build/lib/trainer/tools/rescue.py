"""``trainer rescue MODEL_FILE OUT --schedule NAME``: a resumable checkpoint from a Keras file.

The problem this project was born from: ``model.save()`` of a model whose
optimizer uses a learning-rate schedule writes the schedule as a nested
config, and ``keras.saving.load_model`` refuses the file when that schedule
is a class it does not know. ``rescue`` recovers everything but the schedule
without running anything from the file, and attaches a schedule of this
project's registry given on the command line:

1. Read the file as data (``trainer.tools.keras_file``): ``config.json``
   (``.keras``) or the ``model_config`` and ``training_config`` attributes
   (legacy ``.h5``), and the optimizer's variables with h5py. Every zip member
   is read with a size bound and every HDF5 file checked by
   ``checkpoints.io.h5`` first (no external storage or links, numeric datasets
   stored in the file); the JSON is plain data (``checkpoints.reading``). The
   schedule's class and parameters are only shown.
2. Check the model config against an allow-list of Keras built-ins
   (``trainer.models.keras_builtin.check_keras_config``) before Keras sees it, then
   rebuild it with ``safe_mode=True`` as the ``keras_builtin`` model and load
   its weights. A final softmax is removed: this trainer trains on logits.
3. Compose the run's config from ``conf/`` like ``train.py`` does
   (``schedule=NAME`` and the ``--set`` overrides), take the optimizer class
   and its hyperparameters from the file unless ``--set optimizer=...`` says
   otherwise, resolve the schedule for the dataset's steps per epoch, and
   restore the optimizer's step counter and slots (moments) when they fit.
4. Build the run with ``trainer.build.build_run``, as training builds it. Write
   a checkpoint with ``RunCheckpointer`` (as training does), and the
   run's ``config.yaml``, exactly as ``trainer/train.py`` does, so that
   ``python train.py +resume=OUT`` continues from the saved step. OUT is a new
   run directory (``trainer.runs.run_dir`` rule 4), created here and
   written while its lock is held, as training holds it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from checkpoints.layout import MAX_GLOBAL_STEP
from trainer.errors import UserError, storage_errors
from trainer.exits import OK
from trainer.tools.arguments import add_import_argument
from trainer.tools.finding import existing_path
from trainer.tools.keras_file import KerasFile, describe_file_schedule, file_step, read_keras_file
from trainer.tools.output import print_json

NAME = "rescue"
HELP = "turn a plain Keras model file into a resumable checkpoint with a schedule"
DESCRIPTION = """\
Turn a .keras (or legacy .h5) file written by plain Keras, whose optimizer's
learning-rate schedule keras.saving.load_model cannot rebuild, into a
checkpoint of this project that 'python train.py +resume=OUT' continues.
Nothing from the file is executed: the model must consist of Keras built-in
layers (checked against an allow-list, then loaded with safe_mode=True); the
schedule is the one you name, from this project's registry; the optimizer
class, hyperparameters, step and moments come from the file when they fit.

--set takes Hydra overrides of the run's config, as train.py does: the
dataset the model was trained on, the run length, the schedule's parameters.

examples:
  python -m trainer rescue old_model.keras runs/rescued --schedule cosine \\
      --set trainer.epochs=30 --set schedule.warmup_epochs=1
  python -m trainer rescue old_model.h5 runs/rescued --schedule one_cycle \\
      --set dataset=mnist --set optimizer.learning_rate=3e-3
  python -m trainer rescue old.keras out --schedule triangle --import my_schedules \\
      --set +schedule.period_epochs=2

then: python train.py +resume=runs/rescued 'imports=[trainer.models.keras_builtin]'"""

KERAS_OPTIMIZERS = {"Adam": "adam", "AdamW": "adamw", "SGD": "sgd", "RMSprop": "rmsprop"}
# Keys of a schedule's config that usually hold its base (initial or peak) rate.
BASE_RATE_KEYS = (
    "initial_learning_rate",
    "learning_rate",
    "maximal_learning_rate",
    "max_learning_rate",
    "max_lr",
    "base_lr",
    "lr",
)
# Keras optimizer config keys that mean nothing to this project when left at these values.
IGNORED_OPTIMIZER_KEYS = {"name": None, "ema_momentum": None, "ema_overwrite_frequency": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_file", metavar="MODEL_FILE", help="a .keras or .h5 file")
    parser.add_argument("out", metavar="OUT", help="the run directory to create (must not exist)")
    parser.add_argument(
        "--schedule",
        required=True,
        metavar="NAME",
        help="the schedule to attach: a conf/schedule option or a registered name",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a Hydra override of the run's config, e.g. trainer.epochs=30 (repeatable)",
    )
    add_import_argument(parser, "schedule")
    parser.add_argument(
        "--step",
        type=int,
        metavar="N",
        help="the optimizer step the model reached (default: read from the file's optimizer)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


# --------------------------------------------------------------------------- the config


def schedule_overrides(name: str) -> list[str]:
    """``schedule=NAME`` for an option of conf/schedule, else the ``custom`` option by name."""
    from trainer.help import CONF_DIR

    if name != "custom" and (CONF_DIR / "schedule" / f"{name}.yaml").is_file():
        return [f"schedule={name}"]
    return ["schedule=custom", f"schedule.name={name}"]


def _override_keys(overrides: list[str]) -> set[str]:
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides}


def optimizer_from_file(saved: KerasFile, user_keys: set[str]) -> tuple[list[str], str]:
    """Overrides that select the file's optimizer class, unless the user chose one."""
    if "optimizer" in user_keys or "optimizer.name" in user_keys:
        return [], "optimizer chosen with --set"
    if saved.optimizer_class is None:
        return [], "the file has no optimizer: conf default"
    name = KERAS_OPTIMIZERS.get(saved.optimizer_class)
    if name is None:
        raise UserError(
            f"the file's optimizer is {saved.optimizer_class}, which this trainer does not "
            f"build ({', '.join(sorted(KERAS_OPTIMIZERS.values()))}); choose one with "
            "--set optimizer=NAME (its moments will start fresh)"
        )
    return [f"optimizer={name}"], f"{saved.optimizer_class} from the file"


def apply_file_hyperparameters(cfg, saved: KerasFile, user_keys: set[str]) -> list[str]:
    """Copy the file's optimizer hyperparameters the schema knows; return the ones dropped."""
    from omegaconf import OmegaConf

    if KERAS_OPTIMIZERS.get(saved.optimizer_class) != cfg.optimizer.name:
        return []
    dropped = []
    for key, value in saved.optimizer_config.items():
        if key == "learning_rate" or f"optimizer.{key}" in user_keys:
            continue
        if key in cfg.optimizer:
            if value is None or isinstance(value, bool | int | float):
                OmegaConf.update(cfg, f"optimizer.{key}", value, merge=False)
        elif value not in (None, False) and key not in IGNORED_OPTIMIZER_KEYS:
            dropped.append(f"{key}={value}")
    return dropped


def base_learning_rate(cfg, saved: KerasFile, user_keys: set[str]) -> str:
    """Set ``optimizer.learning_rate`` from the file unless given; say where it came from."""
    if "optimizer.learning_rate" in user_keys:
        return "from --set"
    rate = saved.optimizer_config.get("learning_rate")
    if isinstance(rate, dict) and isinstance(rate.get("config"), dict):
        for key in BASE_RATE_KEYS:
            value = rate["config"].get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                cfg.optimizer.learning_rate = float(value)
                return f"the file's schedule parameter {key!r}"
    if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0:
        cfg.optimizer.learning_rate = float(rate)
        return (
            "the file's learning rate when it was saved; a LearningRateScheduler callback may "
            "have lowered it: give the base rate with --set optimizer.learning_rate=..."
        )
    return "conf default (set it with --set optimizer.learning_rate=...)"


# --------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    from trainer.runs.run_dir import refuse_new_run_in

    source = existing_path(args.model_file)
    if not source.is_file():
        raise UserError(f"{args.model_file!r} is not a file")
    if source.suffix not in (".keras", ".h5", ".hdf5"):
        raise UserError(f"{args.model_file!r}: expected a .keras or .h5 model file")
    out = Path(args.out).expanduser().absolute()
    if out.exists():
        raise UserError(f"{args.out!r} already exists; rescue writes a new run directory")
    refuse_new_run_in(out, "OUT")  # not inside a checkpoint, a run or a sweep
    if args.step is not None and not 0 <= args.step <= MAX_GLOBAL_STEP:
        raise UserError(f"--step must be in [0, {MAX_GLOBAL_STEP}], got {args.step}")

    saved = read_keras_file(source)
    step_in_file = file_step(saved.optimizer_variables)  # refused now if it is not a step
    from trainer.startup import compose_config, import_tensorflow, import_user_modules

    _, keras = import_tensorflow()
    from trainer.models.keras_builtin import check_keras_config

    check_keras_config(saved.model_config)  # before Keras sees any of it

    user_keys = _override_keys(args.overrides)
    optimizer_overrides, optimizer_source = optimizer_from_file(saved, user_keys)
    cfg = compose_config(
        schedule_overrides(args.schedule) + optimizer_overrides + list(args.overrides)
    )
    from omegaconf import OmegaConf

    from trainer.config import validate

    OmegaConf.set_struct(cfg, False)
    cfg.imports = list(cfg.get("imports") or []) + list(args.imports)
    import_user_modules(list(cfg.imports))
    dropped = apply_file_hyperparameters(cfg, saved, user_keys)
    rate_source = base_learning_rate(cfg, saved, user_keys)
    cfg.checkpoint.dir = str(out)

    from trainer.build import build_run, run_length
    from trainer.data.pipeline import load_data
    from trainer.models.keras_builtin import NAME as MODEL_NAME
    from trainer.models.keras_builtin import plain_config, without_output_softmax
    from trainer.optim.schedules import schedule_value
    from trainer.training.state import LoopState

    # The architecture, as a config of built-ins, and the weights.
    if saved.kind == "keras":
        keras_config = saved.model_config
        loaded = None
    else:  # legacy .h5: Keras' legacy loader turns its config into the current format
        loaded = _load_legacy(keras, source)
        keras_config = plain_config(loaded)
        check_keras_config(keras_config)
    keras_config, softmax_note = without_output_softmax(keras_config)
    cfg.model = {"name": MODEL_NAME, "keras_config": keras_config}
    validate(cfg)

    info = load_data(dict(cfg.dataset), seed=cfg.seed).info
    # The step the model reached, and a run long enough to go on from it.
    variables = saved.optimizer_variables
    step = args.step if args.step is not None else (step_in_file or 0)
    steps_per_epoch = info.steps_per_epoch
    total_steps = run_length(cfg.trainer, steps_per_epoch)
    if step >= total_steps:
        raise UserError(
            f"the model has trained {step} steps and the run is {total_steps} steps "
            f"(trainer.epochs={cfg.trainer.epochs} at {steps_per_epoch} steps per epoch, "
            f"trainer.max_steps={cfg.trainer.max_steps}): nothing would be left to train; "
            "set a longer run with --set trainer.epochs=N"
        )
    run = build_run(cfg, info)
    model, resolved = run.model, run.resolved_schedule
    if loaded is None:
        try:  # the weights file extracted from the zip and checked, not the zip again
            model.load_weights(saved.weights_file or source)
        except Exception as error:  # Keras raises ValueError, KeyError, OSError...
            raise UserError(
                f"cannot load the weights of {args.model_file!r}: {_first_line(error)}"
            ) from None
    else:
        model.set_weights(loaded.get_weights())
    moments = _restore_optimizer(run.optimizer, variables, step)
    learning_rate = schedule_value(run.schedule, step)

    # The checkpoint, written as training writes one.
    state = LoopState(
        epoch=step // steps_per_epoch,
        batches_done=step % steps_per_epoch,
        epochs_completed=step // steps_per_epoch,
    )
    checkpoint_path = write_rescued_run(out, cfg, run, info, state, source)

    imports = list(cfg.imports)
    resume = f"python train.py +resume={out}" + (
        f" 'imports=[{','.join(imports)}]'" if imports else ""
    )
    result = {
        "source": str(source),
        "keras_version": saved.keras_version,
        "file_optimizer": saved.optimizer_class,
        "file_learning_rate": describe_file_schedule(saved),
        "checkpoint": str(checkpoint_path),
        "global_step": step,
        "step_source": "--step"
        if args.step is not None
        else ("file" if step_in_file is not None else "none"),
        "optimizer": cfg.optimizer.name,
        "optimizer_source": optimizer_source,
        "optimizer_moments": moments,
        "dropped_optimizer_settings": dropped,
        "learning_rate": float(cfg.optimizer.learning_rate),
        "learning_rate_source": rate_source,
        "resolved_schedule": dict(resolved),
        "learning_rate_at_step": learning_rate,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "softmax_removed": softmax_note,
        "resume_command": resume,
    }
    if args.json:
        print_json(result)
        return OK
    print(
        f"Read {source} (Keras {saved.keras_version or '?'}): "
        f"{keras_config.get('class_name')} model of built-in layers, "
        f"{model.count_params():,} parameters; the file's optimizer "
        f"{saved.optimizer_class or '-'} with {result['file_learning_rate']} "
        "(read as data, never run)"
    )
    if softmax_note:
        print(f"Model: {softmax_note}; this trainer trains on logits (predictions are unchanged)")
    print(f"Optimizer: {cfg.optimizer.name} ({optimizer_source}); moments: {moments}")
    if dropped:
        print(f"  not supported here, dropped: {', '.join(dropped)}")
    print(
        f"Schedule: {json.dumps(dict(resolved))} at {steps_per_epoch} steps per epoch, "
        f"{total_steps} steps in all; base learning rate {cfg.optimizer.learning_rate:g} "
        f"({rate_source})"
    )
    print(f"Step {step} ({result['step_source']}): learning rate {learning_rate:.6g}")
    print(f"Checkpoint: {checkpoint_path}")
    print(f"Resume with: {resume}")
    return OK


def write_rescued_run(out: Path, cfg, run, info, state, source: Path) -> Path:
    """Create the run directory ``out`` and write the checkpoint and ``config.yaml`` into it,
    holding its lock as training does; return the checkpoint. On any failure ``out`` is
    removed again: it did not exist before."""
    from trainer.runs.run_dir import RunDirectory
    from trainer.training.checkpointer import RunCheckpointer

    with storage_errors(f"create OUT {str(out)!r}"):
        try:
            out.mkdir(parents=True)  # ours from here: created by this process
        except FileExistsError:
            raise UserError(
                f"{str(out)!r} already exists; rescue writes a new run directory"
            ) from None
    try:
        with RunDirectory(out, new=True, label="OUT").writing(report=_to_stderr):
            checkpointer = RunCheckpointer(
                out,
                cfg,
                run,
                info,
                manifest_extra={"rescued_from": str(source.absolute())},
                report=_to_stderr,
            )
            checkpoint_path = checkpointer.save(state, {})
            checkpointer.close()
            checkpointer.write_run_config()
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return checkpoint_path


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _load_legacy(keras, source: Path):
    try:
        return keras.saving.load_model(source, compile=False, safe_mode=True)
    except Exception as error:
        raise UserError(f"cannot read the model of {str(source)!r}: {_first_line(error)}") from None


def _restore_optimizer(optimizer, variables: list[Any] | None, step: int) -> str:
    """Put the file's moments into the rebuilt optimizer when they fit; set the step."""
    import numpy as np

    from trainer.optim.optimizers import step_counter

    ours = optimizer.variables
    candidates = [variables] if variables else []
    if variables and len(variables) > 1 and np.shape(variables[1]) == ():
        # An optimizer with a fixed rate (e.g. driven by a LearningRateScheduler
        # callback) also saves its learning_rate variable, after the step.
        candidates.append(variables[:1] + variables[2:])
    fitting = [
        candidate
        for candidate in candidates
        if len(candidate) == len(ours)
        and all(
            tuple(np.shape(saved)) == tuple(mine.shape)
            for saved, mine in zip(candidate, ours, strict=True)
        )
    ]
    if fitting:
        for saved, mine in zip(fitting[0][1:], ours[1:], strict=True):
            mine.assign(np.asarray(saved, dtype=mine.dtype))
        restored = f"restored from the file ({len(ours) - 1} variables)"
    elif variables:
        restored = (
            f"start fresh (the file holds {len(variables)} optimizer variables, "
            f"{optimizer.name} here has {len(ours)})"
        )
    else:
        restored = "start fresh (the file holds no optimizer state)"
    step_counter(optimizer).assign(step)
    return restored
