"""``KeepPolicy``: which checkpoints of a run survive pruning (pure, no I/O).

No TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from checkpoints.manifest import Checkpoint


@dataclass(frozen=True)
class KeepPolicy:
    """Which checkpoints survive pruning.

    The ``keep_last`` newest, the ``keep_best`` best by ``monitor`` (``mode`` max
    or min), one every ``keep_every_n_steps`` steps, whatever a pointer names,
    and always the newest valid one.
    """

    keep_last: int = 3
    keep_best: int = 1
    keep_every_n_steps: int | None = None
    monitor: str = "val_accuracy"
    mode: str = "max"

    @classmethod
    def from_config(cls, checkpoint_cfg: Mapping[str, Any]) -> KeepPolicy:
        """The policy of a config's ``checkpoint`` section."""
        return cls(**{key: checkpoint_cfg[key] for key in cls.__dataclass_fields__})

    def score(self, manifest: Mapping[str, Any]) -> float | None:
        value = (manifest.get("metrics") or {}).get(self.monitor)
        if not isinstance(value, (int, float)):
            return None
        return float(value) if self.mode == "max" else -float(value)

    def to_remove(self, checkpoints: Iterable[Checkpoint], protected: Iterable[str]) -> list[Path]:
        """The checkpoints to delete, given all of a run's (verified or not) and pointer names."""
        ordered = sorted(checkpoints, key=lambda c: c.global_step)
        keep = set(protected)
        keep.update(c.path.name for c in ordered[-self.keep_last :])
        valid = [c for c in ordered if c.valid]
        if valid:
            keep.add(valid[-1].path.name)
        # Best first; on a tie the earlier checkpoint, as the `best` pointer keeps it.
        scored = [(self.score(c.manifest), c.global_step, c.path.name) for c in valid]
        scored = sorted((s for s in scored if s[0] is not None), key=lambda s: (-s[0], s[1]))
        keep.update(name for _, _, name in scored[: self.keep_best])
        if self.keep_every_n_steps:
            keep.update(
                c.path.name for c in ordered if c.global_step % self.keep_every_n_steps == 0
            )
        return [c.path for c in ordered if c.path.name not in keep]
