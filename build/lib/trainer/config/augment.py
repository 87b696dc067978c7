"""``conf/augment/``: training-time augmentation; the schema and its value checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from trainer.config.checks import is_number, positive_int, require


class Flip(StrEnum):  # keras.layers.RandomFlip's modes
    horizontal = "horizontal"
    vertical = "vertical"
    horizontal_and_vertical = "horizontal_and_vertical"


@dataclass
class RandAugmentConfig:
    num_ops: int = 2  # operations applied in turn to each batch
    factor: float = 0.5  # strength in [0, 1]


@dataclass
class AugmentConfig:
    """Training-time augmentation (trainer.data.augment); every transform is off at its zero."""

    name: str = "none"
    flip: Flip | None = None
    translate: float = 0.0  # fraction of height and width, RandomTranslation
    rotate: float = 0.0  # fraction of a full turn, RandomRotation
    zoom: float = 0.0  # fraction of the size, RandomZoom
    rand_augment: RandAugmentConfig | None = None
    mixup_alpha: float = 0.0  # MixUp's Beta(alpha, alpha); 0: off
    cutmix_alpha: float = 0.0  # CutMix's factor: its alpha is drawn from U(0, cutmix_alpha); 0: off
    mix_probability: float = 1.0  # chance that a batch is mixed (MixUp or CutMix)


def validate_augment(augment: Mapping[str, Any]) -> None:
    """The ``augment`` section: fractions, RandAugment's parameters, mixing."""
    for key in ("translate", "rotate", "zoom"):
        value = augment.get(key, 0.0)
        require(is_number(value) and 0 <= value < 1, f"augment.{key}", value, "in [0, 1) (0: off)")
    rand_augment = augment.get("rand_augment")
    if rand_augment is not None:
        require(
            positive_int(rand_augment.get("num_ops")),
            "augment.rand_augment.num_ops",
            rand_augment.get("num_ops"),
            "an integer >= 1",
        )
        factor = rand_augment.get("factor")
        require(
            is_number(factor) and 0 < factor <= 1,
            "augment.rand_augment.factor",
            factor,
            "in (0, 1]",
        )
    for key in ("mixup_alpha", "cutmix_alpha"):  # the bounds Keras' MixUp and CutMix document
        value = augment.get(key, 0.0)
        require(is_number(value) and 0 <= value <= 1, f"augment.{key}", value, "in [0, 1] (0: off)")
    probability = augment.get("mix_probability", 1.0)
    require(
        is_number(probability) and 0 <= probability <= 1,
        "augment.mix_probability",
        probability,
        "in [0, 1]",
    )
