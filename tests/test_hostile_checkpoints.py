"""Hostile checkpoints and runs: everything read from them is bounded and typed.

Each test starts from real checkpoints written in-process by the project's own
writer (``RunCheckpointer``, as training writes them), tampers with a copy as
an attacker would, re-hashing the manifest so that the sha256 check cannot
save the reader, and checks the refusal: one line, what and where, exit
status 2 for the tools that use a checkpoint; ``verify``, ``list`` and pruning
mark the checkpoint invalid and go on. Two tests run ``train.py`` (slow).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import run_train
from tests.test_tools import assert_one_error_line, tool_in_process
from trainer.checkpoint import (
    Checkpoint,
    KeepPolicy,
    checkpoint_name,
    read_manifest,
    read_pointer,
    verify,
)
from trainer.checkpoint.h5 import check_h5_file
from trainer.checkpoint.manager import CheckpointManager
from trainer.checkpoint.reading import (
    LOOP_STATE,
    check_plain,
    parse_json,
    parse_yaml,
    read_checkpoint_config,
    read_trainer_state,
    read_zip_member,
)
from trainer.errors import UserError

STEPS = (5, 10)  # the steps of the two checkpoints each written run holds
OVERRIDES = ["model.filters=[4]", "model.dense_units=[8]", "trainer.epochs=2"]


# --------------------------------------------------------------------------- real checkpoints


def _info():
    from trainer.data import DataInfo

    return DataInfo("digits", (8, 8, 1), 10, 1294, 143, 360, 32, 41)


def _write_run(run_dir: Path) -> None:
    """A run with checkpoints at STEPS, written by RunCheckpointer as training writes them."""
    from trainer.build import build_run
    from trainer.checkpoint.checkpointer import RunCheckpointer
    from trainer.loop import LoopState
    from trainer.startup import compose_config, import_tensorflow

    cfg = compose_config([*OVERRIDES, f"checkpoint.dir={run_dir}"])
    import_tensorflow()
    run = build_run(cfg, _info())
    checkpointer = RunCheckpointer(run_dir, cfg, run, _info(), report=lambda _: None)
    checkpointer.write_run_config()
    for step in STEPS:
        run.optimizer.iterations.assign(step)
        checkpointer.save(LoopState(epoch=0, batches_done=step), {"val_accuracy": step / 100})
    checkpointer.close()


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    _write_run(root / "run")
    return root / "run"


@pytest.fixture
def run_dir(written, tmp_path) -> Path:
    """A fresh copy of the written run, under ``tmp_path/root`` (beside nothing else)."""
    copy = tmp_path / "root" / "run"
    shutil.copytree(written, copy, symlinks=True)
    return copy


def newest(run_dir: Path) -> Path:
    return run_dir / checkpoint_name(STEPS[-1])


def rehash(checkpoint: Path) -> None:
    """Re-hash every file into the manifest, as an attacker who edits files would."""
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    for name in manifest["files"]:
        data = (checkpoint / name).read_bytes()
        manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


def edit_h5(checkpoint: Path, name: str, edit: Callable[[h5py.File], None]) -> None:
    with h5py.File(checkpoint / name, "a") as handle:
        edit(handle)
    rehash(checkpoint)


def edit_manifest(checkpoint: Path, **changes) -> None:
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest.update(changes)
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


def unchecked(checkpoint: Path) -> Checkpoint:
    """The checkpoint with its manifest, as if it had verified: tests the next layer."""
    return Checkpoint(checkpoint, read_manifest(checkpoint))


def restore(checkpoint: Path, with_optimizer: bool = True):
    """``restore_state`` into the model and optimizer built from the checkpoint's config."""
    from trainer.build import build_run
    from trainer.checkpoint.state import restore_state

    target = unchecked(checkpoint)
    run = build_run(read_checkpoint_config(target), _info())
    return restore_state(target, run.model, run.optimizer if with_optimizer else None)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------- HDF5


def _external_storage(handle, directory):
    (directory / "outside.bin").write_bytes(np.zeros(4, "f4").tobytes())
    handle.create_dataset("x", (4,), "f4", external=[(str(directory / "outside.bin"), 0, 16)])


def _external_link(handle, directory):
    handle["x"] = h5py.ExternalLink(str(directory / "other.h5"), "/x")


def _soft_link(handle, directory):
    handle["y"] = np.zeros(3, "f4")
    handle["x"] = h5py.SoftLink("/y")


def _virtual(handle, directory):
    layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
    layout[:] = h5py.VirtualSource(str(directory / "other.h5"), "x", shape=(4,))
    handle.create_virtual_dataset("x", layout)


def _compressed(handle, directory):
    handle.create_dataset("x", data=np.zeros(1000, "f4"), compression="gzip")


def _strings(handle, directory):
    handle["x"] = np.array([b"abc", b"def"])


def _fill_values_only(handle, directory):
    handle.create_dataset("x", shape=(1 << 30,), dtype="f4")  # 4 GiB to read, 0 bytes stored


def _compound(handle, directory):
    handle["x"] = np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])


def _committed_type(handle, directory):
    handle["x"] = np.dtype("f4")


HDF5_HAZARDS = {
    "external storage": (_external_storage, "stored in an outside file"),
    "external link": (_external_link, "external link"),
    "soft link": (_soft_link, "soft link"),
    "virtual dataset": (_virtual, "virtual dataset"),
    "compressed": (_compressed, "filtered"),
    "strings": (_strings, "not numbers"),
    "fill values only": (_fill_values_only, "not stored in the file"),
    "compound": (_compound, "not numbers"),
    "committed datatype": (_committed_type, "not a group or dataset"),
}


@pytest.mark.parametrize("hazard", list(HDF5_HAZARDS), ids=list(HDF5_HAZARDS))
def test_check_h5_file_names_each_hazard_by_path_and_reads_bytes_too(tmp_path, hazard):
    make, expected = HDF5_HAZARDS[hazard]
    path = tmp_path / "file.h5"
    with h5py.File(path, "w") as handle:
        handle.create_group("layers/dense/vars")["0"] = np.ones((2, 3), "f4")
        make(handle, tmp_path)

    problems = check_h5_file(path)
    assert len(problems) == 1 and problems[0].startswith("x: ") and expected in problems[0]
    assert check_h5_file(path.read_bytes()) == problems  # a zip member, read into memory


def test_check_h5_file_passes_what_the_writers_write_and_refuses_non_files(written, tmp_path):
    for name in ("model.weights.h5", "optimizer.h5"):
        assert check_h5_file(newest(written) / name) == []
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5" * 100)
    assert "not a readable HDF5 file" in check_h5_file(tmp_path / "garbage.h5")[0]
    os.mkfifo(tmp_path / "fifo.h5")
    assert "a FIFO" in check_h5_file(tmp_path / "fifo.h5")[0]  # refused, not waited on
    os.symlink(newest(written) / "optimizer.h5", tmp_path / "link.h5")
    assert "symlink" in check_h5_file(tmp_path / "link.h5")[0]


def test_a_hard_link_cycle_is_walked_once(tmp_path):
    path = tmp_path / "cycle.h5"
    with h5py.File(path, "w") as handle:
        group = handle.create_group("g")
        group["loop"] = group  # g/loop/loop/... for ever, if followed
        group["x"] = np.ones(2, "f4")
    assert check_h5_file(path) == []


def _outside_storage(checkpoint: Path, name: str) -> None:
    def edit(handle):
        key = "1" if name == "optimizer.h5" else "layers/dense/vars/1"
        shape, dtype = handle[key].shape, handle[key].dtype
        path = handle[key].attrs.get("path")
        del handle[key]
        outside = checkpoint.parent.parent / "outside.bin"
        outside.write_bytes(np.full(shape, 7, dtype).tobytes())
        dataset = handle.create_dataset(key, shape, dtype, external=[(str(outside), 0, 4096)])
        if path is not None:
            dataset.attrs["path"] = path

    edit_h5(checkpoint, name, edit)


def _link_out(checkpoint: Path, name: str) -> None:
    def edit(handle):
        key = "1" if name == "optimizer.h5" else "layers/dense/vars/1"
        del handle[key]
        handle[key] = h5py.ExternalLink("/etc/other.h5", "/x")

    edit_h5(checkpoint, name, edit)


def _garbage(checkpoint: Path, name: str) -> None:
    (checkpoint / name).write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 50)
    rehash(checkpoint)


def _truncated(checkpoint: Path, name: str) -> None:
    data = (checkpoint / name).read_bytes()
    (checkpoint / name).write_bytes(data[: len(data) // 3])
    rehash(checkpoint)


H5_TAMPERS = {
    "outside storage": (_outside_storage, "stored in an outside file"),
    "external link": (_link_out, "external link"),
    "garbage": (_garbage, "not a readable HDF5 file"),
    "truncated": (_truncated, "HDF5"),
}


@pytest.mark.parametrize("name", ["optimizer.h5", "model.weights.h5"])
@pytest.mark.parametrize("tamper", list(H5_TAMPERS), ids=list(H5_TAMPERS))
def test_tampered_h5_files_fail_verify_restore_and_export_in_one_line(
    run_dir, tmp_path, capsys, tamper, name
):
    corrupt, expected = H5_TAMPERS[tamper]
    checkpoint = newest(run_dir)
    corrupt(checkpoint, name)

    status, out, _ = tool_in_process(capsys, "verify", run_dir)
    assert status == 1
    (bad,) = [line for line in out.splitlines() if "BAD" in line]
    assert checkpoint.name in bad and name in bad and expected in bad

    with pytest.raises(UserError) as error:  # the next layer, as if verify had passed
        restore(checkpoint)
    assert name in one_line(error) and expected in one_line(error)

    status, _, err = tool_in_process(capsys, "export", checkpoint, tmp_path / "out.keras")
    assert expected in assert_one_error_line(err, status)
    assert not (tmp_path / "out.keras").exists()


def test_resume_refuses_optimizer_state_from_outside_the_checkpoint(run_dir):
    from trainer.checkpoint.resume import plan_start
    from trainer.startup import compose_config

    _outside_storage(newest(run_dir), "optimizer.h5")
    (newest(run_dir).parent / checkpoint_name(STEPS[0])).rename(run_dir / "elsewhere")
    cfg = compose_config([*OVERRIDES, f"+resume={run_dir}"])
    with pytest.raises(UserError) as error:
        plan_start(cfg, [], report=lambda _: None)
    assert "holds no checkpoint that verifies" in one_line(error)


def _replace(key: str, value) -> Callable[[h5py.File], None]:
    def edit(handle):
        path = handle[key].attrs.get("path")
        del handle[key]
        if isinstance(value, str) and value == "group":
            handle.create_group(key)
        else:
            handle[key] = value
            if path is not None:
                handle[key].attrs["path"] = path

    return edit


def _add(key: str, value) -> Callable[[h5py.File], None]:
    def edit(handle):
        handle[key] = value

    return edit


LAYOUT_TAMPERS = {
    "weight shape": ("model.weights.h5", _replace("layers/dense/vars/1", np.zeros(9, "f4")),
                     ["layers/dense/vars/1", "(9,)", "(8,)"]),
    "weight dtype": ("model.weights.h5", _replace("layers/dense/vars/1", np.zeros(8, "f8")),
                     ["layers/dense/vars/1", "f8", "f4"]),
    "weight missing": ("model.weights.h5", _replace("layers/dense/vars/1", "group"),
                       ["lacks layers/dense/vars/1"]),
    "extra layer": ("model.weights.h5", _add("layers/dense_9/vars/0", np.zeros(3, "f4")),
                    ["holds layers/dense_9/vars/0"]),
    "moment shape": ("optimizer.h5", _replace("5", np.zeros((8, 64), "f4")),
                     ["dense0_kernel_momentum", "(8, 64)", "(64, 8)"]),
    "moment is a group": ("optimizer.h5", _replace("5", "group"), ["5 is a Group"]),
    "moment strings": ("optimizer.h5", _replace("5", np.array([b"x"] * 8)), ["not numbers"]),
    "extra variable": ("optimizer.h5", _add("13", np.zeros(3, "f4")), ["14 optimizer variables"]),
    "stray member": ("optimizer.h5", _add("extra", np.zeros(3, "f4")), ["'extra'"]),
    "negative step": ("optimizer.h5", _replace("0", np.int64(-36)), ["step is -36"]),
    "another step": ("optimizer.h5", _replace("0", np.int64(7)), ["step is 7", "says 10"]),
    "float step": ("optimizer.h5", _replace("0", np.float32(10)), ["not an integer"]),
}


@pytest.mark.parametrize("tamper", list(LAYOUT_TAMPERS), ids=list(LAYOUT_TAMPERS))
def test_datasets_must_match_the_model_and_optimizer_built_from_config(run_dir, tamper):
    name, edit, fragments = LAYOUT_TAMPERS[tamper]
    checkpoint = newest(run_dir)
    edit_h5(checkpoint, name, edit)
    with pytest.raises(UserError) as error:
        restore(checkpoint)
    message = one_line(error)
    assert name in message or "optimizer" in message
    for fragment in fragments:
        assert fragment in message, message


def test_a_clean_checkpoint_restores_every_variable(written):
    from trainer.build import build_run
    from trainer.checkpoint.state import restore_state

    checkpoint = verify(newest(written))
    assert checkpoint.valid
    run = build_run(read_checkpoint_config(checkpoint), _info())
    state = restore_state(checkpoint, run.model, run.optimizer)
    assert state["loop"]["batches_done"] == STEPS[-1]
    assert int(run.optimizer.iterations.numpy()) == STEPS[-1]


def test_keras_load_errors_keep_their_reason_in_one_line(written, tmp_path):
    from trainer.build import build_model_for
    from trainer.checkpoint.state import keras_reason

    path = tmp_path / "bad.weights.h5"
    shutil.copy(newest(written) / "model.weights.h5", path)
    with h5py.File(path, "a") as handle:
        _replace("layers/dense/vars/1", np.zeros(9, "f4"))(handle)
    model = build_model_for(read_checkpoint_config(unchecked(newest(written))), _info())
    with pytest.raises(ValueError) as error:
        model.load_weights(path)
    assert str(error.value).strip().splitlines()[0].endswith(":")  # Keras' reason comes later
    reason = keras_reason(error.value)
    assert "\n" not in reason and "value.shape=(9,)" in reason and "value=[" not in reason


def test_a_negative_step_never_names_a_checkpoint_directory(tmp_path):
    for step in (-36, -1, 10**13, 2.5, True):
        with pytest.raises(ValueError, match="global step"):
            checkpoint_name(step)
    manager = CheckpointManager(tmp_path, KeepPolicy(), report=lambda _: None)
    written_files = []
    with pytest.raises(ValueError, match="global step"):
        manager.save(-36, written_files.append, {"epoch": 0})
    assert written_files == [] and list(tmp_path.iterdir()) == []
