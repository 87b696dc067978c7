"""Training-time data augmentation (``conf/augment/``): Keras preprocessing layers, seeded
per batch so that a batch's augmentation is a pure function of (seed, batch position).

The ``augment`` section names the transforms; each is off at its zero value:

- ``flip``: ``keras.layers.RandomFlip`` (``horizontal``, ``vertical``,
  ``horizontal_and_vertical``; null: off);
- ``translate``, ``rotate``, ``zoom``: ``RandomTranslation`` (fraction of the
  height and width), ``RandomRotation`` (fraction of a full turn),
  ``RandomZoom`` (fraction of the size), in that order after the flip;
- ``rand_augment``: ``keras.layers.RandAugment`` with ``num_ops`` and
  ``factor`` (null: off), on images in [0, 1] (``value_range=(0, 1)``);
- ``mixup_alpha``, ``cutmix_alpha``: ``keras.layers.MixUp(alpha)`` and
  ``keras.layers.CutMix(factor=alpha)`` (0: off); a batch is mixed with
  probability ``mix_probability``, by one of the two chosen at random (even
  odds) when both are on (timm's ``Mixup`` with ``switch_prob=0.5``, per batch).

Mixing makes soft labels: a mixed batch's labels are the mixed one-hot vectors
(float32, ``num_classes`` wide). The training loss then becomes
``CategoricalCrossentropy`` (see :func:`uses_soft_labels`, ``trainer.training.loop``).

**Seeds.** Keras' layers draw from a ``keras.random.SeedGenerator`` each, a
variable whose state moves on with every draw: inside ``tf.data`` that is
neither resumable nor deterministic under a parallel map, and in the step
that state would have to travel in every checkpoint. Here no layer ever
draws from its own generator: for the duration of one call,
:class:`Augmentation` points every layer's ``generator`` at a
:class:`BatchSeeds`, whose n-th draw is ``[s, n]`` with ``s =
derive_seed(seed, "augment", position)`` (``position``: the batch's index in
the run, ``epoch * steps_per_epoch + batch``). TensorFlow's stateless ops
then make the augmented batch a pure function of (seed, position, batch): no
state to save in a checkpoint, and a run resumed mid-epoch augments each
batch exactly as the uninterrupted run did.

**Where it runs** (``trainer.training.loop.TrainingLoop``), training only: evaluation
never augments, and the model never holds the layers (an exported model has no
augmentation in it). On one device: mapped over the batches of the ``tf.data``
pipeline (parallel, order kept), so the next batch is augmented while the
model trains on this one, as a Keras user feeds ``model.fit``. Under a
``tf.distribute`` strategy: at the top of each replica's step, on its part of
the global batch, position ``position * replicas + replica``. Never inside the
XLA-compiled step: XLA has no kernel for the image transforms
(``ImageProjectiveTransformV3``, on CPU at least).

Why the pipeline on one device: at the top of the step the augmentation (its
seed derivation alone is ~400 scalar ops) ran before the model could start, on
the step's critical path; ``fit`` with the augmentation mapped over its
pipeline overlapped it. The step graphs are otherwise the same, and so is
the CPU time per step (BENCHMARKS.md 1b, where ``mixed_bfloat16`` ResNet runs
measured 0.90 of fit's speed). The stateless seeds make both placements exact:
the batches are the same either way.

This module imports TensorFlow and Keras; ``trainer.config.augment`` checks the section.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import tensorflow as tf

from trainer.seeds import derive_seed, derive_seed_tensor

# The layers compute in float32 whatever the global dtype policy (mixed precision): the
# model receives float32 images in [0, 1], and mixed labels stay float32.
FLOAT32 = "float32"


def uses_soft_labels(augment_cfg: Mapping[str, Any] | None, label_smoothing: float) -> bool:
    """Whether training needs one-hot (soft) labels: mixing or label smoothing is on.

    Off: the training loss stays ``SparseCategoricalCrossentropy`` on the int labels,
    exactly as without this module.
    """
    return mixes(augment_cfg) or float(label_smoothing) > 0


def mixes(augment_cfg: Mapping[str, Any] | None) -> bool:
    """Whether the section turns MixUp or CutMix on (its batches' labels are soft)."""
    if not augment_cfg:
        return False
    alphas = (augment_cfg.get("mixup_alpha") or 0, augment_cfg.get("cutmix_alpha") or 0)
    return any(alpha > 0 for alpha in alphas) and (augment_cfg.get("mix_probability") or 0) > 0


class BatchSeeds(keras.random.SeedGenerator):
    """A seed generator without state: its n-th draw is ``[seed, n]`` (int64).

    ``seed`` is a scalar tensor (one batch's seed). What Keras' random ops do with a
    draw is stateless (``tf.random.stateless_*``), so the draws of one traced call
    are fixed by ``seed`` and the order of the draws, which is the layers' code order.

    Keras accepts a ``SeedGenerator`` wherever it takes a seed and only calls its
    ``next()``; the base class' constructor is not run because it creates the state
    variable this class exists to avoid.
    """

    def __init__(self, seed: tf.Tensor) -> None:  # no super().__init__(): see above
        self.name = "batch_seeds"
        self._seed = tf.cast(seed, tf.int64)
        self._draws = 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        draw = tf.stack([self._seed, tf.constant(self._draws, tf.int64)])
        self._draws += 1
        return draw


class Augmentation:
    """The augmentation of training batches the ``augment`` section describes.

    ``augmentation(images, labels, position)`` returns the augmented batch of the
    ``position``-th batch of the run (an int64 scalar tensor) and its labels: the
    int labels unchanged, or one-hot float32 labels (mixed for a mixed batch) when
    :attr:`soft_labels`. ``images`` are float32 NHWC in [0, 1] and stay so.
    """

    def __init__(
        self,
        augment_cfg: Mapping[str, Any],
        *,
        seed: int,
        num_classes: int,
        soft_labels: bool,
    ) -> None:
        self.seed, self.num_classes = int(seed), int(num_classes)
        self.soft_labels = soft_labels or mixes(augment_cfg)
        # The layers' own generators are never drawn from (see the module docstring); a
        # seed of ours keeps Keras from drawing a default one from Python's `random`.
        unused = derive_seed(self.seed, "augment")
        self.layers = image_layers(augment_cfg, unused)
        self.mixers = mix_layers(augment_cfg, unused)
        self.mix_probability = float(augment_cfg.get("mix_probability") or 0.0)

    def __bool__(self) -> bool:
        """False when it changes nothing (no transform, labels left sparse)."""
        return bool(self.layers or self.mixers or self.soft_labels)

    def __call__(
        self, images: tf.Tensor, labels: tf.Tensor, position: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        seed = derive_seed_tensor(self.seed, "augment", position)
        draws = BatchSeeds(seed)
        with _drawing_from(draws, [*self.layers, *self.mixers]):
            for layer in self.layers:
                images = layer(images, training=True)
            if self.soft_labels:
                labels = tf.one_hot(labels, self.num_classes, dtype=tf.float32)
            if self.mixers:
                images, labels = self._mix(images, labels, draws)
        return images, labels

    def _mix(self, images, labels, draws: BatchSeeds):
        """One of the mixers (even odds), on this batch with probability mix_probability."""
        choice = keras.random.uniform((2,), seed=draws)
        mixed = [
            layer({"images": images, "labels": labels}, training=True) for layer in self.mixers
        ]
        chosen = mixed[0]
        if len(mixed) == 2:
            second = choice[1] >= 0.5
            chosen = {k: tf.where(second, mixed[1][k], mixed[0][k]) for k in ("images", "labels")}
        apply = choice[0] < self.mix_probability
        return (
            tf.where(apply, chosen["images"], images),
            tf.where(apply, chosen["labels"], labels),
        )


@contextlib.contextmanager
def _drawing_from(draws: BatchSeeds, layers: list[keras.layers.Layer]) -> Iterator[None]:
    """Within the block, every layer (sub-layers included) that has a seed generator
    draws from ``draws`` instead; its own generator is put back afterwards."""
    # _flatten_layers (Keras' own walk, the layer itself included): RandAugment draws
    # through its sub-layers, each of which has a generator of its own.
    owners = [
        sub for layer in layers for sub in layer._flatten_layers() if hasattr(sub, "generator")
    ]
    saved = [owner.generator for owner in owners]
    # object.__setattr__: Keras' attribute tracking would adopt the stand-in as a new state.
    for owner in owners:
        object.__setattr__(owner, "generator", draws)
    try:
        yield
    finally:
        for owner, generator in zip(owners, saved, strict=True):
            object.__setattr__(owner, "generator", generator)


def image_layers(augment_cfg: Mapping[str, Any], seed: int) -> list[keras.layers.Layer]:
    """The per-image transforms the section turns on, in the order they run.

    What a shift, turn or zoom uncovers is filled with 0 (black, the digits'
    background), not Keras' default reflection, which mirrors strokes into view.
    """
    layers: list[keras.layers.Layer] = []
    if augment_cfg.get("flip"):
        layers.append(keras.layers.RandomFlip(str(augment_cfg["flip"]), seed=seed, dtype=FLOAT32))
    translate = float(augment_cfg.get("translate") or 0.0)
    if translate > 0:
        layers.append(
            keras.layers.RandomTranslation(
                translate, translate, fill_mode="constant", seed=seed, dtype=FLOAT32
            )
        )
    rotate = float(augment_cfg.get("rotate") or 0.0)
    if rotate > 0:
        layers.append(
            keras.layers.RandomRotation(rotate, fill_mode="constant", seed=seed, dtype=FLOAT32)
        )
    zoom = float(augment_cfg.get("zoom") or 0.0)
    if zoom > 0:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seed, dtype=FLOAT32))
    rand_augment = augment_cfg.get("rand_augment")
    if rand_augment:
        layers.append(
            keras.layers.RandAugment(
                value_range=(0, 1),
                num_ops=int(rand_augment["num_ops"]),
                factor=float(rand_augment["factor"]),
                seed=seed,
                dtype=FLOAT32,
            )
        )
    return layers


def mix_layers(augment_cfg: Mapping[str, Any], seed: int) -> list[keras.layers.Layer]:
    """MixUp and/or CutMix, those the section turns on."""
    if not mixes(augment_cfg):
        return []
    layers: list[keras.layers.Layer] = []
    if (augment_cfg.get("mixup_alpha") or 0) > 0:
        layers.append(
            keras.layers.MixUp(alpha=float(augment_cfg["mixup_alpha"]), seed=seed, dtype=FLOAT32)
        )
    if (augment_cfg.get("cutmix_alpha") or 0) > 0:
        layers.append(
            keras.layers.CutMix(factor=float(augment_cfg["cutmix_alpha"]), seed=seed, dtype=FLOAT32)
        )
    return layers


def build_augmentation(
    augment_cfg: Mapping[str, Any] | None, *, seed: int, num_classes: int, label_smoothing: float
) -> Augmentation | None:
    """The run's :class:`Augmentation`, or None when it would change nothing (so the
    pipeline of a run without augmentation or smoothing is the one it always was)."""
    augmentation = Augmentation(
        augment_cfg or {},
        seed=seed,
        num_classes=num_classes,
        soft_labels=uses_soft_labels(augment_cfg, label_smoothing),
    )
    return augmentation if augmentation else None
