"""Per-step TensorBoard scalars: buffered, then written with their own steps and tags."""

from __future__ import annotations

import pytest
import tensorflow as tf

from trainer import reporting


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


def test_buffered_step_scalars_keep_their_steps_values_and_tags(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    scalars = reporting.StepScalars(writer)
    scalars.add(10, {"loss": 2.5, "lr": 0.125})
    scalars.add(20, {"loss": 1.5, "lr": 0.0625})
    assert len(scalars.points) == 4  # held, not yet written
    scalars.write()
    assert scalars.points == []
    writer.close()
    assert read_scalars(tmp_path) == {
        "step/loss": [(10, 2.5), (20, 1.5)],
        "step/lr": [(10, 0.125), (20, 0.0625)],
    }


def test_step_scalars_are_written_once_the_interval_has_passed(tmp_path, monkeypatch):
    monkeypatch.setattr(reporting, "STEP_SCALARS_EVERY_S", 0.0)
    writer = tf.summary.create_file_writer(str(tmp_path))
    scalars = reporting.StepScalars(writer)
    scalars.add(1, {"loss": 3.0})
    assert scalars.points == []  # written at once: the interval has passed
    writer.close()
    assert read_scalars(tmp_path) == {"step/loss": [(1, 3.0)]}


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
