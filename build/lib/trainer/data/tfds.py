"""TFDS datasets as sources: the catalog ones and ``dataset=tfds``, prepared once per data_dir.

- a catalog dataset (``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``) is a
  :class:`DatasetSpec`: its TFDS builder and split names;
- ``tfds``: the TFDS dataset ``tfds_name`` with ``tfds_train_split``,
  ``tfds_test_split``, ``image_key``, ``label_key``, and ``image_size``
  ([height, width], needed when the images vary in size) to resize to
  (:class:`TfdsByName`).

``data_dir`` is the TFDS data directory; ``None`` means TFDS' default
(``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); ``~`` is expanded. A dataset
that is not prepared there is prepared with ``builder.download_and_prepare()``
(TFDS shows its own progress bars, :func:`show_preparation_progress`), one
process at a time per dataset and data_dir; ``download: false`` refuses to
download a catalog dataset that is not prepared. ``digits``
(``trainer.data.digits``, the digits bundled with scikit-learn) never needs the
network and is always prepared.

The validation split is the last ``floor(f * n + 0.5)`` examples of the train
split in TFDS' (fixed) file order (``validation_split`` f).

This module and ``trainer.data.digits`` are the only ones that import
TensorFlow Datasets.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from trainer.data.splits import AUTOTUNE, Splits, plain_size, resized
from trainer.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A TFDS dataset: its builder, splits and feature keys (a catalog dataset's source)."""

    tfds_name: str
    train_split: str = "train"
    test_split: str = "test"
    image_key: str = "image"
    label_key: str = "label"
    needs_network: bool = True  # False: the builder prepares offline

    def splits(self, dataset_cfg: Mapping[str, Any]) -> Splits:
        """The train split (less ``validation_split``: its last examples) and test split,
        images resized to ``dataset_cfg["image_size"]`` when given."""
        return _tfds_splits(self, dataset_cfg)


class TfdsByName:
    """``dataset=tfds``: the TFDS dataset ``dataset.tfds_name`` with the split names and
    feature keys of its config."""

    def splits(self, dataset_cfg: Mapping[str, Any]) -> Splits:
        spec = DatasetSpec(
            dataset_cfg["tfds_name"],
            train_split=dataset_cfg.get("tfds_train_split", "train"),
            test_split=dataset_cfg.get("tfds_test_split", "test"),
            image_key=dataset_cfg.get("image_key", "image"),
            label_key=dataset_cfg.get("label_key", "label"),
        )
        return spec.splits(dataset_cfg)


def show_preparation_progress(show: bool) -> None:
    """Show TFDS' progress bars while a dataset is prepared, or not (in a log file they
    are escape codes; see ``trainer.training.reporting.progress_verbosity``)."""
    tfds.display_progress_bar(show)


def _tfds_splits(spec: DatasetSpec, dataset_cfg: Mapping[str, Any]) -> Splits:
    """``DatasetSpec.splits``: prepare the TFDS dataset, read its features, hold out the
    validation examples."""
    name = dataset_cfg.get("name")
    data_dir = _resolve_data_dir(dataset_cfg.get("data_dir"))
    download = bool(dataset_cfg.get("download", True))
    validation_split = dataset_cfg.get("validation_split", 0.0)
    image_size = plain_size(dataset_cfg.get("image_size"))

    builder = _prepared_builder(name, spec, data_dir, download=download)
    image_feature, label_feature = _features(name, spec, builder)
    input_shape = tuple(image_feature.shape)
    if image_size is not None:
        input_shape = (*image_size, *input_shape[2:])
    if len(input_shape) != 3 or any(dim is None for dim in input_shape):
        raise UserError(
            f"dataset {name!r} (TFDS {spec.tfds_name!r}) has images of varying size "
            f"{tuple(image_feature.shape)}; set dataset.image_size=[height,width] (dataset=tfds) "
            "to resize them"
        )
    train_all = _examples(builder, spec, spec.train_split, image_size)
    test = _examples(builder, spec, spec.test_split, image_size)
    num_train_all = _count(train_all)
    num_test = _count(test)
    for split, count in ((spec.train_split, num_train_all), (spec.test_split, num_test)):
        if count == 0:
            raise UserError(f"dataset {name!r} split {split!r} in {data_dir} has no examples")

    num_validation = math.floor(validation_split * num_train_all + 0.5)
    num_train = num_train_all - num_validation
    if validation_split > 0 and not 0 < num_validation < num_train_all:
        raise UserError(
            f"dataset.validation_split={validation_split!r} leaves {num_train} training and "
            f"{num_validation} validation examples of {num_train_all}; both must be > 0 "
            "(use 0 for no validation set)"
        )
    return Splits(
        train=train_all.take(num_train),
        validation=train_all.skip(num_train) if num_validation else None,
        test=test,
        counts=(num_train, num_validation, num_test),
        input_shape=input_shape,
        num_classes=int(label_feature.num_classes),
        class_names=tuple(label_feature.names),
    )


def _features(name: str, spec: DatasetSpec, builder: tfds.core.DatasetBuilder) -> tuple[Any, Any]:
    """The image and (ClassLabel) label features of ``spec``, or one line saying what the
    dataset has instead."""
    features = builder.info.features
    keys = ", ".join(features.keys())
    where = f"dataset {name!r} (TFDS {spec.tfds_name!r})"
    for key, role in ((spec.image_key, "image_key"), (spec.label_key, "label_key")):
        if key not in features:
            raise UserError(f"{where} has no feature {key!r} (dataset.{role}); it has: {keys}")
    image, label = features[spec.image_key], features[spec.label_key]
    if not isinstance(image, tfds.features.Image):
        raise UserError(f"{where}: feature {spec.image_key!r} is not an image (dataset.image_key)")
    if not isinstance(label, tfds.features.ClassLabel):
        raise UserError(
            f"{where}: feature {spec.label_key!r} is not a class label (dataset.label_key); "
            "only image classification datasets are supported"
        )
    return image, label


def _resolve_data_dir(data_dir: str | None) -> str:
    if data_dir is None:
        return os.path.expanduser(tfds.core.constants.DATA_DIR)
    return os.path.abspath(os.path.expanduser(data_dir))


def _prepared_builder(
    name: str, spec: DatasetSpec, data_dir: str, *, download: bool
) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``spec`` with its data prepared in ``data_dir``."""
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise UserError(
            f"dataset {name!r} names TFDS dataset {spec.tfds_name!r}, which this "
            "tensorflow-datasets does not know"
        ) from None
    if builder.is_prepared():
        return builder
    remedy = f"it needs a network to download, or a prepared copy in {data_dir}"
    if spec.needs_network and not download:
        raise UserError(
            f"dataset {name!r} (TFDS {spec.tfds_name!r}) is not prepared in {data_dir} and "
            f"dataset.download is false; {remedy}"
        )
    try:
        with _prepare_lock(data_dir, spec.tfds_name):
            # An offline builder must not even ask GCS for a prepared copy.
            config = tfds.download.DownloadConfig(try_download_gcs=spec.needs_network)
            builder.download_and_prepare(download_config=config)
    except Exception as error:
        if not spec.needs_network:
            raise
        cause = (str(error).splitlines() or [""])[0][:200]
        raise UserError(
            f"dataset {name!r} (TFDS {spec.tfds_name!r}) could not be downloaded into "
            f"{data_dir} ({type(error).__name__}: {cause}); {remedy}"
        ) from None
    # Another process may have prepared it while we waited for the lock: a new
    # builder reads the prepared dataset's info (splits, sizes) from disk.
    return tfds.builder(spec.tfds_name, data_dir=data_dir)


def _prepare_lock(data_dir: str, tfds_name: str) -> filelock.FileLock:
    """Serialise preparation across processes (parallel sweeps sharing a data_dir): one
    prepares, the others wait for it (no timeout), then find the dataset prepared.

    TFDS writes into a temporary directory and renames it at the end; two
    processes preparing at once make the second rename fail. The lock is
    advisory (``filelock``: ``flock`` on POSIX), in ``data_dir``.
    """
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    # A TFDS name may name a builder config ("name/config"): one file name, no "/".
    lock_name = tfds_name.replace("/", "__")
    return filelock.FileLock(Path(data_dir) / f".{lock_name}.prepare.lock")


def _examples(
    builder: tfds.core.DatasetBuilder,
    spec: DatasetSpec,
    split: str,
    image_size: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """The (uint8 image, int64 label) examples of ``split`` in TFDS' fixed file order,
    resized to ``image_size`` when given."""
    read_config = tfds.ReadConfig(try_autocache=False)  # `cache` in the config decides
    try:
        examples = builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)
    except (ValueError, KeyError) as error:  # an unknown split name or a bad slice
        known = ", ".join(builder.info.splits.keys()) or "none listed"
        cause = (str(error).splitlines() or [""])[0][:200]
        raise UserError(
            f"TFDS dataset {spec.tfds_name!r} has no split {split!r} ({cause}); its splits: "
            f"{known} (slices such as 'train[:80%]' are allowed)"
        ) from None

    def pair(example: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image = example[spec.image_key]
        if image_size is not None:
            image = resized(image, image_size)
        return image, tf.cast(example[spec.label_key], tf.int64)

    return examples.map(pair, num_parallel_calls=AUTOTUNE, deterministic=True)


def _count(dataset: tf.data.Dataset) -> int:
    count = int(dataset.cardinality())
    if count >= 0:
        return count
    return int(dataset.reduce(np.int64(0), lambda total, _: total + 1))
