"""On a cluster: +resume=auto, Slurm's run names, and requeueing after a preemption signal.

The unit tests plan runs on fake run directories; the end-to-end ones run
``train.py`` as a scheduler would: the same command again after a SIGKILL,
SIGUSR1 under a fake Slurm (an ``scontrol`` on PATH that records its
arguments), and a sweep under submitit's local executor whose job is sent
submitit's timeout signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from checkpoints import list_checkpoints
from tests.conftest import REPO, run_train, tiny_args
from trainer.errors import StopRequested, UserError
from trainer.runs import cluster
from trainer.runs.sweep import auto_run_dir, plan_sweep_job

SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


@pytest.fixture(autouse=True)
def _no_slurm(monkeypatch):
    """Tests run outside Slurm unless they say otherwise, even on a Slurm node."""
    for name in SLURM_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- unit: names


def test_a_slurm_job_names_its_run_and_an_array_task_its_own():
    assert cluster.slurm_run_name({"SLURM_JOB_ID": "77"}) == "slurm-77"
    array = {"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}
    assert cluster.slurm_run_name(array) == "slurm-77_3"  # stable across requeues, as %A_%a
    assert cluster.slurm_run_name({}) is None


@pytest.mark.parametrize("value", ["../../etc", "12 3", "", "1e3"])
def test_a_job_id_that_is_not_a_number_is_refused(value):
    if not value:  # empty: not under Slurm at all
        assert cluster.slurm_job_id({"SLURM_JOB_ID": value}) is None
        return
    with pytest.raises(UserError, match="SLURM_JOB_ID must be a number"):
        cluster.slurm_job_id({"SLURM_JOB_ID": value})


# --------------------------------------------------------------------------- unit: +resume=auto


def auto_cfg(checkpoint_dir, root="runs", **trainer):
    cfg = OmegaConf.create(
        {
            "resume": "auto",
            "trainer": {"epochs": 2, "max_steps": None, "fine_tune": False, **trainer},
            "checkpoint": {"dir": None if checkpoint_dir is None else str(checkpoint_dir)},
            "paths": {"root": str(root)},
        }
    )
    OmegaConf.set_struct(cfg, True)
    return cfg


def make_run(path: Path, steps=(), files=("config.yaml",)) -> Path:
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_text("seed: 0\n")
    for step in steps:
        (path / f"step-{step:08d}").mkdir()
    return path


def test_auto_starts_fresh_in_an_empty_dir_and_resumes_one_with_checkpoints(tmp_path):
    said = []
    fresh = plan_sweep_job(auto_cfg(tmp_path / "new"), None, [], report=said.append)
    assert fresh.cfg.resume is None and fresh.resumes_itself
    assert fresh.cfg.checkpoint.dir == str(tmp_path / "new") == str(fresh.run_dir)

    # Killed before its first checkpoint: the files it left do not stop it starting again.
    left = make_run(tmp_path / "left", files=("config.yaml", "metrics.csv"))
    again = plan_sweep_job(auto_cfg(left), None, [], report=said.append)
    assert again.cfg.resume is None and again.cfg.checkpoint.dir == str(left)

    run = make_run(tmp_path / "run", steps=(5, 10))
    resumed = plan_sweep_job(auto_cfg(run), None, [], report=said.append)
    assert resumed.cfg.resume == str(run) and resumed.resumes_itself
    assert resumed.cfg.checkpoint.dir == str(run)  # continued in place, never branched off
    assert "starting it there" in said[0] and "resuming its run" in said[2]


def test_auto_in_a_multirun_gives_each_job_its_own_run(tmp_path):
    assert auto_run_dir(auto_cfg(tmp_path / "sweep"), "3") == tmp_path / "sweep" / "3"


def test_auto_under_slurm_finds_the_jobs_own_run_without_arguments(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"\+resume=auto needs checkpoint.dir=DIR"):
        auto_run_dir(auto_cfg(None, root=tmp_path), None)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert auto_run_dir(auto_cfg(None, root=tmp_path), None) == tmp_path / "slurm-4242"
    assert auto_run_dir(auto_cfg(None, root=tmp_path), "1") == tmp_path / "slurm-4242" / "1"


def test_auto_refuses_what_a_new_run_may_not_write_into(tmp_path):
    checkpoint = make_run(tmp_path / "run", steps=(5,)) / "step-00000005"
    with pytest.raises(UserError, match="a run never writes into a checkpoint"):
        plan_sweep_job(auto_cfg(checkpoint), None, [])
    with pytest.raises(UserError, match="fine_tune=true needs \\+resume=CHECKPOINT"):
        plan_sweep_job(auto_cfg(tmp_path / "x", fine_tune=True), None, [])


# --------------------------------------------------------------------------- unit: requeue


def stop(signum, previous=None, resumes_itself=True) -> StopRequested:
    stopped = StopRequested(signum, run_dir="run", previous_handler=previous)
    stopped.resumes_itself = resumes_itself
    return stopped


class FakeScontrol:
    def __init__(self, returncode=0, stderr=""):
        self.calls, self.returncode, self.stderr = [], returncode, stderr

    def __call__(self, args, **kwargs):
        self.calls.append(args)
        return subprocess.CompletedProcess(args, self.returncode, "", self.stderr)


def test_sigusr1_under_slurm_requeues_a_run_that_resumes_itself():
    scontrol, said = FakeScontrol(), []
    slurm = {"SLURM_JOB_ID": "4242"}
    cluster.requeue_after_preemption(
        stop(signal.SIGUSR1), environ=slurm, run=scontrol, report=said.append
    )
    assert scontrol.calls == [["scontrol", "requeue", "4242"]]
    assert said == ["Requeued Slurm job 4242: it continues from the checkpoint just saved"]

    scontrol = FakeScontrol()
    cluster.requeue_after_preemption(  # without +resume=auto a requeued copy would be refused
        stop(signal.SIGUSR1, resumes_itself=False), environ=slurm, run=scontrol, report=said.append
    )
    assert scontrol.calls == [] and "add +resume=auto" in said[-1]
    cluster.requeue_after_preemption(stop(signal.SIGTERM), environ=slurm, run=scontrol)
    assert scontrol.calls == []  # SIGTERM is scancel's: the job is meant to end


def test_a_failed_requeue_is_one_line_and_outside_slurm_nothing_is_asked():
    said = []
    cluster.requeue_after_preemption(
        stop(signal.SIGUSR1),
        environ={"SLURM_JOB_ID": "9"},
        run=FakeScontrol(1, "slurm_requeue error: Access denied\nmore"),
        report=said.append,
    )
    assert said == [
        "Could not requeue Slurm job 9: scontrol said 'slurm_requeue error: Access denied'"
    ]
    cluster.requeue_after_preemption(stop(signal.SIGUSR1), environ={}, report=said.append)
    assert said[-1] == "Not requeued: not a Slurm job (SLURM_JOB_ID is not set)"


def test_the_handler_installed_before_the_run_gets_the_signal_after_the_save():
    got = []
    cluster.requeue_after_preemption(
        stop(signal.SIGUSR2, previous=lambda signum, frame: got.append(signum)),
        environ={"SLURM_JOB_ID": "1"},
        run=FakeScontrol(),
    )
    assert got == [signal.SIGUSR2]  # submitit's: it resubmits the job and exits


# --------------------------------------------------------------------------- end to end

DETERMINISTIC = ("trainer.deterministic=true", "checkpoint.every_n_steps=10")


def auto_args(digits_dir: Path, run: Path, *extra: str) -> list[str]:
    return [*tiny_args(digits_dir, run, *DETERMINISTIC, "trainer.epochs=3", *extra), "+resume=auto"]


def start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(process: subprocess.Popen, run: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not list_checkpoints(run):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)


def final_arrays(run: Path):
    from checkpoints import checkpoint_arrays

    return checkpoint_arrays(list_checkpoints(run)[-1])


def assert_same_final_weights(a: Path, b: Path) -> None:
    import numpy as np

    left, right = final_arrays(a), final_arrays(b)
    assert left.keys() == right.keys()
    assert not [k for k in left if not np.array_equal(left[k], right[k])]


@pytest.fixture(scope="module")
def uninterrupted(digits_dir, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("uninterrupted")
    run_train(*auto_args(digits_dir, work / "run"), cwd=work)
    return work / "run"


@pytest.mark.slow
def test_the_same_command_starts_resumes_and_then_leaves_a_finished_run(
    uninterrupted, digits_dir, tmp_path
):
    run = tmp_path / "run"
    process = start(auto_args(digits_dir, run), tmp_path)
    wait_for_checkpoint(process, run)
    process.send_signal(signal.SIGKILL)  # a node lost: no chance to save
    process.communicate()

    again = run_train(*auto_args(digits_dir, run), cwd=tmp_path)  # the very same command
    assert f"+resume=auto: resuming its run {run}" in again.stdout
    assert "Resuming from" in again.stdout
    assert_same_final_weights(run, uninterrupted)

    done = run_train(*auto_args(digits_dir, run), cwd=tmp_path)
    assert "finished before" in done.stdout and "Epoch" not in done.stdout


@pytest.mark.slow
def test_sigusr1_under_slurm_saves_requeues_and_the_requeued_job_ends_bitwise_equal(
    uninterrupted, digits_dir, tmp_path
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    args = [
        arg
        for arg in auto_args(digits_dir, tmp_path / "unused")
        if not arg.startswith("checkpoint.dir=")  # under Slurm the job id names the run
    ]
    run = tmp_path / "runs" / "slurm-4242"  # under paths.root, the default runs/

    process = start(args, tmp_path, env=slurm)
    wait_for_checkpoint(process, run)
    process.send_signal(signal.SIGUSR1)  # sbatch --signal=USR1@90
    _, err = process.communicate(timeout=240)
    assert process.returncode == 128 + signal.SIGUSR1, err
    assert "Requeued Slurm job 4242" in err
    assert calls.read_text().split() == ["requeue", "4242"]

    requeued = run_train(*args, cwd=tmp_path, env=slurm)  # what Slurm runs next: the same job
    assert "Resuming from" in requeued.stdout
    assert_same_final_weights(run, uninterrupted)


def _submitit_task_pid(job_dir: Path) -> int | None:
    """The process submitit's local executor runs the job in (it has the job's folder)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        line = b" ".join(command)
        if (
            b"submitit.core._submit" in line
            and b"SUBMITIT_LOCAL_JOB_ID" in environ
            and str(job_dir).encode() in line
        ):
            return int(entry.name)
    return None


@pytest.mark.slow
def test_a_submitit_job_sent_its_timeout_signal_is_requeued_and_resumes(
    uninterrupted, digits_dir, tmp_path
):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        *[a for a in auto_args(digits_dir, sweep) if not a.startswith("hydra.run.dir=")],
    ]
    process = start(args, tmp_path)
    run = sweep / "0"
    wait_for_checkpoint(process, run)
    submitit_dir = tmp_path / "multirun" / ".submitit"
    pid = None
    deadline = time.monotonic() + 30
    while pid is None and time.monotonic() < deadline:
        pid = _submitit_task_pid(submitit_dir)
    assert pid is not None, "submitit's job process was not found"
    os.kill(pid, signal.SIGUSR2)  # submitit's timeout warning, as its local executor sends it
    _, err = process.communicate(timeout=400)
    assert process.returncode == 0, err[-2000:]
    logs = "".join(p.read_text() for p in submitit_dir.rglob("*.out"))
    assert "SIGUSR2 received" in logs + "".join(p.read_text() for p in submitit_dir.rglob("*.err"))
    assert "Resuming from" in logs
    assert_same_final_weights(run, uninterrupted)
