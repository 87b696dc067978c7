"""The training loop on a tiny model, in-process: lengths, checkpoint boundaries, resuming
mid-epoch, signals and callbacks. The same run built and trained through ``train.py`` is
tested end to end in ``test_train.py`` and ``test_resume.py``."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from trainer.build import build_run
from trainer.errors import StopRequested
from trainer.startup import compose_config


class Recorder:
    """A reporter that remembers what the loop told it."""

    def __init__(self, on_step=None) -> None:
        self.steps: list[int] = []
        self.epochs: list[tuple[int, int]] = []  # (epoch, global step) at each epoch end
        self.on_step = on_step

    def start_epoch(self, epoch, epochs, batches_done) -> None:
        pass

    def step(self, batches_done, step, values, log_now) -> None:
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def end_epoch(self, epoch, global_step, logs) -> None:
        self.epochs.append((epoch, global_step))

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def data_and_cfg(digits_dir):
    from trainer.data.pipeline import load_data

    cfg = compose_config(
        [
            f"dataset.data_dir={digits_dir}",
            "dataset.batch_size=128",  # 11 steps per epoch of the 1293 training digits
            "model.filters=[4]",
            "model.dense_units=[8]",
            "trainer.epochs=3",
            "checkpoint.every_n_steps=4",
        ]
    )
    return load_data(cfg.dataset, seed=cfg.seed), cfg


def make_loop(data, cfg, state=None, recorder=None, saves=None, **settings):
    import dataclasses

    import keras

    from trainer.training.loop import LoopSettings, TrainingLoop
    from trainer.training.state import LoopState

    keras.utils.set_random_seed(cfg.seed)
    run = build_run(cfg, data.info)
    loop_settings = dataclasses.replace(LoopSettings.from_config(cfg, run), **settings)
    saves = [] if saves is None else saves

    def save(loop_state, metrics):
        saves.append((run.global_step, loop_state.epoch, loop_state.batches_done))

    loop = TrainingLoop(
        run, data, loop_settings, state or LoopState(), recorder or Recorder(), save
    )
    return run, loop, saves


def weights(run) -> list[np.ndarray]:
    return [np.array(v) for v in run.model.weights] + [np.array(v) for v in run.optimizer.variables]


def test_the_loop_trains_every_step_and_saves_on_the_asked_boundaries(data_and_cfg):
    data, cfg = data_and_cfg
    recorder = Recorder()
    run, loop, saves = make_loop(data, cfg, recorder=recorder)
    state = loop.run()
    per_epoch = data.info.steps_per_epoch
    assert run.global_step == 3 * per_epoch and state.epochs_completed == 3
    assert recorder.steps == list(range(1, 3 * per_epoch + 1))
    assert recorder.epochs == [(0, per_epoch), (1, 2 * per_epoch), (2, 3 * per_epoch)]
    every_4 = list(range(4, 3 * per_epoch + 1, 4))
    epoch_ends = [per_epoch, 2 * per_epoch, 3 * per_epoch]  # checkpoint.every_n_epochs=1
    assert sorted({step for step, _, _ in saves}) == sorted(set(every_4 + epoch_ends))
    assert saves[-1] == (3 * per_epoch, 3, 0)  # the position after the last epoch


def test_max_steps_stops_mid_epoch_and_saves_there(data_and_cfg):
    data, cfg = data_and_cfg
    run, loop, saves = make_loop(data, cfg, total_steps=13, every_n_steps=None)
    state = loop.run()
    per_epoch = data.info.steps_per_epoch
    assert run.global_step == 13
    assert (state.epoch, state.batches_done) == (1, 13 - per_epoch)
    assert saves[-1] == (13, 1, 13 - per_epoch)


def test_a_loop_continued_from_a_mid_epoch_state_ends_where_one_uninterrupted_loop_does(
    data_and_cfg,
):
    import copy

    data, cfg = data_and_cfg
    uninterrupted, loop, _ = make_loop(data, cfg)
    loop.run()

    interrupted, first, _ = make_loop(data, cfg, total_steps=15)
    state = copy.deepcopy(first.run())
    assert state.batches_done > 0  # stopped inside the second epoch
    from trainer.training.loop import TrainingLoop

    second = TrainingLoop(
        interrupted,
        data,
        loop.settings,
        state,
        Recorder(),
        lambda loop_state, metrics: None,
    )
    second.run()
    assert interrupted.global_step == uninterrupted.global_step
    for ours, theirs in zip(weights(interrupted), weights(uninterrupted), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_sigterm_saves_at_the_next_step_boundary_then_stops(data_and_cfg):
    data, cfg = data_and_cfg

    def raise_sigterm(step):
        if step == 3:
            signal.raise_signal(signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    run, loop, saves = make_loop(data, cfg, recorder=Recorder(raise_sigterm), every_n_steps=None)
    with pytest.raises(StopRequested) as stopped:
        loop.run()
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert run.global_step == 3 and saves == [(3, 0, 3)]
    assert signal.getsignal(signal.SIGTERM) is before  # the loop's handler is removed


@pytest.mark.parametrize(
    ("history", "patience", "stopped_after"),
    [([0.5, 0.6, 0.6, 0.55], 2, 4), ([0.5, 0.6, 0.7, 0.8], 2, None)],
)
def test_early_stopping_counts_epochs_without_improvement(
    data_and_cfg, history, patience, stopped_after
):
    data, cfg = data_and_cfg
    from trainer.training.plateau import EarlyStopping

    stopping = EarlyStopping(patience=patience, monitor="val_accuracy", mode="max")
    _, loop, _ = make_loop(data, cfg, early_stopping=stopping, monitor="val_accuracy")
    stopped = None
    for epoch, value in enumerate(history, start=1):
        loop._update_callbacks(epoch - 1, {"val_accuracy": value})
        if loop.state.stopped_early and stopped is None:
            stopped = epoch
    assert stopped == stopped_after
    assert loop.state.best == max(history)


def test_reduce_on_plateau_scales_the_learning_rate_the_optimizer_sees(data_and_cfg):
    data, cfg = data_and_cfg
    plateau = cfg.copy()
    plateau.trainer.reduce_on_plateau.patience = 1
    plateau.checkpoint.monitor, plateau.checkpoint.mode = "loss", "min"
    run, loop, _ = make_loop(data, plateau, monitor="loss", mode="min")
    before = run.learning_rate()
    loop._update_callbacks(0, {"loss": 1.0, "lr": before})
    loop._update_callbacks(1, {"loss": 1.5, "lr": before})  # no improvement: patience is up
    assert loop.state.lr_scale == 0.5
    assert run.learning_rate() == pytest.approx(before * 0.5)
