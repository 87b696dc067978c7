"""What a dataset source hands the pipeline: :class:`Splits` of decoded examples.

Every source registered in ``trainer.data.sources.DATASETS`` (a TFDS dataset,
``trainer.data.tfds``; an image folder, ``trainer.data.folder_images``) is a
:class:`DatasetSource`: its ``splits`` returns uint8 images with int64 labels in
a fixed (file) order, and everything after that (``trainer.data.pipeline``:
caching, the per-epoch order, batching) is the same for all of them. The image
helpers here are the ones both kinds of source resize with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Splits:
    """What a dataset source yields: decoded (uint8 image, int64 label) examples in a fixed
    (file) order, their counts, and what the model needs to know."""

    train: tf.data.Dataset
    validation: tf.data.Dataset | None  # None: no validation set
    test: tf.data.Dataset
    counts: tuple[int, int, int]  # train, validation, test examples
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...] | None = None
    fingerprint: str | None = None  # of the files read (image folders), checked on resume


class DatasetSource(Protocol):
    """What ``DATASETS`` holds: an object that loads the splits a dataset config names."""

    def splits(self, dataset_cfg: Mapping[str, Any]) -> Splits: ...


def resized(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """``image`` (uint8, HWC) resized to ``size`` (height, width), still uint8: bilinear with
    antialiasing (a large photo shrunk to 32x32 keeps its content, not aliasing)."""
    image = tf.image.resize(image, size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def plain_size(size: Any) -> tuple[int, int] | None:
    """``dataset.image_size`` ([height, width] or null) as a tuple of ints, or None."""
    return None if size is None else (int(size[0]), int(size[1]))
