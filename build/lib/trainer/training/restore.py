"""Build the planned run and restore its checkpoint into it (the build and restore steps
of ``trainer.train.train``).

:func:`build_planned_run` builds the run the start plan's config describes
(``trainer.build.build_run``), with the schedule its checkpoint saved when it
resumes (rule 5 of ``trainer.runs.resume.plan_start``); :func:`restore` puts the
checkpoint's variables into it and gives the loop state to start from (weights
only when fine-tuning); :func:`restored_best_weights` gives early stopping's
best weights back. A fresh run restores nothing.
"""

from __future__ import annotations

from typing import Any

from trainer.build import BuiltRun, build_run
from trainer.errors import UserError
from trainer.runs.resume import StartPlan, describe_resume
from trainer.training.state import LoopState


def build_planned_run(plan: StartPlan, info: Any, distribution: Any = None) -> BuiltRun:
    """``trainer.build.build_run`` for the plan's config and schedule (the saved one when
    resuming); a value a checkpoint saved that cannot be built is one line naming it."""
    try:
        return build_run(
            plan.cfg, info, resolved_schedule=plan.resolved_schedule, distribution=distribution
        )
    except UserError as error:
        if plan.checkpoint is None:
            raise
        raise UserError(f"resuming checkpoint {plan.checkpoint.path}: {error}") from None


def restore(
    plan: StartPlan, run: BuiltRun, distribution: Any, scale_lr_with_replicas: bool
) -> LoopState:
    """The loop state to start from: fresh, or restored with ``run``'s variables from the
    plan's checkpoint (weights only when fine-tuning)."""
    from checkpoints.restore import restore_state

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


def restored_best_weights(plan: StartPlan, run: BuiltRun) -> list[Any] | None:
    """Early stopping's best weights as the plan's checkpoint saved them, or None."""
    from checkpoints.restore import read_best_weights

    if plan.checkpoint is None or plan.fine_tune:
        return None
    return read_best_weights(plan.checkpoint, run.model)
