"""train.py on a folder of images: a CNN learns it, a SIGKILLed run resumes bitwise equal
(from a folder that moved meanwhile), and a resume on changed images is refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from checkpoints import list_checkpoints
from checkpoints.layout import RUN_LOCK
from devtools.image_folder import class_name, make_image_folder
from tests.conftest import (
    assert_same_final_weights,
    resumed_mid_epoch,
    run_train,
    sigkill_while_training,
)

# 3 classes of 25 images: per class 5 test, 3 validation, 17 train, so 51 train images
# in 7 batches of 8 per epoch; a checkpoint every 5 steps only, so every one of them
# before the last (step 28) is in the middle of an epoch.
STEPS_PER_EPOCH, EPOCHS = 7, 4


def folder_run_args(images: Path, run_dir: Path) -> list[str]:
    return [
        "dataset=folder",
        f"dataset.path={images}",
        "dataset.batch_size=8",
        f"checkpoint.dir={run_dir}",
        f"hydra.run.dir={run_dir.parent / 'hydra'}",
        "model.filters=[16]",
        "model.dense_units=[32]",
        "optimizer.learning_rate=3e-3",
        f"trainer.epochs={EPOCHS}",
        "trainer.deterministic=true",
        "checkpoint.every_n_steps=5",
        "checkpoint.every_n_epochs=null",
        "checkpoint.keep_last=20",
    ]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images") / "shapes", per_class=25)


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    """An uninterrupted deterministic run on the folder."""
    work = tmp_path_factory.mktemp("reference")
    run_train(*folder_run_args(images, work / "run"), cwd=work)
    return work / "run"


@pytest.mark.slow
def test_a_cnn_learns_the_generated_image_folder(reference):
    summary = json.loads((reference / "summary.json").read_text())
    manifest = json.loads((list_checkpoints(reference)[-1] / "manifest.json").read_text())

    assert summary["test_accuracy"] >= 0.9
    assert summary["global_step"] == STEPS_PER_EPOCH * EPOCHS
    assert manifest["input_shape"] == [32, 32, 3] and manifest["num_classes"] == 3
    assert manifest["class_names"] == [class_name(i) for i in range(3)]  # what predict shows
    assert re.fullmatch("[0-9a-f]{64}", manifest["data_fingerprint"])


@pytest.mark.slow
def test_a_sigkilled_run_resumes_mid_epoch_from_a_moved_folder_bitwise_equal(
    images, reference, tmp_path
):
    copy = shutil.copytree(images, tmp_path / "images")
    run_dir = tmp_path / "run"
    sigkill_while_training(folder_run_args(copy, run_dir), run_dir, tmp_path)
    latest = list_checkpoints(run_dir)[-1].name
    moved = copy.rename(tmp_path / "moved")  # the user moved their images meanwhile

    # The run's own command with the new path and +resume: `dataset=folder` is no change.
    resumed = run_train(*folder_run_args(moved, run_dir), f"+resume={run_dir}", cwd=tmp_path)

    step, _ = resumed_mid_epoch(resumed)
    assert step <= int(latest.removeprefix("step-"))
    assert_same_final_weights(run_dir, reference)


@pytest.mark.slow
def test_resume_with_only_the_new_path_composes_the_runs_dataset_option(
    images, reference, tmp_path
):
    from trainer.startup import resumed_group_choices

    moved = shutil.copytree(images, tmp_path / "moved")
    run_copy = shutil.copytree(reference, tmp_path / "run")
    # dataset.path is a key of the folder option only: the run's option is chosen for Hydra.
    assert resumed_group_choices([f"+resume={run_copy}", f"dataset.path={moved}"]) == [
        "dataset=folder"
    ]
    for already_fine in (
        [f"+resume={run_copy}", "dataset=folder", f"dataset.path={moved}"],
        [f"+resume={run_copy}", "trainer.epochs=5"],
        [f"+resume={tmp_path / 'nowhere'}", f"dataset.path={moved}"],  # the resume says why
        [f"dataset.path={moved}"],
    ):
        assert resumed_group_choices(already_fine) == [], already_fine

    # The documented command, typed as docs/datasets-and-models.md has it: the run resumes
    # (it had finished).
    process = run_train(
        f"+resume={run_copy}",
        f"dataset.path={moved}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        cwd=tmp_path,
    )
    assert re.search(r"Resuming from \S+: step 28", process.stdout), process.stdout[-2000:]
    assert "Traceback" not in process.stderr


@pytest.mark.slow
def test_a_resume_on_changed_images_is_refused_and_writes_nothing(images, reference, tmp_path):
    changed = shutil.copytree(images, tmp_path / "changed")
    (changed / class_name(1) / "0003.png").unlink()
    run_copy = shutil.copytree(reference, tmp_path / "run")
    before = sorted(str(p.relative_to(run_copy)) for p in run_copy.rglob("*"))

    # the run's own command, on the changed folder
    process = run_train(
        *folder_run_args(changed, run_copy), f"+resume={run_copy}", cwd=tmp_path, check=False
    )

    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        f"error: dataset.path {changed} does not hold the images checkpoint "
        f"{list_checkpoints(run_copy)[-1]} was trained on (its files or their sizes differ); "
        "resume with dataset.path=<a folder with exactly those files>"
    ]
    assert sorted(str(p.relative_to(run_copy)) for p in run_copy.rglob("*")) == before


@pytest.mark.slow
def test_a_bad_folder_is_one_line_and_no_run_starts(images, tmp_path):
    single = make_image_folder(tmp_path / "single", classes=1, per_class=2)
    broken = shutil.copytree(images, tmp_path / "broken")
    (broken / class_name(2) / "0007.png").write_text("not an image")

    layout = run_train(*folder_run_args(single, tmp_path / "run1"), cwd=tmp_path, check=False)
    image = run_train(*folder_run_args(broken, tmp_path / "run2"), cwd=tmp_path, check=False)

    assert (layout.returncode, image.returncode) == (2, 2)
    assert layout.stderr.strip().splitlines() == [
        f"error: image folder {single} has 1 class subfolder ({class_name(0)}/); a classifier "
        "needs at least 2"
    ]
    assert not (tmp_path / "run1").exists()  # refused before the run directory is made
    lines = image.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {broken / class_name(2) / '0007.png'} is not an image")
    assert "Traceback" not in image.stderr
    # nothing written into it but the (released) lock of its one writer
    assert [p.name for p in (tmp_path / "run2").iterdir()] == [RUN_LOCK]
