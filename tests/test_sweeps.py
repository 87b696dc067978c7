"""Sweeps: launchers, the Optuna search preset, the sweep summary, and resuming a sweep.

The end-to-end tests run ``train.py -m`` on tiny configs in a temp dir, as a
user would; a sweep's jobs write their runs into Hydra's job directories, ``<tmp>/multirun/<job>``.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import REPO, run_train, tiny_args
from trainer.errors import UserError
from trainer.runs.sweep import (
    is_sweep_dir,
    job_resume_path,
    plan_sweep_job,
    reached_length,
)
from trainer.runs.sweep_summary import rank_jobs, varying_params, write_sweep_summary

# The sweep summary is on by default once conf/config.yaml selects it; selecting
# it here too keeps these tests independent of that line.
SUMMARY_ON = "hydra/callbacks=sweep_summary"


def sweep_args(digits_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    """``-m`` plus tiny_args without checkpoint.dir (each job needs its own), dirs in tmp_path."""
    tiny = [
        arg
        for arg in tiny_args(digits_dir, tmp_path / "unused")
        if not arg.startswith(("checkpoint.dir=", "hydra.run.dir="))
    ]
    return [
        "-m",
        *tiny,
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        SUMMARY_ON,
        *extra,
    ]


def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "multirun"  # the sweep dir holds each job's run


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def check_summary(directory: Path, runs: Path, jobs: int, mode: str = "max") -> dict:
    """The sweep summary in ``directory`` lists every job, best first, with its run's results."""
    summary = read_json(directory / "summary.json")
    assert [job["job"] for job in summary["jobs"]] != [] and len(summary["jobs"]) == jobs
    bests = [job["best"] for job in summary["jobs"]]
    assert bests == sorted(bests, reverse=mode == "max")
    assert summary["best_job"] == summary["jobs"][0]["job"]
    for job in summary["jobs"]:
        run_summary = read_json(runs / job["job"] / "summary.json")
        assert job["status"] == "finished"
        assert job["summary"] == run_summary
        assert job["best"] == run_summary["best"]
    with open(directory / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["job"] for row in rows] == [job["job"] for job in summary["jobs"]]
    monitor = summary["monitor"]
    for row, job in zip(rows, summary["jobs"], strict=True):
        assert float(row[f"best_{monitor}"]) == job["best"]
        assert float(row["test_accuracy"]) == job["summary"]["test_accuracy"]
        for key, value in job["params"].items():
            assert row[key] == value
    return summary


# --------------------------------------------------------------------------- unit: resume rules


def make_run(path: Path, steps: tuple[int, ...] = (), summary: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("seed: 0\n")
    for step in steps:
        (path / f"step-{step:08d}").mkdir()
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def job_cfg(resume, **trainer):
    cfg = OmegaConf.create(
        {
            "resume": None if resume is None else str(resume),
            "trainer": {"epochs": 2, "max_steps": None, **trainer},
            "checkpoint": {"dir": None},
        }
    )
    OmegaConf.set_struct(cfg, True)
    return cfg


def test_sweep_dir_is_told_from_a_run_or_a_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    run = make_run(sweep / "0", steps=(5,))
    assert is_sweep_dir(sweep)
    assert not is_sweep_dir(run)
    assert not is_sweep_dir(run / "step-00000005")
    assert not is_sweep_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert not is_sweep_dir(tmp_path / "empty")
    assert job_resume_path(sweep, "3") == sweep.absolute() / "3"
    assert job_resume_path(run, "0") is None


def test_each_job_of_a_resumed_sweep_goes_to_its_own_run(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep / "0", steps=(5, 10))
    make_run(sweep / "1")  # died before its first checkpoint
    said = []

    resumed = plan_sweep_job(job_cfg(sweep), "0", [], report=said.append)
    assert resumed.cfg.resume == str(sweep.absolute() / "0") and not resumed.finished
    fresh = plan_sweep_job(job_cfg(sweep), "1", [], report=said.append)
    assert fresh.cfg.resume is None and fresh.cfg.checkpoint.dir == str(sweep.absolute() / "1")
    never_started = plan_sweep_job(job_cfg(sweep), "2", [], report=said.append)
    assert never_started.cfg.checkpoint.dir == str(sweep.absolute() / "2")
    assert len(said) == 3 and "resuming" in said[0] and "starting it there" in said[1]

    plain = job_cfg(sweep / "0")  # a run, not a sweep: an ordinary resume, config unchanged
    assert plan_sweep_job(plain, "0", []).cfg is plain
    assert plan_sweep_job(job_cfg(None), "0", []).run_dir is None
    with pytest.raises(UserError, match=r"is a sweep .*\+resume=.*/<job>"):
        plan_sweep_job(job_cfg(sweep), None, [])  # not a multirun


def test_a_job_is_finished_when_it_reached_the_length_asked():
    summary = {"global_step": 90, "epochs_completed": 2, "stopped_early": False}
    assert reached_length(summary, epochs=2, max_steps=None)
    assert not reached_length(summary, epochs=4, max_steps=None)  # extended: train on
    assert reached_length(summary, epochs=4, max_steps=90)
    assert reached_length({**summary, "stopped_early": True}, epochs=4, max_steps=None)


# --------------------------------------------------------------------------- unit: summary


def test_summary_ranks_by_mode_and_lists_unfinished_jobs_last():
    ran = [{"job": "0", "best": 0.5}, {"job": "1", "best": None}, {"job": "2", "best": 0.9}]
    assert [j["job"] for j in rank_jobs([dict(j) for j in ran], "max")] == ["2", "0", "1"]
    assert [j["job"] for j in rank_jobs([dict(j) for j in ran], "min")] == ["0", "2", "1"]
    jobs = [["a=1", "b=2", "+r=x"], ["a=1", "b=3", "+r=x"], ["a=1", "+r=x", "c=1"]]
    assert varying_params(jobs) == ["b", "c"]  # c: set in one job only


def test_summary_of_an_interrupted_sweep(tmp_path):
    hydra_dir, runs = tmp_path / "multirun", tmp_path / "runs"
    for job, lr in (("0", "0.1"), ("1", "0.2"), ("10", "0.3")):
        (hydra_dir / job / ".hydra").mkdir(parents=True)
        (hydra_dir / job / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"optimizer.learning_rate={lr}", "seed=1"])
        )
    make_run(runs / "0", steps=(5,), summary={"best": 0.25, "test_accuracy": 0.5})
    make_run(runs / "10", steps=(5,), summary={"best": 0.75, "test_accuracy": 0.7})
    make_run(runs / "1", steps=(5,))  # killed: no summary.json
    summary = write_sweep_summary(hydra_dir, runs, monitor="val_accuracy", mode="max")
    assert [(j["job"], j["status"]) for j in summary["jobs"]] == [
        ("10", "finished"),
        ("0", "finished"),
        ("1", "unfinished"),
    ]
    assert summary["params"] == ["optimizer.learning_rate"]
    assert summary["jobs"][0]["params"] == {"optimizer.learning_rate": "0.3"}
    for directory in (hydra_dir, runs):
        assert read_json(directory / "summary.json") == summary
        with open(directory / "summary.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [(r["rank"], r["job"], r["best_val_accuracy"]) for r in rows] == [
            ("1", "10", "0.75"),
            ("2", "0", "0.25"),
            ("3", "1", ""),
        ]


# --------------------------------------------------------------------------- presets


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from trainer.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(("mode", "direction"), [("max", "maximize"), ("min", "minimize")])
def test_optuna_direction_follows_checkpoint_mode(mode, direction):
    importlib.import_module("hydra_plugins.hydra_optuna_sweeper")  # dev dependency
    cfg = compose("+hparams_search=digits_optuna", f"checkpoint.mode={mode}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == direction
    assert set(sweeper.params) == {
        "optimizer.learning_rate",
        "optimizer.weight_decay",
        "schedule",
        "dataset.batch_size",
    }
    assert sweeper.sampler.seed is not None  # resuming a search needs the same trials


def test_slurm_preset_runs_one_task_per_node():
    launcher = compose("hydra/launcher=slurm").hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node) == (1, 1)
    # submitit's checkpoint protocol: a job at its time limit saves and is requeued
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0


def test_sweep_summary_is_on_by_default():
    callbacks = compose().hydra.callbacks
    assert callbacks.sweep_summary._target_ == "trainer.runs.sweep_summary.SweepSummary"


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_basic_sweep_gives_each_job_its_own_run_and_a_summary(digits_dir, tmp_path):
    run_train(
        *sweep_args(digits_dir, tmp_path, "trainer.max_steps=10"),
        "optimizer.learning_rate=1e-3,3e-3",
        cwd=tmp_path,
    )
    runs = runs_dir(tmp_path)
    for job, lr in (("0", 1e-3), ("1", 3e-3)):
        run = runs / job
        assert yaml.safe_load((run / "config.yaml").read_text())["optimizer"]["learning_rate"] == lr
        assert (run / "step-00000010" / "manifest.json").is_file()
        assert read_json(run / "summary.json")["global_step"] == 10
        assert (tmp_path / "multirun" / job / ".hydra" / "overrides.yaml").is_file()
    for directory in (runs, tmp_path / "multirun"):
        summary = check_summary(directory, runs, jobs=2)
    assert summary["params"] == ["optimizer.learning_rate"]


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_processes_with_one_tf_thread(digits_dir, tmp_path):
    importlib.import_module("hydra_plugins.hydra_joblib_launcher")  # dev dependency
    (tmp_path / "record_env.py").write_text(
        "import json, os\n"
        "keys = ('TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS')\n"
        "with open(f'env-{os.getpid()}.json', 'w') as f:\n"
        "    json.dump({k: os.environ.get(k) for k in keys}, f)\n"
    )
    run_train(
        *sweep_args(digits_dir, tmp_path, "trainer.max_steps=5", "trainer.epochs=1"),
        "hydra/launcher=joblib_local",
        "hydra.launcher.n_jobs=2",
        "imports=[record_env]",
        "optimizer.learning_rate=1e-3,3e-3",
        cwd=tmp_path,
    )
    recorded = [read_json(path) for path in tmp_path.glob("env-*.json")]
    assert recorded, "the jobs did not import record_env"
    one_thread = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    assert all(r == one_thread for r in recorded)
    runs = runs_dir(tmp_path)
    check_summary(runs, runs, jobs=2)


@pytest.mark.slow
def test_optuna_search_returns_the_monitored_metric(digits_dir, tmp_path):
    importlib.import_module("hydra_plugins.hydra_optuna_sweeper")  # dev dependency
    process = run_train(
        *sweep_args(digits_dir, tmp_path, "trainer.max_steps=5", "trainer.epochs=1")[1:],  # no -m
        "+hparams_search=digits_optuna",
        "hydra.sweeper.n_trials=3",
        cwd=tmp_path,
    )
    assert "Directions: ['maximize']" in process.stdout + process.stderr
    runs = runs_dir(tmp_path)
    summary = check_summary(runs, runs, jobs=3)
    results = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    best = summary["jobs"][0]
    assert results["best_value"] == best["best"]  # what train() returned is what Optuna saw
    trial = {key: str(value) for key, value in results["best_params"].items()}
    assert trial == best["params"] or best["best"] == summary["jobs"][1]["best"]  # a tie
    configs = [yaml.safe_load((runs / str(job) / "config.yaml").read_text()) for job in range(3)]
    assert len({c["optimizer"]["learning_rate"] for c in configs}) == 3


@pytest.mark.slow
def test_submitit_local_sweep(digits_dir, tmp_path):
    importlib.import_module("hydra_plugins.hydra_submitit_launcher")  # dev dependency
    run_train(
        *sweep_args(digits_dir, tmp_path, "trainer.max_steps=5", "trainer.epochs=1"),
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "optimizer.learning_rate=1e-3,3e-3",
        cwd=tmp_path,
    )
    runs = runs_dir(tmp_path)
    check_summary(runs, runs, jobs=2)
    assert list((tmp_path / "multirun" / ".submitit").glob("*/*_log.out"))


@pytest.mark.slow
def test_sweep_resumes_the_killed_job_and_skips_the_finished_one(digits_dir, tmp_path):
    args = [
        *sweep_args(digits_dir, tmp_path, "trainer.epochs=3", "checkpoint.every_n_steps=5"),
        "optimizer.learning_rate=1e-3,3e-3",
    ]
    runs = runs_dir(tmp_path)
    killed_job, finished_job = runs / "1", runs / "0"
    with open(tmp_path / "first.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 240
        while not list(killed_job.glob("step-*")):  # the second job's first checkpoint
            assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (killed_job / "summary.json").exists(), "the job ended before it was killed"
    saved_step = max(int(p.name[len("step-") :]) for p in killed_job.glob("step-*"))
    finished_before = (finished_job / "summary.json").read_bytes()

    resumed = run_train(
        *args, f"+resume={runs}", f"hydra.sweep.dir={tmp_path / 'multirun-resumed'}", cwd=tmp_path
    )
    assert "Sweep job 0: finished before" in resumed.stdout
    assert f"Resuming from {killed_job / f'step-{saved_step:08d}'}: step {saved_step}," in (
        resumed.stdout
    )
    assert (finished_job / "summary.json").read_bytes() == finished_before  # not trained again
    uninterrupted = read_json(finished_job / "summary.json")
    continued = read_json(killed_job / "summary.json")
    assert continued["resumed_from"] == str(killed_job / f"step-{saved_step:08d}")
    assert continued["global_step"] == uninterrupted["global_step"] > saved_step
    assert continued["epochs_completed"] == uninterrupted["epochs_completed"] == 3
    summary = check_summary(runs, runs, jobs=2)
    assert {job["job"] for job in summary["jobs"]} == {"0", "1"}

    changed = run_train(
        *args[:-1],
        "optimizer.learning_rate=1e-3,5e-3",  # not the sweep these runs belong to
        f"+resume={runs}",
        f"hydra.sweep.dir={tmp_path / 'multirun-changed'}",
        cwd=tmp_path,
        check=False,
    )
    assert changed.returncode == 2
    assert "cannot override optimizer.learning_rate" in changed.stderr
    assert read_json(killed_job / "summary.json") == continued
