"""``dataset=folder`` as a source: the user's images, decoded and resized by TensorFlow.

The layout, the listing and the split by ``validation_split`` and
``test_split`` are ``trainer.data.folder``'s (no TensorFlow there, so a resume
can check a folder before TensorFlow starts); here the images are decoded
(``tf.io.decode_image``) and resized to ``image_size`` with ``channels``. Every
image is decoded once up front, so a file that is not an image is one line
naming it, never an error in the middle of an epoch.

Our own pipeline rather than keras.utils.image_dataset_from_directory (its
shuffling and validation split are seeded its own way and shuffled per
iteration, not by derive_seed per epoch) or tfds.ImageFolder (it needs train/
and test/ folders and leaves images at their own sizes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from trainer.data.folder import FORMATS, TEST, TRAIN, VALIDATION, read_image_folder
from trainer.data.splits import AUTOTUNE, Splits, plain_size, resized
from trainer.errors import UserError


class ImageFolderSource:
    """``dataset=folder``: the user's images (``trainer.data.folder``), decoded by
    ``tf.io.decode_image`` and resized to ``dataset.image_size``."""

    def splits(self, dataset_cfg: Mapping[str, Any]) -> Splits:
        return _folder_splits(dataset_cfg)


# A decoded image's channels -> the channels of the input when dataset.channels is null:
# an alpha channel is dropped (decode_image converts).
_AUTO_CHANNELS = {1: 1, 2: 1, 3: 3, 4: 3}
_CHANNEL_NAMES = {1: "grayscale", 2: "grayscale with alpha", 3: "RGB", 4: "RGB with alpha"}


def _folder_splits(dataset_cfg: Mapping[str, Any]) -> Splits:
    """``ImageFolderSource.splits``: list and split the folder, decode every image once up
    front (a file that is not an image is refused here, naming it, never mid-epoch),
    settle the channels, and build each split's decoding pipeline."""
    folder = read_image_folder(
        dataset_cfg.get("path"),
        validation_split=dataset_cfg.get("validation_split", 0.0),
        test_split=dataset_cfg.get("test_split", 0.0),
    )
    files = folder.files()
    found = _channels_of(files)
    channels = dataset_cfg.get("channels") or _common_channels(files, found)
    size = plain_size(dataset_cfg.get("image_size"))
    pipelines = {split: _decoded(items, channels, size) for split, items in folder.splits.items()}
    return Splits(
        train=pipelines[TRAIN],
        validation=pipelines.get(VALIDATION),
        test=pipelines[TEST],
        counts=tuple(len(folder.splits.get(s, ())) for s in (TRAIN, VALIDATION, TEST)),
        input_shape=(*size, channels),
        num_classes=len(folder.class_names),
        class_names=folder.class_names,
        fingerprint=folder.fingerprint,
    )


def _channels_of(files: list[Path]) -> list[int]:
    """The channel count of each image in ``files``, decoding each once; a file that cannot
    be read or decoded is a UserError naming it."""
    paths = tf.data.Dataset.from_tensor_slices([os.fspath(file) for file in files])

    def channels(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        return tf.shape(image)[2]

    # deterministic=True: results, and errors, come in the files' order, so the number
    # of counts read before an error says which file failed.
    counts = paths.map(channels, num_parallel_calls=AUTOTUNE, deterministic=True)
    found: list[int] = []
    iterator = iter(counts)
    while True:
        try:
            found.append(int(next(iterator)))
        except StopIteration:
            return found
        except tf.errors.OpError as error:
            raise UserError(
                f"{files[len(found)]} is not an image TensorFlow can decode "
                f"({FORMATS}): {_op_reason(error)}"
            ) from None


def _op_reason(error: tf.errors.OpError) -> str:
    """The first line of a TensorFlow op error, without its ``{{function_node ...}}`` and
    ``[Op:...]`` decorations."""
    text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]", "", str(error.message)).strip()
    return (text.splitlines() or ["unknown error"])[0][:200]


def _common_channels(files: list[Path], found: list[int]) -> int:
    """The input's channels when ``dataset.channels`` is null: the images' own, which must
    agree (up to an alpha channel)."""
    first = _AUTO_CHANNELS[found[0]]
    for file, count in zip(files, found, strict=True):
        if _AUTO_CHANNELS[count] != first:
            raise UserError(
                f"images have mixed channel counts: {files[0]} is {_CHANNEL_NAMES[found[0]]}, "
                f"{file} is {_CHANNEL_NAMES[count]}; set dataset.channels=1 or 3 to convert them"
            )
    return first


def _decoded(
    items: tuple[tuple[Path, int], ...], channels: int, size: tuple[int, int]
) -> tf.data.Dataset:
    """(uint8 image of ``size`` x ``channels``, int64 label) of ``items``, in their order."""
    paths = [os.fspath(file) for file, _ in items]
    labels = np.array([label for _, label in items], dtype=np.int64)

    def decode(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )
        image.set_shape([None, None, channels])
        return resized(image, size), label

    examples = tf.data.Dataset.from_tensor_slices((paths, labels))
    return examples.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
