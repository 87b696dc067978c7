"""``checkpoints.keras.ResumableCheckpoint``: a ``model.fit`` script never loses its run.

Fast tests train a tiny MLP in this process (an interruption is an exception, and
the process "ends" by closing the callback); the slow ones SIGKILL
``devtools.fit_script`` mid-epoch and inside a save and compare the restarted run's
final weights, ``iterations`` and learning rate with an uninterrupted run's, bit
for bit. ``test_keras_internals_*`` fail when an installed Keras changes what
``checkpoints.keras.internals`` relies on.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from checkpoints import list_checkpoints, read_manifest, read_pointer
from checkpoints.errors import UserError
from checkpoints.keras import ResumableCheckpoint
from checkpoints.keras import internals as keras_internals
from checkpoints.keras.data import EpochData
from checkpoints.keras.match import mismatch

ROOT = Path(__file__).resolve().parents[1]
SEED = 7
DIGITS = load_digits()
X = (DIGITS.data[:256] / 16.0).astype("float32")
Y = DIGITS.target[:256].astype("int32")


def epoch_data(epoch):
    return tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(256, seed=SEED + epoch).batch(64)


def build(width: int = 16, optimizer: str = "adam") -> keras.Model:
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(width, activation="relu"), keras.layers.Dense(10)]
    )
    schedule = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=40)
    made = keras.optimizers.Adam(schedule) if optimizer == "adam" else keras.optimizers.SGD(0.1)
    model.compile(
        made, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


class Crash(keras.callbacks.Callback):
    """Stops the process's training after optimizer step ``at`` (in-process SIGKILL)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.at:
            raise KeyboardInterrupt


def fit(
    model: keras.Model, directory: Path, *more: keras.callbacks.Callback
) -> ResumableCheckpoint:
    checkpoint = ResumableCheckpoint(directory, save_freq=3, report=lambda _: None)
    try:
        model.fit(
            checkpoint.dataset(epoch_data), epochs=3, callbacks=[checkpoint, *more], verbose=0
        )
    except KeyboardInterrupt:
        checkpoint.on_train_end()  # what the end of a killed process does: the lock goes
    return checkpoint


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, keras.Model]:
    tf.config.experimental.enable_op_determinism()
    directory = tmp_path_factory.mktemp("uninterrupted") / "run"
    model = build()
    fit(model, directory)
    return directory, model


def test_mid_epoch_resume_trains_each_batch_once(uninterrupted, tmp_path):
    directory = tmp_path / "run"
    fit(build(), directory, Crash(at=6))  # epoch 1, batch 2; the last save: step 6
    resumed = build()
    checkpoint = fit(resumed, directory)
    assert checkpoint.resumed_from.global_step == 6
    assert int(resumed.optimizer.iterations.numpy()) == 12
    for ours, theirs in zip(resumed.get_weights(), uninterrupted[1].get_weights(), strict=True):
        assert np.array_equal(ours, theirs)
    assert float(resumed.optimizer.learning_rate) == float(uninterrupted[1].optimizer.learning_rate)


def test_a_finished_run_trains_nothing_again(uninterrupted):
    model = build()
    fit(model, uninterrupted[0])
    assert int(model.optimizer.iterations.numpy()) == 12
    for ours, theirs in zip(model.get_weights(), uninterrupted[1].get_weights(), strict=True):
        assert np.array_equal(ours, theirs)


class StopAfterFirstEpoch(keras.callbacks.Callback):
    """Ends training after epoch 0, as EarlyStopping does when it stops a run."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_a_run_stopped_early_stays_stopped(tmp_path):
    directory = tmp_path / "run"
    fit(build(), directory, StopAfterFirstEpoch())
    stopped = list_checkpoints(directory)
    assert read_manifest(stopped[-1])["epoch"] == 1
    again = build()
    fit(again, directory)  # the same script run again: nothing left to train
    assert int(again.optimizer.iterations.numpy()) == 4  # one epoch of 4 batches, restored
    assert list_checkpoints(directory) == stopped


@pytest.mark.parametrize(
    ("width", "optimizer", "expected"),
    [
        (32, "adam", "model weight 0 (kernel) has shape [64, 32] in the script, [64, 16] there"),
        (16, "sgd", "the optimizer is SGD in the script, Adam there"),
    ],
)
def test_a_different_model_or_optimizer_is_one_line_and_trains_nothing(
    uninterrupted, width, optimizer, expected
):
    before = list_checkpoints(uninterrupted[0])
    model = build(width, optimizer)
    checkpoint = ResumableCheckpoint(uninterrupted[0], save_freq=3, report=lambda _: None)
    with pytest.raises(UserError, match="does not fit what this script builds") as error:
        model.fit(checkpoint.dataset(epoch_data), epochs=3, callbacks=[checkpoint], verbose=0)
    checkpoint.on_train_end()
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert int(model.optimizer.iterations.numpy()) == 0
    assert list_checkpoints(uninterrupted[0]) == before


def test_mid_epoch_saves_need_the_epoch_data(tmp_path):
    model = build()
    checkpoint = ResumableCheckpoint(tmp_path / "run", save_freq=3, report=lambda _: None)
    with pytest.raises(UserError, match=r"checkpoint.dataset\(make_epoch\)"):
        model.fit(epoch_data(0), epochs=1, callbacks=[checkpoint], verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_epoch_data_refuses_an_epoch_of_unknown_length():
    with pytest.raises(UserError, match="unknown"):
        EpochData(lambda epoch: epoch_data(epoch).unbatch().filter(lambda x, y: y > 0).batch(8))


def test_mismatch_reads_the_record_not_the_layer_names():
    record = {
        "written_by": "checkpoints.keras.ResumableCheckpoint",
        "model": {
            "class": "Sequential",
            "weights": [{"name": "kernel", "shape": [2], "dtype": "f"}],
        },
        "optimizer": {"class": "Adam", "config": {"learning_rate": 0.1, "beta_1": 0.9}},
    }
    other_rate = json.loads(json.dumps(record))
    other_rate["optimizer"]["config"]["learning_rate"] = 0.05  # a callback changed it
    assert mismatch(record, other_rate) is None
    other_beta = json.loads(json.dumps(record))
    other_beta["optimizer"]["config"]["beta_1"] = 0.8
    assert mismatch(record, other_beta) == "the optimizer's beta_1 is 0.8 in the script, 0.9 there"


# ----------------------------------------------------------------- Keras' internals, checked


def test_keras_internals_fit_starts_at_the_models_initial_epoch():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    assert "self._initial_epoch or initial_epoch" in inspect.getsource(TensorFlowTrainer.fit)
    epochs = []
    model = build()
    assert keras_internals.can_set_initial_epoch(model)
    keras_internals.set_initial_epoch(model, 1)
    seen = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))
    model.fit(epoch_data(0), epochs=2, callbacks=[seen], verbose=0)
    keras_internals.set_initial_epoch(model, None)
    assert epochs == [1]


def test_keras_internals_fit_calls_the_models_train_function_each_batch():
    model = build()
    skippers = []
    begin = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: skippers.append(keras_internals.skip_batches(model, 2))
    )
    model.fit(epoch_data(0), epochs=1, callbacks=[begin], verbose=0)
    assert skippers[0].skipped == 2
    assert int(model.optimizer.iterations.numpy()) == 2  # 4 batches, 2 read and not trained


def test_keras_internals_keras_callbacks_keep_their_counters_as_named():
    for callback_type, names in keras_internals.KERAS_CALLBACK_COUNTERS.items():
        callback = callback_type()
        callback.set_model(build())
        callback.on_train_begin()
        assert all(isinstance(getattr(callback, name), int) for name in names)
        assert hasattr(callback, "best")


# ----------------------------------------------------------------- SIGKILL, end to end


def _script(directory: Path, out: Path, *options: str, **faults: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **faults}
    command = [sys.executable, "-m", "devtools.fit_script", str(directory), "--out", str(out)]
    return subprocess.run([*command, *options], env=env, cwd=ROOT, check=False).returncode


def _killed_and_finished(tmp_path: Path, options: tuple[str, ...], faults: list[dict]) -> tuple:
    assert _script(tmp_path / "reference", tmp_path / "reference.json", *options) == 0
    run = tmp_path / "run"
    for fault in faults:
        assert _script(run, tmp_path / "killed.json", *options, **fault) == -9
    assert _script(run, tmp_path / "resumed.json", *options) == 0
    reference = json.loads((tmp_path / "reference.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    return run, reference, resumed


@pytest.mark.slow
def test_sigkill_mid_epoch_and_inside_a_save_resumes_bitwise(tmp_path):
    faults = [{"FIT_KILL_AT_STEP": "13"}, {"FIT_KILL_IN_SAVE": "17"}]
    run, reference, resumed = _killed_and_finished(tmp_path, ("--save-freq", "5"), faults)
    assert resumed["weights_sha256"] == reference["weights_sha256"]
    assert resumed["iterations"] == reference["iterations"] == 24
    assert resumed["learning_rate"] == reference["learning_rate"]
    verified = subprocess.run(
        [sys.executable, "-m", "trainer", "verify", str(run)], cwd=ROOT, check=False
    )
    assert verified.returncode == 0


@pytest.mark.slow
def test_sigkill_async_with_keras_callbacks_continues_their_state(tmp_path):
    options = ("--save-freq", "3", "--async", "--extras")
    run, reference, resumed = _killed_and_finished(tmp_path, options, [{"FIT_KILL_AT_STEP": "11"}])
    assert resumed == {**reference, "trained_steps": resumed["trained_steps"]}
    # From the checkpoint at step 9, or at 8 when the kill landed while step 9's commit was
    # in flight in the background: each batch after it once.
    assert resumed["trained_steps"] in (24 - 9, 24 - 8)
    best = read_manifest(run / read_pointer(run, "best"))["metrics"]["val_loss"]
    kept = [read_manifest(path)["metrics"].get("val_loss") for path in list_checkpoints(run)]
    assert best <= min(value for value in kept if value is not None)
