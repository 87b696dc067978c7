"""The trackers (``logger=...``): config, lazy imports, each tracker on a small in-process
run (MLflow on a sqlite store, W&B offline read back from its run file, TensorBoard's
HParams, the CSV file), run ids in the checkpoint; then train.py end to end: a run
SIGKILLed and resumed logs each step once into one MLflow run, and a sweep's jobs are
two runs grouped by the sweep, with HParams events in their TensorBoard directories."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    REPO,
    resumed_mid_epoch,
    run_train,
    sigkill_while_training,
    tiny_args,
)
from trainer.errors import UserError
from trainer.loggers import Loggers, tracked_run
from trainer.loggers.base import FINISHED, KILLED, TrackedRun

PARAMS = {"optimizer": {"name": "adam", "learning_rate": 0.001}, "trainer": {"epochs": 2}}


def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def compose(*overrides: str):
    from trainer.startup import compose_config

    return compose_config(list(overrides))


# ----------------------------------------------------------------- config


def test_the_default_is_tensorboard_and_several_trackers_compose_side_by_side():
    from trainer.config import validate
    from trainer.loggers import selected

    assert selected(compose()) == ["tensorboard"]
    cfg = compose("logger=[tensorboard,mlflow,csv]", "logger.mlflow.tracking_uri=sqlite:///x.db")
    validate(cfg)
    assert selected(cfg) == ["tensorboard", "csv", "mlflow"]
    assert cfg.logger.mlflow.tracking_uri == "sqlite:///x.db"
    assert selected(compose("logger=[]")) == []


def test_a_bad_logger_value_is_one_line_naming_the_key():
    from trainer.config import validate

    with pytest.raises(UserError, match=r"^logger\.wandb\.mode must be null .* got 'sometimes'$"):
        validate(compose("logger=wandb", "logger.wandb.mode=sometimes"))
    with pytest.raises(UserError, match=r"^unknown key logger\.mlflow\.api_key; known keys"):
        validate(compose("logger=mlflow", "+logger.mlflow.api_key=secret"))


def test_the_logger_section_is_never_saved_in_a_checkpoint():
    # Where this command logs (a tracking URI may carry credentials) is not part of the run.
    from trainer.training.checkpointer import run_config

    cfg = compose("logger=[tensorboard,mlflow]")
    saved = run_config(cfg, {"name": "cosine", "decay_steps": 10})
    assert "logger" not in saved and saved["optimizer"]["name"] == "adam"


def test_a_resume_may_log_elsewhere_and_takes_the_logger_of_its_own_command():
    from omegaconf import OmegaConf

    from trainer.runs.resume import refused_overrides

    cfg = compose("logger=mlflow")
    saved = OmegaConf.to_container(compose(), resolve=True)
    keys = ["logger", "logger.mlflow.tracking_uri"]
    assert refused_overrides(keys, cfg, saved, fine_tune=False) == []


def test_selecting_a_tracker_imports_neither_tensorflow_nor_its_package():
    code = (
        "import sys\n"
        "from trainer.startup import compose_config\n"
        "from trainer.config import validate\n"
        "import trainer.loggers, trainer.loggers.mlflow_logger, trainer.loggers.wandb_logger\n"
        "validate(compose_config(['logger=[mlflow,wandb,csv]']))\n"
        "print(sorted({'tensorflow', 'mlflow', 'wandb'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_missing_tracker_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    from trainer.loggers.mlflow_logger import MlflowLogger
    from trainer.loggers.wandb_logger import WandbLogger

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    monkeypatch.setitem(sys.modules, "wandb", None)
    run = TrackedRun(run_dir=tmp_path, name="run", params={})
    with pytest.raises(UserError) as caught:
        MlflowLogger({"experiment_name": "e"}, run)
    assert str(caught.value) == (
        "logger=mlflow needs the mlflow package: pip install 'keras-hydra-trainer[mlflow]' "
        "(or pick another logger)"
    )
    with pytest.raises(UserError, match=r"keras-hydra-trainer\[wandb\]"):
        WandbLogger({"project": "p"}, run)


# ----------------------------------------------------------------- run ids in the checkpoint


def test_saved_tracker_run_ids_are_bounded_plain_ids():
    from checkpoints.schemas import TRAINER_STATE

    loop = {"epoch": 0, "batches_done": 4, "epochs_completed": 0}
    good = {"loop": loop, "loggers": {"mlflow": {"run_id": "ba78e27ecc5b457ab130a9d481288609"}}}
    assert TRAINER_STATE.problem(good, "") is None
    for bad, found in (
        ({"mlflow": {"run_id": "../../other"}}, "loggers.mlflow.run_id is '../../other'"),
        ({"mlflow": {"run_id": "x" * 129}}, "longer than 128"),
        ({"mlflow": {}}, "loggers.mlflow.run_id is missing"),
        ({"mlflow": "abc"}, "not a mapping"),
        ({"Bad Name": {"run_id": "a"}}, "a key of loggers"),
    ):
        problem = TRAINER_STATE.problem({"loop": loop, "loggers": bad}, "")
        assert problem is not None and found in problem, problem


def test_sweep_jobs_are_named_and_grouped_by_their_sweep(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"optimizer": {"learning_rate": 0.002}, "schedule": {"name": "step"}})
    overrides = ["optimizer.learning_rate=2e-3", "schedule=step", f"checkpoint.dir={tmp_path}"]
    run = tracked_run(cfg, tmp_path / "sweep" / "1", PARAMS, {}, None, "1", overrides)
    assert (run.sweep, run.job, run.name) == ("sweep", "1", "sweep/1")
    assert run.hparams == {"optimizer.learning_rate": 0.002, "schedule": "step"}
    single = tracked_run(cfg, tmp_path / "runs" / "a", PARAMS, {}, None, None, overrides)
    assert (single.sweep, single.name, dict(single.hparams)) == (None, "a", {})


def a_tracked_run(tmp_path, saved=None, resumed_step=None, **extra) -> TrackedRun:
    """The run a tracker sees: ``<tmp_path>/run``, resumed at ``resumed_step`` with the
    ``saved`` run ids (None: a fresh run)."""
    return TrackedRun(
        run_dir=tmp_path / "run",
        name="run",
        params=PARAMS,
        saved=saved or {},
        resumed_step=resumed_step,
        **extra,
    )


# ----------------------------------------------------------------- MLflow


def mlflow_run(tmp_path, saved=None, resumed_step=None, **extra):
    from trainer.loggers.mlflow_logger import MlflowLogger

    run = a_tracked_run(tmp_path, saved, resumed_step, **extra)
    settings = {"tracking_uri": mlflow_uri(tmp_path), "experiment_name": "tests"}
    return Loggers([MlflowLogger(settings, run)], run)


def test_mlflow_holds_params_steps_epochs_checkpoints_and_the_summary(tmp_path):
    from mlflow import MlflowClient

    with mlflow_run(tmp_path) as loggers:
        for step in (1, 2, 3, 4):
            loggers.step(step, {"loss": 1.0 / step, "lr": 0.5})
        loggers.epoch(4, 0, {"loss": 0.5, "val_accuracy": 0.75})
        loggers.checkpoint(str(tmp_path / "run" / "step-00000004"))
        loggers.summary({"test_accuracy": 0.875, "global_step": 4, "best_checkpoint": "step-4"})
        run_id = loggers.run_states()["mlflow"]["run_id"]

    client = MlflowClient(mlflow_uri(tmp_path))
    run = client.get_run(run_id)
    assert run.info.status == FINISHED
    assert run.data.params == {
        "optimizer.name": "adam",
        "optimizer.learning_rate": "0.001",
        "trainer.epochs": "2",
    }
    history = client.get_metric_history(run_id, "step/loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "epoch/val_accuracy")] == [
        (4, 0.75)
    ]
    assert run.data.metrics["test_accuracy"] == 0.875
    assert run.data.tags["checkpoint.latest"] == str(tmp_path / "run" / "step-00000004")
    assert run.data.tags["summary.best_checkpoint"] == "step-4"


def test_a_resumed_mlflow_run_continues_the_same_run_with_each_step_once(tmp_path):
    from mlflow import MlflowClient

    # Killed: steps 1-6 sent (the checkpoint was at step 4), the run never ended.
    first = mlflow_run(tmp_path)
    for step in range(1, 7):
        first.step(step, {"loss": float(step)})
    first.flush()
    run_id = first.run_states()["mlflow"]["run_id"]

    # Resumed from step 4 with trainer.epochs changed: steps 5.. are trained again.
    params = {**PARAMS, "trainer": {"epochs": 3}}
    with mlflow_run(tmp_path, saved={"mlflow": {"run_id": run_id}}, resumed_step=4) as again:
        again.loggers[0].log_params(params)
        assert again.run_states()["mlflow"]["run_id"] == run_id
        for step in range(5, 10):
            again.step(step, {"loss": float(step)})

    client = MlflowClient(mlflow_uri(tmp_path))
    experiment = client.get_experiment_by_name("tests").experiment_id
    assert [r.info.run_id for r in client.search_runs([experiment])] == [run_id]
    steps = [m.step for m in client.get_metric_history(run_id, "step/loss")]
    assert sorted(steps) == list(range(1, 10))  # none twice, none missing
    run = client.get_run(run_id)
    assert run.info.status == FINISHED
    assert run.data.params["trainer.epochs"] == "2"  # MLflow never changes a param...
    assert run.data.tags["resumed.trainer.epochs"] == "3"  # ...the new value is a tag


def test_a_checkpoint_naming_an_mlflow_run_the_store_lacks_starts_a_new_one(tmp_path, capsys):
    saved = {"mlflow": {"run_id": "0123456789abcdef0123456789abcdef"}}
    with mlflow_run(tmp_path, saved=saved, resumed_step=4) as loggers:
        run_id = loggers.run_states()["mlflow"]["run_id"]
    assert run_id != saved["mlflow"]["run_id"]
    assert "is not in" in capsys.readouterr().out


def test_a_tracking_store_mlflow_cannot_open_is_one_line(tmp_path):
    from trainer.loggers.mlflow_logger import MlflowLogger

    run = TrackedRun(run_dir=tmp_path, name="run", params={})
    (tmp_path / "a-file").write_text("not a directory\n")
    uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    with pytest.raises(UserError) as caught:
        MlflowLogger({"tracking_uri": uri, "experiment_name": "e"}, run)
    message = str(caught.value)
    assert message.startswith(f"logger.mlflow: cannot use the tracking store {uri}: ")
    assert "\n" not in message


def test_a_tracker_that_cannot_start_leaves_the_run_directory_as_it_was(tmp_path):
    from trainer.loggers import build_loggers

    (tmp_path / "a-file").write_text("not a directory\n")
    uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    cfg = compose("logger=[tensorboard,csv,mlflow]", f"logger.mlflow.tracking_uri={uri}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(UserError, match=r"^logger\.mlflow: cannot use the tracking store"):
        build_loggers(cfg, TrackedRun(run_dir, "run", PARAMS))
    assert list(run_dir.iterdir()) == []  # the same command, fixed, may start the run here


def test_a_run_stopped_by_a_signal_ends_its_mlflow_run_killed(tmp_path):
    from mlflow import MlflowClient

    from trainer.errors import StopRequested

    with pytest.raises(StopRequested), mlflow_run(tmp_path) as loggers:
        run_id = loggers.run_states()["mlflow"]["run_id"]
        raise StopRequested(15)
    assert MlflowClient(mlflow_uri(tmp_path)).get_run(run_id).info.status == KILLED


# ----------------------------------------------------------------- W&B offline


def wandb_records(run_dir: Path, runs: int = 1) -> list[tuple[str, object]]:
    """The records of the offline W&B run files under ``run_dir``, oldest run first, once
    ``runs`` of them are complete (hold their ``exit`` record: W&B's service process may
    still be writing when ``finish`` returns).

    W&B 0.31 ships no reader of its run files (its old ``DataStore`` is gone), so this
    reads the format it writes: a 7-byte header (``:W&B``, magic, version), then
    LevelDB-log records in 32 KiB blocks (CRC, length, type: 1 full, 2-4 first/middle/
    last), each holding a ``wandb_internal_pb2.Record``.
    """
    import time

    deadline = time.monotonic() + 60
    while True:
        paths = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        found = [record for path in paths for record in _wandb_file_records(path)]
        if sum(kind == "exit" for kind, _ in found) >= runs or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _wandb_file_records(path: Path) -> list[tuple[str, object]]:
    from wandb.proto import wandb_internal_pb2

    found = []
    data, position, block, pending = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        position += 7
        if kind == 0:
            break
        pending += data[position : position + length]
        position += length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            kind_name = record.WhichOneof("record_type")
            found.append((kind_name, getattr(record, kind_name)))
    return found


def wandb_run(tmp_path, monkeypatch, saved=None, resumed_step=None, **extra):
    from trainer.loggers.wandb_logger import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = a_tracked_run(tmp_path, saved, resumed_step, **extra)
    run.run_dir.mkdir(exist_ok=True)
    return Loggers([WandbLogger({"project": "tests", "mode": None}, run)], run)


def test_wandb_offline_run_files_hold_config_steps_group_and_summary(tmp_path, monkeypatch):
    with wandb_run(tmp_path, monkeypatch, sweep="runs/sweep", job="0") as loggers:
        for step in (1, 2, 3):
            loggers.step(step, {"loss": 1.0 / step})
        loggers.epoch(3, 0, {"loss": 0.5})
        loggers.summary({"test_accuracy": 0.875, "latest_checkpoint": "step-00000003"})
        run_id = loggers.run_states()["wandb"]["run_id"]

    records = wandb_records(tmp_path / "run")
    (run,) = [value for kind, value in records if kind == "run"]
    assert (run.run_id, run.run_group, run.display_name) == (run_id, "runs/sweep", "run")
    config = {
        item.key: json.loads(item.value_json)
        for kind, value in records
        if kind in ("run", "config")
        for item in (value.config.update if kind == "run" else value.update)
    }
    assert {k: config[k] for k in PARAMS} == PARAMS
    rows = [
        {
            item.nested_key[0] if item.nested_key else item.key: json.loads(item.value_json)
            for item in value.item
        }
        for kind, value in records
        if kind == "history"
    ]
    assert [row["_step"] for row in rows] == [1, 2, 3]
    assert [row["step/loss"] for row in rows] == [1.0, 0.5, 1 / 3]
    assert rows[-1]["epoch/loss"] == 0.5
    summary = {
        item.key or item.nested_key[0]: json.loads(item.value_json)
        for kind, value in records
        if kind == "summary"
        for item in value.update
    }
    assert summary["test_accuracy"] == 0.875 and summary["latest_checkpoint"] == "step-00000003"


def test_a_resumed_wandb_run_logs_under_the_saved_run_id(tmp_path, monkeypatch):
    with wandb_run(tmp_path, monkeypatch) as first:
        first.step(1, {"loss": 1.0})
        run_id = first.run_states()["wandb"]["run_id"]
    with wandb_run(tmp_path, monkeypatch, saved={"wandb": {"run_id": run_id}}, resumed_step=1):
        pass
    records = wandb_records(tmp_path / "run", runs=2)
    runs = [value.run_id for kind, value in records if kind == "run"]
    assert runs == [run_id, run_id]


# ----------------------------------------------------------------- TensorBoard, CSV


def read_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return events


def test_a_sweep_job_writes_its_hparams_and_results_for_the_hparams_dashboard(tmp_path):
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    from trainer.loggers.tensorboard_logger import TensorBoardLogger

    hparams = {"optimizer.learning_rate": 0.002, "schedule": "step"}
    run = TrackedRun(tmp_path, "sweep/1", PARAMS, sweep="sweep", job="1", hparams=hparams)
    with Loggers([TensorBoardLogger({"hparams": True}, run)], run) as loggers:
        loggers.summary({"test_accuracy": 0.875, "test_loss": 0.5, "best": 0.9, "global_step": 8})

    events = read_events(tmp_path / "tensorboard")
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    shown = {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in data.session_start_info.hparams.items()
    }
    assert shown == {"optimizer.learning_rate": 0.002, "schedule": "step"}
    assert data.session_start_info.group_name == "sweep/1"
    results = {
        tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
        if tag.startswith("hparams/")
    }
    assert results == {
        "hparams/test_accuracy": [(8, 0.875)],
        "hparams/test_loss": [(8, 0.5)],
        "hparams/best": [(8, pytest.approx(0.9))],
    }


def test_a_single_run_writes_no_hparams(tmp_path):
    from trainer.loggers.tensorboard_logger import TensorBoardLogger

    run = TrackedRun(tmp_path, "run", PARAMS)
    with Loggers([TensorBoardLogger({"hparams": True}, run)], run) as loggers:
        loggers.summary({"test_accuracy": 0.875})
    assert not list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_the_csv_logger_appends_rows_and_a_resume_starts_after_its_last_one(tmp_path):
    from trainer.loggers.csv_logger import CsvLogger

    run = TrackedRun(tmp_path, "run", PARAMS)
    with Loggers([CsvLogger({}, run)], run) as loggers:
        for step in (1, 2, 3):
            loggers.step(step, {"loss": float(step), "lr": 0.5})
    with open(tmp_path / "steps.csv", "a") as handle:
        handle.write("4,4.0")  # a row a SIGKILL cut short
    resumed = TrackedRun(tmp_path, "run", PARAMS, resumed_step=2)
    with Loggers([CsvLogger({}, resumed)], resumed) as loggers:
        for step in (3, 4, 5):
            loggers.step(step, {"loss": float(step), "lr": 0.25})
    assert (tmp_path / "steps.csv").read_text().splitlines() == [
        "step,loss,lr",
        "1,1.0,0.5",
        "2,2.0,0.5",
        "3,3.0,0.5",
        "4,4.0,0.25",
        "5,5.0,0.25",
    ]


# ----------------------------------------------------------------- train.py end to end

LOGGED = (
    "logger=[tensorboard,mlflow,csv]",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "checkpoint.every_n_steps=4",
    "checkpoint.keep_last=2",
)


@pytest.mark.slow
def test_a_run_killed_and_resumed_logs_each_step_once_into_one_mlflow_run(digits_dir, tmp_path):
    import numpy as np
    from mlflow import MlflowClient

    from checkpoints import checkpoint_arrays

    # An uninterrupted run, logging into a store of its own: what each step's values are.
    alone = tmp_path / "uninterrupted"
    alone.mkdir()
    reference = alone / "run"
    alone_uri = f"logger.mlflow.tracking_uri={mlflow_uri(alone)}"
    run_train(*tiny_args(digits_dir, reference, *LOGGED, alone_uri), cwd=alone)

    uri = f"logger.mlflow.tracking_uri={mlflow_uri(tmp_path)}"
    run = tmp_path / "run"
    sigkill_while_training(tiny_args(digits_dir, run, *LOGGED, uri), run, tmp_path)
    resumed_mid_epoch(run_train(f"+resume={run}", *LOGGED, uri, cwd=tmp_path))

    client = MlflowClient(mlflow_uri(tmp_path))
    experiment = client.get_experiment_by_name("keras-hydra-trainer").experiment_id
    (logged,) = client.search_runs([experiment])  # one MLflow run for the killed and resumed
    run_id = logged.info.run_id
    assert logged.info.status == FINISHED
    total = 82  # 2 epochs of 41 steps
    other = MlflowClient(mlflow_uri(alone))
    (uninterrupted,) = other.search_runs(
        [other.get_experiment_by_name("keras-hydra-trainer").experiment_id]
    )
    # The same values, step by step, everywhere: the lr (a function of the step), and the
    # loss and accuracy, running means over the epoch, whose totals the checkpoint holds
    # (LoopState.epoch_metrics), so the resumed epoch averages what the uninterrupted one did.
    compared = dict.fromkeys(("step/lr", "step/loss", "step/accuracy"), range(1, total + 1))
    for key, steps in compared.items():
        ours = dict(sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)))
        assert list(ours) == list(range(1, total + 1)), key  # each step once, none missing
        history = other.get_metric_history(uninterrupted.info.run_id, key)
        theirs = {m.step: m.value for m in history}
        assert [ours[s] for s in steps] == [theirs[s] for s in steps], key
    final = "step-00000082"
    ours, theirs = checkpoint_arrays(run / final), checkpoint_arrays(reference / final)
    assert ours.keys() == theirs.keys()
    assert not [k for k in ours if not np.array_equal(ours[k], theirs[k])]  # bitwise
    assert sorted(m.step for m in client.get_metric_history(run_id, "epoch/val_loss")) == [41, 82]
    params = logged.data.params
    assert params["optimizer.name"] == "adam" and params["model.filters"] == "[8]"
    assert params["resolved_schedule.name"] == "cosine"
    summary = json.loads((run / "summary.json").read_text())
    assert logged.data.metrics["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert logged.data.tags["summary.latest_checkpoint"] == summary["latest_checkpoint"]
    assert logged.data.tags["checkpoint.latest"] == str(run / "step-00000082")
    state = json.loads((run / "step-00000082" / "trainer_state.json").read_text())
    assert state["loggers"] == {"mlflow": {"run_id": run_id}}
    rows = (run / "steps.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in rows[1:]] == list(range(1, total + 1))
    assert list((run / "tensorboard" / "train").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_a_sweep_gives_one_mlflow_run_per_job_grouped_and_an_hparams_table(digits_dir, tmp_path):
    from mlflow import MlflowClient
    from tensorboard.plugins.hparams import plugin_data_pb2

    sweep = tmp_path / "sweep"
    run_train(
        "-m",
        f"dataset.data_dir={digits_dir}",
        "model.filters=[8]",
        "model.dense_units=[16]",
        "trainer.epochs=1",
        "trainer.max_steps=6",
        f"hydra.sweep.dir={sweep}",
        "logger=[tensorboard,mlflow]",
        f"logger.mlflow.tracking_uri={mlflow_uri(tmp_path)}",
        "optimizer.learning_rate=0.001,0.002",
        cwd=tmp_path,
    )
    client = MlflowClient(mlflow_uri(tmp_path))
    experiment = client.get_experiment_by_name("keras-hydra-trainer").experiment_id
    runs = client.search_runs([experiment], order_by=["tags.sweep_job"])
    assert [r.data.tags["sweep_job"] for r in runs] == ["0", "1"]
    assert {r.data.tags["sweep"] for r in runs} == {"sweep"}  # one group: the sweep's directory
    assert [r.data.params["optimizer.learning_rate"] for r in runs] == ["0.001", "0.002"]
    assert all(r.info.status == FINISHED and "test_accuracy" in r.data.metrics for r in runs)
    for job, rate in (("0", 0.001), ("1", 0.002)):
        events = read_events(sweep / job / "tensorboard")
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        assert info.hparams["optimizer.learning_rate"].number_value == rate
        assert "hparams/test_accuracy" in events.Tags()["tensors"]
