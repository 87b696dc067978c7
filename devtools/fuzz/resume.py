"""The resume path, in-process, and what a correct resume restores.

:meth:`ResumePath.resume` does what ``python train.py +resume=PATH`` does up to
its first training step, minus loading the data and taking the run
directory's lock (which writes a lock file): plan the start on manifests and
sizes, re-plan with hashes if the chosen checkpoint does not verify
(``trainer.planning.plan_and_import_tensorflow``; ``plan_start`` checks the
resumed config), build the run (``trainer.build.build_run``), restore into it
(``trainer.training.restore.restore``:
``restore_state`` and the loop state), and make the loop settings and the
config a resumed run saves. The data's shape and size are the dataset's, not
the checkpoint's: they are taken from the pristine source run.

:func:`judge_resume` checks a result against the case's expectation: a benign
change resumes exactly as the pristine checkpoint does; a change that must be
refused is not resumed from; any resume restores exactly the arrays its
checkpoint's files hold, and a loop state of the right types and ranges.

TensorFlow is imported when a :class:`ResumePath` is made, not before.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from checkpoints.layout import MODEL_FILE, OPTIMIZER_FILE, STATE_FILE
from devtools.fuzz.oracle import WRONG, Judgement, Reader
from devtools.fuzz.source import CaseDirs, SourceRun


@dataclass
class Restored:
    """What a resume restored, as plain arrays."""

    checkpoint: Path
    model: dict[str, np.ndarray]  # h5 path -> array, as the restored model saves its weights
    optimizer: list[np.ndarray]  # optimizer.variables in order
    rng: list[np.ndarray]  # the seed generators' states in order
    loop: Any  # trainer.training.state.LoopState
    config_yaml: str  # the config the resumed run saves (resolved, as its checkpointer does)

    def __repr__(self) -> str:  # searched for leaks: the config and the state, not the arrays
        return f"Restored({self.checkpoint}, {self.loop!r}, {self.config_yaml!r})"


class ResumePath:
    """``train.py +resume=`` in-process, for one fuzz session (TensorFlow imported once)."""

    def __init__(self, source: SourceRun, scratch: Path) -> None:
        from checkpoints import read_manifest
        from trainer.data.pipeline import DataInfo
        from trainer.startup import compose_config, import_tensorflow

        import_tensorflow()
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        newest = source.checkpoints[-1]
        self.base_cfg = compose_config([f"+resume={newest}"])
        manifest = read_manifest(newest)
        steps = int(manifest["steps_per_epoch"])
        batch = int(self.base_cfg.dataset.batch_size)
        self.info = DataInfo(
            name=str(self.base_cfg.dataset.name),
            input_shape=tuple(manifest["input_shape"]),
            num_classes=int(manifest["num_classes"]),
            train_examples=steps * batch,
            validation_examples=0,
            test_examples=0,
            batch_size=batch,
            steps_per_epoch=steps,
        )

    def resume(self, target: Path) -> Restored:
        from omegaconf import OmegaConf

        from checkpoints import verify
        from checkpoints.state import seed_generator_variables
        from trainer.runs.resume import plan_start
        from trainer.training.checkpointer import run_config_yaml
        from trainer.training.distribute import Distribution
        from trainer.training.loop import LoopSettings
        from trainer.training.restore import build_planned_run, restore

        cfg = OmegaConf.create(OmegaConf.to_container(self.base_cfg))
        cfg.resume = str(target)
        plan = plan_start(cfg, [], hashes=False)
        if plan.checkpoint is not None and not verify(plan.checkpoint.path).valid:
            plan = plan_start(cfg, [], hashes=True)
        run = build_planned_run(plan, self.info)
        distribution = Distribution(strategy=None)
        state = restore(plan, run, distribution, bool(plan.cfg.trainer.scale_lr_with_replicas))
        LoopSettings.from_config(plan.cfg, run)
        config_yaml = run_config_yaml(plan.cfg, run.resolved_schedule)
        saved = self.scratch / f"restored-{os.getpid()}.weights.h5"
        run.model.save_weights(saved, overwrite=True)
        return Restored(
            checkpoint=Path(plan.checkpoint.path),
            model=_h5_arrays(saved),
            optimizer=[np.asarray(v) for v in run.optimizer.variables],
            rng=[np.asarray(v) for v in seed_generator_variables(run.model)],
            loop=state,
            config_yaml=config_yaml,
        )

    def reader(
        self, dirs: CaseDirs, target: Path, expect: str, reference: Restored, limit: float
    ) -> Reader:
        """The resume path as a Reader of the oracle, judged by :func:`judge_resume`."""
        return Reader(
            "resume",
            lambda: self.resume(target),
            judge=lambda restored, out, err: judge_resume(restored, expect, dirs, reference),
            may_refuse=expect != "benign",
            limit=limit,
        )


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: (
                found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return found


def _same(held: Any, restored: np.ndarray) -> bool:
    """Whether the file's value ``held`` is what was restored, after the cast a restore does."""
    held = np.asarray(held)
    if held.shape != restored.shape:
        return False
    try:
        with np.errstate(all="ignore"):
            held = held.astype(restored.dtype)
    except (TypeError, ValueError):
        return False
    return bool(np.array_equal(held, restored, equal_nan=restored.dtype.kind in "fc"))


def _is_same_dir(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def judge_resume(restored: Restored, expect: str, dirs: CaseDirs, reference: Restored) -> Judgement:
    """What is wrong with a resume, given what the case expects (see the module docstring)."""
    from_newest = _is_same_dir(restored.checkpoint, dirs.newest)
    if expect == "refuse" and from_newest:
        return WRONG, "resumed from a checkpoint whose change must be refused"
    if expect == "benign":
        if not from_newest:
            return WRONG, f"a benign change made the resume use {restored.checkpoint.name}"
        problem = differences(restored, reference)
        return (WRONG, f"a benign change altered the resume: {problem}") if problem else None
    problem = differs_from_files(restored) or malformed_loop_state(restored.loop)
    return (WRONG, problem) if problem else None


def differences(restored: Restored, reference: Restored) -> str | None:
    """How ``restored`` differs from the reference resume of the pristine checkpoint."""
    if restored.model.keys() != reference.model.keys():
        return "other model variables"
    for name, value in reference.model.items():
        if not _same(restored.model[name], value):
            return f"model variable {name} differs"
    for what, ours, theirs in (
        ("optimizer variable", restored.optimizer, reference.optimizer),
        ("RNG state", restored.rng, reference.rng),
    ):
        if len(ours) != len(theirs):
            return f"{len(ours)} {what}s, not {len(theirs)}"
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            if not _same(a, b):
                return f"{what} {index} differs"
    if restored.loop != reference.loop:
        return f"loop state {restored.loop!r}"
    return None


def differs_from_files(restored: Restored) -> str | None:
    """Where the restored arrays are not exactly what the checkpoint's files hold."""
    import json

    import h5py

    path = restored.checkpoint
    with h5py.File(path / MODEL_FILE, "r") as handle:
        for name, value in restored.model.items():
            item = handle.get(name)
            if not isinstance(item, h5py.Dataset) or not _same(item[()], value):
                return f"model variable {name} is not what {MODEL_FILE} holds"
    with h5py.File(path / OPTIMIZER_FILE, "r") as handle:
        for index, value in enumerate(restored.optimizer):
            item = handle.get(str(index))
            if not isinstance(item, h5py.Dataset) or not _same(item[()], value):
                return f"optimizer variable {index} is not what {OPTIMIZER_FILE} holds"
    rng = json.loads((path / STATE_FILE).read_bytes()).get("rng", [])  # bytes: a BOM, as the reader
    for index, value in enumerate(restored.rng):
        if not _same(np.asarray(rng[index]["state"]), value):
            return f"RNG state {index} is not what {STATE_FILE} holds"
    return None


COUNTERS = (
    "epoch",
    "batches_done",
    "epochs_completed",
    "epochs_without_improvement",
    "epochs_since_lr_cut",
)


def malformed_loop_state(loop: Any) -> str | None:
    """What in a restored loop state a training loop could not continue from, or None."""

    def number(value: Any) -> bool:
        real = isinstance(value, int | float) and not isinstance(value, bool)
        return real and math.isfinite(value)

    for name in COUNTERS:
        value = getattr(loop, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return f"resumed with loop state {name} = {value!r}"
    if loop.best is not None and not number(loop.best):
        return f"resumed with loop state best = {loop.best!r}"
    if not (number(loop.lr_scale) and loop.lr_scale > 0):
        return f"resumed with loop state lr_scale = {loop.lr_scale!r}"
    if not isinstance(loop.stopped_early, bool):
        return f"resumed with loop state stopped_early = {loop.stopped_early!r}"
    if not (isinstance(loop.history, list) and all(isinstance(h, dict) for h in loop.history)):
        return f"resumed with loop state history = {str(loop.history)[:60]}"
    return None
