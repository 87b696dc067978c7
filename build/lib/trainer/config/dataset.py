"""``conf/dataset/``: the dataset options' schemas and their value checks.

What depends on the data itself (image sizes, classes) is checked when the data is
loaded (``trainer.data.pipeline.load_data``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainer.config.checks import int_or_none, is_int, is_number, plain_data, positive_int, require


@dataclass
class DatasetConfig:
    name: str = "digits"
    data_dir: str | None = None  # None: TFDS' default, ~/tensorflow_datasets
    batch_size: int = 32
    validation_split: float = 0.1  # fraction of the train split held out
    shuffle_buffer: int | None = None  # None: shuffle the whole split; 0: no shuffling
    cache: bool = True
    download: bool = True  # catalog datasets only; digits never downloads
    limit_train_examples: int | None = None  # the first N training examples only (debug=overfit)


@dataclass
class FolderDatasetConfig(DatasetConfig):
    """``dataset=folder``: one subfolder of images per class (``trainer.data.folder``)."""

    name: str = "folder"
    path: str | None = None  # the folder (required); on resume it may move, the files the same
    image_size: list[int] = field(default_factory=lambda: [32, 32])  # [height, width]
    channels: int | None = None  # 1 or 3; None: from the images (all must agree)
    test_split: float = 0.2  # fraction held out as test when there is no test/ subfolder


@dataclass
class TfdsDatasetConfig(DatasetConfig):
    """``dataset=tfds``: any TFDS image classification dataset, by its catalog name."""

    name: str = "tfds"
    tfds_name: str | None = None  # required: mnist, tf_flowers, oxford_flowers102, "name/config"
    tfds_train_split: str = "train"  # TFDS split names; slices too: "train[:80%]"
    tfds_test_split: str = "test"  # e.g. "train[80%:]" for a dataset with one split
    image_key: str = "image"
    label_key: str = "label"
    image_size: list[int] | None = None  # [height, width]; None: the dataset's fixed size


IMAGE_CHANNELS = (1, 3)


def validate_dataset(data: Mapping[str, Any]) -> None:
    """The ``dataset`` section; what depends on the data itself is checked by
    ``trainer.data.pipeline.load_data``."""
    require(
        positive_int(data.get("batch_size")),
        "dataset.batch_size",
        data.get("batch_size"),
        "an integer >= 1",
    )
    split = data.get("validation_split", 0.0)
    require(is_number(split) and 0 <= split < 1, "dataset.validation_split", split, "in [0, 1)")
    buffer = data.get("shuffle_buffer")
    require(
        buffer is None or (is_int(buffer) and buffer >= 0),
        "dataset.shuffle_buffer",
        buffer,
        "null (whole split), 0 (no shuffling) or a positive integer",
    )
    limit = data.get("limit_train_examples")
    require(
        int_or_none(limit),
        "dataset.limit_train_examples",
        limit,
        "null (every training example) or an integer >= 1",
    )
    data_dir = data.get("data_dir")
    require(
        data_dir is None or (isinstance(data_dir, str | os.PathLike) and os.fspath(data_dir) != ""),
        "dataset.data_dir",
        data_dir,
        "a directory path or null (TFDS' default)",
    )
    _validate_dataset_source(data)


def _validate_dataset_source(data: Mapping[str, Any]) -> None:
    """The keys of ``dataset=folder`` and ``dataset=tfds``, checked where present; ``path``
    (folder) and ``tfds_name`` (tfds) are required by their option."""
    required = {"folder": "path", "tfds": "tfds_name"}.get(data.get("name"))
    for key in (
        "path",
        "tfds_name",
        "tfds_train_split",
        "tfds_test_split",
        "image_key",
        "label_key",
    ):
        value = data.get(key)
        if key in data and (value is not None or key == required):
            require(
                isinstance(value, str | os.PathLike) and os.fspath(value).strip() != "",
                f"dataset.{key}",
                value,
                "a non-empty string"
                + (f" (dataset={data.get('name')} needs it)" if key == required else ""),
            )
    size = plain_data(data.get("image_size"))
    if size is not None or data.get("name") == "folder":
        require(
            isinstance(size, list | tuple) and len(size) == 2 and all(map(positive_int, size)),
            "dataset.image_size",
            size,
            "[height, width]: two integers >= 1",
        )
    channels = data.get("channels")
    require(
        channels is None or (is_int(channels) and channels in IMAGE_CHANNELS),
        "dataset.channels",
        channels,
        "1 (grayscale), 3 (RGB) or null (from the images)",
    )
    test = data.get("test_split", 0.0)
    require(is_number(test) and 0 <= test < 1, "dataset.test_split", test, "in [0, 1)")
    validation = data.get("validation_split", 0.0)
    require(
        validation + test < 1,
        "dataset.test_split",
        test,
        f"< 1 - dataset.validation_split ({validation}), to leave examples to train on",
    )
