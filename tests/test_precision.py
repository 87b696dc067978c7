"""Training options that are optimizer or dtype-policy state: ``trainer.precision``,
``optimizer.ema`` (+ ``trainer.evaluate_with_ema``), ``optimizer.gradient_accumulation_steps``.

In-process on a tiny model through the real checkpoint writer and reader (a
loop stopped, checkpointed, rebuilt from config, restored and continued ends
bitwise equal to an uninterrupted one); end to end through ``train.py`` (a
SIGKILL mid-epoch, then ``+resume``) in the tests marked slow.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from tests.conftest import (
    assert_same_final_weights,
    resumed_mid_epoch,
    sigkill_while_training,
    small_digits_cfg,
)
from trainer.build import build_run
from trainer.errors import UserError

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


class Quiet:
    """A reporter that reports nothing."""

    def start_epoch(self, *args) -> None:
        pass

    def step(self, *args) -> None:
        pass

    def end_epoch(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def data(digits_dir):
    from trainer.data.pipeline import load_data

    cfg = small_digits_cfg(digits_dir)
    return load_data(cfg.dataset, seed=cfg.seed)


def make_loop(data, cfg, state=None, run=None, saves=None, **settings):
    from trainer.training.loop import LoopSettings, TrainingLoop
    from trainer.training.state import LoopState

    run = run or build_run(cfg, data.info)
    loop_settings = dataclasses.replace(LoopSettings.from_config(cfg, run), **settings)

    def save(loop_state, metrics):
        if saves is not None:
            saves.append(copy.deepcopy(loop_state))

    return run, TrainingLoop(run, data, loop_settings, state or LoopState(), Quiet(), save)


def values(run) -> list[np.ndarray]:
    """Every variable of the run: weights, dropout RNG states, all optimizer variables."""
    return [np.array(v) for v in run.model.variables] + [
        np.array(v) for v in run.optimizer.variables
    ]


def assert_bitwise_equal(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def checkpoint_of(tmp_path, cfg, run, data, state):
    """``run`` and ``state`` written as training writes a checkpoint; the Checkpoint read back."""
    from checkpoints.manifest import verify
    from trainer.training.checkpointer import RunCheckpointer

    checkpointer = RunCheckpointer(tmp_path / "run", cfg, run, data.info, report=lambda _: None)
    path = checkpointer.save(state, {"loss": 0.0})
    checkpointer.close()
    checkpoint = verify(path)
    assert checkpoint.valid, checkpoint
    return checkpoint


def interrupted_and_resumed(tmp_path, data, cfg, stop_at: int):
    """Train to ``stop_at`` steps, checkpoint, rebuild from config, restore, train to the end."""
    from checkpoints.restore import restore_state
    from trainer.training.state import LoopState

    first, loop = make_loop(data, cfg, total_steps=stop_at)
    state = loop.run()
    checkpoint = checkpoint_of(tmp_path, cfg, first, data, state)
    resumed = build_run(cfg, data.info)
    saved = restore_state(checkpoint, resumed.model, resumed.optimizer)
    assert resumed.global_step == stop_at == checkpoint.global_step
    _, loop = make_loop(data, cfg, state=LoopState.from_dict(saved["loop"]), run=resumed)
    loop.run()
    return resumed


# ----------------------------------------------------------------- precision


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_policy_applies_to_the_model_only_while_it_is_built(digits_dir, data, precision):
    import keras

    cfg = small_digits_cfg(digits_dir, f"trainer.precision={precision}")
    run = build_run(cfg, data.info)
    compute = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
    conv = run.model.get_layer("conv0")
    assert conv.compute_dtype == compute[precision]
    assert {v.dtype for v in run.model.weights} == {"float32"}
    assert run.model.get_layer("logits").compute_dtype == "float32"
    images = np.zeros((2, *data.info.input_shape), np.float32)
    assert run.model(images).dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # nothing leaks to other models
    is_scaled = isinstance(run.optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_scaled == (precision == "mixed_float16")


def test_the_policy_of_the_process_is_neither_used_nor_changed(digits_dir, data):
    import keras

    keras.config.set_dtype_policy("mixed_bfloat16")  # what some other code left behind
    try:
        run = build_run(small_digits_cfg(digits_dir, "trainer.precision=float32"), data.info)
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy("float32")
    assert run.model.get_layer("conv0").compute_dtype == "float32"


def _float16_head(cfg, input_shape, num_classes):
    """A builder that breaks the convention: its logits come out in the compute dtype."""
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    outputs = keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


def test_logits_and_loss_are_float32_even_from_a_float16_head(digits_dir, data):
    import tensorflow as tf
    from omegaconf import OmegaConf

    from trainer.models.registry import MODELS

    if "test_float16_head" not in MODELS:
        MODELS.register("test_float16_head")(_float16_head)

    cfg = OmegaConf.to_container(small_digits_cfg(digits_dir, "trainer.precision=mixed_float16"))
    cfg = OmegaConf.create({**cfg, "model": {"name": "test_float16_head"}})
    run, loop = make_loop(data, cfg, total_steps=2)
    images, _ = next(iter(data.validation()))
    assert run.model(images).dtype == "float16"
    assert loop.train_step.logits(images, training=False).dtype == tf.float32
    loop.run()
    assert run.global_step == 2
    assert loop.train_loss.result().dtype == tf.float32
    assert np.isfinite(loop.evaluate(data.validation())["loss"])


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_resumed_loop_ends_bitwise_equal_for_each_precision(
    tmp_path, digits_dir, data, precision
):
    cfg = small_digits_cfg(digits_dir, f"trainer.precision={precision}")
    uninterrupted, loop = make_loop(data, cfg)
    loop.run()
    resumed = interrupted_and_resumed(tmp_path, data, cfg, stop_at=15)  # mid second epoch
    assert resumed.global_step == uninterrupted.global_step == 22
    assert_bitwise_equal(values(resumed), values(uninterrupted))


def test_loss_scaling_counts_every_batch_and_restores_its_scale(tmp_path, digits_dir, data):
    """A float16 step whose gradients overflow is skipped (the scale halves); the run's
    step still counts it, so the loop's lengths and the checkpoint's step are batches."""
    cfg = small_digits_cfg(digits_dir, "trainer.precision=mixed_float16")
    run, loop = make_loop(data, cfg, total_steps=5)
    optimizer = run.optimizer
    optimizer.dynamic_scale.assign(2.0**60)  # overflows float16: the first steps are skipped
    loop.run()
    assert run.global_step == 5
    assert int(optimizer.inner_optimizer.iterations.numpy()) < 5  # updates actually applied
    assert float(optimizer.dynamic_scale.numpy()) < 2.0**60
    checkpoint = checkpoint_of(tmp_path, cfg, run, data, loop.state)
    from checkpoints.restore import restore_state

    restored = build_run(cfg, data.info)
    restore_state(checkpoint, restored.model, restored.optimizer)
    assert float(restored.optimizer.dynamic_scale.numpy()) == float(optimizer.dynamic_scale)
    assert_bitwise_equal(values(restored), values(run))


def test_a_mixed_precision_weights_file_loads_into_a_float32_model(tmp_path, digits_dir, data):
    from checkpoints.layout import MODEL_FILE
    from trainer.models.registry import build_model
    from trainer.training.state import LoopState

    cfg = small_digits_cfg(digits_dir, "trainer.precision=mixed_bfloat16")
    run, loop = make_loop(data, cfg, total_steps=3)
    loop.run()
    checkpoint = checkpoint_of(tmp_path, cfg, run, data, LoopState())
    plain = build_model(cfg.model, data.info.input_shape, data.info.num_classes)  # float32
    plain.load_weights(checkpoint.file(MODEL_FILE))
    assert plain.get_layer("conv0").compute_dtype == "float32"
    assert_bitwise_equal(
        [np.array(v) for v in plain.weights], [np.array(v) for v in run.model.weights]
    )


# ----------------------------------------------------------------- EMA


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
def test_ema_is_restored_and_evaluating_with_it_changes_no_training(tmp_path, digits_dir, data):
    cfg = small_digits_cfg(digits_dir, "optimizer.ema=true", "optimizer.ema_momentum=0.9")
    with_ema, loop = make_loop(data, cfg)
    loop.run()  # evaluates the average on the validation split after every epoch
    without, other = make_loop(data, cfg, evaluate_with_ema=False)
    other.run()
    assert_bitwise_equal(values(with_ema), values(without))  # the swap leaves no trace
    validation = data.validation()
    assert loop.evaluate(validation) != other.evaluate(validation)  # other weights evaluated
    averages = with_ema.optimizer._model_variables_moving_average
    trained = [np.array(v) for v in with_ema.model.trainable_variables]
    assert any(not np.array_equal(a, t) for a, t in zip(averages, trained, strict=True))

    resumed = interrupted_and_resumed(tmp_path, data, cfg, stop_at=15)
    assert_bitwise_equal(values(resumed), values(with_ema))  # the averages included


def test_evaluating_with_ema_is_evaluating_the_averaged_weights(digits_dir, data):
    cfg = small_digits_cfg(digits_dir, "optimizer.ema=true")
    run, loop = make_loop(data, cfg, total_steps=4)
    loop.run()
    validation = data.validation()
    with_ema = loop.evaluate(validation)
    for variable, average in zip(
        run.model.trainable_variables, run.optimizer._model_variables_moving_average, strict=True
    ):
        variable.assign(average)
    _, plain = make_loop(data, cfg, run=run, evaluate_with_ema=False)
    assert plain.evaluate(validation) == with_ema


@pytest.mark.parametrize(
    ("precision", "evaluate_with_ema"),
    [("float32", True), ("mixed_float16", True), ("float32", False)],
)
def test_export_writes_the_average_when_evaluation_uses_it(
    tmp_path, digits_dir, data, capsys, precision, evaluate_with_ema
):
    import keras

    from trainer.__main__ import main

    cfg = small_digits_cfg(
        digits_dir,
        "optimizer.ema=true",
        f"trainer.precision={precision}",
        f"trainer.evaluate_with_ema={str(evaluate_with_ema).lower()}",
    )
    run, loop = make_loop(data, cfg, total_steps=4)
    loop.run()
    checkpoint = checkpoint_of(tmp_path, cfg, run, data, loop.state)
    out = tmp_path / "model.keras"
    assert main(["export", str(checkpoint.path), str(out)]) == 0
    printed = capsys.readouterr().out
    exported = keras.saving.load_model(out, safe_mode=True)
    assert exported.get_layer("conv0").compute_dtype == "float32"  # exported in float32
    inner = getattr(run.optimizer, "inner_optimizer", run.optimizer)
    averages = [np.array(v) for v in inner._model_variables_moving_average]
    trained = [np.array(v) for v in run.model.trainable_variables]
    expected = averages if evaluate_with_ema else trained
    assert ("moving average" in printed) == evaluate_with_ema
    assert_bitwise_equal([np.array(v) for v in exported.trainable_variables], expected)


# ----------------------------------------------------------------- gradient accumulation


def test_accumulating_n_batches_updates_as_one_batch_n_times_larger():
    """SGD on a linear model: 4 accumulated batches of 8 == one batch of 32 (the mean of
    equal-sized batches' mean gradients is the big batch's mean gradient)."""
    import keras
    import tensorflow as tf

    from trainer.optim.optimizers import build_optimizer, step_counter

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    y = rng.normal(size=(32, 1)).astype(np.float32)

    def trained(accumulation, batch):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
        cfg = {"name": "sgd", "learning_rate": 0.1, "momentum": 0.0}
        cfg["gradient_accumulation_steps"] = accumulation
        optimizer = build_optimizer(cfg, keras.optimizers.schedules.ExponentialDecay(0.1, 1, 1.0))
        for start in range(0, 32, batch):
            with tf.GradientTape() as tape:
                prediction = model(x[start : start + batch])
                loss = tf.reduce_mean((prediction - y[start : start + batch]) ** 2)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return [np.array(v) for v in model.weights], int(step_counter(optimizer).numpy())

    accumulated, steps = trained(4, 8)
    big_batch, _ = trained(None, 32)
    assert steps == 4  # the run's step counts batches, not updates
    for ours, theirs in zip(accumulated, big_batch, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    plain_steps, _ = trained(None, 8)  # 4 updates on batches of 8: not the same
    assert not np.allclose(plain_steps[0], big_batch[0])


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
def test_accumulation_steps_count_batches_and_resume_mid_accumulation(tmp_path, digits_dir, data):
    cfg = small_digits_cfg(
        digits_dir, "optimizer.gradient_accumulation_steps=4", "optimizer.ema=true"
    )
    uninterrupted, loop = make_loop(data, cfg)
    loop.run()
    assert uninterrupted.global_step == 22  # 2 epochs of 11 batches
    assert int(uninterrupted.optimizer.iterations.numpy()) == 22 // 4  # Keras': updates
    resumed = interrupted_and_resumed(tmp_path, data, cfg, stop_at=14)  # 14 % 4: mid-way
    assert_bitwise_equal(values(resumed), values(uninterrupted))


def test_one_accumulation_step_is_no_accumulation(digits_dir, data):
    cfg = small_digits_cfg(digits_dir, "optimizer.gradient_accumulation_steps=1")
    run = build_run(cfg, data.info)
    assert not run.optimizer.gradient_accumulation_steps


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.gradient_accumulation_steps=0", "optimizer.gradient_accumulation_steps must"),
        ("optimizer.ema_momentum=1.0", "optimizer.ema_momentum must be in [0, 1), got 1.0"),
        ("optimizer.ema_momentum=-0.1", "optimizer.ema_momentum must be in [0, 1)"),
        (
            "optimizer.gradient_accumulation_steps=2 trainer.strategy=mirrored",
            "optimizer.gradient_accumulation_steps must be null or 1 with "
            "trainer.strategy=mirrored (Keras' accumulation cannot run under a tf.distribute",
        ),
    ],
)
def test_bad_values_are_one_line(digits_dir, override, message):
    from trainer.config import validate

    with pytest.raises(UserError) as error:
        validate(small_digits_cfg(digits_dir, *override.split()))
    assert message in str(error.value) and "\n" not in str(error.value)


# ----------------------------------------------------------------- resume policy


def test_precision_is_fixed_on_resume_unless_fine_tuning(tmp_path):
    from tests.test_resume_policy import plan, write_checkpoint

    run = tmp_path / "run"
    write_checkpoint(run, 10, ("trainer.precision=mixed_bfloat16",))
    with pytest.raises(UserError) as error:
        plan([f"+resume={run}", "trainer.precision=float32"])
    assert str(error.value).startswith("cannot override trainer.precision when resuming")
    same = plan([f"+resume={run}", "trainer.precision=mixed_bfloat16", "trainer.epochs=30"])
    assert same.cfg.trainer.precision == "mixed_bfloat16"  # its own value is no change
    assert same.cfg.trainer.epochs == 30  # other trainer.* keys still may change
    kept = plan([f"+resume={run}"])
    assert kept.cfg.trainer.precision == "mixed_bfloat16"  # from the checkpoint
    tuned = plan([f"+resume={run}", "trainer.precision=float32", "trainer.fine_tune=true"])
    assert tuned.fine_tune and tuned.cfg.trainer.precision == "float32"


# ----------------------------------------------------------------- all together


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_precision_ema_and_accumulation_combine_and_resume(tmp_path, digits_dir, data, precision):
    cfg = small_digits_cfg(
        digits_dir,
        f"trainer.precision={precision}",
        "optimizer.ema=true",
        "optimizer.gradient_accumulation_steps=3",
        "trainer.steps_per_execution=2",
    )
    uninterrupted, loop = make_loop(data, cfg)
    loop.run()
    resumed = interrupted_and_resumed(tmp_path, data, cfg, stop_at=13)
    assert_bitwise_equal(values(resumed), values(uninterrupted))


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
@pytest.mark.parametrize("precision", PRECISIONS)
def test_xla_compiled_steps_train_in_each_precision(digits_dir, data, precision):
    cfg = small_digits_cfg(
        digits_dir,
        f"trainer.precision={precision}",
        "trainer.jit_compile=true",
        "optimizer.ema=true",
        "optimizer.gradient_accumulation_steps=2",
    )
    run, loop = make_loop(data, cfg, total_steps=6)
    before = [np.array(v) for v in run.model.trainable_variables]
    loop.run()
    assert run.global_step == 6
    after = [np.array(v) for v in run.model.trainable_variables]
    assert all(np.isfinite(a).all() for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))


# ----------------------------------------------------------------- end to end (train.py)


def _summary(run_dir) -> dict:
    import json

    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_ema_run_killed_mid_epoch_resumes_bitwise_equal(
    digits_dir, tmp_path, precision
):
    """SIGKILL mid-epoch (and mid-accumulation), ``+resume``: the same final checkpoint
    (weights, averages, accumulators, loss scale, step) as the run never interrupted."""

    from devtools import fault_injection
    from tests.conftest import run_train

    def args(name):
        return [
            *fault_injection.small_run_args(
                digits_dir, tmp_path / name / "run", tmp_path / name / "hydra", epochs=2
            ),
            "checkpoint.every_n_steps=5",  # 41 batches per epoch: mid-epoch checkpoints
            f"trainer.precision={precision}",
            "optimizer.ema=true",
            "optimizer.gradient_accumulation_steps=3",  # 5 % 3: mid-accumulation too
        ]

    run_train(*args("reference"), cwd=tmp_path)
    run_dir = tmp_path / "killed" / "run"
    sigkill_while_training(args("killed"), run_dir, tmp_path)
    resumed = run_train(*args("killed"), f"+resume={run_dir}", cwd=tmp_path)
    resumed_mid_epoch(resumed)
    assert "epoch 1," in resumed.stdout.split("Resuming from", 1)[1].splitlines()[0]
    assert_same_final_weights(run_dir, tmp_path / "reference" / "run")
    assert _summary(run_dir)["global_step"] == 2 * 41


@pytest.mark.slow
def test_mixed_float16_trains_end_to_end_and_its_precision_is_fixed_on_resume(digits_dir, tmp_path):
    from tests.conftest import run_train, tiny_args

    run_dir = tmp_path / "fp16"
    run_train(
        *tiny_args(digits_dir, run_dir, "trainer.precision=mixed_float16", "trainer.epochs=1"),
        cwd=tmp_path,
    )
    summary = _summary(run_dir)
    assert summary["global_step"] == 41
    assert summary["test_loss"] < np.log(10)  # it learned: below a uniform guess's loss
    import h5py

    newest = sorted(run_dir.glob("step-*"))[-1]
    with h5py.File(newest / "optimizer.h5", "r") as handle:
        paths = [handle[str(i)].attrs["path"] for i in range(len(handle))]
    assert paths[0] == "loss_scale_optimizer/iteration"  # the step, first
    assert "loss_scale_optimizer/dynamic_scale" in paths

    refused = run_train(
        *tiny_args(digits_dir, run_dir, "trainer.precision=float32"),
        f"+resume={run_dir}",
        cwd=tmp_path,
        check=False,
    )
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot override trainer.precision when resuming" in lines[0]

    # Fine-tuning starts a fresh optimizer: the precision may change.
    tuned = tmp_path / "tuned"
    run_train(
        *tiny_args(digits_dir, tuned, "trainer.precision=float32", "trainer.max_steps=3"),
        f"+resume={run_dir}",
        "trainer.fine_tune=true",
        cwd=tmp_path,
    )
    assert _summary(tuned)["global_step"] == 3


@pytest.mark.slow
def test_loss_scaling_and_ema_under_a_mirrored_strategy_train_and_resume(digits_dir, tmp_path):
    from tests.conftest import run_train, tiny_args

    run_dir = tmp_path / "mirrored"
    process = run_train(
        *tiny_args(
            digits_dir,
            run_dir,
            "trainer.strategy=mirrored",
            "trainer.cpu_devices=2",
            "trainer.precision=mixed_float16",
            "optimizer.ema=true",
            "trainer.max_steps=10",
            "checkpoint.every_n_steps=5",
        ),
        cwd=tmp_path,
    )
    assert "2 replica(s)" in process.stdout
    assert _summary(run_dir)["global_step"] == 10
    resumed = run_train(
        *tiny_args(digits_dir, run_dir, "trainer.max_steps=14"),
        f"+resume={run_dir}",
        cwd=tmp_path,
    )
    assert "step 10," in resumed.stdout and _summary(run_dir)["global_step"] == 14
