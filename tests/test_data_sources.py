"""Dataset sources beyond the catalog: a folder of the user's images, any TFDS dataset by name.

In-process tests of ``load_data`` on generated image folders (devtools/image_folder.py)
and on ``tfds.testing.mock_data``; none touches the network. The end-to-end runs
(train.py on a folder, SIGKILL + resume) are in tests/test_folder_training.py.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from omegaconf import OmegaConf
from PIL import Image

from checkpoints.manifest import MANIFEST_SCHEMA, Checkpoint
from checkpoints.state import progress_manifest
from devtools.image_folder import class_name, make_image_folder
from tests.test_data import as_arrays, assert_same_batches
from trainer.config.schema import (
    FolderDatasetConfig,
    TfdsDatasetConfig,
    check_known_keys,
    typed_section,
    validate_dataset,
)
from trainer.data.folder import read_image_folder
from trainer.data.pipeline import load_data
from trainer.errors import UserError
from trainer.runs.resume import check_same_data, refused_overrides
from trainer.startup import compose_config

CLASSES = tuple(class_name(k) for k in range(3))


def folder_cfg(root, **overrides):
    values = {
        "name": "folder",
        "path": str(root),
        "image_size": [16, 20],
        "channels": None,
        "batch_size": 4,
        "validation_split": 0.1,
        "test_split": 0.2,
        "shuffle_buffer": None,
        "cache": True,
        "data_dir": None,
        "download": False,
    }
    values.update(overrides)
    return OmegaConf.create(values)


def relative_files(folder, split, root):
    return [file.relative_to(root).as_posix() for file, _ in folder.splits[split]]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """3 classes of 10 RGB PNGs, 16x20."""
    return make_image_folder(tmp_path_factory.mktemp("images"), per_class=10, size=(16, 20))


# --- layout and split ------------------------------------------------------------------


def test_a_folder_loads_with_its_classes_counts_and_shapes(images):
    data = load_data(folder_cfg(images), seed=0)

    info = data.info
    assert info.class_names == CLASSES
    assert (info.num_classes, info.input_shape) == (3, (16, 20, 3))
    # per class of 10: round(0.2 * 10) = 2 test, round(0.1 * 10) = 1 validation, 7 train
    assert (info.train_examples, info.validation_examples, info.test_examples) == (21, 3, 6)
    assert info.steps_per_epoch == 6
    assert len(info.fingerprint) == 64
    train = as_arrays(data.train_epoch(0))
    assert [len(labels) for _, labels in train] == [4, 4, 4, 4, 4, 1]
    for split, count in (
        (train, 21),
        (as_arrays(data.validation()), 3),
        (as_arrays(data.test()), 6),
    ):
        labels = np.concatenate([labels for _, labels in split])
        assert len(labels) == count
        assert np.bincount(labels).tolist() == [count // 3] * 3  # stratified
        for batch, _ in split:
            assert batch.dtype == np.float32 and batch.shape[1:] == (16, 20, 3)
            assert batch.min() >= 0.0 and batch.max() <= 1.0


def test_images_reach_the_model_as_their_pixels_with_their_class_label(images):
    """At the files' own size, the resize changes nothing: each test example is its PNG's
    pixels / 255, labelled with the index of its class folder."""
    folder = read_image_folder(images, validation_split=0.1, test_split=0.2)
    data = load_data(folder_cfg(images, shuffle_buffer=0), seed=0)

    batches = as_arrays(data.test())
    got_images = np.concatenate([b for b, _ in batches])
    got_labels = np.concatenate([labels for _, labels in batches])
    expected = [
        np.asarray(Image.open(file), dtype=np.float32) / 255.0 for file, _ in folder.splits["test"]
    ]
    np.testing.assert_array_equal(got_images, np.stack(expected))
    assert got_labels.tolist() == [CLASSES.index(f.parent.name) for f, _ in folder.splits["test"]]


def test_the_split_depends_on_the_relative_paths_only(images, tmp_path):
    """Same files elsewhere: the same split and fingerprint; a seed plays no part."""
    moved = tmp_path / "moved"
    shutil.copytree(images, moved)

    here = read_image_folder(images, validation_split=0.1, test_split=0.2)
    there = read_image_folder(moved, validation_split=0.1, test_split=0.2)

    for split in ("train", "validation", "test"):
        assert relative_files(here, split, images) == relative_files(there, split, moved)
    assert here.fingerprint == there.fingerprint
    every = sorted(
        f for s in ("train", "validation", "test") for f in relative_files(here, s, images)
    )
    assert every == sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    # each split in file (sorted path) order
    assert relative_files(here, "train", images) == sorted(relative_files(here, "train", images))


def test_the_fingerprint_changes_with_the_files(images, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(images, changed)
    before = read_image_folder(changed, validation_split=0.1, test_split=0.2).fingerprint
    (changed / CLASSES[0] / "0000.png").write_bytes(b"\x89PNG not quite")

    after = read_image_folder(changed, validation_split=0.1, test_split=0.2).fingerprint

    assert after != before


def test_hidden_files_and_files_beside_the_classes_are_not_images(images, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(images, copy)
    (copy / CLASSES[1] / ".DS_Store").write_bytes(b"\0\1junk")
    (copy / "README.txt").write_text("my images")

    data = load_data(folder_cfg(copy), seed=0)

    assert data.info.train_examples + data.info.validation_examples + data.info.test_examples == 30


def test_the_epoch_order_is_fixed_by_seed_and_epoch_and_resumes_mid_epoch(images):
    data = load_data(folder_cfg(images), seed=3)
    again = load_data(folder_cfg(images), seed=3)

    epoch0 = as_arrays(data.train_epoch(0))
    assert_same_batches(as_arrays(again.train_epoch(0)), epoch0)
    epoch1 = as_arrays(data.train_epoch(1))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(epoch0, epoch1, strict=True))
    for skip in (1, 4, 6):
        assert_same_batches(as_arrays(data.train_epoch(0, skip_batches=skip)), epoch0[skip:])
    assert_same_batches(as_arrays(data.train_epochs(0, 2, skip_batches=2)), epoch0[2:] + epoch1)


def test_explicit_split_folders_are_used_as_they_are(tmp_path):
    root = make_image_folder(tmp_path / "split", per_class=4, size=(8, 8), splits=("train", "val"))
    make_image_folder(root, per_class=2, size=(8, 8), splits=("test",), seed=1)

    data = load_data(folder_cfg(root, image_size=[8, 8], validation_split=0.5), seed=0)

    # validation_split and test_split apply only to splits without a folder
    assert (data.info.train_examples, data.info.validation_examples) == (12, 12)
    assert data.info.test_examples == 6
    assert data.info.class_names == CLASSES


def test_a_missing_split_folder_is_carved_from_train(tmp_path):
    root = make_image_folder(
        tmp_path / "split", per_class=10, size=(8, 8), splits=("train", "test")
    )

    data = load_data(folder_cfg(root, image_size=[8, 8], validation_split=0.2), seed=0)
    no_validation = load_data(folder_cfg(root, image_size=[8, 8], validation_split=0.0), seed=0)

    assert (data.info.train_examples, data.info.validation_examples) == (24, 6)
    assert data.info.test_examples == 30
    assert no_validation.validation() is None
    assert no_validation.info.train_examples == 30


@pytest.mark.parametrize("fmt", ["jpeg", "bmp", "gif"])
def test_other_image_formats_decode_and_are_resized(tmp_path, fmt):
    root = make_image_folder(tmp_path / fmt, per_class=5, size=(30, 40), fmt=fmt)

    data = load_data(folder_cfg(root, image_size=[12, 12], validation_split=0.0), seed=0)

    assert data.info.input_shape == (12, 12, 3)
    images_ = np.concatenate([b for b, _ in as_arrays(data.train_epoch(0))])
    assert images_.shape == (12, 12, 12, 3)
    assert images_.max() > 0.5  # the shapes survived decoding and resizing


def test_grayscale_images_give_one_channel_unless_three_are_asked_for(tmp_path):
    root = make_image_folder(tmp_path / "gray", per_class=5, size=(8, 8), channels=1)

    auto = load_data(folder_cfg(root, image_size=[8, 8]), seed=0)
    rgb = load_data(folder_cfg(root, image_size=[8, 8], channels=3), seed=0)

    assert auto.info.input_shape == (8, 8, 1)
    assert rgb.info.input_shape == (8, 8, 3)
    gray_images = as_arrays(auto.test())[0][0]
    rgb_images = as_arrays(rgb.test())[0][0]
    np.testing.assert_array_equal(rgb_images, np.repeat(gray_images, 3, axis=-1))


def test_an_alpha_channel_is_dropped(tmp_path):
    root = make_image_folder(tmp_path / "rgba", per_class=4, size=(8, 8))
    for file in root.rglob("*.png"):
        Image.open(file).convert("RGBA").save(file)

    data = load_data(folder_cfg(root, image_size=[8, 8], validation_split=0.0), seed=0)

    assert data.info.input_shape == (8, 8, 3)


# --- bad folders: one line each, naming the file or folder -------------------------------


def _one_line_error(cfg) -> str:
    with pytest.raises(UserError) as caught:
        load_data(cfg, seed=0)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_path_that_does_not_exist_or_is_a_file(tmp_path):
    missing = tmp_path / "nowhere"
    (tmp_path / "file.png").write_bytes(b"")

    assert _one_line_error(folder_cfg(missing)) == f"dataset.path {missing} does not exist"
    assert _one_line_error(folder_cfg(tmp_path / "file.png")).startswith(
        f"dataset.path {tmp_path / 'file.png'} is not a folder"
    )
    assert not missing.exists()


def test_an_empty_folder_and_a_single_class(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    single = make_image_folder(tmp_path / "single", classes=1, per_class=3, size=(8, 8))

    assert _one_line_error(folder_cfg(empty)) == (
        f"image folder {empty} has no class subfolders (one per class)"
    )
    assert _one_line_error(folder_cfg(single)) == (
        f"image folder {single} has 1 class subfolder ({CLASSES[0]}/); a classifier needs at "
        "least 2"
    )


def test_a_class_folder_without_images(images, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(images, copy)
    (copy / "zebra").mkdir()
    (copy / "zebra" / ".hidden").write_bytes(b"")

    assert _one_line_error(folder_cfg(copy)) == (
        f"class folder {copy / 'zebra'} holds no images (JPEG, PNG, BMP or GIF files)"
    )


@pytest.mark.parametrize(
    "content",
    [b"just some text\n", b"\x89PNG\r\n\x1a\n truncated", b""],
    ids=["text", "png", "empty"],
)
def test_a_file_that_is_not_an_image_is_named_before_training(images, tmp_path, content):
    copy = tmp_path / "copy"
    shutil.copytree(images, copy)
    bad = copy / CLASSES[1] / "0005.png"  # in the middle of the files, not the first one
    bad.write_bytes(content)

    message = _one_line_error(folder_cfg(copy))

    assert message.startswith(
        f"{bad} is not an image TensorFlow can decode (JPEG, PNG, BMP or GIF): "
    )


def test_mixed_channel_counts_are_refused_unless_channels_is_given(images, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(images, copy)
    gray = copy / CLASSES[2] / "0003.png"
    Image.open(gray).convert("L").save(gray)

    message = _one_line_error(folder_cfg(copy))
    converted = load_data(folder_cfg(copy, channels=3), seed=0)

    first = copy / CLASSES[0] / "0000.png"
    assert message == (
        f"images have mixed channel counts: {first} is RGB, {gray} is grayscale; "
        "set dataset.channels=1 or 3 to convert them"
    )
    assert converted.info.input_shape == (16, 20, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"validation_split": 0.01},
            "dataset.validation_split=0.01 leaves no validation images in {root} "
            "(round(0.01 x images) of each class); give a larger fraction or a val/ folder",
        ),
        (
            {"test_split": 0.0},
            "dataset.test_split=0.0 leaves no test images in {root} (round(0.0 x images) of "
            "each class); give a larger fraction or a test/ folder",
        ),
        (
            {"validation_split": 0.45, "test_split": 0.5},
            "dataset.validation_split=0.45 and dataset.test_split=0.5 leave no training "
            "images in {root}",
        ),
    ],
)
def test_a_split_that_leaves_a_split_empty(images, overrides, message):
    assert _one_line_error(folder_cfg(images, **overrides)) == message.format(root=images)


def test_split_folders_must_be_known_unique_and_of_train_classes(tmp_path):
    root = make_image_folder(tmp_path / "s", per_class=2, size=(8, 8), splits=("train", "test"))
    (root / "extra").mkdir()
    assert _one_line_error(folder_cfg(root)) == (
        f"image folder {root} has train/ and also extra/: beside train/, only val/ "
        "(or validation/) and test/ are allowed"
    )
    (root / "extra").rmdir()
    make_image_folder(root, per_class=1, size=(8, 8), splits=("val", "validation"))
    assert _one_line_error(folder_cfg(root)) == f"image folder {root} has both val/ and validation/"
    shutil.rmtree(root / "val")
    shutil.rmtree(root / "validation")
    make_image_folder(root / "test" / "zebra", classes=1, per_class=1, size=(8, 8))
    assert _one_line_error(folder_cfg(root)).startswith(
        f"image folder {root / 'test' / 'zebra'} is not one of the classes of {root / 'train'}"
    )


# --- schema and value checks -----------------------------------------------------------


def test_folder_and_tfds_have_closed_schemas_of_their_own(images):
    cfg = compose_config(["dataset=folder", f"dataset.path={images}"])
    assert OmegaConf.get_type(cfg.dataset) is FolderDatasetConfig
    assert cfg.dataset.image_size == [32, 32]
    tfds_cfg = compose_config(["dataset=tfds", "dataset.tfds_name=mnist"])
    assert OmegaConf.get_type(tfds_cfg.dataset) is TfdsDatasetConfig

    with pytest.raises(UserError, match=r"^unknown key dataset.pth; known keys of dataset: "):
        check_known_keys(compose_config(["dataset=folder", "+dataset.pth=x"]))
    with pytest.raises(UserError, match=r"unknown key dataset\.tfds_name"):  # not a folder's
        check_known_keys(compose_config(["dataset=folder", "+dataset.tfds_name=mnist"]))
    with pytest.raises(UserError, match="image_size"):
        compose_config(["dataset=folder", "dataset.image_size=big"])


def test_a_checkpoints_dataset_section_reads_back_typed(images):
    section = {"name": "folder", "path": str(images), "image_size": [8, 8], "batch_size": 4}
    typed = typed_section("dataset", section)
    assert OmegaConf.get_type(typed) is FolderDatasetConfig
    assert typed.test_split == 0.2
    with pytest.raises(UserError, match=r"^dataset config is not valid: unknown key dataset.paht"):
        typed_section("dataset", {**section, "paht": "x"})
    with pytest.raises(UserError, match=r"^dataset config is not valid: "):
        typed_section("dataset", {**section, "image_size": "32"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"path": None},
            "dataset.path must be a non-empty string (dataset=folder needs it), got None",
        ),
        ({"path": ""}, "dataset.path must be a non-empty string (dataset=folder needs it), got ''"),
        (
            {"image_size": [0, 8]},
            "dataset.image_size must be [height, width]: two integers >= 1, got [0, 8]",
        ),
        (
            {"image_size": [8]},
            "dataset.image_size must be [height, width]: two integers >= 1, got [8]",
        ),
        (
            {"image_size": None},
            "dataset.image_size must be [height, width]: two integers >= 1, got None",
        ),
        (
            {"channels": 2},
            "dataset.channels must be 1 (grayscale), 3 (RGB) or null (from the images), got 2",
        ),
        ({"test_split": 1.0}, "dataset.test_split must be in [0, 1), got 1.0"),
        (
            {"validation_split": 0.5, "test_split": 0.5},
            "dataset.test_split must be < 1 - dataset.validation_split (0.5), to leave examples "
            "to train on, got 0.5",
        ),
    ],
)
def test_bad_folder_values_are_one_line(overrides, message):
    with pytest.raises(UserError) as caught:
        validate_dataset(folder_cfg("x", **overrides))
    assert str(caught.value) == message


def test_tfds_needs_a_name():
    with pytest.raises(UserError) as caught:
        validate_dataset({"name": "tfds", "tfds_name": None, "batch_size": 8})
    assert str(caught.value) == (
        "dataset.tfds_name must be a non-empty string (dataset=tfds needs it), got None"
    )


# --- resume: the folder may move, its files may not change -------------------------------


def test_a_resume_may_give_a_new_dataset_path():
    saved = {"dataset": {"name": "folder", "path": "/old"}}
    cfg = OmegaConf.create({"dataset": {"name": "folder", "path": "/new", "image_size": [8, 8]}})
    assert refused_overrides(["dataset.path"], cfg, saved, fine_tune=False) == []
    assert refused_overrides(["dataset.image_size"], cfg, saved, fine_tune=False) == [
        "dataset.image_size"
    ]
    # the run's own command again (`dataset=folder dataset.path=/new`): the group is the same
    same = OmegaConf.create({"dataset": {"name": "folder", "path": "/new"}})
    assert refused_overrides(["dataset", "dataset.path"], same, saved, fine_tune=False) == []
    # a group that differs: the keys inside it are named
    assert refused_overrides(["dataset"], cfg, saved, fine_tune=False) == ["dataset.image_size"]


def test_the_manifest_records_the_fingerprint_and_its_schema_accepts_it(images):
    info = load_data(folder_cfg(images), seed=0).info
    loop = {"epoch": 0, "batches_done": 1, "epochs_completed": 0}
    manifest = {"format_version": 1, "global_step": 1, "files": {}}
    manifest.update(progress_manifest(1, loop, 6, {}, 0.1, "loss", info))

    assert manifest["data_fingerprint"] == info.fingerprint
    assert MANIFEST_SCHEMA.problem(manifest, "") is None
    assert MANIFEST_SCHEMA.problem({**manifest, "data_fingerprint": "x"}, "") is not None


def test_a_resume_checks_the_folder_holds_the_same_files(images, tmp_path):
    fingerprint = read_image_folder(images, validation_split=0.1, test_split=0.2).fingerprint
    checkpoint = Checkpoint(
        tmp_path / "step-1", {"global_step": 1, "data_fingerprint": fingerprint}
    )
    moved = tmp_path / "moved"
    shutil.copytree(images, moved)

    check_same_data(folder_cfg(moved), checkpoint)  # the same files elsewhere: fine
    check_same_data({"name": "digits"}, Checkpoint(tmp_path, {"global_step": 1}))  # no record
    (moved / CLASSES[2] / "0009.png").unlink()
    with pytest.raises(UserError) as changed:
        check_same_data(folder_cfg(moved), checkpoint)
    with pytest.raises(UserError) as gone:
        check_same_data(folder_cfg(tmp_path / "gone"), checkpoint)

    assert str(changed.value) == (
        f"dataset.path {moved} does not hold the images checkpoint {checkpoint.path} was trained "
        "on (its files or their sizes differ); resume with dataset.path=<a folder with exactly "
        "those files>"
    )
    assert str(gone.value) == (
        f"resuming checkpoint {checkpoint.path}: dataset.path {tmp_path / 'gone'} does not exist; "
        "if its images moved, add dataset=folder dataset.path=FOLDER"
    )


# --- any TFDS dataset by name, mocked -----------------------------------------------------


def _no_network(*args, **kwargs):
    raise AssertionError("the test tried to use the network")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)


def tfds_cfg(data_dir, **overrides):
    values = {
        "name": "tfds",
        "tfds_name": "mnist",
        "tfds_train_split": "train",
        "tfds_test_split": "test",
        "image_key": "image",
        "label_key": "label",
        "image_size": None,
        "data_dir": str(data_dir),
        "batch_size": 16,
        "validation_split": 0.25,
        "shuffle_buffer": None,
        "cache": True,
        "download": True,  # under mock_data, download_and_prepare does nothing
    }
    values.update(overrides)
    return OmegaConf.create(values)


def test_a_fixed_size_tfds_dataset_by_name(tmp_path, offline):
    with tfds.testing.mock_data(num_examples=40):
        data = load_data(tfds_cfg(tmp_path), seed=0)
        train = as_arrays(data.train_epoch(0))
        resumed = as_arrays(data.train_epoch(0, skip_batches=1))

    assert data.info.input_shape == (28, 28, 1)
    assert data.info.class_names == tuple(str(i) for i in range(10))
    assert (data.info.train_examples, data.info.validation_examples) == (30, 10)
    assert [len(labels) for _, labels in train] == [16, 14]
    assert_same_batches(resumed, train[1:])


def test_a_varying_size_tfds_dataset_is_resized_when_asked(tmp_path, offline):
    with tfds.testing.mock_data(num_examples=12):
        with pytest.raises(UserError) as caught:
            load_data(tfds_cfg(tmp_path, tfds_name="tf_flowers"), seed=0)
        data = load_data(
            tfds_cfg(
                tmp_path,
                tfds_name="tf_flowers",
                image_size=[24, 20],
                tfds_train_split="train[:80%]",
                tfds_test_split="train[80%:]",
                validation_split=0.0,
            ),
            seed=0,
        )
        train = as_arrays(data.train_epoch(0))

    assert str(caught.value) == (
        "dataset 'tfds' (TFDS 'tf_flowers') has images of varying size (None, None, 3); set "
        "dataset.image_size=[height,width] (dataset=tfds) to resize them"
    )
    assert data.info.input_shape == (24, 20, 3)
    assert data.info.num_classes == 5
    assert data.info.class_names[0] == "dandelion"
    for images_, _ in train:
        assert images_.shape[1:] == (24, 20, 3) and images_.dtype == np.float32


def test_a_feature_that_is_not_there_is_one_line(tmp_path, offline):
    with tfds.testing.mock_data(num_examples=4), pytest.raises(UserError) as caught:
        load_data(tfds_cfg(tmp_path, label_key="labels"), seed=0)
    assert str(caught.value) == (
        "dataset 'tfds' (TFDS 'mnist') has no feature 'labels' (dataset.label_key); "
        "it has: image, label"
    )


def test_an_unknown_tfds_name_is_one_line_at_once(tmp_path, offline):
    with pytest.raises(UserError) as caught:
        load_data(tfds_cfg(tmp_path, tfds_name="does_not_exist"), seed=0)
    assert str(caught.value) == (
        "dataset 'tfds' names TFDS dataset 'does_not_exist', which this tensorflow-datasets "
        "does not know"
    )
    assert not any(tmp_path.iterdir())


def test_a_tfds_dataset_not_prepared_without_download_is_one_line(tmp_path, offline):
    with pytest.raises(UserError, match=r"is not prepared in .* and dataset.download is false"):
        load_data(tfds_cfg(tmp_path / "none", tfds_name="tf_flowers", download=False), seed=0)
    assert not (tmp_path / "none").exists()
