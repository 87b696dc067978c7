"""Beyond one device: mirrored over logical CPUs, two workers on localhost, Slurm wiring.

The end-to-end tests run train.py as a user would. Dropout is off in the
mirrored runs so that the distributed update can be compared with one
device's: with the same global batches they agree to float rounding.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from checkpoints import checkpoint_arrays
from tests.conftest import REPO, run_train, tiny_args
from trainer.config import register_schemas, validate
from trainer.errors import UserError

register_schemas()

MIRRORED = ("trainer.strategy=mirrored", "trainer.cpu_devices=2")
# 41 steps per epoch: checkpoints at 25, 41 (end of epoch 1, a short batch) and 45.
SHORT = (
    "model.dropout=0",
    "trainer.deterministic=true",
    "trainer.max_steps=45",
    "checkpoint.every_n_steps=25",
    "checkpoint.keep_last=5",
)
SINGLE_DEVICE = ("trainer.strategy=default", "trainer.cpu_devices=null")


def manifest(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "manifest.json").read_text())


def assert_close(a: Path, b: Path, atol: float) -> None:
    left, right = checkpoint_arrays(a), checkpoint_arrays(b)
    assert left.keys() == right.keys()
    far = [k for k in left if not np.allclose(left[k], right[k], rtol=0, atol=atol)]
    assert not far, f"variables differ by more than {atol}: {far}"


@pytest.mark.slow
def test_mirrored_on_two_cpus_trains_checkpoints_and_resumes(digits_dir, tmp_path):
    run = tmp_path / "mirrored"
    process = run_train(*tiny_args(digits_dir, run, *SHORT, *MIRRORED), cwd=tmp_path)
    assert "Strategy: MirroredStrategy, 2 replica(s)" in process.stdout
    assert sorted(p.name for p in run.glob("step-*")) == [
        "step-00000025",
        "step-00000041",
        "step-00000045",
    ]
    assert manifest(run / "step-00000045")["num_replicas"] == 2
    assert json.loads((run / "summary.json").read_text())["global_step"] == 45

    # Resumed on the same two replicas (a branch, since step 25 is not the newest).
    again = tmp_path / "again"
    process = run_train(
        *tiny_args(digits_dir, again, *SHORT, *MIRRORED),
        f"+resume={run / 'step-00000025'}",
        cwd=tmp_path,
    )
    assert "step 25, epoch 1, batch 25" in process.stdout
    assert sorted(p.name for p in again.glob("step-*")) == ["step-00000041", "step-00000045"]
    assert_close(run / "step-00000045", again / "step-00000045", atol=1e-6)

    # Resumed on one device, the default strategy: the same updates up to rounding,
    # through the epoch's short last batch and into the next epoch.
    single = tmp_path / "single"
    process = run_train(
        *tiny_args(digits_dir, single, *SHORT, *SINGLE_DEVICE),
        f"+resume={run / 'step-00000025'}",
        cwd=tmp_path,
    )
    assert "Checkpoint written on 2 replica(s), resumed on 1" in process.stdout
    assert "Strategy:" not in process.stdout
    assert manifest(single / "step-00000045")["num_replicas"] == 1
    assert_close(run / "step-00000045", single / "step-00000045", atol=1e-5)
    with h5py.File(single / "step-00000045" / "optimizer.h5", "r") as handle:
        assert int(handle["0"][()]) == 45  # optimizer.iterations


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_workers(
    digits_dir: Path, tmp_path: Path, run_dirs: list[Path], *extra: str
) -> list[subprocess.Popen]:
    """Two multi_worker train.py processes on localhost (worker ``i`` writes ``run_dirs[i]``),
    each with its own Hydra directory and scratch TMPDIR (``tmp_path/tmp<i>``)."""
    workers = [f"localhost:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        tiny = tiny_args(digits_dir, run_dirs[index])
        args = [
            *(a for a in tiny if not a.startswith("hydra.run.dir")),
            f"hydra.run.dir={tmp_path / f'hydra{index}'}",  # Hydra's own log, one per worker
            "trainer.strategy=multi_worker",
            *extra,
        ]
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(scratch)}
        processes.append(
            subprocess.Popen(
                [sys.executable, str(REPO / "train.py"), *args],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


@pytest.mark.slow
def test_two_workers_train_together_and_only_the_chief_writes(digits_dir, tmp_path):
    run = tmp_path / "run"
    # On a cluster every worker names the same (shared) checkpoint.dir; here the
    # second worker names its own, so that anything it wrote there would show.
    dirs = [run, tmp_path / "worker1"]
    scratch = [tmp_path / "tmp0", tmp_path / "tmp1"]
    processes = start_workers(
        digits_dir,
        tmp_path,
        dirs,
        "trainer.max_steps=20",
        "checkpoint.every_n_steps=10",
        "schedule=constant",
        "trainer.scale_lr_with_replicas=true",
    )
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=240))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail("the two workers did not finish in 240 s")
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
    chief_out, worker_out = outputs[0][0], outputs[1][0]
    assert "MultiWorkerMirroredStrategy, 2 replica(s) (worker 0 of 2 workers)" in chief_out
    assert "(worker 1 of 2 workers); not the chief" in worker_out

    assert sorted(p.name for p in run.glob("step-*")) == ["step-00000010", "step-00000020"]
    final = manifest(run / "step-00000020")
    assert final["num_replicas"] == 2
    assert final["learning_rate"] == pytest.approx(2e-3)  # linear rule: 1e-3 * 2 replicas
    assert (run / "summary.json").is_file() and (run / "metrics.csv").is_file()
    assert not [p for p in dirs[1].rglob("*") if not p.is_dir()]  # the worker wrote nothing
    assert not list(scratch[1].iterdir())  # and removed its scratch directory
    assert not list(scratch[0].iterdir())

    # The chief's checkpoint continues in a single process, on one device.
    process = run_train(f"+resume={run}", "trainer.max_steps=30", *SINGLE_DEVICE[:1], cwd=tmp_path)
    assert f"Resuming from {run / 'step-00000020'}: step 20" in process.stdout
    assert "now scaled by 1, not 2 (trainer.scale_lr_with_replicas)" in process.stdout
    resumed = manifest(run / "step-00000030")
    assert resumed["global_step"] == 30 and resumed["num_replicas"] == 1
    assert resumed["learning_rate"] == pytest.approx(1e-3)


def test_multi_worker_reads_the_cluster_from_slurm(monkeypatch):
    from trainer.training import distribute

    slurm = {
        "SLURM_JOB_ID": "42",
        "SLURM_PROCID": "1",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_NODELIST": "node[07-08]",
        "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    created = []
    monkeypatch.setattr(
        distribute.tf.distribute,
        "MultiWorkerMirroredStrategy",
        lambda cluster_resolver=None: created.append(cluster_resolver),
    )
    distribute._multi_worker()
    resolver = created[-1]
    assert resolver.cluster_spec().as_dict() == {"worker": ["node07:8888", "node08:8888"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    assert resolver.num_accelerators() == {"GPU": 0}  # a CPU node: the workers use the CPU

    monkeypatch.setenv("TF_CONFIG", "{}")  # TF_CONFIG, when set, wins
    distribute._multi_worker()
    assert created[-1] is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.strategy=mirrored", "trainer.cpu_devices=0"], "trainer.cpu_devices must be"),
        (["trainer.cpu_devices=2"], "null unless trainer.strategy=mirrored (strategy is default)"),
        ([*MIRRORED, "trainer.jit_compile=true"], "false with trainer.cpu_devices > 1"),
    ],
)
def test_invalid_strategy_settings_give_one_line(overrides, message):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with pytest.raises(UserError) as error:
        validate(cfg)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_signal_to_one_worker_stops_every_worker_after_the_same_step(digits_dir, tmp_path):
    """SIGTERM (or a preemption signal) to one worker: all of them save the same step and
    exit; the chief's checkpoint continues on one device."""
    import signal
    import time

    from checkpoints import list_checkpoints

    run = tmp_path / "run"
    processes = start_workers(
        digits_dir,
        tmp_path,
        [run, run],
        "trainer.epochs=50",  # far longer than the test waits
        "checkpoint.every_n_steps=10",
    )
    try:
        deadline = time.monotonic() + 240
        while not list_checkpoints(run):
            assert all(p.poll() is None for p in processes), processes[0].communicate()
            assert time.monotonic() < deadline, "the workers wrote no checkpoint"
            time.sleep(0.05)
        processes[1].send_signal(signal.SIGTERM)  # the worker that is not the chief, only
        outputs = [p.communicate(timeout=240) for p in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 128 + signal.SIGTERM, f"{out[-2000:]}\n{err[-2000:]}"
        assert "Stopped by SIGTERM" in err
    assert "SIGTERM received" in outputs[1][1] and "SIGTERM received" not in outputs[0][1]
    step = manifest(list_checkpoints(run)[-1])["global_step"]

    process = run_train(
        f"+resume={run}", f"trainer.max_steps={step + 5}", *SINGLE_DEVICE[:1], cwd=tmp_path
    )
    assert f"Resuming from {run / f'step-{step:08d}'}: step {step}" in process.stdout
