"""Seeds by purpose: every random stream is a function of ``seed`` and its purpose alone.

The derivation (trainer.seeds) is NumPy's SeedSequence, pinned; its TensorFlow
twin equals it; the model's initial weights and dropout masks, and the data
order, do not depend on what the process drew before; a run that prepares its
dataset ends bitwise equal to one that finds it prepared.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import REPO, run_train, tiny_args
from trainer.config.schema import register_schemas
from trainer.seeds import (
    PURPOSES,
    _first_state_word,
    derive_seed,
    derive_seed_tensor,
    derive_seeds,
)

register_schemas()

INDEXES = [0, 1, 2, 7, 1000, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 5, 10**12, 2**62]


def test_derive_seed_is_numpys_seed_sequence_and_pinned():
    for purpose, spawn_key in PURPOSES.items():
        for seed, index in [(0, ()), (42, (3,)), (2**32 - 1, (1, 2))]:
            sequence = np.random.SeedSequence([seed, *index], spawn_key=spawn_key)
            expected = int(sequence.generate_state(1, dtype=np.uint32)[0]) % (2**31 - 1)
            assert derive_seed(seed, purpose, *index) == expected
    # A change of any of these changes every run's numbers: a format change.
    assert [derive_seed(0, "shuffle", epoch) for epoch in range(3)] == [
        821328063,
        1817441349,
        993632896,
    ]
    assert derive_seed(42, "init") == PINNED_INIT_42
    assert derive_seed(42, "dropout", 0) == PINNED_DROPOUT_42_0


PINNED_INIT_42 = 1944468667
PINNED_DROPOUT_42_0 = 233227757


def test_purposes_and_indexes_give_different_streams():
    seeds = {derive_seed(0, purpose, 0) for purpose in PURPOSES}
    assert len(seeds) == len(PURPOSES)
    assert derive_seed(0, "dropout", 0) != derive_seed(0, "dropout", 1)
    assert derive_seed(0, "init") != derive_seed(1, "init")
    with pytest.raises(ValueError, match="unknown seed purpose 'weights'; known: shuffle, init"):
        derive_seed(0, "weights")


def test_the_hash_written_out_is_numpys():
    rng = np.random.default_rng(0)
    for length in range(1, 10):  # shorter than, as long as and longer than the pool
        for _ in range(20):
            words = [int(w) for w in rng.integers(0, 2**32, length)]
            expected = np.random.SeedSequence(words).generate_state(1, dtype=np.uint32)[0]
            assert _first_state_word(words) == int(expected)


@pytest.mark.parametrize("purpose", list(PURPOSES))
def test_the_tensorflow_twin_equals_derive_seed(purpose):
    import tensorflow as tf

    for seed in (0, 1, 42, 2**32 - 1):
        expected = [derive_seed(seed, purpose, index) for index in INDEXES]
        eager = derive_seed_tensor(seed, purpose, tf.constant(INDEXES, tf.int64))
        assert eager.numpy().tolist() == expected
        in_a_pipeline = tf.data.Dataset.from_tensor_slices(tf.constant(INDEXES, tf.int64)).map(
            lambda index, seed=seed: derive_seed_tensor(seed, purpose, index)
        )
        assert [int(v) for v in in_a_pipeline.as_numpy_iterator()] == expected


@pytest.mark.parametrize("purpose", list(PURPOSES))
def test_the_listed_seeds_equal_derive_seed(purpose):
    for seed in (0, 1, 42, 2**32 - 1):
        indexes = [*INDEXES, 2**64 - 1]
        expected = [derive_seed(seed, purpose, i) for i in indexes]
        assert derive_seeds(seed, purpose, indexes) == expected
    assert derive_seeds(0, purpose, []) == []
    with pytest.raises(ValueError, match="indexes must be integers in"):
        derive_seeds(0, purpose, [-1])
    with pytest.raises(ValueError, match="seed must be an integer in"):
        derive_seeds(2**32, purpose, [0])


# --- the model -------------------------------------------------------------------------


def _config(seed: int):
    overrides = [f"seed={seed}", "model.filters=[4]", "model.dense_units=[8]", "model.dropout=0.5"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _built(seed: int):
    from trainer.build import build_run
    from trainer.data.pipeline import DataInfo

    info = DataInfo("digits", (8, 8, 1), 10, 128, 0, 32, 32, steps_per_epoch=4)
    return build_run(_config(seed), info)


def _state(run) -> list[np.ndarray]:
    """The model's weights and its seed generators' states."""
    return [np.asarray(v) for v in run.model.variables]


def _draw_from_every_global_generator() -> None:
    import keras
    import tensorflow as tf

    random.random()
    np.random.random(3)
    tf.random.uniform([3])
    keras.random.uniform((3,))


def test_initial_weights_do_not_depend_on_earlier_draws():
    first = _state(_built(7))
    _draw_from_every_global_generator()
    again = _state(_built(7))

    assert len(first) == len(again)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = _state(_built(8))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def _dropout_masks(run) -> list[np.ndarray]:
    import tensorflow as tf

    layers = [layer for layer in run.model.layers if layer.name.startswith("dropout")]
    assert len(layers) == 2  # dropout0 and dropout_head
    return [
        layer(tf.ones((16, layer.input.shape[-1])), training=True).numpy() != 0 for layer in layers
    ]


def test_two_seeds_give_different_dropout_masks():
    one, same, two = _dropout_masks(_built(1)), _dropout_masks(_built(1)), _dropout_masks(_built(2))

    for a, b in zip(one, same, strict=True):
        np.testing.assert_array_equal(a, b)  # the masks are the seed's, not the build's
    for a, b in zip(one, two, strict=True):
        assert 0 < a.mean() < 1 and not np.array_equal(a, b)
    assert not np.array_equal(one[0][:, :8], one[1])  # each layer has a stream of its own


# --- the data --------------------------------------------------------------------------


def test_the_data_order_does_not_depend_on_the_global_seed(digits_dir):
    import tensorflow as tf

    from trainer.data.pipeline import load_data

    cfg = {
        "name": "digits",
        "data_dir": str(digits_dir),
        "batch_size": 64,
        "validation_split": 0.1,
        "shuffle_buffer": None,
        "cache": True,
        "download": False,
    }
    data = load_data(cfg, seed=3)
    tf.random.set_seed(1)
    expected = [labels.numpy() for _, labels in data.train_epochs(0, 3)]
    tf.random.set_seed(12345)
    _draw_from_every_global_generator()
    again = [labels.numpy() for _, labels in data.train_epochs(0, 3)]

    assert len(expected) == 3 * data.info.steps_per_epoch
    for a, b in zip(expected, again, strict=True):
        np.testing.assert_array_equal(a, b)


# --- end to end ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_that_prepares_its_dataset_equals_one_that_finds_it_prepared(digits_dir, tmp_path):
    from checkpoints import checkpoint_arrays
    from checkpoints.listing import list_checkpoints

    def deterministic_run(name: str, data_dir) -> object:
        args = [
            a if not a.startswith("dataset.data_dir=") else f"dataset.data_dir={data_dir}"
            for a in tiny_args(digits_dir, tmp_path / name, "trainer.deterministic=true")
        ]
        run_train(*args, "trainer.max_steps=50", cwd=tmp_path)
        return list_checkpoints(tmp_path / name)[-1]

    fresh = tmp_path / "fresh_tfds"
    preparing = deterministic_run("preparing", fresh)
    assert (fresh / "sklearn_digits").is_dir()  # this run prepared the dataset itself
    prepared = deterministic_run("prepared", digits_dir)

    assert preparing.name == prepared.name == "step-00000050"
    left, right = checkpoint_arrays(preparing), checkpoint_arrays(prepared)
    assert left.keys() == right.keys()
    assert [k for k in left if not np.array_equal(left[k], right[k])] == []
    rng_states = [
        json.loads((c / "trainer_state.json").read_text())["rng"] for c in (preparing, prepared)
    ]
    assert rng_states[0] == rng_states[1]
