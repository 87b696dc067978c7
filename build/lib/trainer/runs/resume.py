"""Deciding how a run starts: fresh, resumed, or fine-tuned from a checkpoint.

Nothing read from a checkpoint is executed: its config comes through
``trainer.config.saved.read_checkpoint_config`` (bounded, safe YAML, no
instantiation keys, every section checked against the schemas), and the names
in it are looked up in the project's registries only. ``imports`` is never
taken from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from checkpoints.listing import list_checkpoints, resolve_resume_path
from checkpoints.manifest import Checkpoint, verify
from trainer.config import SAVED_SECTIONS, validate
from trainer.config.saved import read_checkpoint_config
from trainer.data.folder import fingerprint
from trainer.errors import UserError
from trainer.runs.remote_run import location

# Overrides a resumed run may take: they change how long or how it is
# recorded, not what is trained.
RUN_LENGTH_KEYS = ("trainer.epochs", "trainer.max_steps")
ALLOWED_PREFIXES = (
    "trainer.",
    "checkpoint.",
    "paths.",
    "hydra.",
    "hydra/",
    "imports",
    "resume",
    "dataset.data_dir",
    "dataset.download",
    "dataset.path",  # an image folder that moved; rule 7 checks it holds the same files
    "logger",  # where the run logs (trainer.loggers): never from the checkpoint
)
# Overrides that fine-tuning (trainer.fine_tune=true) allows on top.
FINE_TUNE_PREFIXES = ("optimizer", "schedule", "callbacks")
# trainer.* keys that change what a resumed run trains (refused like the model's), but
# that fine-tuning may change: its optimizer is fresh, and the weights are float32 in
# every precision (a loss-scale optimizer's variables are what would not fit).
TRAINER_KEYS_FIXED_ON_RESUME = ("trainer.precision", "trainer.label_smoothing")


@dataclass
class StartPlan:
    """How this run starts: ``checkpoint`` is None for a fresh run."""

    cfg: DictConfig  # the config the run trains with
    checkpoint: Checkpoint | None = None
    fine_tune: bool = False  # restore weights only; fresh optimizer and schedule
    resolved_schedule: dict[str, Any] | None = None  # the saved one, kept unless restretched
    in_place: bool = False  # continues writing into the checkpoint's own run directory


def override_keys(overrides: Iterable[str]) -> list[str]:
    """The config keys of Hydra command-line overrides (``+a.b=1`` -> ``a.b``)."""
    keys = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        keys.append(key)
    return keys


def refused_overrides(
    keys: Iterable[str], cfg: DictConfig, saved: Mapping[str, Any], fine_tune: bool
) -> list[str]:
    """The override keys that would change what a resumed run trains.

    An override whose value equals the checkpoint's is not a change: re-running
    the run's own command with ``+resume=`` added is allowed.
    """
    allowed = ALLOWED_PREFIXES + (FINE_TUNE_PREFIXES if fine_tune else ())
    fixed = () if fine_tune else TRAINER_KEYS_FIXED_ON_RESUME
    saved_cfg = OmegaConf.create(dict(saved))
    refused = []
    for key in keys:
        if key not in fixed and _is_allowed(key, allowed):
            continue
        ours = OmegaConf.select(cfg, key, default=None)
        theirs = OmegaConf.select(saved_cfg, key, default=None)
        # A whole group (`dataset=folder`) is compared without its allowed keys
        # (dataset.path): re-running the run's command with a new path is no change.
        ours, theirs = _as_plain_data(ours, key, allowed), _as_plain_data(theirs, key, allowed)
        if ours != theirs:
            refused.extend(_differing_keys(key, ours, theirs))
    return refused


def _differing_keys(key: str, ours: Any, theirs: Any) -> list[str]:
    """``[key]``, or for two sections of the same option (``name``) the keys inside them
    that differ: what to fix."""
    sections = isinstance(ours, dict) and isinstance(theirs, dict)
    if not sections or ours.get("name") != theirs.get("name"):
        return [key]
    inner = []
    for name in sorted(set(ours) | set(theirs), key=str):
        if ours.get(name) != theirs.get(name):
            inner.extend(_differing_keys(f"{key}.{name}", ours.get(name), theirs.get(name)))
    return inner


def _is_allowed(key: str, allowed: Iterable[str]) -> bool:
    return any(key == p.rstrip(".") or key.startswith(p) for p in allowed)


def _as_plain_data(value: Any, key: str, allowed: Iterable[str]) -> Any:
    """``value`` (at ``key``) as plain data, leaving out the keys inside it that are
    ``allowed`` to change."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {
            k: _as_plain_data(v, f"{key}.{k}", allowed)
            for k, v in value.items()
            if not _is_allowed(f"{key}.{k}", allowed)
        }
    return value


def plan_start(
    cfg: DictConfig,
    overrides: list[str],
    report: Callable[[str], None] = print,
    *,
    hashes: bool = True,
) -> StartPlan:
    """Decide how to initialise training; the numbered rules below are the whole policy.

    1. No ``resume`` key: a fresh run with the composed config.
    2. ``resume=PATH``: PATH is a checkpoint (used exactly, if it verifies) or a
       run directory (its newest checkpoint that verifies; broken ones are
       reported and skipped).
    3. The checkpoint's own config is what the run trains with: model,
       optimizer, schedule, dataset, seed and callbacks come from it, not from conf/.
    4. Command-line overrides may change trainer.* and checkpoint.* (run length,
       saving); overrides that change the model, optimizer, schedule, dataset,
       augment, seed or :data:`TRAINER_KEYS_FIXED_ON_RESUME` (a value other than
       the checkpoint's) are refused with the keys named, unless
       ``trainer.fine_tune=true``, which
       keeps the weights and starts a fresh optimizer and schedule from the
       command line (the model must still match; the precision and label smoothing may change).
    5. The schedule keeps the step counts resolved when the run started, so
       extending ``trainer.epochs`` continues past its end as the schedule
       defines; ``trainer.restretch_schedule=true`` re-fits it to the new length.
    6. A resumed run keeps writing into the checkpoint's run directory, unless
       ``checkpoint.dir`` is given (a branch); resuming an older checkpoint of a
       run in place is refused, as it would overwrite newer ones. A fine-tuned
       run starts a new directory.
    7. The data is the checkpoint's: ``dataset.path`` (an image folder) may be given
       anew when the images moved, but the files must be the same: a checkpoint
       records the fingerprint of the folder's files (sorted relative paths and
       sizes, ``trainer.data.folder``), and a folder that differs is refused.

    ``hashes=False`` verifies checkpoints by manifest and file sizes only; the
    caller must then confirm the chosen one with a full ``verify`` before
    restoring it (``trainer.train`` does so while TensorFlow imports).
    """
    if cfg.get("resume") is None:  # rule 1
        return StartPlan(cfg=cfg)
    checkpoint = resolve_resume_path(cfg.resume, report, hashes=hashes)  # rule 2
    saved = read_checkpoint_config(checkpoint)
    fine_tune = bool(cfg.trainer.fine_tune)
    keys = override_keys(overrides)
    refused = refused_overrides(keys, cfg, saved, fine_tune)  # rule 4
    if refused:
        hint = (
            ""
            if fine_tune or any(k.startswith("model") for k in refused)
            else "; to change the optimizer or schedule and keep the weights, add "
            "trainer.fine_tune=true"
        )
        raise UserError(
            f"cannot override {', '.join(refused)} when resuming: the run continues with its "
            f"checkpoint's config{hint}"
        )
    merged = OmegaConf.create({k: saved[k] for k in SAVED_SECTIONS})  # rule 3
    merged.seed = saved.get("seed", cfg.seed)
    # The checkpoint's callback names and arguments, built from this command line's
    # registry (trainer.training.callbacks); none in a checkpoint from before they existed.
    merged.callbacks = saved.get("callbacks") or []
    merged.imports = list(cfg.imports)  # never from the checkpoint
    if cfg.get("paths") is not None:  # where this command writes: never from the checkpoint
        merged.paths = cfg.paths
    if cfg.get("logger") is not None:  # where this command logs: never from the checkpoint
        merged.logger = cfg.logger
    merged.resume = str(checkpoint.path)
    if fine_tune:
        merged.optimizer = cfg.optimizer
        merged.schedule = cfg.schedule
        merged.callbacks = cfg.get("callbacks") or []
    for key in keys:  # allowed overrides take the value composed from the command line
        if key.startswith(("trainer.", "checkpoint.", "dataset.")):
            OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False)
    # One-off choices of this resume, never inherited from the checkpoint.
    merged.trainer.fine_tune = fine_tune
    merged.trainer.restretch_schedule = bool(cfg.trainer.restretch_schedule)
    check_same_data(merged.dataset, checkpoint)  # rule 7
    if fine_tune:
        merged.checkpoint.dir = cfg.checkpoint.dir  # rule 6
        return StartPlan(cfg=_checked(merged, checkpoint), checkpoint=checkpoint, fine_tune=True)
    run_dir = Path(checkpoint.path).parent.resolve()
    target = run_dir
    if "checkpoint.dir" in keys and cfg.checkpoint.dir:
        target = Path(cfg.checkpoint.dir).expanduser().resolve()
    in_place = target == run_dir
    if in_place:
        newer = [
            p
            for p in list_checkpoints(run_dir)
            if Checkpoint(p).global_step > checkpoint.global_step
        ]
        newer_valid = [p.name for p in newer if verify(p).valid]
        if newer_valid:
            raise UserError(
                f"checkpoint {checkpoint.path} is not the newest of its run ({newer_valid[-1]} "
                "is); continuing it there would overwrite newer checkpoints: add "
                "checkpoint.dir=NEW_DIR to branch off into a new directory"
            )
    merged.checkpoint.dir = str(target)
    restretch = bool(merged.trainer.restretch_schedule)
    _checked(merged, checkpoint)
    return StartPlan(
        cfg=merged,
        checkpoint=checkpoint,
        resolved_schedule=None if restretch else saved["resolved_schedule"],  # rule 5
        in_place=in_place,
    )


def check_same_data(dataset_cfg: Mapping[str, Any], checkpoint: Checkpoint) -> None:
    """Rule 7: refuse, in one line, a dataset whose files differ from those ``checkpoint``
    was trained on (when it recorded a fingerprint: image folders)."""
    saved = (checkpoint.manifest or {}).get("data_fingerprint")
    if saved is None:
        return
    try:
        current = fingerprint(dataset_cfg)
    except UserError as error:
        raise UserError(
            f"resuming checkpoint {checkpoint.path}: {error}; if its images moved, add "
            "dataset=folder dataset.path=FOLDER"
        ) from None
    if current != saved:
        raise UserError(
            f"dataset.path {dataset_cfg.get('path')} does not hold the images checkpoint "
            f"{checkpoint.path} was trained on (its files or their sizes differ); resume with "
            "dataset.path=<a folder with exactly those files>"
        )


def _checked(cfg: DictConfig, checkpoint: Checkpoint) -> DictConfig:
    """``cfg`` (rule 3's config) checked as a fresh run's config is; a bad value is one line
    that names the checkpoint it came from (or the override that changed it)."""
    try:
        validate(cfg)
    except UserError as error:
        raise UserError(f"resuming checkpoint {checkpoint.path}: {error}") from None
    return cfg


def describe_resume(plan: StartPlan, state: Any, step: int) -> None:
    """Say what a resumed run continues from, and which schedule rule (5) applies."""

    where = location(plan.checkpoint.path)  # a checkpoint downloaded from a URL: the URL
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
