"""An MNIST-sized dataset made up on the spot, for benchmarks that must run offline.

Importing this module registers, with TFDS and with the trainer's ``DATASETS``:

- ``synthetic_mnist``: 60,000 train / 10,000 test grey 28x28x1 images, 10
  classes: the shapes, counts and feature types (PNG-encoded ``Image``,
  ``ClassLabel``) of TFDS' ``mnist``, so the pipeline does the same work;
- ``synthetic_mnist_tiny``: the same with 1,024 / 256 examples, for smoke tests.

Select it as a user would select a dataset of their own::

    python train.py 'imports=[benchmarks.synthetic_mnist]' dataset=mnist \\
        dataset.name=synthetic_mnist dataset.data_dir=/tmp/tfds

(the repository root must be importable: run from it or put it on PYTHONPATH).
Each image is its class's fixed random template plus noise, so a model can
learn it; the pixels are a fixed function of the seed below.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from trainer.data.sources import DATASETS
from trainer.data.tfds import DatasetSpec

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
SEED = 20261126


class SyntheticMnist(tfds.core.GeneratorBasedBuilder):
    """MNIST-shaped random images (class template + noise); prepares offline."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    NUM_TRAIN = 60_000
    NUM_TEST = 10_000

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic MNIST-sized images for offline benchmarks.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # made up here: nothing to download
        return {
            "train": self._generate_examples(self.NUM_TRAIN, SEED),
            "test": self._generate_examples(self.NUM_TEST, SEED + 1),
        }

    def _generate_examples(self, count: int, seed: int):
        templates = np.random.RandomState(SEED).randint(0, 256, (NUM_CLASSES, *IMAGE_SHAPE))
        rng = np.random.RandomState(seed)
        for start in range(0, count, 4096):
            n = min(4096, count - start)
            labels = rng.randint(0, NUM_CLASSES, n)
            noise = rng.randint(0, 256, (n, *IMAGE_SHAPE))
            images = ((3 * templates[labels] + noise) // 4).astype(np.uint8)
            for offset in range(n):
                yield start + offset, {"image": images[offset], "label": int(labels[offset])}


class SyntheticMnistTiny(SyntheticMnist):
    """The same with 1,024 / 256 examples (a separate builder, not a TFDS builder config:
    ``trainer.data.tfds`` names its preparation lock file after the TFDS name, which must
    then hold no ``/``)."""

    NUM_TRAIN = 1_024
    NUM_TEST = 256


for _builder in (SyntheticMnist, SyntheticMnistTiny):
    if _builder.name not in DATASETS:
        DATASETS.register(_builder.name)(DatasetSpec(_builder.name, needs_network=False))
