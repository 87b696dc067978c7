"""The training loop's resumable state: where it is, and what its callbacks decided.

:class:`LoopState` is everything about the loop's progress that a resumed run
needs besides the variables: the position (epoch, batches done), the best
monitored value, early stopping's and reduce-on-plateau's counters, the users'
callbacks' states and the epoch's running metrics. It is saved with every
checkpoint (``trainer_state.json``, ``loop``; read back bounded and typed by
``checkpoints.reading``) and given back to ``trainer.training.loop.TrainingLoop``
when a run resumes. Plain data: importing this module does not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LoopState:
    """Everything about the loop's progress that a resumed run needs besides the variables."""

    epoch: int = 0  # the epoch in progress (0-based)
    batches_done: int = 0  # batches of that epoch already trained on
    epochs_completed: int = 0
    best: float | None = None  # best value of checkpoint.monitor so far
    epochs_without_improvement: int = 0  # early stopping's counter (Keras' `wait`)
    early_stopping_best: float | None = None  # best value of early stopping's monitor
    early_stopping_best_epoch: int = 0
    epochs_since_lr_cut: int = 0  # reduce-on-plateau's counter (Keras' `wait`)
    plateau_best: float | None = None  # best value of reduce-on-plateau's monitor
    plateau_cooldown: int = 0  # epochs of cooldown left after a cut
    lr_scale: float = 1.0  # reduce-on-plateau's current factor on the schedule
    stopped_early: bool = False  # by early stopping or a callback's model.stop_training
    history: list[dict[str, float]] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # users' get_state()s
    # The variables (totals, counts) of the epoch's running loss and accuracy, so an epoch
    # resumed mid-way reports (and its callbacks see) what the uninterrupted one does.
    epoch_metrics: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoopState:
        """The state a checkpoint saved. One written before early stopping and
        reduce-on-plateau had monitors of their own shared ``best`` (checkpoint.monitor,
        Keras' rule with min_delta 0): both continue from it."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for own_best in ("early_stopping_best", "plateau_best"):
            known.setdefault(own_best, data.get("best"))
        return cls(**known)
