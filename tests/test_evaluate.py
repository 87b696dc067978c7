"""``python -m trainer evaluate`` and ``predict`` on the checkpoint of one real (tiny) run.

One module-scoped train.py run on digits makes the checkpoint; the tools run
in-process through ``trainer.__main__.main`` (TensorFlow starts once), except
``--help``, which runs in a fresh process to prove it never imports TensorFlow.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import REPO, run_train, tiny_args
from trainer.__main__ import main
from trainer.errors import UserError

DIGITS = {
    "name": "digits",
    "data_dir": None,
    "batch_size": 32,
    "validation_split": 0.1,
    "shuffle_buffer": None,
    "cache": True,
    "download": True,
    "limit_train_examples": None,
}


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
    """A finished 2-epoch digits run: its directory and its final checkpoint."""
    work = tmp_path_factory.mktemp("evaluate")
    run_dir = work / "run"
    run_train(*tiny_args(digits_dir, run_dir, "optimizer.learning_rate=0.01"), cwd=work)
    checkpoints = sorted(run_dir.glob("step-*"))
    return run_dir, checkpoints[-1]


def tool(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def tool_json(capsys, *args) -> dict:
    status, out, err = tool(capsys, *args, "--json")
    assert status == 0, err
    return json.loads(out)


def one_error_line(status: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def last_epoch(run_dir: Path) -> dict[str, str]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))[-1]


def checkpoint_model_and_test_data(checkpoint: Path, digits_dir: Path):
    """The checkpoint's model (as the tools rebuild it) and the digits test batches."""
    from checkpoints import verify
    from trainer.build import build_model_from_checkpoint
    from trainer.config.saved import read_checkpoint_config
    from trainer.data.pipeline import load_data

    verified = verify(checkpoint)
    model, _, _ = build_model_from_checkpoint(verified, read_checkpoint_config(verified))
    data = load_data(dict(DIGITS, data_dir=str(digits_dir)), seed=0)
    return model, data


# --------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_equals_what_the_run_reported(trained, capsys):
    run_dir, checkpoint = trained
    summary = json.loads((run_dir / "summary.json").read_text())
    test = tool_json(capsys, "evaluate", run_dir)  # a run: its newest valid checkpoint
    assert test["checkpoint"] == str(checkpoint)
    assert (test["loss"], test["accuracy"]) == (summary["test_loss"], summary["test_accuracy"])

    validation = tool_json(capsys, "evaluate", checkpoint, "--split", "validation")
    epoch = last_epoch(run_dir)
    assert validation["loss"] == float(epoch["val_loss"])
    assert validation["accuracy"] == float(epoch["val_accuracy"])
    assert validation["examples"] == 144  # 10% of the 1438 train examples, held out


@pytest.mark.slow
def test_evaluate_details_add_up(trained, capsys):
    _, checkpoint = trained
    result = tool_json(capsys, "evaluate", checkpoint, "--top-k", "3")
    assert result["examples"] == 359 and result["top_k"] == 3
    matrix = np.array(result["confusion_matrix"])
    per_class = result["per_class"]
    assert matrix.shape == (10, 10) and matrix.sum() == result["examples"]
    assert [c["class"] for c in per_class] == [str(i) for i in range(10)]
    assert [c["examples"] for c in per_class] == matrix.sum(axis=1).tolist()
    assert [c["correct"] for c in per_class] == np.diag(matrix).tolist()
    correct = sum(c["correct"] for c in per_class)
    # The loop's accuracy (float32) counts the same argmax as the confusion matrix.
    assert result["accuracy"] == pytest.approx(correct / result["examples"], rel=1e-6)
    for c in per_class:
        assert c["accuracy"] == pytest.approx(c["correct"] / c["examples"])
    assert result["accuracy"] <= result["top_k_accuracy"] <= 1.0

    capped = tool_json(capsys, "evaluate", checkpoint, "--top-k", "50")
    assert capped["top_k"] == 10 and capped["top_k_accuracy"] == 1.0  # every class counts
    # Another batch size changes the batching, not the examples: the same counts.
    rebatched = tool_json(capsys, "evaluate", checkpoint, "dataset.batch_size=7")
    assert rebatched["batch_size"] == 7
    assert rebatched["confusion_matrix"] == result["confusion_matrix"]
    assert rebatched["accuracy"] == result["accuracy"]


@pytest.mark.slow
def test_confusion_matrix_png_is_written_and_never_replaced(trained, tmp_path, capsys):
    import matplotlib.image

    _, checkpoint = trained
    out = tmp_path / "confusion.png"
    status, text, err = tool(capsys, "evaluate", checkpoint, "--confusion-matrix", out)
    assert status == 0, err
    assert f"Confusion matrix: {out}" in text and "top-5 accuracy" in text
    image = matplotlib.image.imread(str(out))
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert float(np.asarray(image[..., :3]).var()) > 0.001  # not a blank canvas
    written = out.read_bytes()

    status, _, err = tool(capsys, "evaluate", checkpoint, "--confusion-matrix", out)
    assert "already exists" in one_error_line(status, err)
    assert out.read_bytes() == written
    status, _, err = tool(capsys, "evaluate", checkpoint, "--confusion-matrix", out, "--force")
    assert status == 0, err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model.filters=[4]"], "'model.filters=[4]' is not allowed: only dataset.data_dir"),
        (["dataset.validation_split=0.5"], "'dataset.validation_split=0.5' is not allowed"),
        (["dataset.name=mnist"], "'dataset.name=mnist' is not allowed"),
        (["+dataset.extra=1"], "'+dataset.extra=1' is not allowed"),
        (["dataset.batch_size=1,2"], "'dataset.batch_size=1,2' is not allowed"),
        (["dataset.batch_size=[1"], "'dataset.batch_size=[1' is not valid"),
        (["dataset.batch_size=0"], "dataset.batch_size"),
        (["--split", "train"], "invalid choice: 'train'"),
        (["--top-k", "0"], "--top-k: must be an integer >= 1, got '0'"),
    ],
)
def test_evaluate_refuses_bad_input_in_one_line(trained, capsys, tmp_path, args, message):
    _, checkpoint = trained
    out = tmp_path / "confusion.png"
    status, stdout, err = tool(capsys, "evaluate", checkpoint, *args, "--confusion-matrix", out)
    assert message in one_error_line(status, err)
    assert stdout == "" and not out.exists()


def test_dataset_overrides_change_only_where_and_how_examples_are_read(tmp_path):
    from trainer.tools.evaluate import dataset_with_overrides

    changed = dataset_with_overrides(
        DIGITS, [f"dataset.data_dir={tmp_path}", "dataset.batch_size=8", "dataset.download=false"]
    )
    assert changed == dict(DIGITS, data_dir=str(tmp_path), batch_size=8, download=False)
    assert dataset_with_overrides(DIGITS, []) == DIGITS
    # dataset.path only where the dataset has one (an image folder): digits has none.
    with pytest.raises(UserError, match=r"only dataset\.data_dir, dataset\.download"):
        dataset_with_overrides(DIGITS, ["dataset.path=/elsewhere"])
    with pytest.raises(UserError, match="dataset config is not valid"):
        dataset_with_overrides(DIGITS, ["dataset.batch_size=many"])


def test_a_run_without_validation_split_has_no_validation_to_evaluate():
    from trainer.tools.evaluate import split_batches

    data = SimpleNamespace(validation=lambda: None, test=lambda: "test batches")
    assert split_batches(data, "test") == "test batches"
    with pytest.raises(UserError, match="held out no validation split"):
        split_batches(data, "validation")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_help_never_imports_tensorflow(command):
    process = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trainer", command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.returncode == 0 and "examples:" in process.stdout
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in process.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & {"tensorflow", "keras", "tensorflow_datasets", "matplotlib", "hydra"}


# --------------------------------------------------------------------------- predict


def write_png(path: Path, image: np.ndarray) -> Path:
    """``image`` (float in [0, 1] or uint8, H x W x C) as a PNG file."""
    import tensorflow as tf

    if image.dtype != np.uint8:
        image = np.round(np.asarray(image) * 255).astype(np.uint8)
    tf.io.write_file(str(path), tf.io.encode_png(image))
    return path


@pytest.fixture(scope="module")
def digit_images(trained, digits_dir, tmp_path_factory):
    """PNGs of the first 6 digits test images, and the model's logits for those images
    through evaluate's path (``Evaluation.logits`` on the test batches)."""
    from trainer.training.evaluation import Evaluation

    _, checkpoint = trained
    model, data = checkpoint_model_and_test_data(checkpoint, digits_dir)
    logits, _ = Evaluation(model).logits(data.test())
    images = next(iter(data.test()))[0].numpy()[:6]
    folder = tmp_path_factory.mktemp("digits_png")
    files = [write_png(folder / f"digit-{i}.png", image) for i, image in enumerate(images)]
    return files, images, logits[:6]


@pytest.mark.slow
def test_predict_gives_the_models_classes_for_the_test_images(trained, digit_images, capsys):
    import tensorflow as tf

    _, checkpoint = trained
    files, _, logits = digit_images
    (files[0].parent / "notes.txt").write_text("not an image, and not named like one")
    result = tool_json(capsys, "predict", checkpoint, files[0].parent, "--top-k", "3")
    assert [image["path"] for image in result["images"]] == [str(f) for f in files]  # sorted
    probabilities = tf.nn.softmax(logits).numpy()
    for image, expected in zip(result["images"], probabilities, strict=True):
        top = image["top"]
        assert image["size"] == [8, 8, 1] and len(top) == 3
        assert [t["index"] for t in top] == np.argsort(-expected, kind="stable")[:3].tolist()
        assert [t["class"] for t in top] == [str(t["index"]) for t in top]
        np.testing.assert_allclose(
            [t["probability"] for t in top], expected[[t["index"] for t in top]], rtol=1e-6
        )

    status, text, err = tool(capsys, "predict", checkpoint, files[1])
    assert status == 0, err
    assert text.startswith(f"{files[1]}: {np.argmax(probabilities[1])} ")
    assert text.count(",") == 4  # the default top 5


def test_model_input_of_a_png_is_the_image_training_saw(tmp_path):
    from trainer.tools.predict import model_input

    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    path = write_png(tmp_path / "digit.png", pixels)
    image, size = model_input(path, path.read_bytes(), (8, 8, 1))
    assert size == [8, 8, 1]
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / 255.0)  # bit for bit


def test_model_input_converts_channels_and_resizes(tmp_path):
    from trainer.tools.predict import model_input

    gray = np.random.default_rng(1).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    # A bigger RGB copy (each pixel a 4 x 4 block): area shrinking gives the digit back.
    big = np.kron(gray, np.ones((4, 4, 1), np.uint8)).repeat(3, axis=-1)
    path = write_png(tmp_path / "big.png", big)
    image, size = model_input(path, path.read_bytes(), (8, 8, 1))
    assert size == [32, 32, 3] and image.shape == (8, 8, 1)
    np.testing.assert_allclose(image, gray / 255.0, atol=2e-4)  # grayscale weights sum to 0.9999

    # RGBA: the alpha channel is dropped; a gray model input becomes RGB for an RGB model.
    rgba = np.concatenate([big, np.full((32, 32, 1), 7, np.uint8)], axis=-1)
    path = write_png(tmp_path / "rgba.png", rgba)
    image, size = model_input(path, path.read_bytes(), (32, 32, 3))
    assert size == [32, 32, 4]
    np.testing.assert_array_equal(image, big.astype(np.float32) / 255.0)
    path = write_png(tmp_path / "gray.png", gray)
    image, _ = model_input(path, path.read_bytes(), (16, 16, 3))  # enlarged: bilinear
    assert image.shape == (16, 16, 3) and 0.0 <= image.min() <= image.max() <= 1.0
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


@pytest.mark.slow
def test_predict_resizes_a_bigger_rgb_image(trained, digit_images, tmp_path, capsys):
    _, checkpoint = trained
    files, images, _ = digit_images
    pixels = np.round(images[0] * 255).astype(np.uint8)
    big = write_png(
        tmp_path / "big.png", np.kron(pixels, np.ones((4, 4, 1), np.uint8)).repeat(3, -1)
    )
    result = tool_json(capsys, "predict", checkpoint, big, files[0], "--top-k", "10")
    resized, original = result["images"]
    assert resized["size"] == [32, 32, 3] and original["size"] == [8, 8, 1]
    assert [t["index"] for t in resized["top"]][:1] == [t["index"] for t in original["top"]][:1]
    by_class = {t["index"]: t["probability"] for t in original["top"]}
    for t in resized["top"]:
        assert t["probability"] == pytest.approx(by_class[t["index"]], abs=1e-3)


@pytest.mark.slow
def test_predict_refuses_what_is_not_an_image_in_one_line(trained, digit_images, tmp_path, capsys):
    _, checkpoint = trained
    files, _, _ = digit_images
    text_file = tmp_path / "notes.png"
    text_file.write_text("hello")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(files[0].read_bytes()[:40])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    for args, message in [
        ([files[0], text_file], f"'{text_file}' is not an image tf.io.decode_image can read"),
        ([truncated], f"'{truncated}' is not an image"),
        ([empty], f"'{empty}' holds no image file"),
        ([tmp_path / "missing.png"], "does not exist"),
    ]:
        status, out, err = tool(capsys, "predict", checkpoint, *args)
        assert message in one_error_line(status, err) and out == ""
        assert "Traceback" not in err


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_path_that_holds_no_checkpoint_is_one_line(command, tmp_path, capsys):
    images = [str(tmp_path)] if command == "predict" else []
    status, out, err = tool(capsys, command, tmp_path / "nowhere", *images)
    assert "does not exist" in one_error_line(status, err) and out == ""
    status, out, err = tool(capsys, command, tmp_path, *images)
    assert "is not a checkpoint" in one_error_line(status, err) and out == ""


def test_predict_names_the_classes_a_checkpoint_records_and_older_ones_show_indices(
    tmp_path, capsys
):
    # A checkpoint written in-process as training writes one, of a 3-class folder dataset.
    from checkpoints.layout import MANIFEST
    from trainer.build import build_run
    from trainer.data.pipeline import DataInfo
    from trainer.startup import compose_config, import_tensorflow
    from trainer.training.checkpointer import RunCheckpointer
    from trainer.training.state import LoopState

    names = ("bird", "cat", "hot dog")
    run_dir = tmp_path / "run"
    cfg = compose_config(
        ["model.filters=[4]", "model.dense_units=[8]", f"checkpoint.dir={run_dir}"]
    )
    info = DataInfo("folder", (8, 8, 1), 3, 90, 0, 10, 32, 3, class_names=names)
    import_tensorflow()
    checkpointer = RunCheckpointer(run_dir, cfg, build_run(cfg, info), info, report=lambda _: None)
    checkpointer.save(LoopState(), {"val_accuracy": 0.5})
    checkpointer.close()
    (checkpoint,) = run_dir.glob("step-*")
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    assert manifest["class_names"] == list(names)
    image = write_png(tmp_path / "x.png", np.full((8, 8, 1), 0.5, np.float32))

    result = tool_json(capsys, "predict", checkpoint, image, "--top-k", "3")
    (top,) = [i["top"] for i in result["images"]]
    assert sorted(t["class"] for t in top) == list(names)
    assert all(t["class"] == names[t["index"]] for t in top)
    status, text, _ = tool(capsys, "predict", checkpoint, image, "--top-k", "1")
    assert status == 0 and text == f"{image}: {top[0]['class']} {top[0]['probability']:.4f}\n"

    # A checkpoint written before the names were recorded: its classes are indices.
    del manifest["class_names"]
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))
    older = tool_json(capsys, "predict", checkpoint, image, "--top-k", "3")
    assert [t["class"] for t in older["images"][0]["top"]] == [str(t["index"]) for t in top]
