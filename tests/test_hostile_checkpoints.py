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

from checkpoints import (
    Checkpoint,
    KeepPolicy,
    checkpoint_name,
    read_manifest,
    read_pointer,
    verify,
)
from checkpoints.io.h5 import check_h5_file
from checkpoints.manager import CheckpointManager
from checkpoints.manifest import checkpoint_arrays
from checkpoints.reading import (
    check_plain,
    parse_json,
    parse_yaml,
    read_trainer_state,
    read_zip_member,
)
from checkpoints.schemas import LOOP_STATE
from tests.conftest import run_train
from tests.test_tools import assert_one_error_line, tool_in_process
from trainer.config.saved import read_checkpoint_config
from trainer.errors import UserError

STEPS = (5, 10)  # the steps of the two checkpoints each written run holds
OVERRIDES = ["model.filters=[4]", "model.dense_units=[8]", "trainer.epochs=2"]


# --------------------------------------------------------------------------- real checkpoints


def _info():
    from trainer.data.pipeline import DataInfo

    return DataInfo("digits", (8, 8, 1), 10, 1294, 143, 360, 32, 41)


def _write_run(run_dir: Path) -> None:
    """A run with checkpoints at STEPS, written by RunCheckpointer as training writes them."""
    from trainer.build import build_run
    from trainer.startup import compose_config, import_tensorflow
    from trainer.training.checkpointer import RunCheckpointer
    from trainer.training.state import LoopState

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
    from checkpoints.restore import restore_state
    from trainer.build import build_run

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
    from trainer.runs.resume import plan_start
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
    "weight shape": (
        "model.weights.h5",
        _replace("layers/dense/vars/1", np.zeros(9, "f4")),
        ["layers/dense/vars/1", "(9,)", "(8,)"],
    ),
    "weight dtype": (
        "model.weights.h5",
        _replace("layers/dense/vars/1", np.zeros(8, "f8")),
        ["layers/dense/vars/1", "f8", "f4"],
    ),
    "weight missing": (
        "model.weights.h5",
        _replace("layers/dense/vars/1", "group"),
        ["lacks layers/dense/vars/1"],
    ),
    "extra layer": (
        "model.weights.h5",
        _add("layers/dense_9/vars/0", np.zeros(3, "f4")),
        ["holds layers/dense_9/vars/0"],
    ),
    "moment shape": (
        "optimizer.h5",
        _replace("5", np.zeros((8, 64), "f4")),
        ["dense0_kernel_momentum", "(8, 64)", "(64, 8)"],
    ),
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


@pytest.mark.parametrize("tamper", ["negative step", "another step", "moment is a group"])
def test_verify_checks_the_optimizer_file_without_tensorflow(run_dir, tamper):
    name, edit, fragments = LAYOUT_TAMPERS[tamper]
    edit_h5(newest(run_dir), name, edit)
    (problem,) = verify(newest(run_dir)).problems
    assert problem.startswith("optimizer.h5") and fragments[0] in problem


def test_a_clean_checkpoint_restores_every_variable(written):
    from checkpoints.restore import restore_state
    from trainer.build import build_run

    checkpoint = verify(newest(written))
    assert checkpoint.valid
    run = build_run(read_checkpoint_config(checkpoint), _info())
    state = restore_state(checkpoint, run.model, run.optimizer)
    assert state["loop"]["batches_done"] == STEPS[-1]
    assert int(run.optimizer.iterations.numpy()) == STEPS[-1]


def test_restore_loads_exactly_what_keras_load_weights_and_the_file_hold(written):
    # restore_state assigns the weights itself (views of the file's bytes); plain Keras
    # loading the same file into a twin must give the same values, bit for bit.
    from checkpoints.restore import restore_state
    from trainer.build import build_run

    checkpoint = verify(newest(written))
    ours, keras_twin = (build_run(read_checkpoint_config(checkpoint), _info()) for _ in "ab")
    restore_state(checkpoint, ours.model, ours.optimizer)
    keras_twin.model.load_weights(checkpoint.file("model.weights.h5"))
    saved = checkpoint_arrays(checkpoint.path)
    for mine, theirs in zip(ours.model.weights, keras_twin.model.weights, strict=True):
        assert np.asarray(mine).tobytes() == np.asarray(theirs).tobytes()
    optimizer_values = [saved[f"optimizer.h5/{i}"] for i in range(len(ours.optimizer.variables))]
    for variable, value in zip(ours.optimizer.variables, optimizer_values, strict=True):
        assert np.asarray(variable).tobytes() == np.asarray(value).tobytes()


def test_restore_refuses_a_file_changed_after_it_verified(run_dir):
    from checkpoints.restore import restore_state
    from trainer.build import build_run

    checkpoint = verify(newest(run_dir))
    assert checkpoint.valid
    path = checkpoint.file("optimizer.h5")
    with h5py.File(path, "r") as handle:  # a byte of a slot's data, the size unchanged
        offset = handle["1"].id.get_offset()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    run = build_run(read_checkpoint_config(checkpoint), _info())
    with pytest.raises(UserError) as error:
        restore_state(checkpoint, run.model, run.optimizer)
    assert "optimizer.h5 is not the file its manifest lists" in one_line(error)


def _memory_address(variable) -> int:
    """Where ``variable`` (on the CPU) keeps its value."""
    return np.from_dlpack(variable.value.read_value()).ctypes.data


def _built_run(checkpoint: Checkpoint):
    from trainer.build import build_run

    run = build_run(read_checkpoint_config(checkpoint), _info())
    run.optimizer.build(run.model.trainable_variables)
    return run


def _assert_holds_the_checkpoint(run, checkpoint: Path) -> None:
    saved = checkpoint_arrays(checkpoint)
    twin = _built_run(unchecked(checkpoint))
    twin.model.load_weights(checkpoint / "model.weights.h5")  # plain Keras' loader
    for mine, theirs in zip(run.model.weights, twin.model.weights, strict=True):
        assert np.asarray(mine).tobytes() == np.asarray(theirs).tobytes()
    for index, variable in enumerate(run.optimizer.variables):
        assert (
            np.asarray(variable).tobytes() == np.asarray(saved[f"optimizer.h5/{index}"]).tobytes()
        )


def test_a_verified_file_is_read_into_the_variables_own_memory(run_dir):
    # verify hashed the files: restore reads their bytes straight where the variables keep
    # their values (no new memory, no copy); the values are exactly the file's.
    from checkpoints.restore import restore_state

    run = _built_run(unchecked(newest(run_dir)))
    variables = [*run.model.weights, *run.optimizer.variables]
    before = [_memory_address(variable) for variable in variables]
    restore_state(verify(newest(run_dir)), run.model, run.optimizer)
    assert [_memory_address(variable) for variable in variables] == before
    _assert_holds_the_checkpoint(run, newest(run_dir))


def test_an_unverified_file_is_hashed_before_any_variable_changes(run_dir):
    # Not verified: each file is read into new memory and hashed on the way; the variables
    # take that memory only once the sha256 matched, so a damaged file changes nothing.
    from checkpoints.restore import restore_state

    path = newest(run_dir) / "optimizer.h5"
    pristine = path.read_bytes()
    with h5py.File(path, "r") as handle:  # a byte of a slot's data, the size unchanged
        offset = handle["1"].id.get_offset()
    damaged = bytearray(pristine)
    damaged[offset] ^= 0xFF
    path.write_bytes(bytes(damaged))
    run = _built_run(unchecked(newest(run_dir)))
    before = [np.asarray(variable).copy() for variable in run.optimizer.variables]
    with pytest.raises(UserError, match=r"optimizer\.h5 is not the file its manifest lists"):
        restore_state(unchecked(newest(run_dir)), run.model, run.optimizer)
    for variable, value in zip(run.optimizer.variables, before, strict=True):
        assert np.asarray(variable).tobytes() == value.tobytes()
    path.write_bytes(pristine)
    restore_state(unchecked(newest(run_dir)), run.model, run.optimizer)
    _assert_holds_the_checkpoint(run, newest(run_dir))


def test_a_file_verify_hashed_is_not_hashed_again_by_restore(run_dir, monkeypatch):
    import types

    import checkpoints.restore as restore_module
    from trainer.build import build_run

    hashed = []

    class Spy:  # a sha256 that counts the bytes it is given, one count per file
        def __init__(self):
            self.digest = hashlib.sha256()
            self.index = len(hashed)
            hashed.append(0)

        def update(self, data):
            hashed[self.index] += len(data)
            self.digest.update(data)

        def hexdigest(self):
            return self.digest.hexdigest()

    monkeypatch.setattr(restore_module, "hashlib", types.SimpleNamespace(sha256=Spy))
    run = build_run(read_checkpoint_config(unchecked(newest(run_dir))), _info())
    restore_module.restore_state(unchecked(newest(run_dir)), run.model, run.optimizer)
    files = unchecked(newest(run_dir)).manifest["files"]
    sizes = [files["model.weights.h5"]["size"], files["optimizer.h5"]["size"]]
    # never verified (a fresh copy): each HDF5 file hashed as read (both at once: any order)
    assert sorted(hashed) == sorted(sizes)
    checkpoint = verify(newest(run_dir))
    hashed.clear()
    restore_module.restore_state(checkpoint, run.model, run.optimizer)
    assert hashed == []  # verify hashed the same unchanged files: not again


def test_keras_load_errors_keep_their_reason_in_one_line(written, tmp_path):
    from checkpoints.restore import keras_reason
    from trainer.build import build_model_for

    path = tmp_path / "bad.weights.h5"
    shutil.copy(newest(written) / "model.weights.h5", path)
    with h5py.File(path, "a") as handle:
        _replace("layers/dense/vars/0", np.zeros((8, 64), "f4"))(handle)
    model = build_model_for(read_checkpoint_config(unchecked(newest(written))), _info())
    with pytest.raises(ValueError) as error:
        model.load_weights(path)
    assert str(error.value).strip().splitlines()[0].endswith(":")  # Keras' reason comes later
    reason = keras_reason(error.value)
    assert "\n" not in reason and "value=[" not in reason
    assert "dense0" in reason and "value.shape=(8, 64)" in reason


def test_a_negative_step_never_names_a_checkpoint_directory(tmp_path):
    for step in (-36, -1, 10**13, 2.5, True):
        with pytest.raises(ValueError, match="global step"):
            checkpoint_name(step)
    manager = CheckpointManager(tmp_path, KeepPolicy(), report=lambda _: None)
    written_files = []
    with pytest.raises(ValueError, match="global step"):
        manager.save(-36, written_files.append, {"epoch": 0})
    assert written_files == [] and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- YAML and JSON


def alias_bomb(levels: int = 30) -> str:
    """A YAML document of ~2 KB that expands to 10**levels strings."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


NOT_PLAIN_YAML = {
    "alias bomb": (alias_bomb(), "anchors and aliases"),
    "one anchor": ("a: &x 1\nb: 2\n", "anchors and aliases"),
    "binary": ("data: !!binary aGVsbG8=\n", "!!binary"),
    "set": ("s: !!set {a, b}\n", "!!set"),
    "timestamp": ("t: !!timestamp 2001-12-14\n", "!!timestamp"),
    "a date resolves to a timestamp": ("t: 2001-12-14\n", "!!timestamp"),
    "python object": ("o: !!python/object:os.system {}\n", "python/object"),
    "ordered map": ("o: !!omap [a: 1]\n", "!!omap"),
    "merge key": ("base: {a: 1}\nderived: {<<: {a: 1}, b: 2}\n", "merge keys"),
    "infinity": ("lr: .inf\n", "finite numbers only"),
    "not a number": ("lr: .nan\n", "finite numbers only"),
    "integer key": ("1: a\n", "non-string key"),
    "deep": ("a: " + "[" * 150 + "]" * 150 + "\n", "deeper than"),
}


@pytest.mark.parametrize("case", list(NOT_PLAIN_YAML), ids=list(NOT_PLAIN_YAML))
def test_yaml_from_a_run_is_plain_data_only(case):
    text, expected = NOT_PLAIN_YAML[case]
    with pytest.raises(ValueError) as error:
        parse_yaml(text, "config.yaml")
    assert expected in one_line(error) and one_line(error).startswith("config.yaml")


def test_plain_yaml_parses_as_the_safe_loader_does(written):
    import yaml

    text = (newest(written) / "config.yaml").read_text()
    assert parse_yaml(text, "config.yaml") == yaml.safe_load(text)
    assert parse_yaml("a: '2001-12-14'\nb: [1, 2.5, null, true, '<<']\n", "x") == {
        "a": "2001-12-14",
        "b": [1, 2.5, None, True, "<<"],
    }


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"lr": NaN}', "NaN"),
        ('{"lr": Infinity}', "Infinity"),
        ('{"lr": -Infinity}', "-Infinity"),
        ('{"lr": 1e400}', "finite numbers only"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ],
)
def test_json_refuses_what_is_not_a_finite_number_at_parse_time(text, expected):
    with pytest.raises(ValueError) as error:
        parse_json(text, "manifest.json")
    assert expected in one_line(error)


def test_check_plain_refuses_objects_a_parser_should_never_make():
    for value in ({"a": {1, 2}}, {"a": b"x"}, {"a": [float("nan")]}):
        with pytest.raises(ValueError, match="a"):
            check_plain(value, "state")


def _config_edit(checkpoint: Path, edit: Callable[[str], str]) -> None:
    path = checkpoint / "config.yaml"
    original = path.read_text()
    path.write_text(edit(original))
    assert path.read_text() != original  # the edit found what it replaces
    rehash(checkpoint)


def test_an_alias_bomb_in_a_checkpoint_config_is_refused_by_every_reader(run_dir, tmp_path, capsys):
    from trainer.runs.resume import plan_start
    from trainer.startup import compose_config

    for checkpoint in run_dir.glob("step-*"):
        _config_edit(checkpoint, lambda text: text + alias_bomb())
    (run_dir / "config.yaml").write_text((run_dir / "config.yaml").read_text() + alias_bomb())
    cfg = compose_config([*OVERRIDES, f"+resume={run_dir}"])
    with pytest.raises(UserError) as error:
        plan_start(cfg, [], report=lambda _: None)
    assert "anchors and aliases" in one_line(error)

    checkpoint = newest(run_dir)
    status, out, _ = tool_in_process(capsys, "inspect", checkpoint)
    assert status == 1 and "config.yaml" in out and "anchors and aliases" in out
    status, _, err = tool_in_process(capsys, "export", checkpoint, tmp_path / "m.keras")
    assert "anchors and aliases" in assert_one_error_line(err, status)
    status, _, err = tool_in_process(
        capsys, "plot-schedule", "--checkpoint", checkpoint, "--out", tmp_path / "lr.png"
    )
    assert "anchors and aliases" in assert_one_error_line(err, status)
    status, out, err = tool_in_process(capsys, "compare", run_dir, "--json")
    assert status == 0, err
    (run,) = json.loads(out)["runs"]
    # The config could not be read as data: no value of it is shown.
    assert set(run["hyperparameters"].values()) == {None}


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda t: t.replace("data_dir: null", "data_dir: ${oc.env:SECRET}"), "dataset.data_dir"),
        (lambda t: t.replace("filters:\n  - 4", "filters:\n  - ${oc.env:SECRET}"), "filters[0]"),
        (lambda t: t.replace("name: cnn", "name: prefix-${oc.env:SECRET}"), "model.name"),
        (lambda t: t.replace("name: cnn", "name: cnn\n  ${oc.env:SECRET}: 1"), "model"),
        (lambda t: t.replace("name: cnn", "name: ???"), "model.name"),
        (lambda t: t.replace("name: cnn", "name: cnn\n  _target_: os.system"), "_target_"),
    ],
    ids=["value", "list item", "inside a string", "key", "missing marker", "target"],
)
def test_a_checkpoint_config_is_data_never_interpolated(run_dir, monkeypatch, edit, where):
    from trainer.runs.resume import plan_start
    from trainer.startup import compose_config

    secret = str(run_dir.parent / "the-secret-value")
    monkeypatch.setenv("SECRET", secret)
    for checkpoint in run_dir.glob("step-*"):
        _config_edit(checkpoint, edit)
    cfg = compose_config([*OVERRIDES, f"+resume={run_dir}"])
    with pytest.raises(UserError) as error:
        plan_start(cfg, [], report=lambda _: None)
    message = one_line(error)
    assert where in message and secret not in message
    assert not Path(secret).exists()


def test_a_binary_value_in_a_run_config_is_one_line_for_every_tool(run_dir, tmp_path, capsys):
    checkpoint = newest(run_dir)
    _config_edit(checkpoint, lambda t: t.replace("name: cnn", "name: !!binary Y25u"))
    status, _, err = tool_in_process(capsys, "export", checkpoint, tmp_path / "m.keras")
    assert "!!binary" in assert_one_error_line(err, status)
    status, out, _ = tool_in_process(capsys, "inspect", checkpoint)
    assert status == 1 and "!!binary" in out


# --------------------------------------------------------------------------- manifests and state


def _raw_manifest(checkpoint: Path, replace: Callable[[str], str]) -> None:
    path = checkpoint / "manifest.json"
    original = path.read_text()
    path.write_text(replace(original))
    assert path.read_text() != original


BAD_MANIFESTS = {
    "epoch a string": (lambda c: edit_manifest(c, epoch="3"), "epoch"),
    "negative epoch": (lambda c: edit_manifest(c, epoch=-1), "epoch"),
    "huge batches_done": (lambda c: edit_manifest(c, batches_done=10**9), "batches_done"),
    "batches past the epoch": (lambda c: edit_manifest(c, batches_done=42), "steps_per_epoch"),
    "metrics a list": (lambda c: edit_manifest(c, metrics=[1, 2]), "metrics"),
    "metric a string": (lambda c: edit_manifest(c, metrics={"val_accuracy": "x"}), "val_accuracy"),
    "monitor a list": (lambda c: edit_manifest(c, monitor=["val_accuracy"]), "monitor"),
    "written_at NaN": (
        lambda c: _raw_manifest(
            c, lambda t: t.replace('"written_at": ', '"written_at": NaN, "x": ')
        ),
        "NaN",
    ),
    "written_at inf": (
        lambda c: _raw_manifest(
            c, lambda t: t.replace('"written_at": ', '"written_at": 1e999, "x": ')
        ),
        "finite",
    ),
    "written_at huge": (lambda c: edit_manifest(c, written_at=1e300), "written_at"),
    "global_step huge": (lambda c: edit_manifest(c, global_step=10**15), "global_step"),
    "global_step negative": (lambda c: edit_manifest(c, global_step=-36), "global_step"),
    "global_step a bool": (lambda c: edit_manifest(c, global_step=True), "global_step"),
    "steps_per_epoch zero": (lambda c: edit_manifest(c, steps_per_epoch=0), "steps_per_epoch"),
    "learning rate negative": (lambda c: edit_manifest(c, learning_rate=-1), "learning_rate"),
    "input_shape of zeros": (lambda c: edit_manifest(c, input_shape=[0, 8]), "input_shape"),
    "size negative": (
        lambda c: edit_manifest(c, files={"config.yaml": {"size": -1, "sha256": "0" * 64}}),
        "size",
    ),
    "sha256 not hex": (
        lambda c: edit_manifest(c, files={"config.yaml": {"size": 1, "sha256": "z" * 64}}),
        "sha256",
    ),
    "version a float": (lambda c: edit_manifest(c, project_version=1.5), "project_version"),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS), ids=list(BAD_MANIFESTS))
def test_a_bad_manifest_is_one_line_and_listing_verifying_pruning_go_on(
    run_dir, tmp_path, capsys, case
):
    tamper, field = BAD_MANIFESTS[case]
    other = shutil.copytree(run_dir, run_dir.parent / "other")
    bad = run_dir / checkpoint_name(STEPS[0])
    tamper(bad)
    tamper(newest(other))  # under the same root: one bad manifest in each run

    checkpoint = verify(bad)
    assert not checkpoint.valid
    (problem,) = checkpoint.problems
    assert problem.startswith("manifest.json") and field in problem and "\n" not in problem

    root = run_dir.parent
    for command in ("list", "verify"):
        status, out, err = tool_in_process(capsys, command, root, "--json")
        assert status == (0 if command == "list" else 1), err
        runs = json.loads(out)["runs"]
        states = {
            Path(c["path"]).relative_to(root): c["valid"] for r in runs for c in r["checkpoints"]
        }
        assert states == {
            Path("other") / checkpoint_name(STEPS[0]): True,
            Path("other") / checkpoint_name(STEPS[1]): False,
            Path("run") / checkpoint_name(STEPS[0]): False,
            Path("run") / checkpoint_name(STEPS[1]): True,
        }
    status, _, err = tool_in_process(capsys, "list", root)  # the table too
    assert status == 0 and "Traceback" not in err

    status, out, _ = tool_in_process(capsys, "inspect", bad)
    assert status == 1 and field in out
    status, _, err = tool_in_process(capsys, "export", bad, tmp_path / "m.keras")
    assert field in assert_one_error_line(err, status)

    # Pruning reads every manifest of the run at each save: the bad one is skipped.
    manager = CheckpointManager(run_dir, KeepPolicy(keep_last=1, keep_best=0), report=print)
    for step in (20, 30):
        manager.save(step, _write_a_file, {"epoch": 0})
    # Kept: the newest, and the one the best pointer names; the bad one was pruned.
    kept = sorted(p.name for p in run_dir.glob("step-*"))
    assert kept == [checkpoint_name(STEPS[1]), checkpoint_name(30)]


def _write_a_file(staging: Path) -> None:
    (staging / "a.txt").write_text("a")


def test_a_nan_metric_is_written_as_null_and_the_checkpoint_stays_valid(tmp_path):
    manager = CheckpointManager(tmp_path, KeepPolicy(), report=print)
    path = manager.save(3, _write_a_file, {"metrics": {"loss": float("nan")}})
    checkpoint = verify(path)
    assert checkpoint.valid and checkpoint.manifest["metrics"] == {"loss": None}


def _state_edit(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(checkpoint: Path) -> None:
        path = checkpoint / "trainer_state.json"
        state = json.loads(path.read_text())
        edit(state)
        path.write_text(json.dumps(state))
        rehash(checkpoint)

    return tamper


BAD_STATES = {
    "loop missing": (lambda s: s.pop("loop"), "loop is missing"),
    "epoch a string": (lambda s: s["loop"].update(epoch="1"), "loop.epoch"),
    "history a mapping": (lambda s: s["loop"].update(history={}), "loop.history"),
    "lr_scale zero": (lambda s: s["loop"].update(lr_scale=0.0), "loop.lr_scale"),
    "best a list": (lambda s: s["loop"].update(best=[1]), "loop.best"),
    "rng strings": (lambda s: s["rng"][0].update(state=["a", "b"]), "rng[0].state[0]"),
    "rng not a list": (lambda s: s.update(rng={"a": 1}), "rng"),
    "position not the manifest's": (lambda s: s["loop"].update(batches_done=3), "manifest says"),
}


@pytest.mark.parametrize("case", list(BAD_STATES), ids=list(BAD_STATES))
def test_a_bad_trainer_state_is_one_line_on_restore(run_dir, case):
    edit, where = BAD_STATES[case]
    checkpoint = newest(run_dir)
    _state_edit(edit)(checkpoint)
    assert verify(checkpoint).valid  # well-formed JSON, hashes match: only its schema tells
    with pytest.raises(UserError) as error:
        read_trainer_state(unchecked(checkpoint))
    assert "trainer_state.json" in one_line(error) and where in one_line(error)
    with pytest.raises(UserError, match=r"trainer_state\.json"):
        restore(checkpoint, with_optimizer=False)


def test_every_loop_state_field_is_typed():
    from dataclasses import fields

    from trainer.training.state import LoopState

    assert {f.name for f in fields(LoopState)} == set(LOOP_STATE.fields)
    assert LOOP_STATE.problem(LoopState().to_dict(), "loop") is None


# --------------------------------------------------------------------------- pointers, symlinks


def _within(seconds: float, call: Callable[[], object]) -> object:
    """``call()``'s result; the test fails (instead of hanging) if it blocks."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still blocked after {seconds} s (reading a FIFO or a device?)")
    return result[0]


def _link_to_a_name(pointer: Path, run_dir: Path) -> None:
    (run_dir / "name.txt").write_text(checkpoint_name(STEPS[0]))
    os.symlink(run_dir / "name.txt", pointer)


POINTER_HAZARDS = {
    "fifo": (lambda p, run: os.mkfifo(p), "a FIFO"),
    "symlink to a device": (lambda p, run: os.symlink("/dev/zero", p), "symlink"),
    "symlink to a checkpoint name": (_link_to_a_name, "symlink"),
    "directory": (lambda p, run: p.mkdir(), "a directory"),
    "too long": (lambda p, run: p.write_text(checkpoint_name(STEPS[0]) + " " * 300), "larger"),
    "not text": (lambda p, run: p.write_bytes(b"\xff\xfe"), "not text"),
}


@pytest.mark.parametrize("hazard", list(POINTER_HAZARDS), ids=list(POINTER_HAZARDS))
def test_pointers_are_read_only_as_small_regular_files(run_dir, capsys, hazard):
    make, expected = POINTER_HAZARDS[hazard]
    (run_dir / "latest").unlink()
    make(run_dir / "latest", run_dir)

    assert _within(30, lambda: read_pointer(run_dir, "latest")) is None
    status, out, err = _within(30, lambda: tool_in_process(capsys, "list", run_dir, "--json"))
    assert status == 0 and json.loads(out)["runs"][0]["latest"] is None, err
    status, out, _ = _within(30, lambda: tool_in_process(capsys, "verify", run_dir))
    assert status == 1
    (bad,) = [line for line in out.splitlines() if "BAD" in line]
    assert "pointer 'latest'" in bad and expected in bad


def test_verify_reports_symlinks_in_and_as_checkpoints(run_dir, capsys):
    checkpoint = newest(run_dir)
    os.symlink("/etc/passwd", checkpoint / "notes.txt")
    assert "notes.txt: a symlink" in " ".join(verify(checkpoint).problems)

    elsewhere = run_dir.parent / "elsewhere"
    shutil.copytree(run_dir / checkpoint_name(STEPS[0]), elsewhere)
    shutil.rmtree(run_dir / checkpoint_name(STEPS[0]))
    os.symlink(elsewhere, run_dir / checkpoint_name(STEPS[0]))
    assert verify(run_dir / checkpoint_name(STEPS[0])).problems == [
        "the checkpoint directory is a symlink"
    ]
    status, out, _ = tool_in_process(capsys, "list", run_dir, "--no-verify", "--json")
    listed = {c["checkpoint"]: c["valid"] for c in json.loads(out)["runs"][0]["checkpoints"]}
    assert status == 0 and listed == {checkpoint_name(STEPS[0]): False, checkpoint.name: True}

    (checkpoint / "config.yaml").unlink()
    os.symlink(elsewhere / "config.yaml", checkpoint / "config.yaml")  # same bytes, same hash
    assert "config.yaml: is a symlink" in " ".join(verify(checkpoint).problems)
    status, out, _ = tool_in_process(capsys, "verify", run_dir)
    assert status == 1 and "cannot be resumed" in out


def test_a_fifo_in_place_of_a_state_file_is_refused_not_waited_on(run_dir):
    checkpoint = newest(run_dir)
    (checkpoint / "trainer_state.json").unlink()
    os.mkfifo(checkpoint / "trainer_state.json")
    checkpoint_state = _within(30, lambda: verify(checkpoint))
    assert "trainer_state.json: is not a regular file (a FIFO)" in checkpoint_state.problems


# --------------------------------------------------------------------------- rescue: zip and .h5


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory) -> Path:
    """A .keras file plain Keras wrote (with optimizer state), and its legacy .h5 twin."""
    from tests.test_tools import _plain_keras_model

    model, _ = _plain_keras_model(0.01)
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    model.save(path)
    model.save(path.with_suffix(".h5"))
    return path


def rezip(source: Path, target: Path, replaced: dict[str, bytes]) -> Path:
    """A copy of zip ``source`` with the members ``replaced`` names holding other bytes."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        assert set(replaced) <= set(old.namelist())
        for name in old.namelist():
            new.writestr(name, replaced.get(name) or old.read(name))
    return target


def edited_weights(source: Path, tmp_path: Path, edit: Callable[[h5py.File], None]) -> bytes:
    path = tmp_path / "member.weights.h5"
    with zipfile.ZipFile(source) as archive:
        path.write_bytes(archive.read("model.weights.h5"))
    with h5py.File(path, "a") as handle:
        edit(handle)
    return path.read_bytes()


def lying_header(source: Path, target: Path, name: str, claimed: int) -> Path:
    """A copy of zip ``source`` whose headers claim member ``name`` is ``claimed`` bytes."""
    data = bytearray(source.read_bytes())
    encoded = name.encode()
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at : name_at + len(encoded)] == encoded:
                data[start + offset : start + offset + 4] = struct.pack("<I", claimed)
            start += 4
    target.write_bytes(bytes(data))
    return target


def _config_with(source: Path, change: Callable[[dict], None]) -> bytes:
    with zipfile.ZipFile(source) as archive:
        config = json.loads(archive.read("config.json"))
    change(config)
    return json.dumps(config).encode()


def _rescue_inputs(keras_file: Path, tmp_path: Path) -> dict[str, Path]:
    """One hostile model file per case of RESCUE_REFUSALS."""
    big = json.dumps({"keras_version": "3", "padding": " " * (2 << 20)}).encode()

    def keras_with(name: str, member: str, data: bytes) -> Path:
        return rezip(keras_file, tmp_path / f"{name}.keras", {member: data})

    def weights_with(name: str, edit: Callable[[h5py.File], None]) -> Path:
        return keras_with(name, "model.weights.h5", edited_weights(keras_file, tmp_path, edit))

    def config_with(name: str, change: Callable[[dict], None]) -> Path:
        return keras_with(name, "config.json", _config_with(keras_file, change))

    def optimizer_class_list(config: dict) -> None:
        config["compile_config"]["optimizer"]["class_name"] = ["Adam"]

    nan_config = _config_with(keras_file, lambda c: None).replace(b"{", b'{"x": NaN, ', 1)
    outside = tmp_path / "outside.bin"
    return {
        "metadata too big": keras_with("big", "metadata.json", big),
        "metadata header lies": lying_header(
            keras_with("lies0", "metadata.json", big), tmp_path / "lies.keras", "metadata.json", 100
        ),
        "class_name a list": config_with("class", lambda c: c.update(class_name=["Functional"])),
        "optimizer class_name a list": config_with("optimizer", optimizer_class_list),
        "string moments": weights_with(
            "strings", _replace("optimizer/vars/1", np.array([b"x"] * 36))
        ),
        "negative step": weights_with("step", _replace("optimizer/vars/0", np.int64(-36))),
        "weights stored outside": weights_with(
            "outside", lambda h: _outside_storage_in(h, "layers/dense/vars/1", outside)
        ),
        "weights not HDF5": keras_with("garbage", "model.weights.h5", b"x" * 99),
        "legacy .h5 with a link out": _legacy_with_link(keras_file, tmp_path / "legacy.h5"),
        "config NaN": keras_with("nan", "config.json", nan_config),
    }


def _outside_storage_in(handle: h5py.File, key: str, outside: Path) -> None:
    shape, dtype = handle[key].shape, handle[key].dtype
    del handle[key]
    outside.write_bytes(np.zeros(shape, dtype).tobytes())
    handle.create_dataset(key, shape, dtype, external=[(str(outside), 0, 4096)])


def _legacy_with_link(keras_file: Path, target: Path) -> Path:
    shutil.copy(keras_file.with_suffix(".h5"), target)
    with h5py.File(target, "a") as handle:
        handle["extra"] = h5py.ExternalLink("/etc/secret.h5", "/x")
    return target


RESCUE_REFUSALS = {
    "metadata too big": "metadata.json is larger than",
    "metadata header lies": "metadata.json cannot be read from the zip",
    "class_name a list": "['Functional']",
    "optimizer class_name a list": "class_name is a list",
    "string moments": "not numbers",
    "negative step": "optimizer step is -36",
    "weights stored outside": "stored in an outside file",
    "weights not HDF5": "not a readable HDF5 file",
    "legacy .h5 with a link out": "external link",
    "config NaN": "NaN",
}


def test_rescue_refuses_hostile_keras_files_in_one_line(keras_file, tmp_path, capsys):
    inputs = _rescue_inputs(keras_file, tmp_path)
    assert set(inputs) == set(RESCUE_REFUSALS)
    no_data = ["--set", f"dataset.data_dir={tmp_path / 'tfds'}", "--set", "dataset.download=false"]
    for case, source in inputs.items():
        out = tmp_path / f"out-{source.stem}"
        status, _, err = tool_in_process(
            capsys,
            "rescue",
            source,
            out,
            "--schedule",
            "cosine",
            *no_data,  # never reached
        )
        assert status == 2, (case, err)
        line = assert_one_error_line(err, status)
        assert RESCUE_REFUSALS[case] in line, (case, line)
        assert not out.exists()


def test_zip_members_are_read_with_a_bound_even_when_the_header_lies(tmp_path):
    source = tmp_path / "a.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("m.json", b" " * (4 << 20))
    with zipfile.ZipFile(source) as archive:
        assert len(read_zip_member(archive, "m.json", 4 << 20)) == 4 << 20
        with pytest.raises(ValueError, match="larger than"):
            read_zip_member(archive, "m.json", 1 << 20)
    lying = lying_header(source, tmp_path / "b.zip", "m.json", 10)
    with zipfile.ZipFile(lying) as archive, pytest.raises(ValueError) as error:
        read_zip_member(archive, "m.json", 1 << 20)
    assert "m.json" in one_line(error)


# --------------------------------------------------------------------------- train.py


@pytest.mark.slow
def test_train_py_resume_refuses_a_secret_interpolation_and_a_negative_step(
    written, digits_dir, tmp_path
):
    secret = tmp_path / "secret-value"
    interpolated = shutil.copytree(written, tmp_path / "interpolated")
    for checkpoint in interpolated.glob("step-*"):
        _config_edit(
            checkpoint, lambda t: t.replace("data_dir: null", "data_dir: ${oc.env:SECRET}")
        )
    process = run_train(
        f"+resume={interpolated}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        cwd=tmp_path,
        env={"SECRET": str(secret)},
        check=False,
    )
    assert "dataset.data_dir" in assert_one_error_line(process, process.returncode)
    assert not secret.exists()
    assert not any(str(secret) in p.read_text() for p in interpolated.rglob("*.yaml"))

    negative = shutil.copytree(written, tmp_path / "negative")
    for checkpoint in negative.glob("step-*"):
        edit_h5(checkpoint, "optimizer.h5", _replace("0", np.int64(-36)))
    before = sorted(p.name for p in negative.iterdir())
    process = run_train(
        f"+resume={newest(negative)}",
        f"dataset.data_dir={digits_dir}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        cwd=tmp_path,
        check=False,
    )
    assert "step is -36" in assert_one_error_line(process, process.returncode)
    assert sorted(p.name for p in negative.iterdir()) == before  # no step--0000036 directory
