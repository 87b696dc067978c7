"""One writer per run directory, a new run never writes where it must not, and a write the
machine refuses (disk full, read-only) is one line with nothing half-written left behind.

Unit tests first (TensorFlow-free unless said), then ``train.py`` end to end (slow).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from checkpoints import KeepPolicy, checkpoint_name, list_checkpoints, verify
from checkpoints.durable import write_text_atomically
from checkpoints.layout import RUN_FILES, RUN_LOCK, RUN_LOCK_HOLDER
from checkpoints.lock import Holder, read_holder, run_lock
from checkpoints.manager import CheckpointError, CheckpointManager
from checkpoints.manifest import commit_checkpoint
from tests.conftest import REPO, run_train, tiny_args
from trainer.errors import StopRequested, StorageError, UserError, storage_errors, storage_failure
from trainer.runs.run_dir import (
    RunDirectory,
    refuse_new_run_in,
    run_directory,
)

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --------------------------------------------------------------------------- helpers


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the sha256 of its content (directories: 'dir')."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }


def hidden(run_dir: Path) -> list[str]:
    """Hidden entries but the lock's: staging directories, temporaries."""
    return sorted(
        p.name
        for p in run_dir.iterdir()
        if p.name.startswith(".") and p.name not in (RUN_LOCK, RUN_LOCK_HOLDER)
    )


def weights_file(step: int) -> bytes:
    """A small HDF5 weights file (verify checks it as HDF5), different for each step."""
    import io

    import h5py
    import numpy as np

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle["layers/dense/vars/0"] = np.full(50, step, np.float32)
    return buffer.getvalue()


def writer(step: int):
    def write_files(staging: Path) -> None:
        (staging / "model.weights.h5").write_bytes(weights_file(step))
        (staging / "trainer_state.json").write_text(json.dumps({"step": step}))

    return write_files


def save(manager: CheckpointManager, step: int, write_files=None) -> Path:
    return manager.save(step, write_files or writer(step), {"metrics": {}})


def hold_lock(run_dir: Path, fork_child: bool = False) -> subprocess.Popen:
    """A process that takes ``run_dir``'s lock with ``run_lock`` and sleeps; with
    ``fork_child`` it first forks a child that sleeps too (its pid on the second line)."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from checkpoints.lock import run_lock
        with run_lock({str(run_dir)!r}):
            if {fork_child!r} and os.fork() == 0:
                time.sleep(120)
                os._exit(0)
            print("locked", flush=True)
            time.sleep(120)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "locked"
    return process


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def new_run_cfg(checkpoint_dir: Path | None, run_dir: Path | None = None):
    return OmegaConf.create(
        {
            "checkpoint": {"dir": None if checkpoint_dir is None else str(checkpoint_dir)},
            "paths": {"run_dir": str(run_dir or "runs/day/time")},
        }
    )


# --------------------------------------------------------------------------- 1. the lock


def test_a_held_lock_refuses_a_second_writer_naming_the_holder(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        recorded = read_holder(tmp_path)
        assert recorded.pid == holder.pid and recorded.host == socket.gethostname()
        with pytest.raises(UserError) as refused, run_lock(tmp_path):
            pass
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(recorded.since))
        assert str(refused.value) == (
            f"run {tmp_path} is being written by pid {holder.pid} on host "
            f"{socket.gethostname()} (since {since}); wait for it or stop it"
        )
        # A worker that is not the chief takes no lock: it writes nothing there.
        with RunDirectory(tmp_path, new=False).writing(writer=False) as path:
            assert path == tmp_path
    finally:
        kill(holder)


def test_a_killed_holder_leaves_a_lock_that_is_taken_over_and_said_so(tmp_path):
    holder = hold_lock(tmp_path)
    kill(holder)  # SIGKILL: no cleanup ran, its holder file stays
    assert read_holder(tmp_path).pid == holder.pid
    said = []
    with run_lock(tmp_path, report=said.append) as mine:
        assert read_holder(tmp_path) == mine and mine.pid == os.getpid()
    assert len(said) == 1
    assert said[0].startswith(f"Taking over the lock of run {tmp_path}: its holder, pid ")
    assert f"pid {holder.pid} on host {socket.gethostname()}" in said[0]
    assert not (tmp_path / RUN_LOCK_HOLDER).exists()  # released: the record is gone
    with run_lock(tmp_path, report=said.append):  # and the lock is free
        pass
    assert len(said) == 1  # nothing left over this time


def test_a_stale_holder_file_of_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    pid = int(dead.stdout)
    stale = Holder(pid, socket.gethostname(), time.time() - 3600)
    (tmp_path / RUN_LOCK_HOLDER).write_text(json.dumps(stale.__dict__))
    assert stale.is_gone()
    said = []
    with run_lock(tmp_path, report=said.append):
        assert read_holder(tmp_path).pid == os.getpid()
    assert said == [
        f"Taking over the lock of run {tmp_path}: its holder, {stale.describe()}, "
        "ended without releasing it"
    ]


def test_a_forked_child_does_not_keep_the_run_locked_after_its_parent_dies(tmp_path):
    holder = hold_lock(tmp_path, fork_child=True)
    children = subprocess.run(
        ["pgrep", "-P", str(holder.pid)], capture_output=True, text=True
    ).stdout.split()
    assert len(children) == 1
    kill(holder)
    try:
        os.kill(int(children[0]), 0)  # the child lives on...
        with run_lock(tmp_path, report=lambda _: None):  # ...and does not hold the lock
            pass
    finally:
        os.kill(int(children[0]), signal.SIGKILL)


def test_the_refusal_says_when_the_recorded_holder_has_ended(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        gone = Holder(holder.pid + 10_000_000, socket.gethostname(), time.time())
        (tmp_path / RUN_LOCK_HOLDER).write_text(json.dumps(gone.__dict__))
        ended = r"by a process started by pid \d+ .*which has ended"
        with pytest.raises(UserError, match=ended), run_lock(tmp_path):
            pass
    finally:
        kill(holder)


def test_the_fresh_run_rules_are_checked_again_under_the_lock(tmp_path):
    target = RunDirectory(tmp_path, new=True)
    (tmp_path / "config.yaml").write_text("seed: 1\n")  # another run wrote here since planning
    with pytest.raises(UserError, match=r"already holds config\.yaml"), target.writing():
        pass
    assert (tmp_path / "config.yaml").read_text() == "seed: 1\n"
    with run_lock(tmp_path):  # the refusal released the lock
        pass


# --------------------------------------------------------------------------- 2. where runs write


def make_run(path: Path, steps=(10,)) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text("seed: 0\n")
    for step in steps:
        checkpoint = path / checkpoint_name(step)
        checkpoint.mkdir()
        (checkpoint / "manifest.json").write_text("{}")
    return path


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda t: Path("/"), "is the filesystem root"),
        (lambda t: t / "run" / "config.yaml", "is a file, not a directory"),
        (lambda t: t / "run" / "step-00000010", "is a checkpoint; a run never writes into"),
        (lambda t: t / "run" / "step-00000010" / "x", "is inside checkpoint"),
        (lambda t: t / "run" / "x", f"is inside the run {Path('RUN')}"),
        (lambda t: t / "sweep", "is a sweep directory"),
        (lambda t: t / "sweep" / "0" / "deeper", "is inside the run"),
        (lambda t: t / "run", "already holds checkpoints; resume it with +resume="),
    ],
    ids=["root", "file", "checkpoint", "in-checkpoint", "in-run", "sweep", "in-sweep-job", "run"],
)
def test_a_new_run_refuses_a_directory_it_must_not_write_into(tmp_path, where, message):
    make_run(tmp_path / "run")
    make_run(tmp_path / "sweep" / "0")
    make_run(tmp_path / "sweep" / "1")
    before = tree(tmp_path)
    target = where(tmp_path)
    message = message.replace("RUN", str(tmp_path / "run"))
    with pytest.raises(
        UserError, match=f"^checkpoint.dir '{re.escape(str(target))}' " + re.escape(message)
    ):
        run_directory(new_run_cfg(target), in_place=False)
    assert tree(tmp_path) == before  # nothing created, nothing changed


@pytest.mark.parametrize("name", RUN_FILES)
def test_a_new_run_refuses_a_directory_holding_a_file_it_would_write(tmp_path, name):
    (tmp_path / name).mkdir() if name == "tensorboard" else (tmp_path / name).write_text("x\n")
    before = tree(tmp_path)
    with pytest.raises(UserError, match=f"already holds {name}, which a new run would overwrite"):
        run_directory(new_run_cfg(tmp_path), in_place=False)
    assert tree(tmp_path) == before


def test_a_directory_holding_a_manifest_is_a_checkpoint(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "manifest.json").write_text("{}")
    with pytest.raises(UserError, match="is inside checkpoint"):
        refuse_new_run_in(tmp_path / "ckpt" / "new", "OUT")


def test_where_a_new_run_may_write(tmp_path):
    make_run(tmp_path / "runs" / "a")  # a sibling run: runs/ looks like a sweep, b is fine
    run_directory(new_run_cfg(tmp_path / "runs" / "b"), in_place=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README").write_text("mine\n")  # files a run does not write
    run_directory(new_run_cfg(tmp_path / "notes"), in_place=False)
    # The default layout: a second run of the day beside the first.
    make_run(tmp_path / "root" / "day" / "00-00-00")
    made = run_directory(
        new_run_cfg(None, run_dir=tmp_path / "root" / "day" / "10-00-00"), in_place=False
    )
    assert made.path == tmp_path / "root" / "day" / "10-00-00" and made.path.is_dir() and made.new
    # A run continuing in place writes into its own directory.
    own = run_directory(new_run_cfg(tmp_path / "runs" / "a"), in_place=True)
    assert own.path == tmp_path / "runs" / "a" and not own.new


def test_a_sweep_job_restarting_in_its_own_directory_continues_there(tmp_path):
    from hydra import compose, initialize_config_dir

    from trainer.config import register_schemas
    from trainer.planning import plan_run

    register_schemas()
    job = tmp_path / "sweep" / "1"
    make_run(tmp_path / "sweep" / "0")
    job.mkdir()
    (job / "config.yaml").write_text("seed: 0\n")  # it died before its first checkpoint
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"checkpoint.dir={job}"])
    _, _, target = plan_run(cfg, hashes=False, own_dir=job)
    assert target.path == job and not target.new
    with pytest.raises(UserError, match=r"already holds config\.yaml"):
        plan_run(cfg, hashes=False)  # the same directory, not the job's own: refused


def test_rescue_follows_the_new_run_rules_before_reading_anything(tmp_path, capsys):
    from trainer.__main__ import main

    make_run(tmp_path / "run")
    model_file = tmp_path / "old.keras"
    model_file.write_bytes(b"never read")
    before = tree(tmp_path)
    out = tmp_path / "run" / "step-00000010" / "rescued"
    assert main(["rescue", str(model_file), str(out), "--schedule", "cosine"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: OUT '{out}' is inside checkpoint {tmp_path / 'run' / 'step-00000010'}; a run "
        "never writes into a checkpoint: choose a directory outside it"
    )
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- 3. plots


def fake_runs(tmp_path: Path) -> Path:
    for name, accuracy in (("a", 0.5), ("b", 0.7)):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"best": accuracy, "monitor": "val_acc"}))
        (run / "config.yaml").write_text(f"optimizer:\n  name: adam\n  learning_rate: {accuracy}\n")
    return [str(tmp_path / "runs" / name) for name in ("a", "b")]


def test_compare_never_replaces_a_plot_without_force(tmp_path, capsys):
    from trainer.__main__ import main

    runs = fake_runs(tmp_path)
    plot = tmp_path / "runs.png"
    plot.write_bytes(b"an older plot")
    assert main(["compare", *runs, "--plot", str(plot)]) == 2
    line = capsys.readouterr().err.strip()
    assert line == f"error: --plot '{plot}' already exists; add --force to replace it"
    assert plot.read_bytes() == b"an older plot"

    assert main(["compare", *runs, "--plot", str(plot), "--force"]) == 0
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary


def test_compare_names_the_suffixes_matplotlib_writes(tmp_path, capsys):
    from trainer.__main__ import main

    runs = fake_runs(tmp_path)
    assert main(["compare", *runs, "--plot", str(tmp_path / "x.txt")]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"error: --plot '{tmp_path / 'x.txt'}': the file name must end in one")
    assert all(f".{suffix}" in line for suffix in ("png", "pdf", "svg"))
    assert not (tmp_path / "x.txt").exists()
    assert main(["compare", *runs, "--plot", str(tmp_path / "x.pdf")]) == 0
    assert (tmp_path / "x.pdf").read_bytes().startswith(b"%PDF")


def test_a_plot_file_that_appears_after_the_check_is_not_replaced(tmp_path):
    from trainer.tools.plots import figure_output, pyplot, save_figure

    plt = pyplot()
    out = figure_output(str(tmp_path / "lr.png"), "--out", force=False)
    out.write_bytes(b"written meanwhile")
    figure = plt.figure()
    with pytest.raises(UserError, match="already exists; add --force"):
        save_figure(plt, figure, out, "--out", force=False)
    assert out.read_bytes() == b"written meanwhile"


def test_plot_schedule_never_replaces_its_out_without_force(tmp_path, capsys):
    from trainer.__main__ import main

    out = tmp_path / "lr.png"
    out.write_bytes(b"an older plot")
    args = ["plot-schedule", "schedule=constant", "--steps-per-epoch", "3", "--out", str(out)]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --out '{out}' already exists; add --force to replace it"
    )
    assert out.read_bytes() == b"an older plot"
    assert main([*args, "--force"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


# --------------------------------------------------------------------------- 4. refused writes


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ENOSPC, "No space left on device (errno 28)"),
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied (errno 13)"),
        (
            RuntimeError(
                "Can't decrement id ref count (file write failed: time = Tue Dec  1 2026, "
                "filename = 'x.h5', errno = 28, error message = 'No space left on device')"
            ),
            "No space left on device (errno 28)",
        ),
        (
            Exception("{{function_node WriteSummary}} events; File too large\n\tFailed to flush"),
            "File too large (errno 27)",
        ),
        (ValueError("shapes do not match"), None),
        (RuntimeError("errno = 22 in a message that is not a write"), None),
    ],
    ids=["os", "permission", "hdf5", "tensorflow", "not-storage", "other-errno"],
)
def test_storage_failure_reads_the_errno_wherever_the_library_put_it(error, reason):
    assert storage_failure(error) == reason


def test_storage_errors_turns_only_refused_writes_into_one_line():
    with pytest.raises(StorageError) as caught, storage_errors("write x in /run", "y is intact"):
        raise ENOSPC
    assert str(caught.value) == (
        "cannot write x in /run: No space left on device (errno 28); y is intact"
    )
    with pytest.raises(KeyError), storage_errors("write x"):  # a bug keeps its traceback
        raise KeyError("x")


def fail_on(monkeypatch, target, name: str, calls_before: int = 0, error=ENOSPC):
    """Make ``target.name`` raise ``error`` after ``calls_before`` calls."""
    real = getattr(target, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) > calls_before:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


def half_written(error: BaseException):
    """A ``write_files`` that the machine stops half-way, as h5py or a write would."""

    def write_files(staging: Path) -> None:
        (staging / "model.weights.h5").write_bytes(b"half of it")
        raise error

    return write_files


HDF5_FULL = RuntimeError("Unable to extend file (errno = 28, error message = 'No space left')")
# Where the machine refuses a write of the save: patch it, and say which writer to use.
FAILURE_POINTS = {
    "state files": lambda mp: half_written(ENOSPC),
    "h5py": lambda mp: half_written(HDF5_FULL),
    "fsync": lambda mp: fail_on(mp, os, "fsync"),
    "rename": lambda mp: fail_on(mp, os, "rename", error=OSError(errno.EROFS, "Read-only")),
    "pointer": lambda mp: fail_on(mp, os, "replace"),
}


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("where", list(FAILURE_POINTS))
def test_a_refused_save_is_one_line_and_loses_nothing(tmp_path, monkeypatch, where, asynchronous):
    manager = CheckpointManager(
        tmp_path, KeepPolicy(keep_last=5), asynchronous=asynchronous, report=lambda _: None
    )
    save(manager, 10)
    save(manager, 20)
    manager.wait()
    before = {p.name: tree(p) for p in list_checkpoints(tmp_path)}
    write_files = FAILURE_POINTS[where](monkeypatch)
    with pytest.raises(CheckpointError) as caught:
        save(manager, 30, write_files)
        manager.close()
    monkeypatch.undo()
    message = str(caught.value)
    code = 30 if where == "rename" else 28
    assert message == (
        f"cannot save checkpoint step-00000030 in {tmp_path}: {os.strerror(code)} "
        f"(errno {code}); the older checkpoints are intact"
    )
    assert hidden(tmp_path) == []  # no staging directory, no temporary left
    assert {p.name: tree(p) for p in list_checkpoints(tmp_path) if p.name in before} == before
    assert all(verify(p).valid for p in list_checkpoints(tmp_path))
    assert manager.latest in ("step-00000020", "step-00000030")


def test_a_failed_resave_of_the_same_step_puts_the_old_checkpoint_back(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, KeepPolicy(), report=lambda _: None)
    final = save(manager, 10)
    before = tree(final)
    staging = tmp_path / ".step-00000010.tmp-resave"
    staging.mkdir()
    (staging / "model.weights.h5").write_bytes(b"new")
    real_rename = os.rename

    def rename(source, destination):
        if Path(source) == staging:  # the new one cannot be moved into place
            raise ENOSPC
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        commit_checkpoint(staging, final, {"global_step": 10})
    assert tree(final) == before and verify(final).valid


def test_a_refused_text_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "latest"
    path.write_text("step-00000010\n")
    fail_on(monkeypatch, os, "fsync")
    with pytest.raises(OSError):
        write_text_atomically(path, "step-00000020\n")
    assert path.read_text() == "step-00000010\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


def test_the_manager_says_in_one_line_that_it_cannot_prepare_the_run(tmp_path, monkeypatch):
    fail_on(monkeypatch, Path, "mkdir", error=OSError(errno.EROFS, "Read-only file system"))
    with pytest.raises(StorageError) as caught:
        CheckpointManager(tmp_path / "run", KeepPolicy())
    assert str(caught.value) == (
        f"cannot prepare run directory {tmp_path / 'run'} for checkpoints: "
        "Read-only file system (errno 30)"
    )


def test_the_run_ends_with_the_error_that_ended_it_and_closes_everything():
    from trainer.train import closed_on_exit

    closed = []

    def closer(name, error=None):
        def close():
            closed.append(name)
            if error is not None:
                raise error

        return close

    failing = closer("checkpointer", CheckpointError("cannot save checkpoint step-1"))
    with pytest.raises(CheckpointError), closed_on_exit(closer("reporter"), failing):
        raise StopRequested(signal.SIGTERM)  # promised a saved checkpoint: the failure wins
    assert closed == ["reporter", "checkpointer"]
    closed.clear()
    reporter = closer("reporter", StorageError("cannot write metrics.csv"))
    with pytest.raises(CheckpointError), closed_on_exit(reporter, closer("checkpointer")):
        raise CheckpointError("the first failure")  # what ended the run is what is said
    assert closed == ["reporter", "checkpointer"]
    with pytest.raises(StorageError), closed_on_exit(reporter):
        pass


def h5_tree(path: Path) -> dict[str, object]:
    import h5py

    found: dict[str, object] = {}
    with h5py.File(path, "r") as handle:

        def visit(name, item):
            attrs = {k: repr(v) for k, v in item.attrs.items()}
            if isinstance(item, h5py.Dataset):
                found[name] = (item.dtype.str, item.shape, item[()].tobytes(), attrs)
            else:
                found[name] = ("group", attrs)

        found["/"] = ("group", {k: repr(v) for k, v in handle.attrs.items()})
        handle.visititems(visit)
    return found


def test_the_weights_file_written_in_memory_is_the_one_keras_writes(tmp_path):
    # TensorFlow: Keras' private writer (checkpoints.state.save_weights) must keep
    # writing what model.save_weights writes.
    import keras

    from checkpoints.state import save_weights

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(3),
        ]
    )
    model.save_weights(tmp_path / "keras.weights.h5")
    save_weights(model, tmp_path / "ours.weights.h5")
    assert h5_tree(tmp_path / "ours.weights.h5") == h5_tree(tmp_path / "keras.weights.h5")
    assert len(h5_tree(tmp_path / "ours.weights.h5")) > 5


def test_the_reporter_names_the_file_it_cannot_write(tmp_path, monkeypatch):
    import keras
    import tensorflow as tf

    import trainer.loggers.tensorboard_logger as tensorboard_logger
    import trainer.training.reporting as reporting

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    reporter = reporting.RunReporter(tmp_path, 1, model)
    fail_on(monkeypatch, keras.callbacks.CSVLogger, "on_epoch_end")
    with pytest.raises(StorageError) as caught:
        reporter.end_epoch(0, 1, {"loss": 1.0})
    assert str(caught.value) == (
        f"cannot write metrics.csv in {tmp_path}: No space left on device (errno 28)"
    )
    monkeypatch.undo()
    full = tf.errors.ResourceExhaustedError(None, None, "events; No space left on device")
    fail_on(monkeypatch, tensorboard_logger, "write_scalars", error=full)
    with pytest.raises(StorageError) as caught:
        reporter.end_epoch(0, 1, {"loss": 1.0})
    assert str(caught.value) == (
        f"cannot write TensorBoard events in {tmp_path / 'tensorboard'}: "
        "No space left on device (errno 28)"
    )
    monkeypatch.undo()
    reporter.close()


# --------------------------------------------------------------------------- train.py end to end


@pytest.fixture(scope="module")
def finished_run(digits_dir, tmp_path_factory):
    """A tiny run of two epochs: step-00000041 and step-00000082."""
    work = tmp_path_factory.mktemp("finished")
    run_train(*tiny_args(digits_dir, work / "run"), cwd=work)
    return work / "run"


def copy_run(run: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.slow
def test_a_resume_while_another_process_writes_the_run_is_refused(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    holder = hold_lock(run)
    try:
        # The holder's commit in flight: a second writer's start-up would delete it.
        in_flight = run / ".step-00000123.tmp-1-2"
        in_flight.mkdir()
        (in_flight / "model.weights.h5").write_bytes(b"being written")
        before = tree(run)
        process = run_train(f"+resume={run}", "trainer.epochs=3", cwd=tmp_path, check=False)
        recorded = read_holder(run)
    finally:
        kill(holder)
    assert process.returncode == 2, process.stderr
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(recorded.since))
    assert process.stderr.strip() == (
        f"error: run {run} is being written by pid {holder.pid} on host "
        f"{socket.gethostname()} (since {since}); wait for it or stop it"
    )
    assert tree(run) == before  # the holder's files, its staging directory included

    # Its holder killed, the run is taken over (its dead staging cleaned up) and continues.
    process = run_train(f"+resume={run}", "trainer.epochs=3", cwd=tmp_path)
    assert f"Taking over the lock of run {run}: its holder, pid {holder.pid}" in process.stdout
    assert "Resuming from" in process.stdout and verify(run / "step-00000123").valid
    assert not in_flight.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("aim", "message"),
    [
        ("checkpoint", "is a checkpoint; a run never writes into a checkpoint"),
        ("conf", "already holds config.yaml, which a new run would overwrite"),
        ("sweep", "is a sweep directory"),
        ("root", "is the filesystem root"),
        ("file", "is a file, not a directory"),
    ],
)
def test_a_fresh_run_aimed_where_it_must_not_write_is_one_line(
    finished_run, digits_dir, tmp_path, aim, message
):
    sweep = tmp_path / "sweep"
    copy_run(finished_run, sweep)  # sweep/run: a sweep of one job
    (sweep / "summary.json").write_text('{"jobs": []}\n')
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.yaml").write_text("defaults: []\n")
    targets = {
        "checkpoint": sweep / "run" / "step-00000082",
        "conf": conf,
        "sweep": sweep,
        "root": Path("/"),
        "file": sweep / "run" / "metrics.csv",
    }
    before = {name: tree(tmp_path / name) for name in ("sweep", "conf")}
    args = [a for a in tiny_args(digits_dir, targets[aim]) if not a.startswith("hydra.run.dir")]
    process = run_train(*args, f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path, check=False)
    assert process.returncode == 2
    line = process.stderr.strip()
    assert line.startswith(f"error: checkpoint.dir '{targets[aim]}' {message}"), line
    assert "\n" not in line
    assert {name: tree(tmp_path / name) for name in ("sweep", "conf")} == before
    assert verify(sweep / "run" / "step-00000082").valid


def _file_size_limit(limit: int):
    def limit_files() -> None:
        import resource

        # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, like a full disk.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_files


@pytest.mark.slow
@pytest.mark.parametrize("asynchronous", ["false", "true"])
def test_a_save_the_disk_refuses_is_one_line_and_the_older_checkpoints_verify(
    finished_run, digits_dir, tmp_path, asynchronous
):
    run = copy_run(finished_run, tmp_path)
    before = tree(run)
    weights = (run / "step-00000082" / "model.weights.h5").stat().st_size
    process = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            f"+resume={run}",
            "trainer.epochs=3",
            f"checkpoint.async={asynchronous}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_file_size_limit(weights - 1),  # a checkpoint's files are larger
    )
    assert process.returncode == 1, process.stderr[-3000:]  # not a traceback, not SIGSEGV (139)
    assert process.stderr.strip().splitlines()[-1] == (
        f"error: cannot save checkpoint step-00000123 in {run}: File too large (errno 27); "
        "the older checkpoints are intact"
    )
    assert "Traceback" not in process.stderr
    assert hidden(run) == []  # no staging directory left
    assert {k: v for k, v in tree(run).items() if k.startswith("step-")} == {
        k: v for k, v in before.items() if k.startswith("step-")
    }
    assert all(verify(p).valid for p in list_checkpoints(run))


@pytest.mark.slow
def test_an_export_the_disk_refuses_is_one_line_and_leaves_no_partial_file(finished_run, tmp_path):
    out = tmp_path / "model.keras"
    weights = (finished_run / "step-00000082" / "model.weights.h5").stat().st_size
    process = subprocess.run(
        [sys.executable, "-m", "trainer", "export", str(finished_run), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_file_size_limit(weights - 1),  # the .keras zip holds the weights
    )
    assert process.returncode == 1, process.stderr[-3000:]
    assert process.stderr.strip().splitlines()[-1] == (
        f"error: cannot write '{out}': File too large (errno 27)"
    )
    assert "Traceback" not in process.stderr
    assert not out.exists()


def test_the_run_directory_modules_do_not_import_tensorflow():
    code = (
        "import sys, trainer.errors, checkpoints.lock, trainer.runs.run_dir, "
        "trainer.train; "
        "assert not {'tensorflow', 'keras', 'h5py'} & set(sys.modules), sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
