"""train.py end to end, as a user runs it: outputs of a run, every schedule, bad input, multirun."""

from __future__ import annotations

import csv
import json
import textwrap

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import (
    REPO,
    SCHEDULE_NAMES,
    assert_same_final_weights,
    resumed_mid_epoch,
    run_train,
    sigkill_while_training,
    tiny_args,
)
from trainer.config import register_schemas

register_schemas()

CHECKPOINT_FILES = {
    "manifest.json",
    "model.weights.h5",
    "optimizer.h5",
    "trainer_state.json",
    "config.yaml",
}


@pytest.fixture(scope="module")
def default_run(digits_dir, tmp_path_factory):
    """The default experiment, untouched but for where it reads and writes."""
    work = tmp_path_factory.mktemp("default")
    process = run_train(
        f"dataset.data_dir={digits_dir}",
        f"checkpoint.dir={work / 'run'}",
        f"hydra.run.dir={work / 'hydra'}",
        cwd=work,
    )
    return work / "run", process


@pytest.mark.slow
def test_default_run_is_accurate(default_run):
    run_dir, _ = default_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.95
    for key in ("test_loss", "global_step", "epochs_completed", "checkpoint_dir"):
        assert key in summary
    assert summary["epochs_completed"] == 15
    assert summary["checkpoint_dir"] == str(run_dir)


@pytest.mark.slow
def test_default_run_writes_its_outputs(default_run):
    run_dir, _ = default_run
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len(rows) == 15
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(rows[0])
    # cosine: the lr falls from epoch to epoch and ends at its floor, 0
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-9)
    for split in ("train", "validation"):
        assert list((run_dir / "tensorboard" / split).glob("events.out.tfevents.*"))
    assert (run_dir / "config.yaml").read_text().count("resolved_schedule:") == 1
    checkpoints = sorted(run_dir.glob("step-*"))
    assert 1 <= len(checkpoints) <= 4  # keep_last 3 + keep_best 1
    for checkpoint in checkpoints:
        assert {p.name for p in checkpoint.iterdir()} == CHECKPOINT_FILES
    latest = (run_dir / "latest").read_text().strip()
    assert latest == checkpoints[-1].name
    manifest = json.loads((checkpoints[-1] / "manifest.json").read_text())
    assert (
        manifest["global_step"] == json.loads((run_dir / "summary.json").read_text())["global_step"]
    )


@pytest.mark.slow
def test_tensorboard_holds_per_step_scalars(default_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = default_run
    events = EventAccumulator(str(run_dir / "tensorboard" / "train"), size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"step/loss", "step/accuracy", "step/lr", "epoch/loss", "epoch/lr"} <= tags
    assert len(events.Tensors("step/lr")) > 15  # more than one point per epoch


@pytest.mark.slow
def test_default_run_prints_progress_and_how_to_resume(default_run):
    run_dir, process = default_run
    out = process.stdout
    assert "Epoch 15/15" in out
    assert "loss:" in out and "accuracy:" in out and "lr:" in out
    # stdout is a pipe, not a terminal: one line per epoch, never a redrawn bar
    assert "\x1b" not in out and "\r" not in out and "\b" not in out
    epoch_lines = [line for line in out.splitlines() if line.startswith("41/41 - ")]
    assert len(epoch_lines) == 15
    last_lines = out.strip().splitlines()[-2:]
    assert str(run_dir) in last_lines[0]
    assert last_lines[1] == f"Resume with: python train.py +resume={run_dir}"
    assert "absl" not in process.stderr and "oneDNN" not in process.stderr


@pytest.mark.slow
def test_a_fresh_run_never_writes_into_a_run_with_checkpoints(default_run, digits_dir):
    run_dir, _ = default_run
    before = sorted(p.name for p in run_dir.iterdir())
    process = run_train(*tiny_args(digits_dir, run_dir), cwd=run_dir.parent, check=False)
    assert process.returncode == 2
    assert process.stderr.strip() == (
        f"error: checkpoint.dir '{run_dir}' already holds checkpoints; resume it with "
        f"+resume={run_dir} or choose another checkpoint.dir"
    )
    assert sorted(p.name for p in run_dir.iterdir()) == before


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
def test_every_schedule_trains_by_name(schedule, digits_dir, tmp_path):
    from trainer.train import train

    overrides = [
        f"schedule={schedule}",
        "schedule.warmup_steps=3",
        *tiny_args(digits_dir, tmp_path / "run"),
        "trainer.max_steps=12",
    ]
    overrides = [o for o in overrides if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    best = train(cfg)
    assert best is not None
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"name: {schedule}" in saved
    assert "warmup_steps: 3" in saved
    manifest = json.loads((tmp_path / "run" / "step-00000012" / "manifest.json").read_text())
    assert manifest["global_step"] == 12
    assert manifest["learning_rate"] >= 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.learning_rate=0"], "error: optimizer.learning_rate must be > 0, got 0.0"),
        (["schedule=custom", "schedule.name=nope"], "error: unknown schedule 'nope'; known: "),
        (["schedule.warmup_steps=100000"], "must be shorter than the run"),
        (
            ["schedule=exponential", "schedule.decay_epochs=null", "schedule.decay_steps=0"],
            "error: schedule.decay_steps must be a positive integer, got 0",
        ),
        (
            ["optimizer=sgd", "optimizer.momentum=1.5"],
            "error: optimizer.momentum must be in [0, 1)",
        ),
        (["dataset=mnist", "dataset.download=false"], "is not prepared in"),
        (["+resume=/no/such/run"], "error: resume path '/no/such/run' does not exist"),
        (["trainer.epochs=0"], "error: trainer.epochs must be an integer >= 1, got 0"),
        (["model.activation=nonexistent"], "error: model.activation must be one of celu, elu, "),
        (["seed=99999999999"], "error: seed must be an integer >= 0 and <= 4294967295 (2**32"),
        (
            ["+trainer.precison=16"],
            "error: unknown key trainer.precison; known keys of trainer: epochs, max_steps, ",
        ),
        (["+model.x=1"], "error: unknown key model.x; known keys of model=cnn: name, filters"),
        (["+checkpoint.x=1"], "error: unknown key checkpoint.x; known keys of checkpoint: dir"),
        (
            ["dataset.validation_split=0"],
            "error: checkpoint.monitor must be one of loss, accuracy (val_* needs "
            "dataset.validation_split > 0), got 'val_accuracy'",
        ),
    ],
)
@pytest.mark.slow
def test_bad_input_gets_one_clear_line(overrides, message, digits_dir, tmp_path):
    process = run_train(
        *tiny_args(digits_dir, tmp_path / "run"), *overrides, cwd=tmp_path, check=False
    )
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert message in lines[0]
    assert not list((tmp_path / "run").glob("step-*"))


@pytest.mark.slow
def test_multirun_runs_each_job_in_its_own_directory(digits_dir, tmp_path):
    process = run_train(
        "-m",
        "schedule=cosine,exponential",
        "optimizer.learning_rate=1e-3",
        f"dataset.data_dir={digits_dir}",
        "model.filters=[8]",
        "model.dense_units=[16]",
        "trainer.max_steps=10",
        f"hydra.sweep.dir={tmp_path / 'sweep' / 'day' / 'time'}",
        cwd=tmp_path,
    )
    summaries = sorted((tmp_path / "sweep").glob("*/*/*/summary.json"))  # one per job
    assert [p.parent.relative_to(tmp_path / "sweep").as_posix() for p in summaries] == [
        "day/time/0",
        "day/time/1",
    ]
    assert all((p.parent / ".hydra" / "overrides.yaml").is_file() for p in summaries)
    names = [
        "cosine" if "name: cosine" in (p.parent / "config.yaml").read_text() else "exponential"
        for p in summaries
    ]
    assert names == ["cosine", "exponential"]
    assert "#0 : schedule=cosine" in process.stdout + process.stderr


@pytest.mark.slow
def test_a_schedule_registered_by_the_user_trains_and_resumes(digits_dir, tmp_path):
    (tmp_path / "my_schedules.py").write_text(
        textwrap.dedent("""
        import keras
        from trainer.optim.schedules import register_schedule

        @register_schedule("triangle")
        class Triangle(keras.optimizers.schedules.LearningRateSchedule):
            run_length_params = ()

            def __init__(self, learning_rate, period_steps=100):
                self.learning_rate = learning_rate
                self.period_steps = period_steps

            def __call__(self, step):
                phase = keras.ops.mod(keras.ops.cast(step, "float32"), self.period_steps)
                phase = phase / self.period_steps
                return self.learning_rate * (1.0 - keras.ops.abs(2.0 * phase - 1.0))

            def get_config(self):
                return {"learning_rate": self.learning_rate, "period_steps": self.period_steps}
    """)
    )
    run_dir = tmp_path / "run"
    args = tiny_args(
        digits_dir,
        run_dir,
        "imports=[my_schedules]",
        "schedule=custom",
        "schedule.name=triangle",
        "+schedule.period_epochs=2",
        "trainer.epochs=1",
    )
    run_train(*args, cwd=tmp_path)
    saved = (run_dir / "config.yaml").read_text()
    assert "name: triangle" in saved and "period_steps: 82" in saved
    # Resuming needs the same import; without it the name is unknown, with it the run goes on.
    process = run_train(f"+resume={run_dir}", "trainer.epochs=2", cwd=tmp_path, check=False)
    assert process.returncode == 2 and "unknown schedule 'triangle'" in process.stderr
    run_train(f"+resume={run_dir}", "trainer.epochs=2", "imports=[my_schedules]", cwd=tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 82


# The seed article's schedule, as its readers have it, plus the one decorator this project asks.
SEED_SCHEDULES = """
import math

import numpy as np

from trainer.optim.schedules import register_schedule

INITIAL_LEARNING_RATE = 0.01
DECAY_STEPS = 82
ALPHA = 0.1


@register_schedule("cosine_decay_schedule")
def cosine_decay_schedule(step):
    step = min(step, DECAY_STEPS)
    cosine_decay = 0.5 * (1 + np.cos(np.pi * step / DECAY_STEPS))
    decayed = (1 - ALPHA) * cosine_decay + ALPHA
    return INITIAL_LEARNING_RATE * decayed


@register_schedule("keras_docs_scheduler", per="epoch")
def scheduler(epoch, lr):
    return lr if epoch < 1 else lr * math.exp(-0.1)
"""


@pytest.mark.slow
def test_the_seed_articles_schedule_function_trains_resumes_bitwise_and_plots(digits_dir, tmp_path):
    """SIGKILL mid-epoch, ``+resume``: the same final checkpoint as the run never
    interrupted; the rates are the function's own; plot-schedule draws it."""

    import numpy as np

    from devtools import fault_injection
    from tests.test_tools import assert_png, tool

    (tmp_path / "my_schedules.py").write_text(SEED_SCHEDULES)
    function = ["imports=[my_schedules]", "schedule=custom", "schedule.name=cosine_decay_schedule"]

    def args(name, *extra):
        return [
            *fault_injection.small_run_args(
                digits_dir, tmp_path / name / "run", tmp_path / name / "hydra", epochs=2
            ),
            "checkpoint.every_n_steps=5",  # 41 batches per epoch: mid-epoch checkpoints
            *extra,
        ]

    run_train(*args("reference", *function), cwd=tmp_path)
    run_dir = tmp_path / "killed" / "run"
    sigkill_while_training(args("killed", *function), run_dir, tmp_path)
    resumed = run_train(*args("killed", *function), f"+resume={run_dir}", cwd=tmp_path)
    resumed_mid_epoch(resumed)
    assert "epoch 1," in resumed.stdout.split("Resuming from", 1)[1].splitlines()[0]
    assert_same_final_weights(run_dir, tmp_path / "reference" / "run")

    # The checkpoint's config is plain data naming the function; the rates are its own.
    saved = (run_dir / "config.yaml").read_text()
    assert "name: cosine_decay_schedule" in saved and "total_steps: 82" in saved
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))

    def seed_rate(step):  # the module's function, restated
        return 0.01 * (0.9 * 0.5 * (1 + np.cos(np.pi * min(step, 82) / 82)) + 0.1)

    # The rate logged at the end of each epoch: the one of the step the next epoch starts at.
    assert [float(r["lr"]) for r in rows] == [
        pytest.approx(float(np.float32(seed_rate(s))), rel=1e-6) for s in (41, 82)
    ]

    png = tmp_path / "lr.png"
    plotted = tool(
        "plot-schedule",
        *function,
        "trainer.epochs=2",
        "--steps-per-epoch",
        "41",
        "--compare",
        "schedule.name=cosine_decay_schedule",
        "schedule.name=keras_docs_scheduler",
        "--out",
        str(png),
        cwd=tmp_path,
    )
    assert plotted.returncode == 0, plotted.stderr
    assert "max 0.01 at step 0" in plotted.stdout
    assert_png(png, 1000, 500)


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
@pytest.mark.parametrize(("jit_compile", "steps_per_execution"), [(True, 1), (False, 4), (True, 3)])
def test_compiled_and_multi_step_execution_train_the_same_steps(
    digits_dir, tmp_path, jit_compile, steps_per_execution
):
    from trainer.train import train

    overrides = [
        o for o in tiny_args(digits_dir, tmp_path / "run") if not o.startswith("hydra.")
    ] + [
        f"trainer.jit_compile={str(jit_compile).lower()}",
        f"trainer.steps_per_execution={steps_per_execution}",
        "checkpoint.every_n_steps=10",
        "checkpoint.keep_last=20",
        "trainer.max_steps=50",
        "schedule=constant",
        "optimizer.learning_rate=0.01",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    train(cfg)
    # Checkpoints land on the step boundaries asked for, whatever the execution size.
    steps = sorted(int(p.name[5:]) for p in (tmp_path / "run").glob("step-*"))
    assert steps == [10, 20, 30, 40, 41, 50]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == 50
    assert summary["test_accuracy"] > 0.2  # it learned something (chance is 0.1)


def test_the_activations_the_config_allows_are_the_ones_keras_names():
    import keras

    from trainer.config import ACTIVATIONS

    public = {
        name
        for name in dir(keras.activations)
        if not name.startswith("_") and name not in ("get", "serialize", "deserialize")
    }
    assert set(ACTIVATIONS) == public - {"threshold"}  # threshold needs arguments
    for name in ACTIVATIONS:
        assert keras.layers.Activation(name)(keras.ops.ones((2, 4))).shape[0] == 2


@pytest.mark.slow
def test_a_run_capped_by_max_steps_starts_whatever_its_epochs(digits_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_args(digits_dir, run_dir, "trainer.epochs=1000000000000", "trainer.max_steps=8")
    run_train(*args, cwd=tmp_path, timeout=120)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["global_step"], summary["epochs_completed"]) == (8, 0)
