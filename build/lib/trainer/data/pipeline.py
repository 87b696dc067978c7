"""The input pipeline: the dataset named in the config -> deterministic tf.data batches.

Config (``dataset_cfg``, a Mapping such as the ``dataset`` node of the Hydra config):

- ``name``: a name registered in ``trainer.data.sources.DATASETS`` (``digits``,
  ``mnist``, ``fashion_mnist``, ``cifar10``, ``tfds``, ``folder``); an unknown
  name is refused with the known ones. Each names a source whose ``splits``
  hands over decoded uint8 examples in a fixed order
  (``trainer.data.splits.Splits``: TFDS datasets in ``trainer.data.tfds``, image
  folders in ``trainer.data.folder_images``); everything here (``Data``,
  caching, the per-epoch order, batching) is the same for all of them.
- ``data_dir``, ``download``, ``tfds_name`` and the other keys of a source: see
  its module.
- ``batch_size``: int > 0.
- ``validation_split``: float in [0, 1), the fraction of the train split held
  out as validation: its last ``floor(f * n + 0.5)`` examples in the source's
  (fixed) file order. 0 means no validation set.
- ``shuffle_buffer``: int >= 0; 0 disables shuffling, ``None`` or a buffer
  larger than the train set means a full shuffle.
- ``limit_train_examples``: None, or train on the first N training examples
  only (in the source's fixed order, after the validation split is held out):
  a fixed small set, e.g. to check that the model can overfit it
  (``+debug=overfit``); applied here, once, whatever the source.
- ``cache``: keep the decoded examples of every split in memory after their
  first full pass.

``load_data(dataset_cfg, seed=...)`` loads the source's splits (a TFDS dataset
is prepared first) and returns a ``Data``:

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
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from trainer.config import validate_dataset, validate_seed
from trainer.data.sources import DATASETS
from trainer.data.splits import AUTOTUNE
from trainer.seeds import derive_seed, derive_seed_tensor, derive_seeds, tensorflow_global_seed

# Epochs after a pipeline's first whose shuffle seeds are listed when it is built (32 KiB).
_LISTED_EPOCHS = 4096


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


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


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
