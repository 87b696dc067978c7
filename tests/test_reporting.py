"""Per-step TensorBoard scalars: buffered, then written with their own steps and tags."""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")

from trainer import reporting  # noqa: E402


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
    scalars = reporting.StepScalars(writer, ("loss", "lr"))
    scalars.add(10, {"loss": 2.5, "lr": 0.125})
    scalars.add(20, {"loss": 1.5, "lr": 0.0625})
    assert scalars.steps == [10, 20]  # held, not yet written
    scalars.write()
    assert scalars.steps == []
    writer.close()
    assert read_scalars(tmp_path) == {
        "step/loss": [(10, 2.5), (20, 1.5)],
        "step/lr": [(10, 0.125), (20, 0.0625)],
    }


def test_step_scalars_are_written_once_the_interval_has_passed(tmp_path, monkeypatch):
    monkeypatch.setattr(reporting, "STEP_SCALARS_EVERY_S", 0.0)
    writer = tf.summary.create_file_writer(str(tmp_path))
    scalars = reporting.StepScalars(writer, ("loss",))
    scalars.add(1, {"loss": 3.0})
    assert scalars.steps == []  # written at once: the interval has passed
    writer.close()
    assert read_scalars(tmp_path) == {"step/loss": [(1, 3.0)]}
