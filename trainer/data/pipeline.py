"""The input pipeline: the dataset named in the config -> deterministic tf.data batches.

Config (``dataset_cfg``, a Mapping such as the ``dataset`` node of the Hydra config):

- ``name``: a name registered in ``DATASETS`` (``digits``, ``mnist``,
  ``fashion_mnist``, ``cifar10``, ``tfds``, ``folder``); an unknown name is
  refused with the known ones. Each names a source (``DatasetSource``) whose
  ``splits`` hands over decoded uint8 examples in a fixed order; everything
  below (``Data``, caching, the per-epoch order) is the same for all of them:

  - a catalog dataset (``DatasetSpec``): its TFDS builder and split names;
  - ``tfds``: the TFDS dataset ``tfds_name`` with ``tfds_train_split``,
    ``tfds_test_split``, ``image_key``, ``label_key``, and ``image_size``
    ([height, width], needed when the images vary in size) to resize to;
  - ``folder``: the user's images under ``path`` (``trainer.data.folder``: the
    layout, the split by ``validation_split`` and ``test_split``), decoded and
    resized to ``image_size`` with ``channels``. Every image is decoded once up
    front, so a file that is not an image is one line naming it, never an
    error in the middle of an epoch.
- ``data_dir``: the TFDS data directory; ``None`` means TFDS' default
  (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); ``~`` is expanded.
- ``batch_size``: int > 0.
- ``validation_split``: float in [0, 1), the fraction of the train split held
  out as validation: its last ``floor(f * n + 0.5)`` examples in TFDS' (fixed)
  file order. 0 means no validation set.
- ``shuffle_buffer``: int >= 0; 0 disables shuffling, ``None`` or a buffer
  larger than the train set means a full shuffle.
- ``limit_train_examples``: None, or train on the first N training examples
  only (in the source's fixed order, after the validation split is held out):
  a fixed small set, e.g. to check that the model can overfit it
  (``+debug=overfit``); applied here, once, whatever the source.
- ``cache``: keep the decoded examples of every split in memory after their
  first full pass.
- ``download``: let TFDS download a catalog dataset that is not prepared in
  ``data_dir``. ``digits`` (``trainer.data.digits``, the digits bundled with
  scikit-learn) never needs the network and is always prepared.

``load_data(dataset_cfg, seed=...)`` prepares a TFDS dataset with
``builder.download_and_prepare()`` (TFDS shows its own progress bars) and
returns a ``Data``:

- ``Data.info`` (``DataInfo``): input shape, class count and class names (the
  TFDS ``ClassLabel``'s, or the folder's), example counts, batch size and ``steps_per_epoch =
  ceil(train_examples / batch_size)``: the last batch of an epoch may be
  smaller (``drop_remainder=False``), so no example is left out of an epoch.
- ``Data.train_epoch(epoch, skip_batches=0)``: ``(image, label)`` batches,
  image float32 in [0, 1], label int64. The order of epoch ``e`` is a fixed
  function of ``(seed, e)``: its shuffle seed is ``trainer.seeds.derive_seed(seed,
  "shuffle", e)``, with a shuffle that does not reshuffle. ``train_epoch(e,
  skip_batches=k)`` therefore yields exactly the batches ``k, k+1, ...`` that
  ``train_epoch(e)`` yields, which is how a run resumed mid-epoch continues.
  tf.data pairs every shuffle seed with TensorFlow's global seed, so building
  the batches sets that to ``trainer.seeds.tensorflow_global_seed(seed)``
  (``tf.random.set_seed``): whatever set it before (Keras seeding the weights,
  a tool) does not change the order.
- ``Data.train_epochs(first, end, skip_batches=0)``: the batches of
  ``train_epoch(first, skip_batches)``, ``train_epoch(first + 1)``, ...,
  ``train_epoch(end - 1)`` in one pipeline, which the training loop iterates
  once per run. The seeds of the next ``_LISTED_EPOCHS`` epochs are listed when
  it is built, those of any later ones computed inside the pipeline as each
  epoch starts, so building it costs the same for 5,000 epochs or 10**12.
- ``Data.validation()`` (``None`` without a validation split) and
  ``Data.test()``: batches in file order, never shuffled.

Every dataset returned has ``tf.data.Options.deterministic = True``. Images are
cached as decoded uint8 and scaled to [0, 1] per batch: a quarter of the memory
of float32 for one vectorised division per batch. Bad config values raise
``UserError`` with one line naming the key, the value and what is allowed
(``trainer.config.dataset.validate_dataset``, the checks ``train.py`` runs first); so
do what depends on the data itself (an unknown dataset name, a validation
split that leaves a split empty) and a catalog dataset that is neither
prepared nor downloadable.

This module and ``trainer.data.digits`` are the only ones that import
TensorFlow Datasets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from trainer.config import validate_dataset, validate_seed
from trainer.data import digits as digits_builder
from trainer.data.folder import FORMATS, TEST, TRAIN, VALIDATION, read_image_folder
from trainer.errors import UserError
from trainer.registry import Registry
from trainer.seeds import derive_seed, derive_seed_tensor, derive_seeds, tensorflow_global_seed

AUTOTUNE = tf.data.AUTOTUNE
# Epochs after a pipeline's first whose shuffle seeds are listed when it is built (32 KiB).
_LISTED_EPOCHS = 4096


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


class ImageFolderSource:
    """``dataset=folder``: the user's images (``trainer.data.folder``), decoded by
    ``tf.io.decode_image`` and resized to ``dataset.image_size``."""

    def splits(self, dataset_cfg: Mapping[str, Any]) -> Splits:
        return _folder_splits(dataset_cfg)


DATASETS: Registry[DatasetSource] = Registry("dataset")
DATASETS.register("digits")(DatasetSpec(digits_builder.SklearnDigits.name, needs_network=False))
DATASETS.register("mnist")(DatasetSpec("mnist"))
DATASETS.register("fashion_mnist")(DatasetSpec("fashion_mnist"))
DATASETS.register("cifar10")(DatasetSpec("cifar10"))
DATASETS.register("tfds")(TfdsByName())
DATASETS.register("folder")(ImageFolderSource())


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What the model and the training loop need to know about the data."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    train_examples: int
    validation_examples: int
    test_examples: int
    batch_size: int
    steps_per_epoch: int  # ceil(train_examples / batch_size): the last batch may be short
    class_names: tuple[str, ...] | None = None  # label i is class_names[i]
    fingerprint: str | None = None  # of an image folder's files (trainer.data.folder)


class Data:
    """The batches of one dataset; built by ``load_data``."""

    def __init__(
        self,
        info: DataInfo,
        *,
        train: tf.data.Dataset,
        validation: tf.data.Dataset | None,
        test: tf.data.Dataset,
        shuffle_buffer: int,
        seed: int,
    ) -> None:
        self.info = info
        self._train = train  # decoded (uint8 image, int64 label) examples, maybe cached
        self._shuffle_buffer = shuffle_buffer
        self._seed = seed
        # Built once, so that a cached split stays cached across evaluations.
        self._validation = None if validation is None else _batches(validation, info.batch_size)
        self._test = _batches(test, info.batch_size)

    def train_epoch(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        """The batches of ``epoch`` from batch ``skip_batches`` on, in the order fixed by
        (seed, epoch)."""
        return self.train_epochs(epoch, epoch + 1, skip_batches=skip_batches)

    def train_epochs(self, first: int, end: int, skip_batches: int = 0) -> tf.data.Dataset:
        """The batches of epochs ``first .. end - 1`` in turn, those of ``first`` from batch
        ``skip_batches`` on: exactly ``train_epoch(first, skip_batches)``, then
        ``train_epoch(first + 1)``, ... ``train_epoch(end - 1)``.

        One pipeline for many epochs, so the training loop builds it and makes its
        iterator once per run rather than once per epoch (about 30 ms each on
        digits, a fifth of an epoch), and prefetching runs on across epochs.
        """
        if not _is_int(first) or first < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {first!r}")
        if not _is_int(end) or end <= first:
            raise ValueError(f"end must be an integer > first epoch {first}, got {end!r}")
        steps = self.info.steps_per_epoch
        if not _is_int(skip_batches) or not 0 <= skip_batches <= steps:
            raise ValueError(
                f"skip_batches must be an integer in [0, {steps}], got {skip_batches!r}"
            )
        batch_size = self.info.batch_size
        # tf.data pairs each shuffle's seed with TensorFlow's global seed (when the
        # dataset is built, and for the epochs below when flat_map traces its function).
        tf.random.set_seed(tensorflow_global_seed(self._seed))  # never 0: see there
        examples = self._shuffled(epoch_shuffle_seed(self._seed, first))
        if skip_batches:
            # The epoch's batches are consecutive runs of batch_size examples, so
            # skipping whole batches' worth of examples before batching is the same
            # as skipping batches, without assembling the skipped ones.
            examples = examples.skip(skip_batches * batch_size)
        batches = examples.batch(batch_size, drop_remainder=False)
        if end > first + 1:
            # The seeds of the next _LISTED_EPOCHS epochs are listed here (derive_seeds:
            # milliseconds), not derived by TensorFlow ops inside flat_map: tracing those
            # cost 0.2-1.8 s to build and start a run's pipeline (BENCHMARKS.md 9). The
            # epochs after them, if any, derive theirs as each starts, so nothing here
            # grows with `end` beyond that.
            listed_end = min(end, first + 1 + _LISTED_EPOCHS)
            seeds = derive_seeds(self._seed, "shuffle", range(first + 1, listed_end))
            later = tf.data.Dataset.from_tensor_slices(tf.constant(seeds, tf.int64))
            if end > listed_end:
                later = later.concatenate(
                    tf.data.Dataset.range(listed_end, end).map(
                        lambda epoch: derive_seed_tensor(self._seed, "shuffle", epoch)
                    )
                )
            batches = batches.concatenate(
                later.flat_map(
                    lambda seed: self._shuffled(seed).batch(batch_size, drop_remainder=False)
                )
            )
        return _scaled(batches)

    def _shuffled(self, seed: int | tf.Tensor) -> tf.data.Dataset:
        """The train examples in the order of shuffle ``seed`` (an int, or a tensor inside
        ``flat_map``: the same order), or in file order with ``shuffle_buffer`` 0."""
        if self._shuffle_buffer == 0:
            return self._train
        return self._train.shuffle(self._shuffle_buffer, seed=seed, reshuffle_each_iteration=False)

    def validation(self) -> tf.data.Dataset | None:
        """Validation batches (held out from the train split), or None without one."""
        return self._validation

    def test(self) -> tf.data.Dataset:
        """Test batches, in file order."""
        return self._test


def epoch_shuffle_seed(seed: int, epoch: int) -> int:
    """The tf.data shuffle seed of ``epoch``: ``derive_seed(seed, "shuffle", epoch)``."""
    return derive_seed(seed, "shuffle", epoch)


def load_data(dataset_cfg: Mapping[str, Any], *, seed: int) -> Data:
    """Load the dataset ``dataset_cfg`` names (its source in ``DATASETS``) and return its
    deterministic pipelines."""
    source = DATASETS.get(dataset_cfg.get("name"))
    validate_dataset(dataset_cfg)  # for callers that did not validate the whole config
    validate_seed(seed)
    batch_size = dataset_cfg.get("batch_size")
    shuffle_buffer = dataset_cfg.get("shuffle_buffer")
    splits = source.splits(dataset_cfg)
    train, validation, test = splits.train, splits.validation, splits.test
    num_train, num_validation, num_test = splits.counts
    limit = dataset_cfg.get("limit_train_examples")
    if limit is not None:  # before caching and shuffling: the same N examples every epoch
        num_train = min(num_train, limit)
        train = train.take(num_train)
    if dataset_cfg.get("cache", True):
        train = train.cache()
        test = test.cache()
        validation = None if validation is None else validation.cache()
    info = DataInfo(
        name=dataset_cfg.get("name"),
        input_shape=splits.input_shape,
        num_classes=splits.num_classes,
        train_examples=num_train,
        validation_examples=num_validation,
        test_examples=num_test,
        batch_size=batch_size,
        steps_per_epoch=math.ceil(num_train / batch_size),
        class_names=splits.class_names,
        fingerprint=splits.fingerprint,
    )
    full_shuffle = shuffle_buffer is None or shuffle_buffer > num_train
    return Data(
        info,
        train=train,
        validation=validation,
        test=test,
        shuffle_buffer=num_train if full_shuffle else shuffle_buffer,
        seed=seed,
    )


def show_preparation_progress(show: bool) -> None:
    """Show TFDS' progress bars while a dataset is prepared, or not (in a log file they
    are escape codes; see ``trainer.training.reporting.progress_verbosity``)."""
    tfds.display_progress_bar(show)


# --------------------------------------------------------------------------- TFDS datasets


def _tfds_splits(spec: DatasetSpec, dataset_cfg: Mapping[str, Any]) -> Splits:
    """``DatasetSpec.splits``: prepare the TFDS dataset, read its features, hold out the
    validation examples."""
    name = dataset_cfg.get("name")
    data_dir = _resolve_data_dir(dataset_cfg.get("data_dir"))
    download = bool(dataset_cfg.get("download", True))
    validation_split = dataset_cfg.get("validation_split", 0.0)
    image_size = _plain_size(dataset_cfg.get("image_size"))

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


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


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


@contextlib.contextmanager
def _prepare_lock(data_dir: str, tfds_name: str) -> Iterator[None]:
    """Serialise preparation across processes (parallel sweeps sharing a data_dir).

    TFDS writes into a temporary directory and renames it at the end; two
    processes preparing at once make the second rename fail. The lock is
    advisory (POSIX ``flock``); where ``fcntl`` is missing, nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    # A TFDS name may name a builder config ("name/config"): one file name, no "/".
    lock_name = tfds_name.replace("/", "__")
    with open(Path(data_dir) / f".{lock_name}.prepare.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


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
            image = _resized(image, image_size)
        return image, tf.cast(example[spec.label_key], tf.int64)

    return examples.map(pair, num_parallel_calls=AUTOTUNE, deterministic=True)


def _resized(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """``image`` (uint8, HWC) resized to ``size`` (height, width), still uint8: bilinear with
    antialiasing (a large photo shrunk to 32x32 keeps its content, not aliasing)."""
    resized = tf.image.resize(image, size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _plain_size(size: Any) -> tuple[int, int] | None:
    return None if size is None else (int(size[0]), int(size[1]))


# --------------------------------------------------------------------------- image folders
# Our own pipeline rather than keras.utils.image_dataset_from_directory (its shuffling
# and validation split are seeded its own way and shuffled per iteration, not by
# derive_seed per epoch) or tfds.ImageFolder (it needs train/ and test/ folders and
# leaves images at their own sizes): listing and splitting are trainer.data.folder's,
# decoding and resizing tf.io.decode_image's and tf.image.resize's.

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
    size = _plain_size(dataset_cfg.get("image_size"))
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
        return _resized(image, size), label

    examples = tf.data.Dataset.from_tensor_slices((paths, labels))
    return examples.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)


def _count(dataset: tf.data.Dataset) -> int:
    count = int(dataset.cardinality())
    if count >= 0:
        return count
    return int(dataset.reduce(np.int64(0), lambda total, _: total + 1))


def _scale(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(images, tf.float32) / 255.0, labels


def _batches(examples: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return _scaled(examples.batch(batch_size, drop_remainder=False))


def _scaled(batches: tf.data.Dataset) -> tf.data.Dataset:
    """Batches of uint8 images -> float32 in [0, 1], prefetched, deterministic."""
    options = tf.data.Options()
    options.deterministic = True
    return (
        batches.map(_scale, num_parallel_calls=AUTOTUNE, deterministic=True)
        .prefetch(AUTOTUNE)
        .with_options(options)
    )
