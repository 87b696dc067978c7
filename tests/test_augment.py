"""Augmentation (``conf/augment/``, ``trainer.data.augment``) and ``trainer.label_smoothing``: the
presets, the seeds (a batch's augmentation is a pure function of seed and position), training
only, the soft-label loss, validation, resume refusals, and a SIGKILL mid-epoch resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import (
    assert_same_final_weights,
    resumed_mid_epoch,
    sigkill_while_training,
    tiny_args,
)
from trainer.config import validate
from trainer.errors import UserError
from trainer.runs.resume import plan_start
from trainer.startup import compose_config

# ----------------------------------------------------------------- config (no TensorFlow)


def test_the_default_is_no_augmentation_and_no_smoothing():
    cfg = compose_config([])
    assert cfg.augment.name == "none"
    assert cfg.trainer.label_smoothing == 0.0
    assert not any(cfg.augment[k] for k in ("flip", "translate", "rotate", "zoom", "rand_augment"))
    assert cfg.augment.mixup_alpha == 0.0 and cfg.augment.cutmix_alpha == 0.0


def test_the_presets_compose_with_their_parameters():
    basic = compose_config(["augment=basic"]).augment
    assert (basic.flip, basic.translate, basic.rand_augment) == ("horizontal", 0.1, None)
    strong = compose_config(["augment=strong"]).augment
    assert strong.flip == "horizontal" and strong.translate == 0.1
    assert OmegaConf.to_container(strong.rand_augment) == {"num_ops": 2, "factor": 0.5}
    assert (strong.mixup_alpha, strong.cutmix_alpha, strong.mix_probability) == (0.2, 1.0, 0.5)
    # every transform is switchable from the command line
    off = compose_config(["augment=strong", "augment.flip=null", "augment.rand_augment=null"])
    assert off.augment.flip is None and off.augment.rand_augment is None
    validate(off)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.label_smoothing=1.0", "trainer.label_smoothing must be in [0, 1), got 1.0"),
        ("trainer.label_smoothing=-0.1", "trainer.label_smoothing must be in [0, 1), got -0.1"),
        ("augment.translate=1.5", "augment.translate must be in [0, 1) (0: off), got 1.5"),
        ("augment.mixup_alpha=2", "augment.mixup_alpha must be in [0, 1] (0: off), got 2.0"),
        ("augment.mix_probability=1.5", "augment.mix_probability must be in [0, 1], got 1.5"),
        (
            "augment.rand_augment.num_ops=0",
            "augment.rand_augment.num_ops must be an integer >= 1, got 0",
        ),
        (
            "augment.rand_augment.factor=0",
            "augment.rand_augment.factor must be in (0, 1], got 0.0",
        ),
    ],
)
def test_bad_values_are_one_line_naming_the_key(override, message):
    preset = ["augment=strong"] if override.startswith("augment.") else []
    with pytest.raises(UserError) as error:
        validate(compose_config([*preset, override]))
    assert str(error.value) == message


@pytest.mark.parametrize(
    "override", ["augment.flip=diagonal", "augment.rotation=0.1", "augment.rand_augment.ops=2"]
)
def test_a_closed_choice_or_an_unknown_key_fails_at_composition(override):
    with pytest.raises(Exception) as error:  # OmegaConf's or Hydra's own error
        validate(compose_config(["augment=strong", override]))
    assert override.split("=")[0].split(".")[-1] in str(error.value)


# ----------------------------------------------------------------- resume (no TensorFlow)

RESOLVED = {"name": "cosine", "warmup_steps": 0, "decay_steps": 100}


def write_checkpoint(run_dir: Path, overrides: tuple[str, ...] = (), drop: str | None = None):
    """A checkpoint whose config is ``train.py OVERRIDES``'s (``drop``: a section left out,
    as a checkpoint written before that section existed)."""
    from checkpoints import checkpoint_name, commit_checkpoint, staging_dir

    cfg = OmegaConf.to_container(compose_config(list(overrides)), resolve=True)
    cfg["resolved_schedule"] = dict(RESOLVED)
    if drop:
        del cfg[drop]
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(run_dir, 10)
    (staging / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    (staging / "trainer_state.json").write_text("{}")
    final = run_dir / checkpoint_name(10)
    commit_checkpoint(staging, final, {"global_step": 10, "epoch": 0, "metrics": {}})
    return final


def plan(overrides: list[str]):
    return plan_start(compose_config(overrides), overrides, lambda line: None)


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["augment=basic"], "augment"),
        (["augment.translate=0.2"], "augment.translate"),
        (["trainer.label_smoothing=0.2"], "trainer.label_smoothing"),
    ],
)
def test_resuming_with_another_augmentation_or_smoothing_is_refused(tmp_path, overrides, refused):
    run = tmp_path / "run"
    write_checkpoint(run, ("augment=strong", "trainer.label_smoothing=0.1"))
    with pytest.raises(UserError) as error:
        plan([f"+resume={run}", *overrides])
    assert str(error.value).startswith(f"cannot override {refused} when resuming")


def test_fine_tuning_may_change_the_smoothing(tmp_path):
    """A fine-tuned run trains anew from the weights (as it may change the precision)."""
    run = tmp_path / "run"
    write_checkpoint(run, ("augment=strong", "trainer.label_smoothing=0.1"))
    start = plan([f"+resume={run}", "trainer.label_smoothing=0.2", "trainer.fine_tune=true"])
    assert start.fine_tune and start.cfg.trainer.label_smoothing == 0.2


def test_resuming_with_the_same_augmentation_and_smoothing_is_allowed(tmp_path):
    run = tmp_path / "run"
    write_checkpoint(run, ("augment=strong", "trainer.label_smoothing=0.1"))
    start = plan(
        [f"+resume={run}", "augment=strong", "trainer.label_smoothing=0.1", "trainer.epochs=3"]
    )
    assert start.cfg.augment.name == "strong" and start.cfg.augment.mixup_alpha == 0.2
    assert start.cfg.trainer.label_smoothing == 0.1 and start.cfg.trainer.epochs == 3


def test_a_checkpoint_without_an_augment_section_resumes_without_augmentation(tmp_path):
    run = tmp_path / "run"
    checkpoint = write_checkpoint(run, drop="augment")
    assert "augment" not in yaml.safe_load((checkpoint / "config.yaml").read_text())
    start = plan([f"+resume={run}"])
    assert OmegaConf.to_container(start.cfg.augment) == OmegaConf.to_container(
        compose_config(["augment=none"]).augment
    )
    with pytest.raises(UserError, match="cannot override augment when resuming"):
        plan([f"+resume={run}", "augment=basic"])


# ----------------------------------------------------------------- the layers and their seeds


def augmentation(*overrides: str, seed: int = 42, label_smoothing: float = 0.0):
    from trainer.data.augment import build_augmentation

    cfg = compose_config(list(overrides))
    return build_augmentation(
        cfg.augment, seed=seed, num_classes=10, label_smoothing=label_smoothing
    )


def batch(shape=(16, 32, 32, 3), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random(shape, dtype=np.float32)
    labels = rng.integers(0, 10, shape[0]).astype(np.int64)
    return images, labels


def augmented(aug, images, labels, position: int):
    import tensorflow as tf

    out_images, out_labels = aug(images, labels, tf.constant(position, tf.int64))
    return np.asarray(out_images), np.asarray(out_labels)


def test_each_preset_builds_the_keras_layers_its_yaml_names():
    import keras

    assert augmentation("augment=none") is None  # nothing to do: the pipeline is untouched
    basic = augmentation("augment=basic")
    assert [type(layer) for layer in basic.layers] == [
        keras.layers.RandomFlip,
        keras.layers.RandomTranslation,
    ]
    assert basic.layers[0].mode == "horizontal"
    assert basic.layers[1].height_factor == 0.1 and basic.layers[1].width_factor == 0.1
    assert basic.mixers == [] and not basic.soft_labels
    strong = augmentation("augment=strong")
    assert [type(layer) for layer in strong.layers] == [
        keras.layers.RandomFlip,
        keras.layers.RandomTranslation,
        keras.layers.RandAugment,
    ]
    rand_augment = strong.layers[2]
    assert (rand_augment.num_ops, rand_augment.factor, rand_augment.value_range) == (
        2,
        (0, 0.5),
        (0, 1),
    )
    assert [type(layer) for layer in strong.mixers] == [keras.layers.MixUp, keras.layers.CutMix]
    assert strong.mixers[0].alpha == 0.2 and strong.mixers[1].factor == (0, 1.0)
    assert strong.soft_labels and strong.mix_probability == 0.5
    every = augmentation("augment=basic", "augment.rotate=0.1", "augment.zoom=0.2")
    assert [type(layer) for layer in every.layers][2:] == [
        keras.layers.RandomRotation,
        keras.layers.RandomZoom,
    ]
    smoothing_only = augmentation(label_smoothing=0.1)
    assert smoothing_only.layers == [] and smoothing_only.soft_labels


@pytest.mark.parametrize("shape", [(16, 8, 8, 1), (16, 32, 32, 3)], ids=["digits", "colour"])
def test_a_batch_augmentation_is_a_pure_function_of_seed_and_position(shape):
    images, labels = batch(shape)
    strong = augmentation("augment=strong", "augment.mix_probability=1.0")
    first = augmented(strong, images, labels, 7)
    again = augmented(strong, images, labels, 7)
    rebuilt = augmented(
        augmentation("augment=strong", "augment.mix_probability=1.0"), images, labels, 7
    )
    for ours, theirs in zip(first, again, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(first, rebuilt, strict=True):  # no state: a new one is the same
        np.testing.assert_array_equal(ours, theirs)
    other_position = augmented(strong, images, labels, 8)
    other_seed = augmented(
        augmentation("augment=strong", "augment.mix_probability=1.0", seed=43), images, labels, 7
    )
    assert not np.array_equal(first[0], other_position[0])
    assert not np.array_equal(first[0], other_seed[0])
    assert first[0].shape == shape and first[0].dtype == np.float32
    assert first[0].min() >= 0.0 and first[0].max() <= 1.0
    # mixed labels: soft, one row per image, each a distribution over the 10 classes
    assert first[1].shape == (16, 10)
    np.testing.assert_allclose(first[1].sum(axis=1), 1.0, rtol=1e-6)
    assert not np.isin(first[1], (0.0, 1.0)).all()


def test_no_layer_ever_draws_from_its_own_or_the_global_seed_generator():
    from keras.src.random.seed_generator import global_seed_generator

    strong = augmentation("augment=strong", "augment.mix_probability=1.0")
    layers = [sub for layer in strong.layers + strong.mixers for sub in layer._flatten_layers()]
    states = [np.asarray(v).copy() for layer in layers for v in layer.variables]
    global_state = np.asarray(global_seed_generator().state).copy()
    images, labels = batch()
    augmented(strong, images, labels, 3)
    assert states and all(
        np.array_equal(before, np.asarray(v))
        for before, v in zip(states, [v for layer in layers for v in layer.variables], strict=True)
    )
    np.testing.assert_array_equal(global_state, np.asarray(global_seed_generator().state))
    # and every layer has its own generator back once the call is over
    assert all(
        type(layer.generator).__name__ == "SeedGenerator"
        for layer in layers
        if hasattr(layer, "generator")
    )


def test_mix_probability_zero_mixes_no_batch_and_one_mixes_every_batch():
    images, labels = batch()
    never = augmentation("augment=strong", "augment.mix_probability=0.0")
    assert not never.mixers and not never.soft_labels  # nothing mixes: labels stay int
    assert augmented(never, images, labels, 1)[1].dtype == np.int64
    always = augmentation("augment=none", "augment.mixup_alpha=0.5", "augment.mix_probability=1.0")
    mixed = [augmented(always, images, labels, p)[1] for p in range(4)]
    assert all(not np.isin(m, (0.0, 1.0)).all() for m in mixed)


# ----------------------------------------------------------------- the loss and the loop


def test_the_soft_label_loss_equals_the_sparse_loss_when_mixing_and_smoothing_are_off():
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    soft = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.0)(
        tf.one_hot(labels, 10), logits
    )
    np.testing.assert_allclose(float(soft), float(sparse), rtol=1e-6)
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        tf.one_hot(labels, 10), logits
    )
    assert float(smoothed) != pytest.approx(float(sparse))  # smoothing does change it


class _Quiet:
    def start_epoch(self, *args) -> None:
        pass

    def step(self, *args) -> None:
        pass

    def end_epoch(self, *args) -> None:
        pass


def colour_data(seed: int = 1, examples: int = 96, batch_size: int = 16):
    """A tiny in-memory ``Data`` of 16x16x3 images (no TFDS: no colour set is offline)."""
    import math

    import tensorflow as tf

    from trainer.data.pipeline import Data, DataInfo

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (examples, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, examples).astype(np.int64)
    train = tf.data.Dataset.from_tensor_slices((images[:80], labels[:80]))
    held_out = tf.data.Dataset.from_tensor_slices((images[80:], labels[80:]))
    info = DataInfo("colour", (16, 16, 3), 10, 80, 16, 16, batch_size, math.ceil(80 / batch_size))
    return Data(info, train=train, validation=held_out, test=held_out, shuffle_buffer=80, seed=seed)


def make_loop(data, overrides, **settings):
    import dataclasses

    from trainer.build import build_run
    from trainer.training.loop import LoopSettings, TrainingLoop
    from trainer.training.state import LoopState

    cfg = compose_config(["model.filters=[4]", "model.dense_units=[8]", *overrides])
    run = build_run(cfg, data.info)
    loop_settings = dataclasses.replace(LoopSettings.from_config(cfg, run), **settings)
    loop = TrainingLoop(run, data, loop_settings, LoopState(), _Quiet(), lambda *_: None)
    return run, loop


def test_without_mixing_or_smoothing_the_loop_keeps_the_sparse_loss_and_accuracy():
    import keras

    data = colour_data()
    for overrides in ([], ["augment=basic"]):
        _, loop = make_loop(data, overrides)
        assert loop.train_step.train_loss_fn is loop.train_step.loss_fn
        assert isinstance(loop.train_step.loss_fn, keras.losses.SparseCategoricalCrossentropy)
        assert isinstance(loop.train_accuracy, keras.metrics.SparseCategoricalAccuracy)
    _, loop = make_loop(data, ["trainer.label_smoothing=0.1"])
    assert isinstance(loop.train_step.train_loss_fn, keras.losses.CategoricalCrossentropy)
    assert loop.train_step.train_loss_fn.get_config()["label_smoothing"] == 0.1
    assert isinstance(loop.train_accuracy, keras.metrics.CategoricalAccuracy)
    assert isinstance(
        loop.train_step.loss_fn, keras.losses.SparseCategoricalCrossentropy
    )  # evaluation


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
def test_evaluation_never_augments_nor_smooths():
    import keras

    data = colour_data()
    run, loop = make_loop(data, ["augment=strong", "trainer.label_smoothing=0.1"])
    loop.run()
    got = loop.evaluate(data.validation())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses, correct, count = [], 0, 0
    for images, labels in data.validation():
        logits = run.model(images, training=False)
        losses.append(float(loss(labels, logits)))
        correct += int(np.sum(np.argmax(logits, axis=1) == labels.numpy()))
        count += len(labels)
    assert got["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert got["accuracy"] == pytest.approx(correct / count)


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
def test_a_loop_continued_mid_epoch_with_strong_augmentation_on_colour_ends_bitwise_equal():
    """In one process (digits has one channel; this is RandAugment's colour path): the
    second loop gets a freshly built Augmentation, so nothing carried over but the run."""
    import copy

    from trainer.data.augment import build_augmentation
    from trainer.training.loop import TrainingLoop

    data = colour_data()
    strong = ["augment=strong", "trainer.label_smoothing=0.1", "trainer.epochs=3"]
    uninterrupted, loop = make_loop(data, strong)
    loop.run()
    interrupted, first = make_loop(data, strong, total_steps=7)  # 5 steps per epoch
    state = copy.deepcopy(first.run())
    assert (state.epoch, state.batches_done) == (1, 2)
    cfg = compose_config(strong)
    interrupted.augmentation = build_augmentation(
        cfg.augment, seed=cfg.seed, num_classes=10, label_smoothing=0.1
    )
    TrainingLoop(interrupted, data, loop.settings, state, _Quiet(), lambda *_: None).run()
    assert interrupted.global_step == uninterrupted.global_step == 15
    for ours, theirs in zip(
        interrupted.model.weights + interrupted.optimizer.variables,
        uninterrupted.model.weights + uninterrupted.optimizer.variables,
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


# ----------------------------------------------------------------- end to end: SIGKILL


@pytest.mark.slow
def test_a_strong_run_killed_mid_epoch_and_resumed_ends_bitwise_equal(digits_dir, tmp_path):
    from tests.conftest import run_train

    augmented = (
        "augment=strong",
        "trainer.label_smoothing=0.1",
        "trainer.deterministic=true",
        "checkpoint.every_n_steps=10",
        "checkpoint.keep_last=20",
    )
    reference = tmp_path / "reference"
    run_train(*tiny_args(digits_dir, reference, *augmented), cwd=tmp_path)

    run = tmp_path / "killed"
    sigkill_while_training(tiny_args(digits_dir, run, *augmented), run, tmp_path)
    resumed_mid_epoch(run_train(f"+resume={run}", *augmented, cwd=tmp_path))
    final = "step-00000082"  # 2 epochs of 41 steps
    assert (run / final).is_dir() and (reference / final).is_dir()
    assert_same_final_weights(run, reference)
    rng = [
        json.loads((r / final / "trainer_state.json").read_text())["rng"] for r in (run, reference)
    ]
    assert rng[0] == rng[1]
    saved = yaml.safe_load((run / final / "config.yaml").read_text())
    assert saved["augment"]["name"] == "strong" and saved["trainer"]["label_smoothing"] == 0.1


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
def test_augmentation_runs_outside_the_xla_compiled_step():
    # XLA has no kernel for the image transforms (ImageProjectiveTransformV3): with the
    # augmentation inside the jit-compiled step, this run failed on its first step.
    data = colour_data()
    run, loop = make_loop(data, ["augment=strong", "trainer.jit_compile=true", "trainer.epochs=1"])
    state = loop.run()
    assert run.global_step == data.info.steps_per_epoch and state.epochs_completed == 1
    assert np.isfinite(state.history[-1]["loss"])


@pytest.mark.slow
def test_mirrored_replicas_augment_their_parts_and_resume_to_the_same_weights(digits_dir, tmp_path):
    from checkpoints import checkpoint_arrays
    from tests.conftest import run_train

    mirrored = (
        "trainer.strategy=mirrored",
        "trainer.cpu_devices=2",
        "augment=strong",
        "trainer.label_smoothing=0.1",
        "model.dropout=0",
        "trainer.deterministic=true",
        "trainer.max_steps=30",
        "checkpoint.every_n_steps=20",
        "checkpoint.keep_last=5",
    )
    run = tmp_path / "run"
    process = run_train(*tiny_args(digits_dir, run, *mirrored), cwd=tmp_path)
    assert "Strategy: MirroredStrategy, 2 replica(s)" in process.stdout
    branch = tmp_path / "branch"
    run_train(
        *tiny_args(digits_dir, branch, *mirrored), f"+resume={run / 'step-00000020'}", cwd=tmp_path
    )
    ours, theirs = (
        checkpoint_arrays(branch / "step-00000030"),
        checkpoint_arrays(run / "step-00000030"),
    )
    assert ours.keys() == theirs.keys()
    # As tests/test_distributed.py: the same replicas agree to float rounding across runs.
    assert not [k for k in ours if not np.allclose(ours[k], theirs[k], rtol=0, atol=1e-6)]


def test_images_and_mixed_labels_stay_float32_under_a_mixed_precision_policy():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        strong = augmentation("augment=strong", "augment.mix_probability=1.0")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    images, labels = augmented(strong, *batch(), 2)
    assert images.dtype == np.float32 and labels.dtype == np.float32


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
def test_several_steps_per_execution_augment_each_batch_by_its_own_position():
    # Batch k gets position k whether it runs alone or third in a call of three steps: the
    # runs train on the same augmented batches (the same updates, up to the loop's rounding).
    data = colour_data()
    strong = ["augment=strong", "augment.mix_probability=1.0", "trainer.epochs=2"]
    one, loop = make_loop(data, strong)
    loop.run()
    three, loop = make_loop(data, [*strong, "trainer.steps_per_execution=3"])
    loop.run()
    assert one.global_step == three.global_step == 10
    for ours, theirs in zip(one.model.weights, three.model.weights, strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=0, atol=1e-5)


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
def test_on_one_device_the_pipeline_augments_each_batch_by_its_position_in_the_run():
    # Augmented ahead of the step (BENCHMARKS.md 1b), from a mid-epoch position on and across
    # the epoch boundary: batch b of epoch e is augmented as position e * steps_per_epoch + b,
    # exactly as the step did, and the step itself no longer holds the image transforms.
    from trainer.training.state import LoopState

    data = colour_data()
    strong = ["augment=strong", "augment.mix_probability=1.0", "trainer.epochs=3"]
    run, loop = make_loop(data, strong)
    loop.state = LoopState(epoch=1, batches_done=3)
    steps = data.info.steps_per_epoch  # 5
    got = [(np.asarray(x), np.asarray(y)) for x, y in loop._batches_from_here()]
    plain = [*data.train_epoch(1, skip_batches=3), *data.train_epoch(2)]
    positions = [steps + 3, steps + 4, *range(2 * steps, 3 * steps)]
    pairs = zip(plain, positions, strict=True)
    expected = [augmented(run.augmentation, x, y, p) for (x, y), p in pairs]
    assert len(got) == len(expected) == 7
    for (images, labels), (want_images, want_labels) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
    graph = loop.train_step.compiled.get_concrete_function(
        iter(loop._batches_from_here()), 1, np.int64(0), np.float32(0)
    ).graph
    assert not [op for op in graph.get_operations() if "ImageProjectiveTransform" in op.type]
