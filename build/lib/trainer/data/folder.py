"""A folder of the user's images, one subfolder per class: its classes, splits and files.

Two layouts (those of ``keras.utils.image_dataset_from_directory`` and
``tfds.ImageFolder``)::

    DIR/<class>/**/<image>            every split is carved from each class's files
    DIR/train/<class>/**/<image>      plus, optionally, DIR/val/ (or DIR/validation/)
                                      and DIR/test/, each with (some of) train's classes

The class names are the sorted subfolder names (of ``train/`` in the second
layout); a class's label is its index among them. Every file under a class
folder is one of its images (any depth, names starting with ``.`` ignored, so
``.DS_Store`` is no image); files directly in ``DIR`` are not part of any class.

A split without a folder of its own is carved from each class's (train) files:
the files ordered by the sha256 of their path relative to ``DIR``, the first
``round(test_split * n)`` are test, the next ``round(validation_split * n)``
validation, the rest train. A hash of the path rather than a shuffle seeded by
``derive_seed``: which split an image is in is a property of the data, not of
the run's seed, so runs with different seeds are tested on the same images,
and a file keeps its split when the folder moves (the path is relative) or when
images are added to other classes. Ranking (not a hash threshold) gives exact,
stratified counts. Each split then lists its files in sorted path order, the
"file order" of ``trainer.data.pipeline``.

:func:`fingerprint` is the sha256 of the sorted relative paths and sizes of
every file used: a checkpoint records it, and a resume whose folder differs is
refused (``trainer.runs.resume``), so a moved folder may be resumed with a
new ``dataset.path`` but a changed one is not silently trained on.

Every problem is a one-line ``UserError`` naming the file or folder. This
module does not import TensorFlow (decoding is ``trainer.data.folder_images``'s): the resume
policy checks the fingerprint before TensorFlow starts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import UserError

TRAIN, VALIDATION, TEST = "train", "validation", "test"
# Split folders of the second layout, by the split they hold.
SPLIT_FOLDERS = {"train": TRAIN, "val": VALIDATION, "validation": VALIDATION, "test": TEST}
FORMATS = "JPEG, PNG, BMP or GIF"  # what tf.io.decode_image reads


@dataclass(frozen=True)
class ImageFolder:
    """The classes and split files of one folder (see the module docstring)."""

    root: Path
    class_names: tuple[str, ...]
    splits: Mapping[str, tuple[tuple[Path, int], ...]]  # TRAIN/VALIDATION/TEST -> (file, label)
    fingerprint: str

    def files(self) -> list[Path]:
        """Every image of every split, in split then file order."""
        return [file for split in self.splits.values() for file, _ in split]


def read_image_folder(
    path: str | os.PathLike, *, validation_split: float, test_split: float
) -> ImageFolder:
    """The :class:`ImageFolder` at ``path``; ``validation_split`` and ``test_split`` are the
    fractions carved from each class of a split that has no folder. A carved validation
    split with ``validation_split`` 0 is left out (no validation set); every other split
    must hold at least one image."""
    root = _folder(path)
    split_dirs = _split_dirs(root) or {TRAIN: root}
    class_names = _class_names(split_dirs[TRAIN])
    listed = {
        split: _class_files(root, folder, class_names, split_dirs[TRAIN])
        for split, folder in split_dirs.items()
    }
    carved = {
        split: fraction
        for split, fraction in ((TEST, test_split), (VALIDATION, validation_split))
        if split not in listed
    }
    splits = _carved(root, listed, carved)
    if carved.get(VALIDATION) == 0:
        del splits[VALIDATION]  # no validation set
    for split, files in splits.items():
        if files:
            continue
        if split in carved:
            raise UserError(
                f"dataset.{split}_split={carved[split]} leaves no {split} images in {root} "
                f"(round({carved[split]} x images) of each class); give a larger fraction "
                f"or a {'val' if split == VALIDATION else split}/ folder"
            )
        raise UserError(
            f"dataset.validation_split={validation_split} and dataset.test_split={test_split} "
            f"leave no training images in {root}"
        )
    ordered = {
        split: tuple(sorted(splits[split], key=lambda item: _relative(root, item[0])))
        for split in (TRAIN, VALIDATION, TEST)
        if split in splits
    }
    return ImageFolder(root, class_names, ordered, _fingerprint_of(root, ordered))


def fingerprint(dataset_cfg: Mapping[str, Any]) -> str | None:
    """The fingerprint of the folder ``dataset_cfg`` (a ``dataset=folder`` section) names;
    None for a dataset that is not a folder."""
    if dataset_cfg.get("name") != "folder":
        return None
    folder = read_image_folder(
        dataset_cfg.get("path"),
        validation_split=dataset_cfg.get("validation_split", 0.0),
        test_split=dataset_cfg.get("test_split", 0.0),
    )
    return folder.fingerprint


def _folder(path: Any) -> Path:
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise UserError(f"dataset.path must be a folder of class subfolders, got {path!r}")
    root = Path(path).expanduser().absolute()
    if not root.exists():
        raise UserError(f"dataset.path {root} does not exist")
    if not root.is_dir():
        raise UserError(f"dataset.path {root} is not a folder (it should hold one per class)")
    return root


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_dirs(root: Path) -> dict[str, Path]:
    """The split folders of the second layout ({} for the first), checked."""
    subfolders = _subfolders(root)
    if "train" not in {p.name for p in subfolders}:
        return {}
    found: dict[str, Path] = {}
    for folder in subfolders:
        split = SPLIT_FOLDERS.get(folder.name)
        if split is None:
            raise UserError(
                f"image folder {root} has train/ and also {folder.name}/: beside train/, "
                "only val/ (or validation/) and test/ are allowed"
            )
        if split in found:
            raise UserError(f"image folder {root} has both {found[split].name}/ and {folder.name}/")
        found[split] = folder
    return found


def _class_names(folder: Path) -> tuple[str, ...]:
    names = tuple(p.name for p in _subfolders(folder))
    if not names:
        raise UserError(f"image folder {folder} has no class subfolders (one per class)")
    if len(names) < 2:
        raise UserError(
            f"image folder {folder} has 1 class subfolder ({names[0]}/); a classifier needs "
            "at least 2"
        )
    return names


def _class_files(
    root: Path, folder: Path, class_names: tuple[str, ...], train_dir: Path
) -> list[tuple[Path, int]]:
    """(file, label) of every image under ``folder``'s class folders: each must be one of
    ``class_names`` (those of ``train_dir``) and hold at least one image."""
    files = []
    for class_dir in _subfolders(folder):
        if class_dir.name not in class_names:
            raise UserError(
                f"image folder {class_dir} is not one of the classes of {train_dir} "
                f"({', '.join(class_names)})"
            )
        found = _images_under(class_dir)
        if not found:
            raise UserError(f"class folder {class_dir} holds no images ({FORMATS} files)")
        label = class_names.index(class_dir.name)
        files.extend((file, label) for file in found)
    if not files:
        raise UserError(f"image folder {folder} holds no class folders with images")
    return files


def _images_under(folder: Path) -> list[Path]:
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(parent, n) for n in sorted(names) if not n.startswith("."))
    return found


def _carved(
    root: Path, listed: dict[str, list[tuple[Path, int]]], fractions: Mapping[str, float]
) -> dict[str, list[tuple[Path, int]]]:
    """``listed`` with the splits of ``fractions`` carved, in that order, from each class
    of its train files ranked by the sha256 of their path relative to ``root``."""
    splits = {split: list(files) for split, files in listed.items()}
    if not fractions:
        return splits
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for item in splits.pop(TRAIN):
        by_class.setdefault(item[1], []).append(item)
    splits.update({TRAIN: [], **{split: [] for split in fractions}})
    for items in by_class.values():
        ranked = sorted(items, key=lambda item: _path_hash(root, item[0]))
        start = 0
        for split, fraction in fractions.items():
            count = _rounded(fraction * len(ranked))
            splits[split].extend(ranked[start : start + count])
            start += count
        splits[TRAIN].extend(ranked[start:])
    return splits


def _rounded(value: float) -> int:
    """Half up, as ``trainer.data.tfds`` rounds its validation hold-out (not banker's)."""
    return int(value + 0.5)


def _path_hash(root: Path, file: Path) -> str:
    return hashlib.sha256(_relative(root, file).encode("utf-8", "surrogateescape")).hexdigest()


def _relative(root: Path, file: Path) -> str:
    return file.relative_to(root).as_posix()


def _fingerprint_of(root: Path, splits: Mapping[str, tuple[tuple[Path, int], ...]]) -> str:
    """sha256 over ``<relative path>\\t<size>\\n`` of every file used, sorted by path."""
    digest = hashlib.sha256()
    files = sorted(_relative(root, file) for split in splits.values() for file, _ in split)
    for relative in files:
        size = (root / relative).stat().st_size
        digest.update(f"{relative}\t{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()
