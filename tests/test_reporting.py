"""The reporter and its trackers: per-step points batched, sent before every checkpoint,
never twice to a tracker that holds them; TensorBoard scalars with their steps and tags."""

from __future__ import annotations

import pytest
import tensorflow as tf

import trainer.loggers as loggers_module
from trainer.loggers import Loggers
from trainer.loggers.base import Logger, TrackedRun
from trainer.training import reporting


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return {
        tag: [
            (event.step, float(tf.make_ndarray(event.tensor_proto)))
            for event in events.Tensors(tag)
        ]
        for tag in events.Tags()["tensors"]
    }


class FakeTracker(Logger):
    """Records what it is sent."""

    name = "fake"

    def __init__(self, holds_through=None):
        self.holds_through = holds_through
        self.calls = []

    def last_logged_step(self):
        return self.holds_through

    def log_steps(self, points):
        self.calls.append(("steps", [step for step, _ in points]))

    def log_epoch(self, step, epoch, logs):
        self.calls.append(("epoch", step))

    def log_checkpoint(self, path):
        self.calls.append(("checkpoint", path))

    def flush(self):
        self.calls.append(("flush",))


def test_step_points_are_held_then_sent_together_with_their_steps():
    tracker = FakeTracker()
    loggers = Loggers([tracker])
    loggers.step(10, {"loss": 2.5})
    loggers.step(20, {"loss": 1.5})
    assert tracker.calls == []  # held, not yet sent
    loggers.epoch(20, 0, {"loss": 2.0})
    assert tracker.calls == [("steps", [10, 20]), ("epoch", 20)]


def test_step_points_are_sent_once_the_interval_has_passed(monkeypatch):
    monkeypatch.setattr(loggers_module, "STEP_POINTS_EVERY_S", 0.0)
    tracker = FakeTracker()
    Loggers([tracker]).step(1, {"loss": 3.0})
    assert tracker.calls == [("steps", [1])]


def test_every_step_reaches_the_trackers_before_a_checkpoint_is_saved(tmp_path):
    import keras

    tracker = FakeTracker()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    reporter = reporting.RunReporter(tmp_path, 4, model, verbose=0, loggers=Loggers([tracker]))
    reporter.start_epoch(0, 1, 0)
    reporter.step(1, 1, {"loss": 0.5}, True)
    reporter.step(2, 2, {"loss": 0.5}, True)

    def save(state, logs):
        tracker.calls.append(("save",))
        return tmp_path / "step-00000002"

    assert reporter.saving(save)(None, {}) == tmp_path / "step-00000002"
    assert tracker.calls == [
        ("steps", [1, 2]),
        ("flush",),
        ("save",),
        ("checkpoint", str(tmp_path / "step-00000002")),
    ]
    reporter.close()


def test_a_resumed_run_sends_a_tracker_only_the_steps_it_does_not_hold(tmp_path):
    # Killed after step 7 was logged, resumed from the checkpoint at step 4: steps 5-7
    # are trained again; a tracker that holds them is not sent them twice.
    holding, replacing = FakeTracker(holds_through=7), FakeTracker(holds_through=None)
    run = TrackedRun(run_dir=tmp_path, name="run", params={}, resumed_step=4)
    loggers = Loggers([holding, replacing], run)
    for step in range(5, 10):
        loggers.step(step, {"loss": 1.0})
    loggers.epoch(7, 0, {"loss": 1.0})
    loggers.epoch(9, 1, {"loss": 1.0})
    assert holding.calls == [("steps", [8, 9]), ("epoch", 9)]
    assert replacing.calls == [("steps", [5, 6, 7, 8, 9]), ("epoch", 7), ("epoch", 9)]


def test_run_states_keep_the_ids_of_trackers_this_command_does_not_select(tmp_path):
    class Tracked(FakeTracker):
        name = "mlflow"

        def run_state(self):
            return {"run_id": "new"}

    saved = {"mlflow": {"run_id": "old"}, "wandb": {"run_id": "w1"}}
    run = TrackedRun(run_dir=tmp_path, name="run", params={}, saved=saved, resumed_step=4)
    assert Loggers([Tracked()], run).run_states() == {
        "mlflow": {"run_id": "new"},
        "wandb": {"run_id": "w1"},
    }


def test_epoch_scalars_go_to_the_train_and_validation_writers(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    reporter = reporting.RunReporter(tmp_path, steps_per_epoch=4, model=model)
    reporter.start_epoch(0, 1, 0)
    reporter.step(2, 2, {"loss": 0.5, "accuracy": 0.75, "lr": 0.25}, True)
    reporter.end_epoch(0, 4, {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.625, "lr": 0.25})
    reporter.close()

    assert read_scalars(tmp_path / "tensorboard" / "train") == {
        "step/loss": [(2, 0.5)],
        "step/accuracy": [(2, 0.75)],
        "step/lr": [(2, 0.25)],
        "epoch/loss": [(4, 0.5)],
        "epoch/accuracy": [(4, 0.75)],
        "epoch/lr": [(4, 0.25)],
    }
    assert read_scalars(tmp_path / "tensorboard" / "validation") == {"epoch/loss": [(4, 0.625)]}


class _Terminal:
    def isatty(self) -> bool:
        return True


class _File:
    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("setting", "stream", "verbose"),
    [("auto", _Terminal(), 1), ("auto", _File(), 2), ("0", _Terminal(), 0), ("1", _File(), 1)],
)
def test_auto_progress_is_a_bar_on_a_terminal_and_lines_in_a_file(setting, stream, verbose):
    assert reporting.progress_verbosity(setting, stream) == verbose


def _two_epochs(tmp_path, verbose: int) -> None:
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    reporter = reporting.RunReporter(tmp_path, steps_per_epoch=4, model=model, verbose=verbose)
    for epoch in range(2):
        reporter.start_epoch(epoch, 2, 0)
        for batch in range(1, 5):
            reporter.step(batch, 4 * epoch + batch, {"loss": 0.5, "accuracy": 0.75}, False)
        reporter.end_epoch(epoch, 4 * epoch + 4, {"loss": 0.5, "val_loss": 0.625})
    reporter.close()


def test_a_log_file_gets_one_line_per_epoch_and_no_escape_codes(tmp_path, capsys):
    _two_epochs(tmp_path, verbose=2)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\b" not in out
    lines = out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2" and len(lines) == 4
    assert lines[1].startswith("4/4 - ") and "loss: 0.5000" in lines[1]
    assert "val_loss: 0.6250" in lines[1]


def test_verbose_0_prints_nothing(tmp_path, capsys):
    _two_epochs(tmp_path, verbose=0)
    assert capsys.readouterr().out == ""
