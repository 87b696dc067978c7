"""The on-disk checkpoint format, verification, keeping policy and the (async) manager.

Fast and TensorFlow-free: checkpoints here are written by a fake ``write_files``
that puts a few small files (random "weights" in an HDF5 file, a JSON state, a
YAML config) into the staging directory, exactly where the real trainer writes
its state files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import checkpoints.manager as checkpoint_manager_module
import trainer
from checkpoints import (
    FORMAT_VERSION,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    Checkpoint,
    KeepPolicy,
    checkpoint_name,
    commit_checkpoint,
    is_checkpoint_name,
    latest_valid_checkpoint,
    list_checkpoints,
    read_manifest,
    read_pointer,
    remove_stale_staging,
    resolve_resume_path,
    staging_dir,
    verify,
    verify_in_background,
    write_text_atomically,
)
from checkpoints.durable import move_aside
from checkpoints.manager import CheckpointError, CheckpointManager
from trainer.errors import UserError

WEIGHTS = "model.weights.h5"
STATE = "trainer_state.json"
CONFIG = "config.yaml"


# --------------------------------------------------------------------------- helpers


def weights_file(data: bytes) -> bytes:
    """An HDF5 weights file holding ``data`` as one uint8 dataset (the bulk of the file)."""
    import h5py
    import numpy as np

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset("layers/dense/vars/0", data=np.frombuffer(data, np.uint8))
    return buffer.getvalue()


def state_files(seed: int = 0, **extra: bytes) -> dict[str, bytes]:
    """The bytes of a checkpoint's files; different seeds give different contents."""
    rng = random.Random(seed)
    files = {
        WEIGHTS: weights_file(rng.randbytes(16384 + seed % 97)),
        STATE: json.dumps({"loop": {"epoch": seed, "batches_done": 7}}).encode(),
        CONFIG: f"model:\n  name: cnn\n  seed: {seed}\n".encode(),
    }
    files.update(extra)
    return files


def fake_writer(files: dict[str, bytes], calls: list[Path] | None = None) -> Callable[[Path], None]:
    def write_files(staging: Path) -> None:
        if calls is not None:
            calls.append(staging)
        for name, data in files.items():
            (staging / name).write_bytes(data)

    return write_files


def make_checkpoint(
    run_dir: Path, step: int, metrics: dict | None = None, files: dict[str, bytes] | None = None
) -> Path:
    """Commit one checkpoint with the module-level functions, as the manager does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(run_dir, step)
    fake_writer(files if files is not None else state_files(step))(staging)
    final = run_dir / checkpoint_name(step)
    commit_checkpoint(
        staging, final, {"global_step": step, "epoch": step // 10, "metrics": metrics or {}}
    )
    return final


def manifest_of(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def rewrite_manifest(path: Path, **changes) -> None:
    manifest = manifest_of(path)
    manifest.update(changes)
    (path / MANIFEST).write_text(json.dumps(manifest))


def hidden_entries(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith("."))


def tree(root: Path) -> list[tuple[str, str]]:
    """Every path under ``root`` with the sha256 of its content (directories: 'dir')."""
    return sorted(
        (
            str(p.relative_to(root)),
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
        )
        for p in root.rglob("*")
    )


def steps_in(run_dir: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(run_dir)]


def manager_save(manager: CheckpointManager, step: int, metrics: dict | None = None) -> Path:
    return manager.save(
        step, fake_writer(state_files(step)), {"global_step": step, "metrics": metrics or {}}
    )


# --------------------------------------------------------------------------- commit


def test_commit_writes_a_manifest_listing_every_file_with_size_and_sha256(tmp_path):
    files = state_files(3)
    final = make_checkpoint(tmp_path, 450, metrics={"val_accuracy": 0.5}, files=files)

    assert final.name == "step-00000450"
    assert sorted(p.name for p in final.iterdir()) == sorted([*files, MANIFEST])
    manifest = manifest_of(final)
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["project_version"] == trainer.__version__
    assert manifest["global_step"] == 450
    assert manifest["epoch"] == 45
    assert manifest["metrics"] == {"val_accuracy": 0.5}
    assert set(manifest["files"]) == set(files)  # the manifest does not list itself
    for name, data in files.items():
        assert manifest["files"][name] == {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    checkpoint = verify(final)
    assert checkpoint.valid and checkpoint.problems == []
    assert checkpoint.global_step == 450
    assert checkpoint.file(WEIGHTS) == final / WEIGHTS
    with pytest.raises(UserError, match=r"no file 'optimizer\.h5'"):
        checkpoint.file("optimizer.h5")
    assert hidden_entries(tmp_path) == []  # the staging directory was renamed, not copied


def test_final_directory_appears_only_when_complete(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    final = run_dir / checkpoint_name(5)
    seen: dict[str, object] = {}
    real_rename = os.rename

    def spying_rename(src, dst):
        if Path(dst) == final:
            # At the one moment the final name appears, the source is already complete.
            seen["final_existed"] = final.exists()
            seen["source_valid"] = verify(Path(src)).valid
            seen["source_name"] = Path(src).name
        real_rename(src, dst)

    def write_files(staging: Path) -> None:
        seen["during_write_final_exists"] = final.exists()
        seen["during_write_listed"] = list_checkpoints(run_dir)
        fake_writer(state_files(5))(staging)

    monkeypatch.setattr(os, "rename", spying_rename)
    manager = CheckpointManager(run_dir, KeepPolicy(), report=lambda _: None)
    assert manager.save(5, write_files, {"global_step": 5}) == final

    assert seen["during_write_final_exists"] is False
    assert seen["during_write_listed"] == []
    assert seen["final_existed"] is False
    assert seen["source_valid"] is True
    assert str(seen["source_name"]).startswith(".step-00000005.tmp-")
    assert verify(final).valid
    assert hidden_entries(run_dir) == []


def test_staging_dirs_are_hidden_never_listed_and_removed_as_stale(tmp_path):
    kept = make_checkpoint(tmp_path, 10)
    (tmp_path / CONFIG).write_text("a: 1\n")
    write_text_atomically(tmp_path / "latest", kept.name + "\n")
    half_written = staging_dir(tmp_path, 20)
    (half_written / WEIGHTS).write_bytes(b"partial")
    complete_but_uncommitted = staging_dir(tmp_path, 30)
    fake_writer(state_files(30))(complete_but_uncommitted)

    for path in (half_written, complete_but_uncommitted):
        assert path.parent == tmp_path
        assert path.name.startswith(".step-") and ".tmp-" in path.name
        assert not is_checkpoint_name(path.name)
    assert list_checkpoints(tmp_path) == [kept]
    assert latest_valid_checkpoint(tmp_path, report=lambda _: None).path == kept

    remove_stale_staging(tmp_path)

    assert hidden_entries(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG, "latest", kept.name]
    assert verify(kept).valid


def test_a_new_manager_removes_stale_staging_of_a_dead_process(tmp_path):
    make_checkpoint(tmp_path, 1)
    stale = staging_dir(tmp_path, 2)
    (stale / WEIGHTS).write_bytes(b"half")
    CheckpointManager(tmp_path, KeepPolicy(), report=lambda _: None)
    assert not stale.exists()
    assert steps_in(tmp_path) == [1]


def test_resaving_the_same_step_replaces_it_atomically(tmp_path):
    old_files = state_files(1, **{"old_only.bin": b"from the first save"})
    final = make_checkpoint(tmp_path, 100, metrics={"val_accuracy": 0.1}, files=old_files)
    new_files = state_files(2)
    again = make_checkpoint(tmp_path, 100, metrics={"val_accuracy": 0.2}, files=new_files)

    assert again == final
    assert sorted(p.name for p in final.iterdir()) == sorted([*new_files, MANIFEST])
    assert (final / WEIGHTS).read_bytes() == new_files[WEIGHTS]
    assert manifest_of(final)["metrics"] == {"val_accuracy": 0.2}
    assert verify(final).valid
    assert list_checkpoints(tmp_path) == [final]
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]  # nothing hidden left


def test_list_checkpoints_orders_by_step_number_not_by_name(tmp_path):
    # Names are zero-padded to 8 digits; a longer run has 9-digit steps.
    for step in (99_999_999, 100_000_000, 7):
        make_checkpoint(tmp_path, step)
    assert steps_in(tmp_path) == [7, 99_999_999, 100_000_000]
    newest = latest_valid_checkpoint(tmp_path, report=lambda _: None)
    assert newest is not None and newest.global_step == 100_000_000


# --------------------------------------------------------------------------- verify


def _truncate(path: Path) -> None:
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])


def _flip_one_byte(path: Path) -> None:
    data = bytearray((path / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / WEIGHTS).write_bytes(bytes(data))


def _delete_config(path: Path) -> None:
    (path / CONFIG).unlink()


def _manifest_not_json(path: Path) -> None:
    (path / MANIFEST).write_text('{"format_version": 1, "files": ')


def _manifest_missing(path: Path) -> None:
    (path / MANIFEST).unlink()


def _manifest_newer_format(path: Path) -> None:
    rewrite_manifest(path, format_version=FORMAT_VERSION + 1)


def _manifest_lists(name: str) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        manifest = manifest_of(path)
        manifest["files"][name] = manifest["files"][CONFIG]
        (path / MANIFEST).write_text(json.dumps(manifest))

    return corrupt


def _manifest_too_big(path: Path) -> None:
    manifest = manifest_of(path)
    manifest["padding"] = "x" * MAX_MANIFEST_BYTES
    (path / MANIFEST).write_text(json.dumps(manifest))


def _manifest_not_object(path: Path) -> None:
    (path / MANIFEST).write_text(json.dumps([manifest_of(path)]))


def _manifest_without_global_step(path: Path) -> None:
    manifest = manifest_of(path)
    del manifest["global_step"]
    (path / MANIFEST).write_text(json.dumps(manifest))


def _manifest_entry_without_sha(path: Path) -> None:
    manifest = manifest_of(path)
    del manifest["files"][STATE]["sha256"]
    (path / MANIFEST).write_text(json.dumps(manifest))


def _manifest_without_files(path: Path) -> None:
    rewrite_manifest(path, files={})


def _manifest_format_not_int(path: Path) -> None:
    rewrite_manifest(path, format_version="1")


CORRUPTIONS = {
    "truncated file": (_truncate, [WEIGHTS, "size"]),
    "one byte flipped": (_flip_one_byte, [WEIGHTS, "sha256"]),
    "file deleted": (_delete_config, [CONFIG, "missing"]),
    "manifest not JSON": (_manifest_not_json, [MANIFEST, "not valid JSON"]),
    "manifest missing": (_manifest_missing, [f"no {MANIFEST}"]),
    "newer format": (_manifest_newer_format, ["newer", "upgrade"]),
    "name with slash": (_manifest_lists("sub/config.yaml"), [MANIFEST, "'sub/config.yaml'"]),
    "name escaping up": (_manifest_lists("../config.yaml"), [MANIFEST, "'../config.yaml'"]),
    "name is dotdot": (_manifest_lists(".."), [MANIFEST, "not allowed", "'..'"]),
    "absolute name": (_manifest_lists("/etc/passwd"), [MANIFEST, "'/etc/passwd'"]),
    "lists itself": (_manifest_lists(MANIFEST), [MANIFEST, "not allowed"]),
    "manifest too big": (_manifest_too_big, [MANIFEST, "larger than"]),
    "manifest not object": (_manifest_not_object, [MANIFEST, "not a JSON object"]),
    "no global_step": (_manifest_without_global_step, [MANIFEST, "global_step"]),
    "entry without sha256": (_manifest_entry_without_sha, [STATE, "sha256"]),
    "no files": (_manifest_without_files, [MANIFEST, "lists no files"]),
    "format_version not int": (_manifest_format_not_int, [MANIFEST, "format_version"]),
}


def test_a_clean_checkpoint_verifies(tmp_path):
    checkpoint = verify(make_checkpoint(tmp_path, 1))
    assert checkpoint.valid
    assert checkpoint.problems == []
    assert checkpoint.manifest is not None and checkpoint.manifest["global_step"] == 1


@pytest.mark.parametrize("corruption", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_each_corruption_makes_the_checkpoint_invalid_and_names_the_file(tmp_path, corruption):
    corrupt, expected = CORRUPTIONS[corruption]
    path = make_checkpoint(tmp_path, 1)
    assert verify(path).valid
    corrupt(path)

    checkpoint = verify(path)

    assert not checkpoint.valid
    assert checkpoint.problems
    message = "; ".join(checkpoint.problems)
    for fragment in expected:
        assert fragment in message, message
    assert "\n" not in message
    assert latest_valid_checkpoint(tmp_path, report=lambda _: None) is None


@pytest.mark.parametrize("corruption", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_without_hashes_only_a_changed_byte_goes_unnoticed(tmp_path, corruption):
    corrupt, _ = CORRUPTIONS[corruption]
    path = make_checkpoint(tmp_path, 1)
    corrupt(path)

    quick = verify(path, hashes=False)

    if corruption == "one byte flipped":  # same size: only the sha256 tells
        assert quick.valid
    else:
        assert not quick.valid
        assert quick.problems == verify(path).problems


def test_verifying_in_the_background_finds_what_verify_finds(tmp_path):
    clean = make_checkpoint(tmp_path, 1)
    flipped = make_checkpoint(tmp_path, 2)
    _flip_one_byte(flipped)

    assert verify_in_background(clean).result() == verify(clean)
    checkpoint = verify_in_background(flipped).result()
    assert not checkpoint.valid
    assert checkpoint.problems == [f"{WEIGHTS}: sha256 does not match the manifest"]


def test_a_file_that_grew_is_reported_with_both_sizes(tmp_path):
    path = make_checkpoint(tmp_path, 1)
    with open(path / STATE, "ab") as handle:
        handle.write(b" ")
    assert verify(path).problems == [
        f"{STATE}: size {len(state_files(1)[STATE]) + 1} bytes, "
        f"manifest says {len(state_files(1)[STATE])}"
    ]


def test_read_manifest_rejects_a_non_integer_global_step(tmp_path):
    path = make_checkpoint(tmp_path, 1)
    rewrite_manifest(path, global_step="1")
    with pytest.raises(ValueError, match="global_step"):
        read_manifest(path)


# --------------------------------------------------------------------------- resolving


def test_latest_valid_falls_back_past_broken_checkpoints_and_says_which(tmp_path):
    for step in (10, 20, 30, 40):
        make_checkpoint(tmp_path, step)
    _flip_one_byte(tmp_path / checkpoint_name(40))
    _manifest_missing(tmp_path / checkpoint_name(30))
    before = tree(tmp_path)
    reports: list[str] = []

    checkpoint = latest_valid_checkpoint(tmp_path, report=reports.append)

    assert checkpoint is not None and checkpoint.path == tmp_path / checkpoint_name(20)
    assert checkpoint.valid and checkpoint.global_step == 20
    assert len(reports) == 2
    assert "step-00000040" in reports[0] and WEIGHTS in reports[0] and "sha256" in reports[0]
    assert "step-00000030" in reports[1] and MANIFEST in reports[1]
    assert all("skipping" in r and "\n" not in r for r in reports)
    assert tree(tmp_path) == before  # nothing deleted or repaired


def test_resolving_a_run_dir_reports_skipped_checkpoints(tmp_path):
    for step in (1, 2):
        make_checkpoint(tmp_path, step)
    _truncate(tmp_path / checkpoint_name(2))
    reports: list[str] = []
    checkpoint = resolve_resume_path(tmp_path, report=reports.append)
    assert checkpoint.global_step == 1
    assert len(reports) == 1 and "step-00000002" in reports[0] and WEIGHTS in reports[0]


def test_resolving_a_specific_checkpoint_uses_exactly_that_one(tmp_path):
    for step in (1, 2, 3):
        make_checkpoint(tmp_path, step)
    reports: list[str] = []
    checkpoint = resolve_resume_path(str(tmp_path / checkpoint_name(2)), report=reports.append)
    assert checkpoint.path == tmp_path / checkpoint_name(2)
    assert checkpoint.valid and reports == []


def _one_line_user_error(path, match: str) -> str:
    with pytest.raises(UserError) as info:
        resolve_resume_path(path, report=lambda _: None)
    message = str(info.value)
    assert "\n" not in message
    assert match in message, message
    return message


def test_resolve_refuses_bad_paths_with_one_clear_line(tmp_path):
    missing = tmp_path / "no-such-run"
    assert str(missing) in _one_line_user_error(missing, "does not exist")
    assert not missing.exists()

    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello\n")
    _one_line_user_error(a_file, "is not a directory")
    assert a_file.read_text() == "hello\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_user_error(empty, "holds no checkpoints")

    not_a_run = tmp_path / "not-a-run"
    (not_a_run / "sub").mkdir(parents=True)
    (not_a_run / "model.weights.h5").write_bytes(b"w")
    (not_a_run / "step-12").mkdir()  # not a checkpoint name (needs 8 digits)
    stale = staging_dir(not_a_run, 5)  # hidden staging dirs do not count either
    fake_writer(state_files(5))(stale)
    before = tree(tmp_path)
    _one_line_user_error(not_a_run, "holds no checkpoints")
    assert tree(tmp_path) == before


def test_a_run_with_no_valid_checkpoint_is_a_user_error_and_nothing_is_deleted(tmp_path):
    for step in (1, 2):
        make_checkpoint(tmp_path, step)
    _truncate(tmp_path / checkpoint_name(1))
    _manifest_not_json(tmp_path / checkpoint_name(2))
    stale = staging_dir(tmp_path, 3)
    fake_writer(state_files(3))(stale)
    write_text_atomically(tmp_path / "latest", checkpoint_name(2) + "\n")
    before = tree(tmp_path)
    reports: list[str] = []

    with pytest.raises(UserError, match="no checkpoint that verifies") as info:
        resolve_resume_path(tmp_path, report=reports.append)

    assert "\n" not in str(info.value)
    assert len(reports) == 2
    assert tree(tmp_path) == before  # not even the stale staging directory


def test_a_checkpoint_path_that_does_not_verify_is_a_user_error_naming_the_problem(tmp_path):
    for step in (1, 2):
        make_checkpoint(tmp_path, step)
    broken = tmp_path / checkpoint_name(2)
    _flip_one_byte(broken)
    before = tree(tmp_path)

    message = _one_line_user_error(broken, "does not verify")

    assert WEIGHTS in message and "sha256" in message and broken.name in message
    assert tree(tmp_path) == before


def test_a_manifest_marks_a_checkpoint_dir_whatever_its_name(tmp_path):
    renamed = tmp_path / "my-checkpoint"
    make_checkpoint(tmp_path, 1).rename(renamed)
    assert resolve_resume_path(renamed, report=lambda _: None).path == renamed
    _manifest_newer_format(renamed)
    message = _one_line_user_error(renamed, "does not verify")
    assert "newer" in message and "upgrade" in message


# --------------------------------------------------------------------------- keeping policy


def quiet_manager(run_dir: Path, **policy) -> CheckpointManager:
    return CheckpointManager(run_dir, KeepPolicy(**policy), report=lambda _: None)


def test_keep_last_keeps_the_newest_n(tmp_path):
    manager = quiet_manager(tmp_path, keep_last=2, keep_best=0)
    for step in range(1, 6):
        manager_save(manager, step)
    assert steps_in(tmp_path) == [4, 5]
    assert manager.latest == checkpoint_name(5)
    assert manager.best is None  # no metric, no best
    assert all(verify(p).valid for p in list_checkpoints(tmp_path))


@pytest.mark.parametrize(
    ("mode", "monitor", "values", "best_step", "kept"),
    [
        ("max", "val_accuracy", [0.5, 0.9, 0.6, 0.7, 0.1], 2, [2, 5]),
        ("min", "val_loss", [0.9, 0.2, 0.5, 0.4, 0.8], 2, [2, 5]),
    ],
)
def test_keep_best_by_monitor(tmp_path, mode, monitor, values, best_step, kept):
    manager = quiet_manager(tmp_path, keep_last=1, keep_best=1, monitor=monitor, mode=mode)
    for step, value in enumerate(values, start=1):
        manager_save(manager, step, {monitor: value, "other": -step})
    assert steps_in(tmp_path) == kept
    assert manager.best == checkpoint_name(best_step)
    assert manager.latest == checkpoint_name(len(values))


@pytest.mark.parametrize(
    ("mode", "values", "kept"),
    [
        ("max", [0.5, 0.9, 0.6, 0.7, 0.1, 0.2], [2, 4, 6]),
        ("min", [0.5, 0.9, 0.6, 0.7, 0.1, 0.8], [1, 5, 6]),
    ],
)
def test_keep_best_k(tmp_path, mode, values, kept):
    manager = quiet_manager(tmp_path, keep_last=1, keep_best=2, monitor="m", mode=mode)
    for step, value in enumerate(values, start=1):
        manager_save(manager, step, {"m": value})
    assert steps_in(tmp_path) == kept


def test_on_a_tie_the_best_pointer_and_keep_best_agree_on_the_earlier_one(tmp_path):
    manager = quiet_manager(tmp_path, keep_last=1, keep_best=1, monitor="m", mode="max")
    for step, value in enumerate([0.5, 0.5, 0.1], start=1):
        manager_save(manager, step, {"m": value})
    assert manager.best == checkpoint_name(1)  # an equal metric is not an improvement
    assert steps_in(tmp_path) == [1, 3]


def test_keep_every_n_steps_keeps_those_forever(tmp_path):
    manager = quiet_manager(tmp_path, keep_last=1, keep_best=0, keep_every_n_steps=3)
    for step in range(1, 11):
        manager_save(manager, step)
    assert steps_in(tmp_path) == [3, 6, 9, 10]


@pytest.mark.parametrize(
    ("mode", "values", "best_after_each"),
    [
        ("max", [0.8, 0.5, 0.8, 0.9, None, 0.1], [1, 1, 1, 4, 4, 4]),
        ("min", [0.8, 0.9, 0.8, 0.3, None, 0.4], [1, 1, 1, 4, 4, 4]),
    ],
)
def test_best_pointer_moves_only_when_the_metric_improves(tmp_path, mode, values, best_after_each):
    manager = quiet_manager(tmp_path, keep_last=10, keep_best=1, monitor="m", mode=mode)
    for step, (value, best) in enumerate(zip(values, best_after_each, strict=True), start=1):
        manager_save(manager, step, {} if value is None else {"m": value})
        assert manager.best == checkpoint_name(best), (step, value)
        assert manager.latest == checkpoint_name(step)


def test_pruning_never_deletes_what_a_pointer_names(tmp_path):
    manager = quiet_manager(tmp_path, keep_last=1, keep_best=0, monitor="m", mode="max")
    manager_save(manager, 1, {"m": 0.9})
    for step in range(2, 6):
        manager_save(manager, step, {"m": 0.1 * step})
    assert manager.best == checkpoint_name(1)
    assert manager.latest == checkpoint_name(5)
    assert steps_in(tmp_path) == [1, 5]  # step 1 kept only because `best` names it
    assert verify(tmp_path / checkpoint_name(1)).valid


def test_pruning_keeps_the_newest_valid_checkpoint_past_a_newer_broken_one(tmp_path):
    manager = quiet_manager(tmp_path, keep_last=1, keep_best=0)
    manager_save(manager, 1)
    broken = tmp_path / checkpoint_name(9)  # e.g. a later run's checkpoint, damaged
    broken.mkdir()
    (broken / WEIGHTS).write_bytes(b"junk")
    manager_save(manager, 2)
    # keep_last=1 keeps step 9 (newest by step), the newest valid one is step 2.
    assert steps_in(tmp_path) == [2, 9]
    assert latest_valid_checkpoint(tmp_path, report=lambda _: None).global_step == 2


def test_pruning_renames_out_of_sight_at_once_and_deletes_in_the_background(tmp_path, monkeypatch):
    manager = quiet_manager(tmp_path, keep_last=1, keep_best=0)
    manager_save(manager, 1)
    release = threading.Event()
    real_rmtree = checkpoint_manager_module.shutil.rmtree

    def slow_rmtree(path, **kwargs):
        release.wait(10)  # the deletion is held until the save has returned
        real_rmtree(path, **kwargs)

    monkeypatch.setattr(checkpoint_manager_module.shutil, "rmtree", slow_rmtree)
    manager_save(manager, 2)
    # save() returned with step 1 out of every listing, its files not yet deleted.
    assert steps_in(tmp_path) == [2]
    [pruned] = hidden_entries(tmp_path)
    assert pruned.startswith(".step-00000001.tmp-pruned-")
    assert (tmp_path / pruned / WEIGHTS).exists()
    release.set()
    manager.close()
    assert hidden_entries(tmp_path) == []
    assert verify(tmp_path / checkpoint_name(2)).valid


def test_a_pruned_checkpoint_left_by_a_dead_process_is_deleted_never_put_back(tmp_path):
    kept, pruned = make_checkpoint(tmp_path, 2), make_checkpoint(tmp_path, 1)
    hidden = move_aside(pruned)
    assert list_checkpoints(tmp_path) == [kept] and hidden.exists()
    quiet_manager(tmp_path, keep_last=1, keep_best=0)  # a new process' manager
    assert hidden_entries(tmp_path) == []
    assert steps_in(tmp_path) == [2]


def _checkpoint(tmp_path: Path, step: int, valid: bool, metric: float | None = None) -> Checkpoint:
    manifest = {"global_step": step, "metrics": {} if metric is None else {"m": metric}}
    return Checkpoint(
        tmp_path / checkpoint_name(step),
        manifest=manifest if valid else None,
        problems=[] if valid else ["broken"],
    )


def test_to_remove_always_spares_the_newest_valid_and_protected_ones(tmp_path):
    policy = KeepPolicy(keep_last=1, keep_best=0, monitor="m")
    checkpoints = [
        _checkpoint(tmp_path, 1, True, 0.9),
        _checkpoint(tmp_path, 2, True, 0.1),
        _checkpoint(tmp_path, 3, True, 0.2),
        _checkpoint(tmp_path, 4, False),
    ]
    names = {c.path.name: c.path for c in checkpoints}
    assert policy.to_remove(checkpoints, protected=[]) == [
        names["step-00000001"],
        names["step-00000002"],
    ]
    assert policy.to_remove(checkpoints, protected=["step-00000001"]) == [names["step-00000002"]]
    # Order of the input does not matter, and a broken checkpoint is not "best".
    best_one = KeepPolicy(keep_last=1, keep_best=1, monitor="m")
    assert best_one.to_remove(list(reversed(checkpoints)), protected=[]) == [names["step-00000002"]]


# --------------------------------------------------------------------------- pointers


def test_pointers_are_written_atomically_and_leave_no_temp_files(tmp_path, monkeypatch):
    replaced: list[tuple[Path, Path, str]] = []

    def spy(real):
        def spying(src, dst):
            if Path(src).is_file():
                replaced.append((Path(src), Path(dst), Path(src).read_text()))
            real(src, dst)

        return spying

    monkeypatch.setattr(os, "replace", spy(os.replace))
    monkeypatch.setattr(os, "rename", spy(os.rename))
    manager = quiet_manager(tmp_path, keep_last=2, keep_best=1, monitor="m")
    for step in (1, 2, 3):
        manager_save(manager, step, {"m": float(step)})
    manager.close()  # the pruned checkpoint's deletion (background) is done

    assert (tmp_path / "latest").read_text() == "step-00000003\n"
    assert (tmp_path / "best").read_text() == "step-00000003\n"
    assert hidden_entries(tmp_path) == []
    pointer_writes = [r for r in replaced if r[1].name in ("latest", "best")]
    assert len(pointer_writes) == 6
    for src, dst, content in pointer_writes:
        # Written in full to a hidden sibling first, then renamed over the pointer.
        assert src.parent == dst.parent == tmp_path
        assert src.name.startswith(".") and src != dst
        assert is_checkpoint_name(content.strip()) and content.endswith("\n")


def test_write_text_atomically_replaces_the_whole_file(tmp_path):
    target = tmp_path / "latest"
    target.write_text("step-00000001\nsome much longer old content\n")
    write_text_atomically(target, "step-00000002\n")
    assert target.read_text() == "step-00000002\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


@pytest.mark.parametrize(
    "content",
    [
        "../../etc",
        "../step-00000001",
        "step-00000001/../../etc",
        "/etc/passwd",
        "step-1",
        "step-0000000x",
        "",
        "step-00000001 step-00000002",
        "\x00\x01",
    ],
)
def test_read_pointer_ignores_malformed_content(tmp_path, content):
    (tmp_path / "latest").write_text(content)
    assert read_pointer(tmp_path, "latest") is None


def test_read_pointer_reads_a_well_formed_pointer_and_tolerates_absence(tmp_path):
    assert read_pointer(tmp_path, "best") is None
    assert read_pointer(tmp_path / "missing-run", "latest") is None
    (tmp_path / "latest").write_text("  step-00001234 \n")
    assert read_pointer(tmp_path, "latest") == "step-00001234"


def test_a_malformed_best_pointer_is_replaced_by_the_next_scored_checkpoint(tmp_path):
    (tmp_path / "best").write_text("../../etc\n")
    manager = quiet_manager(tmp_path, keep_last=1, keep_best=0, monitor="m")
    manager_save(manager, 1, {"m": 0.1})
    assert manager.best == checkpoint_name(1)


# --------------------------------------------------------------------------- async manager


class SlowCommit:
    """Stands in for ``commit_checkpoint``: blocks until released, counts commits in flight."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.real = checkpoint_manager_module.commit_checkpoint
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail_with = fail_with
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    def __call__(self, staging: Path, final: Path, manifest) -> None:
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.started.set()
        try:
            assert self.release.wait(5), "the test never released the commit"
            if self.fail_with is not None:
                raise self.fail_with
            self.real(staging, final, manifest)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_async_save_returns_before_the_commit_and_one_commit_is_in_flight(tmp_path, monkeypatch):
    slow = SlowCommit()
    monkeypatch.setattr(checkpoint_manager_module, "commit_checkpoint", slow)
    manager = CheckpointManager(
        tmp_path, KeepPolicy(keep_last=5), asynchronous=True, report=lambda _: None
    )
    second_writes: list[Path] = []
    second_result: dict[str, object] = {}
    try:
        final = manager_save(manager, 1)
        assert final == tmp_path / checkpoint_name(1)
        assert slow.started.wait(5)
        # The training loop has control back, but nothing is committed yet.
        assert not final.exists()
        assert manager.latest is None
        assert list_checkpoints(tmp_path) == []
        assert len(hidden_entries(tmp_path)) == 1

        def second_save() -> None:
            second_result["path"] = manager.save(
                2, fake_writer(state_files(2), second_writes), {"global_step": 2}
            )

        thread = threading.Thread(target=second_save)
        thread.start()
        time.sleep(0.2)
        assert thread.is_alive(), "a second save did not wait for the commit in flight"
        assert second_writes == []  # it has not even started its snapshot
        assert slow.calls == 1
    finally:
        slow.release.set()
    thread.join(5)
    assert not thread.is_alive()
    manager.close()

    assert second_result["path"] == tmp_path / checkpoint_name(2)
    assert slow.max_in_flight == 1 and slow.calls == 2
    assert steps_in(tmp_path) == [1, 2]
    assert all(verify(p).valid for p in list_checkpoints(tmp_path))
    assert manager.latest == checkpoint_name(2)
    assert hidden_entries(tmp_path) == []


@pytest.mark.parametrize("surfaced_by", ["save", "wait", "close"])
def test_a_background_commit_error_is_raised_by_the_next_call(tmp_path, monkeypatch, surfaced_by):
    slow = SlowCommit(fail_with=OSError(28, "No space left on device"))
    slow.release.set()
    monkeypatch.setattr(checkpoint_manager_module, "commit_checkpoint", slow)
    manager = CheckpointManager(tmp_path, KeepPolicy(), asynchronous=True, report=lambda _: None)

    manager_save(manager, 1)  # returns: the error happens in the background

    with pytest.raises(CheckpointError, match="No space left on device") as info:
        if surfaced_by == "save":
            manager_save(manager, 2)
        else:
            getattr(manager, surfaced_by)()
    assert isinstance(info.value.__cause__, OSError)
    assert list_checkpoints(tmp_path) == []
    assert hidden_entries(tmp_path) == []  # the failed staging directory is gone
    assert manager.latest is None

    # Raised once, then the manager works again.
    monkeypatch.setattr(checkpoint_manager_module, "commit_checkpoint", slow.real)
    manager.wait()
    manager_save(manager, 3)
    manager.close()
    assert steps_in(tmp_path) == [3]
    assert verify(tmp_path / checkpoint_name(3)).valid


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_failing_write_files_leaves_no_staging_dir(tmp_path, asynchronous):
    manager = CheckpointManager(
        tmp_path, KeepPolicy(), asynchronous=asynchronous, report=lambda _: None
    )
    manager_save(manager, 1)
    manager.wait()

    def failing_write(staging: Path) -> None:
        (staging / WEIGHTS).write_bytes(b"half of the weights")
        raise RuntimeError("model.save_weights failed")

    with pytest.raises(RuntimeError, match="save_weights failed"):
        manager.save(2, failing_write, {"global_step": 2})
    manager.close()

    assert hidden_entries(tmp_path) == []
    assert steps_in(tmp_path) == [1]
    assert manager.latest == checkpoint_name(1)


def test_the_checkpoint_modules_do_not_import_tensorflow():
    code = (
        "import sys, checkpoints, checkpoints.manager, checkpoints.reading, "
        "checkpoints.schemas, checkpoints.durable, checkpoints.manifest, checkpoints.listing, "
        "checkpoints.lock, checkpoints.callback_state, checkpoints.keras.match, "
        "checkpoints.io.h5, checkpoints.io.h5_layout, "
        "checkpoints.keep, trainer.runs.run_dir, trainer.runs.resume, "
        "checkpoints.remote, trainer.runs.remote_run, devtools.local_s3, "
        "trainer.build, trainer.startup, trainer.data.folder; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; "
        "assert 'keras' not in sys.modules, 'keras was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_section_saved_after_the_first_checkpoints_has_a_default_for_older_ones():
    # The saved sections come from trainer.config.closed.SECTIONS: a section added there is required
    # of every checkpoint read, so it needs what a checkpoint written without it reads as.
    from trainer.config import SAVED_SECTIONS, SECTIONS
    from trainer.config.saved import SECTIONS_ADDED_LATER

    first = ("dataset", "model", "optimizer", "schedule", "trainer", "checkpoint")
    # All but where a command writes and where it logs, which a checkpoint never holds.
    assert set(SECTIONS) - set(SAVED_SECTIONS) == {"paths", "logger"}
    assert [s for s in SECTIONS if s in SAVED_SECTIONS] == list(SAVED_SECTIONS)
    assert set(SAVED_SECTIONS) - set(first) <= set(SECTIONS_ADDED_LATER)


def test_class_names_are_recorded_only_when_each_is_a_printable_line_and_all_fit():
    from checkpoints.manifest import MAX_CLASS_NAMES_CHARS, recorded_class_names

    assert recorded_class_names(("cat", "dog", "hot dog", "chat noir é")) == [
        "cat",
        "dog",
        "hot dog",
        "chat noir é",
    ]
    assert recorded_class_names(None) is None
    for names in (
        ["cat", "\x1b[31mred"],  # a terminal escape
        ["cat", "two\nlines"],
        ["cat", ""],
        ["cat", 3],
        ["x" * 257],
        [f"n{i:07d}" for i in range(MAX_CLASS_NAMES_CHARS // 8)],  # all together too many
    ):
        assert recorded_class_names(names) is None, names


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["cat", "dog"], "class_names has 2 names, but num_classes is 3"),
        (["cat", "dog", "\x07bell"], "class_names[2]"),
        (["cat", "dog", 7], "class_names[2] is 7, not a string"),
        ("cat,dog,bird", "class_names is 'cat,dog,bird', not a list"),
    ],
)
def test_class_names_read_back_are_one_per_class_and_printable(tmp_path, names, message):
    path = make_checkpoint(tmp_path, 1)
    rewrite_manifest(path, num_classes=3, class_names=["cat", "dog", "bird"])
    assert read_manifest(path)["class_names"] == ["cat", "dog", "bird"]
    rewrite_manifest(path, num_classes=3, class_names=names)
    with pytest.raises(ValueError, match=re.escape(message)):
        read_manifest(path)
    assert not verify(path).valid
