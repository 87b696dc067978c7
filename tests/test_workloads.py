"""Real workloads end to end: each model family learns a generated image folder, and the
whole combination (ResNet, an image folder, strong augmentation, bfloat16, EMA) killed
with SIGKILL mid-epoch resumes bitwise equal to the uninterrupted run.

The images are coloured shapes (``devtools/image_folder.py``): a class is a shape in a
colour of its own, so every family should separate them in a few epochs; the
accuracies asserted are the floors each family reaches on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools import fault_injection
from devtools.image_folder import make_image_folder
from tests.conftest import run_train


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """3 classes x 60 coloured shapes, 32x32 RGB: 144 train, 18 validation, 36 test images
    (dataset=folder's default splits)."""
    return make_image_folder(
        tmp_path_factory.mktemp("shapes") / "images", classes=3, per_class=60, size=(32, 32)
    )


# Each family, small enough to train in seconds on a CPU, and the test accuracy it must reach
# (each reached 1.0 on 2026-12-02; the floors leave room for another machine's rounding).
FAMILIES = {
    "cnn": (["model=cnn", "model.filters=[16,32]", "model.dense_units=[32]"], 0.95),
    "resnet": (
        [
            "model=resnet",
            "model.width=8",
            "model.depth=null",
            "model.block=basic",
            "model.stage_blocks=[1,1]",
        ],
        0.95,
    ),
    "keras_app": (
        ["model=keras_app", "model.application=MobileNetV3Small", "model.bn_momentum=0.9"],
        0.8,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_model_family_learns_the_shapes(family, shapes, tmp_path):
    overrides, floor = FAMILIES[family]
    run = tmp_path / "run"
    run_train(
        "dataset=folder",
        f"dataset.path={shapes}",
        "dataset.batch_size=16",
        *overrides,
        "trainer.epochs=8",
        "schedule=constant",
        "optimizer.learning_rate=3e-3",
        f"checkpoint.dir={run}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        cwd=tmp_path,
        timeout=900,
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_accuracy"] >= floor, summary


# The combination the issue names, small: a 2-stage ResNet of width 8 on 16 px images.
EVERYTHING = (
    "model=resnet",
    "model.width=8",
    "model.depth=null",
    "model.block=basic",
    "model.stage_blocks=[1,1]",
    "model.dropout=0.1",
    "dataset=folder",
    "dataset.image_size=[16,16]",
    "dataset.batch_size=16",
    "augment=strong",
    "trainer.precision=mixed_bfloat16",
    "optimizer.ema=true",
)


@pytest.mark.slow
def test_everything_on_killed_mid_epoch_resumes_bitwise_equal(shapes, tmp_path, capsys):
    """The CI-sized version of `python -m devtools.fault_injection --trials N -- <EVERYTHING>`:
    every restart continues from a checkpoint, and the final weights, optimizer slots
    and EMA weights (optimizer variables) equal the uninterrupted run's bit for bit."""
    code = fault_injection.main(
        [
            "--trials",
            "1",
            "--kills",
            "2",
            "--work-dir",
            str(tmp_path),
            "--seed",
            "5",
            "--",
            *EVERYTHING,
            f"dataset.path={shapes}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("1 trials, ") and " 0 lost " in last
    assert "0 runs whose final weights differ" in last
