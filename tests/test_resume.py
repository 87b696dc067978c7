"""Resume continues the same run: bitwise-equal weights, same lr, refusals, crafted checkpoints."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from checkpoints import checkpoint_arrays
from devtools import fault_injection
from tests.conftest import REPO, run_train, tiny_args

# A deterministic run with dropout that checkpoints every 25 steps (41 steps per epoch,
# so step 50 is in the middle of epoch 2) and keeps them all.
DETERMINISTIC = (
    "trainer.deterministic=true",
    "checkpoint.every_n_steps=25",
    "checkpoint.keep_last=20",
)


def manifest(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "manifest.json").read_text())


def assert_bitwise_equal(a: Path, b: Path) -> None:
    left, right = checkpoint_arrays(a), checkpoint_arrays(b)
    assert left.keys() == right.keys()
    different = [k for k in left if not np.array_equal(left[k], right[k])]
    assert not different, f"variables differ: {different}"
    assert (
        json.loads((a / "trainer_state.json").read_text())["rng"]
        == json.loads((b / "trainer_state.json").read_text())["rng"]
    )


@pytest.fixture(scope="module")
def reference(digits_dir, tmp_path_factory) -> Path:
    """An uninterrupted deterministic 2-epoch run; every checkpoint kept."""
    work = tmp_path_factory.mktemp("reference")
    run_train(*tiny_args(digits_dir, work / "run", *DETERMINISTIC), cwd=work)
    return work / "run"


@pytest.mark.slow
def test_resume_mid_epoch_is_bitwise_equal_to_an_uninterrupted_run(reference, digits_dir, tmp_path):
    branch = tmp_path / "branch"
    process = run_train(
        *tiny_args(digits_dir, branch, *DETERMINISTIC),
        f"+resume={reference / 'step-00000050'}",
        cwd=tmp_path,
    )
    assert f"Resuming from {reference / 'step-00000050'}: step 50, epoch 2, batch 9" in (
        process.stdout
    )
    # the optimizer continued from step 50: the first checkpoint it writes is step 75
    assert sorted(p.name for p in branch.glob("step-*")) == [
        "step-00000075",
        "step-00000082",
    ]
    for step in ("step-00000075", "step-00000082"):
        assert_bitwise_equal(reference / step, branch / step)
        assert (
            manifest(branch / step)["learning_rate"] == manifest(reference / step)["learning_rate"]
        )
    with h5py.File(branch / "step-00000082" / "optimizer.h5", "r") as handle:
        assert int(handle["0"][()]) == 82  # optimizer.iterations


@pytest.mark.slow
def test_resuming_an_older_checkpoint_in_place_is_refused(reference, tmp_path):
    before = sorted(p.name for p in reference.iterdir())
    process = run_train(f"+resume={reference / 'step-00000025'}", cwd=tmp_path, check=False)
    assert process.returncode == 2
    assert "is not the newest of its run (step-00000082 is)" in process.stderr
    assert "checkpoint.dir=NEW_DIR" in process.stderr
    assert sorted(p.name for p in reference.iterdir()) == before


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["schedule=one_cycle"], "schedule"),
        (
            ["optimizer.learning_rate=0.1", "model.dropout=0.5"],
            "optimizer.learning_rate, model.dropout",
        ),
        (["seed=7"], "seed"),
        (["dataset.batch_size=8"], "dataset.batch_size"),
    ],
)
@pytest.mark.slow
def test_overrides_that_change_the_run_are_refused(reference, tmp_path, overrides, refused):
    before = {p.name: p.stat().st_mtime_ns for p in reference.rglob("*")}
    process = run_train(f"+resume={reference}", *overrides, cwd=tmp_path, check=False)
    assert process.returncode == 2
    line = process.stderr.strip()
    assert line.startswith(f"error: cannot override {refused} when resuming")
    assert "\n" not in line
    assert {p.name: p.stat().st_mtime_ns for p in reference.rglob("*")} == before


def _copy_run(reference: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    return run


def _epoch_lrs(run: Path) -> list[float]:
    return [float(row["lr"]) for row in csv.DictReader((run / "metrics.csv").open())]


@pytest.mark.slow
def test_extending_a_run_keeps_the_schedule_unless_restretched(reference, digits_dir, tmp_path):
    kept = _copy_run(reference, tmp_path / "kept")
    process = run_train(f"+resume={kept}", "trainer.epochs=3", cwd=tmp_path)
    assert "Schedule: kept as saved" in process.stdout
    # cosine resolved for 82 steps: past its end it stays at its final value, 0
    assert _epoch_lrs(kept)[-1] == 0.0
    assert manifest(kept / "step-00000123")["global_step"] == 123

    stretched = _copy_run(reference, tmp_path / "stretched")
    process = run_train(
        f"+resume={stretched}",
        "trainer.epochs=4",
        "trainer.restretch_schedule=true",
        cwd=tmp_path,
    )
    assert "re-fitted to the new run length" in process.stdout
    lrs = _epoch_lrs(stretched)
    assert lrs[2] > 0.0  # end of epoch 3 of 4: the stretched cosine is not over yet
    saved = yaml.safe_load((stretched / "step-00000164" / "config.yaml").read_text())
    assert saved["resolved_schedule"]["decay_steps"] == 164
    assert saved["trainer"]["restretch_schedule"] is True


@pytest.mark.slow
def test_fine_tuning_keeps_weights_and_starts_a_fresh_optimizer(reference, digits_dir, tmp_path):
    new_dir = tmp_path / "tuned"
    process = run_train(
        f"+resume={reference}",
        "trainer.fine_tune=true",
        "optimizer=sgd",
        "schedule=constant",
        "optimizer.learning_rate=0.0001",
        f"checkpoint.dir={new_dir}",
        "trainer.epochs=1",
        cwd=tmp_path,
    )
    assert "Fine-tuning from" in process.stdout
    config = yaml.safe_load((new_dir / "config.yaml").read_text())
    assert config["optimizer"]["name"] == "sgd" and config["schedule"]["name"] == "constant"
    assert config["model"] == yaml.safe_load((reference / "config.yaml").read_text())["model"]
    assert manifest(new_dir / "step-00000041")["global_step"] == 41  # a fresh optimizer
    # it starts from the trained weights: far better than chance after one tiny-lr epoch
    first = next(csv.DictReader((new_dir / "metrics.csv").open()))
    assert (
        float(first["val_accuracy"])
        >= float(manifest(reference / "step-00000082")["metrics"]["val_accuracy"]) - 0.05
    )


def _rehash(checkpoint: Path) -> None:
    """Rewrite the manifest so that it verifies again: what a crafted checkpoint would do."""
    data = manifest(checkpoint)
    for name in data["files"]:
        content = (checkpoint / name).read_bytes()
        data["files"][name] = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    (checkpoint / "manifest.json").write_text(json.dumps(data))


def _edit_config(checkpoint: Path, edit) -> None:
    config = yaml.safe_load((checkpoint / "config.yaml").read_text())
    edit(config)
    (checkpoint / "config.yaml").write_text(yaml.safe_dump(config))
    _rehash(checkpoint)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["schedule"].update(_target_="os.system"), "contains 'schedule._target_'"),
        (lambda c: c["schedule"].update(name="evil"), "resolved_schedule names 'cosine', schedule"),
        (
            lambda c: [c[k].update(name="evil") for k in ("schedule", "resolved_schedule")],
            "unknown schedule 'evil'",
        ),
        (lambda c: c["optimizer"].update(name="sgd_plus"), "unknown optimizer 'sgd_plus'"),
        (lambda c: c["model"].update(filters=[16]), "does not fit the model"),
        (lambda c: c.pop("optimizer"), "lacks the config section(s) optimizer"),
        (
            lambda c: c["optimizer"].update(learning_rate="eval('1')"),
            "optimizer config is not valid",
        ),
    ],
)
@pytest.mark.slow
def test_a_crafted_checkpoint_is_refused_and_nothing_runs(reference, tmp_path, edit, message):
    run = _copy_run(reference, tmp_path)
    newest = run / "step-00000082"
    _edit_config(newest, edit)
    before = sorted(p.name for p in run.rglob("*"))
    process = run_train(
        f"+resume={newest}", f"checkpoint.dir={tmp_path / 'out'}", cwd=tmp_path, check=False
    )
    assert process.returncode == 2
    assert message in process.stderr
    assert len(process.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in run.rglob("*")) == before
    assert not list((tmp_path / "out").glob("step-*"))


@pytest.mark.slow
def test_a_newer_format_version_is_refused(reference, tmp_path):
    run = _copy_run(reference, tmp_path)
    data = manifest(run / "step-00000082")
    data["format_version"] = 99
    (run / "step-00000082" / "manifest.json").write_text(json.dumps(data))
    process = run_train(f"+resume={run / 'step-00000082'}", cwd=tmp_path, check=False)
    assert process.returncode == 2
    assert "format version 99 is newer than this trainer reads" in process.stderr


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte], ids=["truncated", "byte flipped"])
def test_a_corrupt_newest_checkpoint_falls_back_and_says_so(reference, tmp_path, damage):
    # Every kind of damage (flipped byte, deleted file, broken manifest, ...) is detected by
    # verify() in test_checkpoint_format.py. End to end: a truncated file is caught by its
    # size before TensorFlow is imported, a flipped byte by the sha256 checked meanwhile.
    run = _copy_run(reference, tmp_path)
    newest = run / "step-00000082"
    damage(newest / "model.weights.h5")
    process = run_train(f"+resume={run}", "trainer.epochs=2", cwd=tmp_path)
    assert f"checkpoint {newest} does not verify" in process.stdout
    assert f"Resuming from {run / 'step-00000075'}: step 75" in process.stdout
    assert manifest(run / "step-00000082")["global_step"] == 82  # rewritten, now valid
    assert_bitwise_equal(reference / "step-00000082", run / "step-00000082")


@pytest.mark.slow
def test_resuming_a_checkpoint_with_a_flipped_byte_is_refused(reference, tmp_path):
    run = _copy_run(reference, tmp_path)
    newest = run / "step-00000082"
    _flip_a_byte(newest / "optimizer.h5")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    process = run_train(f"+resume={newest}", cwd=tmp_path, check=False)
    assert process.returncode == 2
    assert f"checkpoint {newest} does not verify: optimizer.h5: sha256 does not match" in (
        process.stderr
    )
    assert "Traceback" not in process.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_the_run_continues(digits_dir, tmp_path):
    run = tmp_path / "run"
    args = tiny_args(digits_dir, run, "trainer.epochs=20", "checkpoint.every_n_epochs=100")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() or not (run / "metrics.csv").read_text().count("\n"):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received" in err and f"Resume with: python train.py +resume={run}" in err
    saved = sorted(run.glob("step-*"))
    assert len(saved) == 1  # no epoch checkpoint was due: this one is the signal's
    step = manifest(saved[0])["global_step"]
    assert 0 < step < 20 * 41
    resumed = run_train(f"+resume={run}", "trainer.epochs=2", cwd=tmp_path)
    assert f"step {step}," in resumed.stdout


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_run(digits_dir, tmp_path, capsys):
    """The CI-sized version of `python -m devtools.fault_injection --trials 50`."""
    code = fault_injection.main(
        [
            "--trials",
            "1",
            "--kills",
            "2",
            "--data-dir",
            str(digits_dir),
            "--work-dir",
            str(tmp_path),
            "--seed",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("1 trials, ") and " 0 lost " in last
    assert "0 runs whose final weights differ" in last


@pytest.mark.slow
def test_async_saving_writes_the_same_checkpoints(reference, digits_dir, tmp_path):
    run = tmp_path / "async"
    run_train(*tiny_args(digits_dir, run, *DETERMINISTIC, "checkpoint.async=true"), cwd=tmp_path)
    assert sorted(p.name for p in run.glob("step-*")) == sorted(
        p.name for p in reference.glob("step-*")
    )
    for checkpoint in run.glob("step-*"):
        assert_bitwise_equal(reference / checkpoint.name, checkpoint)
    assert not list(run.glob(".step-*"))  # no staging left behind


@pytest.mark.slow
def test_callback_state_survives_a_resume(digits_dir, tmp_path):
    # monitor=loss with mode=max makes every epoch after the first "no improvement",
    # so reduce-on-plateau halves the lr scale once per epoch, deterministically.
    run = tmp_path / "run"
    plateau = (
        "checkpoint.monitor=loss",
        "checkpoint.mode=max",
        "trainer.reduce_on_plateau.patience=1",
        "trainer.reduce_on_plateau.factor=0.5",
        "schedule=constant",
    )
    run_train(*tiny_args(digits_dir, run, *plateau), cwd=tmp_path)
    state = json.loads((run / "step-00000082" / "trainer_state.json").read_text())["loop"]
    assert state["lr_scale"] == 0.5 and state["best"] is not None
    process = run_train(f"+resume={run}", "trainer.epochs=3", *plateau, cwd=tmp_path)
    assert "Reducing the learning rate: scale now 0.25" in process.stdout
    final = manifest(run / "step-00000123")
    assert final["learning_rate"] == pytest.approx(1e-3 * 0.25)
    assert (
        json.loads((run / "step-00000123" / "trainer_state.json").read_text())["loop"]["best"]
        == state["best"]
    )  # the first epoch's loss stays the best under mode=max


def test_fault_injection_takes_any_config_after_the_small_cnns_defaults(tmp_path):
    """Overrides after `--` reach every run; choosing another model drops the CNN's keys."""
    small = fault_injection.run_args(tmp_path, tmp_path / "run", tmp_path / "hydra")
    assert "model.filters=[8]" in small
    other = fault_injection.run_args(
        tmp_path, tmp_path / "run", tmp_path / "hydra", ["model=resnet", "augment=strong"]
    )
    assert not any(arg.startswith("model.filters") for arg in other)
    assert other[-2:] == ["model=resnet", "augment=strong"]
    assert "trainer.deterministic=true" in other
