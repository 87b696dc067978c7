"""Callbacks: early stopping and reduce-on-plateau decide as Keras' own callbacks do on the
same logs; users' callbacks by registered name, driven by the loop through a Keras
CallbackList, their state saved and restored; retired keys and bad input in one line."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import small_digits_cfg
from trainer.config import check_retired_keys, typed_section, validate_callbacks
from trainer.errors import UserError
from trainer.training.callbacks import (
    build_callbacks,
    callback_specs,
    callback_states,
    check_callbacks,
    register_callback,
    restore_callback_states,
)
from trainer.training.plateau import EarlyStopping, ReduceOnPlateau

# --------------------------------------------------------------------------- against Keras

# Sequences of one monitored value per epoch: rises, falls, plateaus, small changes.
SEQUENCES = {
    "rises then flat": [0.1, 0.2, 0.3, 0.3, 0.3, 0.31, 0.3, 0.3, 0.3],
    "falls then noisy": [1.0, 0.8, 0.7, 0.71, 0.69, 0.695, 0.7, 0.6999, 0.5, 0.51, 0.52, 0.53],
    "zigzag": [0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8, 0.8, 0.1, 0.85, 0.85, 0.85, 0.85],
}
EARLY_STOPPING_OPTIONS = [
    {"patience": 0},
    {"patience": 2},
    {"patience": 2, "min_delta": 0.05},
    {"patience": 3, "baseline": 0.55},
    {"patience": 1, "start_from_epoch": 3},
    {"patience": 2, "restore_best_weights": True, "min_delta": 0.001},
]


def _keras_model(learning_rate: float = 0.1):
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate), loss="mse")
    model.stop_training = False
    return model


def _early_stopping_state():
    return SimpleNamespace(
        epochs_without_improvement=0,
        early_stopping_best=None,
        early_stopping_best_epoch=0,
        stopped_early=False,
    )


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("options", EARLY_STOPPING_OPTIONS, ids=str)
@pytest.mark.parametrize("sequence", list(SEQUENCES), ids=str)
def test_early_stopping_decides_as_keras_does_epoch_by_epoch(sequence, options, mode):
    import keras

    theirs = keras.callbacks.EarlyStopping(monitor="val_loss", mode=mode, **options)
    theirs.set_model(_keras_model())
    theirs.on_train_begin()
    ours, state = EarlyStopping(monitor="val_loss", mode=mode, **options), _early_stopping_state()
    for epoch, value in enumerate(SEQUENCES[sequence]):
        logs = {"val_loss": value}
        theirs.on_epoch_end(epoch, dict(logs))
        decision = ours.update(state, epoch, logs)
        assert state.epochs_without_improvement == theirs.wait, f"epoch {epoch}"
        assert state.early_stopping_best == theirs.best, f"epoch {epoch}"
        assert state.stopped_early == theirs.model.stop_training, f"epoch {epoch}"
        assert (decision == "stop") == theirs.model.stop_training
        if theirs.model.stop_training:
            break  # fit stops here
    if options.get("restore_best_weights") and theirs.best is not None:
        assert state.early_stopping_best_epoch == theirs.best_epoch


def _plateau_state():
    return SimpleNamespace(
        epochs_since_lr_cut=0, plateau_best=None, plateau_cooldown=0, lr_scale=1.0
    )


PLATEAU_OPTIONS = [
    {"patience": 1, "factor": 0.5},
    {"patience": 2, "factor": 0.1, "min_delta": 0.05},
    {"patience": 1, "factor": 0.5, "cooldown": 2},
    {"patience": 1, "factor": 0.3, "min_lr": 0.02},
    {"patience": 0, "factor": 0.5, "cooldown": 1, "min_lr": 0.01, "min_delta": 1e-4},
]


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("options", PLATEAU_OPTIONS, ids=str)
@pytest.mark.parametrize("sequence", list(SEQUENCES), ids=str)
def test_reduce_on_plateau_decides_as_keras_does_epoch_by_epoch(sequence, options, mode):
    import keras

    base = 0.1
    model = _keras_model(base)
    theirs = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode=mode, **options)
    theirs.set_model(model)
    theirs.on_train_begin()
    ours, state = ReduceOnPlateau(monitor="loss", mode=mode, **options), _plateau_state()
    for epoch, value in enumerate(SEQUENCES[sequence]):
        # The rate in effect, as the loop reads it: the optimizer's float32 rate.
        rate = float(np.float32(base * state.lr_scale))
        theirs.on_epoch_end(epoch, {"loss": value})
        ours.update(state, {"loss": value}, rate)
        keras_rate = float(model.optimizer.learning_rate.numpy())
        assert state.epochs_since_lr_cut == theirs.wait, f"epoch {epoch}"
        assert state.plateau_cooldown == theirs.cooldown_counter, f"epoch {epoch}"
        assert state.plateau_best == theirs.best, f"epoch {epoch}"
        assert np.float32(base * state.lr_scale) == pytest.approx(keras_rate, rel=1e-6)


def test_a_state_saved_before_own_monitors_continues_from_the_shared_best():
    from trainer.training.state import LoopState

    old = {"epoch": 2, "batches_done": 0, "epochs_completed": 2, "best": 2.28}
    old |= {"epochs_without_improvement": 1, "epochs_since_lr_cut": 0, "lr_scale": 0.5}
    state = LoopState.from_dict(old)
    assert state.early_stopping_best == state.plateau_best == 2.28
    assert (state.epochs_without_improvement, state.lr_scale, state.callbacks) == (1, 0.5, [])


# --------------------------------------------------------------------------- config


def test_retired_flat_keys_are_refused_in_one_line_naming_the_new_key():
    with pytest.raises(UserError, match=r"^trainer.early_stopping_patience is retired: use "
                       r"trainer.early_stopping.patience instead$"):  # fmt: skip
        check_retired_keys(["trainer.epochs=3", "+trainer.early_stopping_patience=2"])
    check_retired_keys(["trainer.early_stopping.patience=2"])  # the new key passes


def test_retired_flat_keys_of_a_saved_config_move_to_their_new_place():
    section = typed_section(
        "trainer",
        {"epochs": 2, "early_stopping_patience": 2, "reduce_on_plateau_patience": 1,
         "reduce_on_plateau_factor": 0.25},
    )  # fmt: skip
    assert section.early_stopping.patience == 2
    assert (section.reduce_on_plateau.patience, section.reduce_on_plateau.factor) == (1, 0.25)
    assert "early_stopping_patience" not in section


def test_a_composed_config_with_a_retired_key_added_is_refused_by_the_closed_schema():
    from trainer.config import check_known_keys
    from trainer.startup import compose_config

    cfg = compose_config([])
    cfg.trainer._set_flag("struct", False)
    cfg.trainer.reduce_on_plateau_factor = 0.5
    with pytest.raises(UserError, match=r"reduce_on_plateau_factor is retired: use trainer\."):
        check_known_keys(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.early_stopping.patience=-1", "trainer.early_stopping.patience must be"),
        ("trainer.reduce_on_plateau.factor=1.5", "trainer.reduce_on_plateau.factor must be in"),
        ("trainer.reduce_on_plateau.min_lr=-1", "trainer.reduce_on_plateau.min_lr must be"),
        ("trainer.early_stopping.monitor=val_auc", "trainer.early_stopping.monitor must be one"),
        ("trainer.reduce_on_plateau.cooldown=-2", "trainer.reduce_on_plateau.cooldown must be"),
    ],
)
def test_bad_plateau_options_are_one_line(override, message):
    from trainer.config import validate
    from trainer.startup import compose_config

    with pytest.raises(UserError, match=message) as error:
        validate(compose_config([override]))
    assert "\n" not in str(error.value)


def test_monitor_null_follows_the_checkpoint_and_a_loss_is_minimised():
    from trainer.training.plateau import early_stopping_from_config, reduce_on_plateau_from_config

    checkpoint = {"monitor": "val_accuracy", "mode": "max"}
    trainer = {"early_stopping": {"patience": 1}, "reduce_on_plateau": {"patience": None}}
    stopping = early_stopping_from_config(trainer, checkpoint)
    assert (stopping.monitor, stopping.mode) == ("val_accuracy", "max")
    assert reduce_on_plateau_from_config(trainer, checkpoint) is None
    own = {"early_stopping": {"patience": 1, "monitor": "val_loss"}}
    assert early_stopping_from_config(own, checkpoint).mode == "min"


# --------------------------------------------------------------------------- users' callbacks


RECORDING = "test_recording"


@register_callback(RECORDING)
def recording_callback():
    """A callback with state: every hook it saw, with its arguments and the logged loss."""
    import keras

    class Recording(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.events: list[list] = []

        def on_train_begin(self, logs=None):
            self.events.append(["train_begin"])

        def on_epoch_begin(self, epoch, logs=None):
            self.events.append(["epoch_begin", epoch])

        def on_train_batch_begin(self, batch, logs=None):
            self.events.append(["batch_begin", batch])

        def on_train_batch_end(self, batch, logs=None):
            self.events.append(["batch_end", batch, logs["loss"]])

        def on_test_begin(self, logs=None):
            self.events.append(["test_begin"])

        def on_epoch_end(self, epoch, logs=None):
            self.events.append(["epoch_end", epoch, logs["loss"], logs["val_loss"]])

        def get_state(self):
            return {"events": self.events}

        def set_state(self, state):
            self.events = state["events"]

    return Recording()


@register_callback("test_stop_after")
def stop_after(batches: int):
    """Keras' LambdaCallback, unchanged, in a registered factory: stop after ``batches``."""
    import keras

    def on_train_batch_end(batch, logs):
        if batch + 1 >= batches:
            callback.model.stop_training = True

    callback = keras.callbacks.LambdaCallback(on_train_batch_end=on_train_batch_end)
    return callback


@register_callback("test_terminate_on_nan")
def terminate_on_nan():
    import keras

    return keras.callbacks.TerminateOnNaN()


register_callback("test_not_a_callback")(lambda: object())


@pytest.fixture
def recording():
    return RECORDING


def test_unknown_callback_names_and_arguments_are_one_line(recording):
    with pytest.raises(UserError, match=r"unknown callback 'nope'; known: .*test_recording"):
        check_callbacks(["nope"])
    with pytest.raises(UserError) as error:
        check_callbacks([{"name": recording, "every": 2}])
    assert str(error.value).startswith("callbacks[0] (test_recording): ")
    assert "'every'" in str(error.value) and "\n" not in str(error.value)
    for bad in ("not a list", [{"every": 2}], [""], [{"name": "x", "not an argument": 1}]):
        with pytest.raises(UserError, match=r"^callbacks"):
            validate_callbacks(bad)


def test_a_factory_that_returns_no_keras_callback_is_refused():
    with pytest.raises(UserError, match=r"returned object, not a keras\.callbacks\.Callback"):
        build_callbacks(["test_not_a_callback"])


def test_callback_specs_take_names_alone_or_with_arguments():
    from omegaconf import OmegaConf

    specs = OmegaConf.create({"c": ["a", {"name": "b", "every": 2}]}).c
    assert callback_specs(specs) == [("a", {}), ("b", {"every": 2})]


def test_callback_states_must_be_json_data_that_round_trips(recording):
    (callback,) = build_callbacks([recording])
    callback.events = [("a tuple",)]
    with pytest.raises(UserError, match="survives a round trip"):
        callback_states([recording], [callback])
    callback.events = [float("nan")]
    with pytest.raises(UserError, match="must return JSON data"):
        callback_states([recording], [callback])
    callback.events = [["x"]]
    saved = callback_states([recording], [callback])
    (fresh,) = build_callbacks([recording])
    restore_callback_states([recording], [fresh], saved)
    assert fresh.events == [["x"]]
    with pytest.raises(UserError, match="saved the state of callbacks"):
        restore_callback_states(["other"], [fresh], saved)


# --------------------------------------------------------------------------- in the loop


@pytest.fixture(scope="module")
def data_and_cfg(digits_dir):
    from trainer.data.pipeline import load_data

    cfg = small_digits_cfg(digits_dir, "checkpoint.every_n_steps=4")
    return load_data(cfg.dataset, seed=cfg.seed), cfg


def _loop(data, cfg, callbacks, state=None, run=None, reporter=None, **settings):
    import dataclasses

    from tests.test_loop import Recorder
    from trainer.build import build_run
    from trainer.training.loop import LoopSettings, TrainingLoop
    from trainer.training.state import LoopState

    run = run or build_run(cfg, data.info)
    saves = []

    def save(loop_state, metrics):
        saves.append((run.global_step, copy.deepcopy(loop_state.callbacks)))

    loop_settings = dataclasses.replace(LoopSettings.from_config(cfg, run), **settings)
    loop = TrainingLoop(
        run,
        data,
        loop_settings,
        state or LoopState(),
        reporter or Recorder(),
        save,
        callbacks=callbacks,
    )
    return run, loop, saves


def _weights(run):
    return [np.array(v) for v in run.model.weights] + [np.array(v) for v in run.optimizer.variables]


def test_the_loop_calls_each_hook_as_fit_does(data_and_cfg, recording):
    data, cfg = data_and_cfg
    (callback,) = build_callbacks([recording])
    _, loop, saves = _loop(data, cfg, [(recording, callback)], steps_per_execution=4)
    loop.run()
    kinds = [event[0] for event in callback.events]
    assert kinds[0] == "train_begin" and kinds.count("train_begin") == 1
    per_epoch = data.info.steps_per_epoch  # 11: calls of 4, 4 and 3 batches
    first_epoch = kinds[1 : kinds.index("epoch_end") + 1]
    assert first_epoch == ["epoch_begin"] + ["batch_begin", "batch_end"] * 3 + [
        "test_begin",
        "epoch_end",
    ]
    batches = [e[1] for e in callback.events if e[0] in ("batch_begin", "batch_end")][:6]
    assert batches == [0, 3, 4, 7, 8, per_epoch - 1]  # first and last batch of each call
    assert [e[1] for e in callback.events if e[0] == "epoch_end"] == [0, 1]
    assert saves and saves[-1][1] == [{"name": recording, "state": callback.get_state()}]


def test_a_loop_continued_from_a_saved_state_gives_callbacks_their_state_back(
    data_and_cfg, recording
):
    import signal

    from tests.test_loop import Recorder
    from trainer.errors import StopRequested

    data, cfg = data_and_cfg
    (reference,) = build_callbacks([recording])
    uninterrupted, loop, _ = _loop(data, cfg, [(recording, reference)])
    loop.run()

    def sigterm_at_15(step):
        if step == 15:
            signal.raise_signal(signal.SIGTERM)

    (first,) = build_callbacks([recording])
    interrupted, loop, saves = _loop(
        data, cfg, [(recording, first)], reporter=Recorder(sigterm_at_15)
    )
    with pytest.raises(StopRequested):
        loop.run()
    state = copy.deepcopy(loop.state)  # as saved at step 15, inside the second epoch
    assert saves[-1][0] == 15 and state.batches_done == 15 - data.info.steps_per_epoch
    (second,) = build_callbacks([recording])  # a new process builds it anew
    _, loop, _ = _loop(data, cfg, [(recording, second)], state=state, run=interrupted)
    loop.run()
    # The restored state replaces what the second on_train_begin recorded.
    assert second.events == reference.events
    for ours, theirs in zip(_weights(interrupted), _weights(uninterrupted), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_stop_training_set_by_a_keras_callback_ends_the_run_after_saving(data_and_cfg):
    data, cfg = data_and_cfg
    (callback,) = build_callbacks([{"name": "test_stop_after", "batches": 6}])
    run, loop, saves = _loop(data, cfg, [("test_stop_after", callback)])
    state = loop.run()
    assert run.global_step == 6 and state.stopped_early and state.batches_done == 6
    assert saves[-1][0] == 6  # the stop is saved


def test_terminate_on_nan_works_unchanged(data_and_cfg):
    data, cfg = data_and_cfg
    diverging = copy.deepcopy(cfg)
    diverging.optimizer.learning_rate = 1e30
    (callback,) = build_callbacks(["test_terminate_on_nan"])
    run, loop, _ = _loop(data, diverging, [("test_terminate_on_nan", callback)])
    state = loop.run()
    assert state.stopped_early and run.global_step < data.info.steps_per_epoch
    assert not np.isfinite(state.history[-1]["loss"])


# --------------------------------------------------------------------------- end to end

USER_MODULE = '''
import os
import signal

import keras

from trainer.training.callbacks import register_callback


@register_callback("recorder")
class Recorder(keras.callbacks.Callback):
    """Records hooks with what they were given; SIGKILLs its own process after the
    KILL_AT_STEP-th batch when that variable is set (the test's kill, mid-epoch)."""

    def __init__(self, every: int = 1):
        super().__init__()
        self.every, self.events, self.batches = every, [], 0

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(["epoch_begin", epoch])

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches % self.every == 0:
            self.events.append(["batch_end", batch, logs["loss"], logs["accuracy"]])
        if self.batches == int(os.environ.get("KILL_AT_STEP", "0")):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(["epoch_end", epoch, logs["loss"], logs["val_loss"]])

    def get_state(self):
        return {"events": self.events, "batches": self.batches}

    def set_state(self, state):
        self.events, self.batches = state["events"], state["batches"]
'''


def _final_state(run_dir):
    import json

    from checkpoints import list_checkpoints

    newest = list_checkpoints(run_dir)[-1]
    return newest, json.loads((newest / "trainer_state.json").read_text())["loop"]


@pytest.mark.slow
def test_a_user_callback_with_state_resumes_bitwise_after_a_sigkill_mid_epoch(digits_dir, tmp_path):
    import signal

    from checkpoints import checkpoint_arrays
    from tests.conftest import run_train, tiny_args

    (tmp_path / "recording_callbacks.py").write_text(USER_MODULE)
    common = (
        "trainer.deterministic=true",
        "checkpoint.every_n_steps=4",
        "imports=[recording_callbacks]",
        "callbacks=[{name:recorder,every:2}]",
    )
    reference, run = tmp_path / "reference", tmp_path / "run"
    run_train(*tiny_args(digits_dir, reference, *common), cwd=tmp_path)
    killed = run_train(
        *tiny_args(digits_dir, run, *common),
        cwd=tmp_path,
        env={"KILL_AT_STEP": "50"},  # batch 9 of the second epoch; last save at step 48
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    resumed = run_train(*tiny_args(digits_dir, run, *common), f"+resume={run}", cwd=tmp_path)
    assert "step 48, epoch 2, batch 7 of that epoch" in resumed.stdout

    (theirs, their_state), (ours, our_state) = _final_state(reference), _final_state(run)
    assert ours.name == theirs.name == "step-00000082"
    assert our_state["callbacks"] == their_state["callbacks"]  # every hook, every value
    assert len(our_state["callbacks"][0]["state"]["events"]) == 2 + 41 + 2  # 82 batches / 2
    assert our_state["epoch_metrics"] == their_state["epoch_metrics"]
    expected, actual = checkpoint_arrays(theirs), checkpoint_arrays(ours)
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


@pytest.mark.slow
def test_a_checkpoint_written_by_the_previous_format_resumes_with_its_callbacks(
    digits_dir, tmp_path
):
    """tests/data/main_format_run: written by main before this change (flat
    trainer.early_stopping_patience=2, reduce_on_plateau_patience=1, factor 0.5 on
    checkpoint.monitor=loss, mode=max: every epoch after the first is "no improvement")."""
    import json
    import shutil
    from pathlib import Path

    from tests.conftest import run_train

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "data" / "main_format_run", run)
    process = run_train(
        f"+resume={run}",
        f"dataset.data_dir={digits_dir}",
        "trainer.epochs=4",
        "hydra.run.dir=" + str(tmp_path / "hydra"),
        cwd=tmp_path,
    )
    assert "step 82, epoch 3, batch 0 of that epoch" in process.stdout
    # Epoch 3: a second epoch without improvement: the rate is halved again, and early
    # stopping (patience 2, one epoch counted before) stops the run a whole epoch early.
    assert "Reducing the learning rate: scale now 0.25" in process.stdout
    assert "Early stopping: loss did not improve for 2 epochs" in process.stdout
    newest, state = _final_state(run)
    assert newest.name == "step-00000123" and state["stopped_early"]
    assert state["lr_scale"] == 0.25 and state["epochs_completed"] == 3
    saved = json.loads((run / "step-00000082" / "trainer_state.json").read_text())["loop"]
    assert state["best"] == state["early_stopping_best"] == saved["best"]
    config = (newest / "config.yaml").read_text()
    assert "early_stopping_patience" not in config and "patience: 2" in config


@pytest.mark.slow
def test_bad_callbacks_and_retired_keys_are_one_line_from_train_py(digits_dir, tmp_path):
    from tests.conftest import run_train, tiny_args

    for override, message in (
        ("callbacks=[nope]", "error: unknown callback 'nope'; known: none yet (register"),
        ("trainer.early_stopping_patience=3", "error: trainer.early_stopping_patience is "
         "retired: use trainer.early_stopping.patience instead"),
    ):  # fmt: skip
        run = tmp_path / override.split("=")[0]
        process = run_train(*tiny_args(digits_dir, run, override), cwd=tmp_path, check=False)
        assert process.returncode == 2
        assert process.stderr.strip().startswith(message)
        assert len(process.stderr.strip().splitlines()) == 1
        assert not run.exists()  # refused before the run directory is made


@register_callback("test_weights_at_epoch_end")
def weights_at_epoch_end():
    import keras

    class WeightsAtEpochEnd(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.weights: list = []

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append(self.model.get_weights())

    return WeightsAtEpochEnd()


def test_restore_best_weights_ends_the_run_with_the_best_epochs_weights(data_and_cfg):
    data, cfg = data_and_cfg
    # mode=max on the training loss, which falls: the first epoch stays the best.
    stopping = EarlyStopping(patience=5, monitor="loss", mode="max", restore_best_weights=True)
    (seen,) = build_callbacks(["test_weights_at_epoch_end"])
    run, loop, _ = _loop(data, cfg, [("w", seen)], early_stopping=stopping)
    best_weights_saved = []
    save = loop.save
    loop.save = lambda state, logs, **extra: (
        best_weights_saved.append(extra.get("best_weights")),
        save(state, logs),
    )
    state = loop.run()
    assert state.epochs_completed == 2 and state.early_stopping_best_epoch == 0
    for ours, first_epoch in zip(run.model.get_weights(), seen.weights[0], strict=True):
        np.testing.assert_array_equal(ours, first_epoch)
    assert any(not np.array_equal(a, b) for a, b in zip(*seen.weights, strict=True))
    assert all(w is not None for w in best_weights_saved[2:])  # from the first epoch's end on
    for saved, first_epoch in zip(best_weights_saved[-1], seen.weights[0], strict=True):
        np.testing.assert_array_equal(saved, first_epoch)


def test_best_weights_are_written_with_the_checkpoint_and_read_back_exactly(data_and_cfg, tmp_path):
    from checkpoints import verify
    from checkpoints.layout import BEST_WEIGHTS_FILE
    from checkpoints.restore import read_best_weights
    from trainer.build import build_run
    from trainer.training.checkpointer import RunCheckpointer
    from trainer.training.state import LoopState

    data, cfg = data_and_cfg
    run = build_run(cfg, data.info)
    best = [np.full(w.shape, index + 0.5, w.dtype) for index, w in enumerate(run.model.weights)]
    before = run.model.get_weights()
    checkpointer = RunCheckpointer(tmp_path, cfg, run, data.info, report=lambda _: None)
    path = checkpointer.save(LoopState(), {"val_accuracy": 0.5}, best_weights=best)
    checkpointer.close()
    checkpoint = verify(path)
    assert checkpoint.valid and BEST_WEIGHTS_FILE in checkpoint.manifest["files"]
    read = read_best_weights(checkpoint, run.model)
    for ours, theirs in zip(read, best, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(run.model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(ours, theirs)  # the live weights are put back
    without = checkpointer.save(LoopState(), {"val_accuracy": 0.5})
    assert read_best_weights(verify(without), run.model) is None


def test_the_callback_modules_do_not_import_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, trainer.training.plateau, trainer.training.callbacks, "
        "trainer.training.state, trainer.config, trainer.train; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; "
        "assert 'keras' not in sys.modules, 'keras was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
