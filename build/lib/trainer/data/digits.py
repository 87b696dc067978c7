"""The UCI handwritten digits that scikit-learn ships, as a TFDS dataset.

``sklearn.datasets.load_digits()`` reads 1797 8x8 grey images (values 0..16,
10 classes) from files inside the scikit-learn wheel, so this dataset prepares
with no network and no manual download. It is a normal
``tfds.core.GeneratorBasedBuilder``: ``builder.download_and_prepare()`` writes
TFRecord files into the ``data_dir`` like any catalog dataset, and the data
pipeline reads it through the same ``tfds`` path as ``mnist`` or ``cifar10``.

Importing this module registers the builder with TFDS as ``sklearn_digits``
(the name TFDS derives from the class name; it is not in the TFDS catalog).

Features: ``image`` uint8 (8, 8, 1) with 0..16 rescaled to 0..255
(``round(v * 255 / 16)``), ``label`` ``ClassLabel(num_classes=10)``.

Splits: ``train`` and ``test`` (80/20), stratified by class. Within each class
the examples are permuted by NumPy's legacy ``RandomState(SPLIT_SEED)``, whose
stream NumPy guarantees never to change, and the first ``round(20% of the
class)`` go to ``test``: 1438 train / 359 test on every run and machine.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

TEST_FRACTION = 0.2
SPLIT_SEED = 0
NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)

_CITATION = """\
@misc{alpaydin1998optical,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49}
}"""


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices into ``labels``: a stratified, deterministic 80/20 split.

    Both are sorted, disjoint and together cover ``range(len(labels))``.
    """
    rng = np.random.RandomState(SPLIT_SEED)
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        # Half-up rounding, spelled out: Python's round() rounds half to even.
        num_test = int(np.floor(len(members) * TEST_FRACTION + 0.5))
        test.append(rng.permutation(members)[:num_test])
    test_indices = np.sort(np.concatenate(test))
    train_indices = np.setdiff1d(np.arange(len(labels)), test_indices)
    return train_indices, test_indices


def load_images_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as (uint8 images (N, 8, 8, 1) in 0..255, int64 labels (N,))."""
    from sklearn.datasets import load_digits  # heavy import, only when preparing

    digits = load_digits()
    images = np.floor(digits.images * (255.0 / 16.0) + 0.5).astype(np.uint8)
    return images[..., np.newaxis], digits.target.astype(np.int64)


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """UCI handwritten digits (8x8) bundled with scikit-learn; prepares offline."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "First release: stratified 80/20 train/test split."
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "The UCI ML handwritten digits (1797 8x8 images, 10 classes) that "
                "scikit-learn bundles as sklearn.datasets.load_digits, rescaled from "
                "0..16 to 0..255."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # the data comes from the scikit-learn wheel: nothing to download
        images, labels = load_images_and_labels()
        train_indices, test_indices = split_indices(labels)
        return {
            "train": self._generate_examples(images, labels, train_indices),
            "test": self._generate_examples(images, labels, test_indices),
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
        # The key is the index in load_digits(): stable, unique, and TFDS derives
        # its (deterministic) on-disk order from it.
        for index in indices:
            yield int(index), {"image": images[index], "label": int(labels[index])}
