"""The datasets a config can name: ``DATASETS``, the registry of dataset sources.

``dataset.name`` is looked up here (an unknown name is refused with the known
ones). Each name stands for a source (``trainer.data.splits.DatasetSource``)
whose ``splits`` hands over decoded uint8 examples in a fixed order:

- ``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``: catalog datasets of
  TFDS (``trainer.data.tfds.DatasetSpec``); ``digits`` is bundled with
  scikit-learn and never needs the network;
- ``tfds``: any TFDS dataset by its name and keys (``trainer.data.tfds.TfdsByName``);
- ``folder``: the user's images (``trainer.data.folder_images.ImageFolderSource``).

A user's module (listed in ``imports``) may register a source of its own:
``DATASETS.register("name")(source)``.
"""

from __future__ import annotations

from trainer.data import digits as digits_builder
from trainer.data.folder_images import ImageFolderSource
from trainer.data.splits import DatasetSource
from trainer.data.tfds import DatasetSpec, TfdsByName
from trainer.registry import Registry

DATASETS: Registry[DatasetSource] = Registry("dataset")
DATASETS.register("digits")(DatasetSpec(digits_builder.SklearnDigits.name, needs_network=False))
DATASETS.register("mnist")(DatasetSpec("mnist"))
DATASETS.register("fashion_mnist")(DatasetSpec("fashion_mnist"))
DATASETS.register("cifar10")(DatasetSpec("cifar10"))
DATASETS.register("tfds")(TfdsByName())
DATASETS.register("folder")(ImageFolderSource())
