"""``conf/schedule/``: the learning-rate schedules' schemas.

Their values are checked by ``trainer.optim.resolve.resolve_schedule`` once the
steps per epoch are known (still before training starts).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ScheduleConfig:
    """Any duration ``<x>_steps`` may be given as ``<x>_epochs`` instead (not both)."""

    name: str = "constant"
    warmup_steps: int | None = None  # linear warmup from 0 to the schedule's start
    warmup_epochs: float | None = None


@dataclass
class CosineConfig(ScheduleConfig):
    name: str = "cosine"
    decay_steps: int | None = None  # None: the rest of the run after warmup
    decay_epochs: float | None = None
    alpha: float = 0.0  # final rate as a fraction of learning_rate


@dataclass
class CosineRestartsConfig(ScheduleConfig):
    name: str = "cosine_restarts"
    first_decay_steps: int | None = None
    first_decay_epochs: float | None = None
    t_mul: float = 2.0  # each period is t_mul times longer than the previous
    m_mul: float = 1.0  # each restart peaks at m_mul times the previous peak
    alpha: float = 0.0


@dataclass
class ExponentialConfig(ScheduleConfig):
    name: str = "exponential"
    decay_steps: int | None = None
    decay_epochs: float | None = None
    decay_rate: float = 0.9  # lr * decay_rate ** (step / decay_steps)
    staircase: bool = False


@dataclass
class InverseTimeConfig(ScheduleConfig):
    name: str = "inverse_time"
    decay_steps: int | None = None
    decay_epochs: float | None = None
    decay_rate: float = 0.5  # lr / (1 + decay_rate * step / decay_steps)
    staircase: bool = False


@dataclass
class PiecewiseConfig(ScheduleConfig):
    name: str = "piecewise"
    boundary_steps: list[int] | None = None
    boundary_epochs: list[float] | None = None
    multipliers: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.01])


@dataclass
class PolynomialConfig(ScheduleConfig):
    name: str = "polynomial"
    decay_steps: int | None = None  # None: the rest of the run after warmup
    decay_epochs: float | None = None
    end_learning_rate: float = 0.0
    power: float = 2.0
    cycle: bool = False


@dataclass
class LinearConfig(ScheduleConfig):
    name: str = "linear"
    decay_steps: int | None = None  # None: the rest of the run after warmup
    decay_epochs: float | None = None
    end_learning_rate: float = 0.0


@dataclass
class StepConfig(ScheduleConfig):
    name: str = "step"
    every_steps: int | None = None
    every_epochs: float | None = None
    factor: float = 0.1  # lr * factor ** floor(step / every_steps)


@dataclass
class OneCycleConfig(ScheduleConfig):
    name: str = "one_cycle"
    total_steps: int | None = None  # None: the rest of the run after warmup
    total_epochs: float | None = None
    pct_start: float = 0.3  # fraction of the cycle spent rising to learning_rate
    div_factor: float = 25.0  # starts at learning_rate / div_factor
    final_div_factor: float = 1e4  # ends at learning_rate / (div_factor * final_div_factor)
