"""The model families: resnet, keras_app and custom (a user's registered builder).

Each builds for digits (8x8x1), CIFAR-sized (32x32x3) and 64x64x3 images into
float32 logits, under mixed precision too; ResNets have the paper's parameter
counts; keras.applications get the size, channels and input range they expect,
and ImageNet weights only from the Keras cache; two builds with one seed are
equal; resnet and a keras application learn a small problem; bad values are
one line; a resnet run on digits resumes bitwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO, run_train
from trainer.config import (
    KERAS_APPLICATIONS,
    KerasAppConfig,
    ResNetConfig,
    register_schemas,
    typed_section,
    validate,
)
from trainer.errors import UserError

register_schemas()
# MobileNetV3 with ImageNet weights warns that it loads the 224 px ones: right, for no top.
pytestmark = pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")

SHAPES = [(8, 8, 1), (32, 32, 3), (64, 64, 3)]
CLASSES = 7


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="module")
def keras():
    from trainer.startup import import_tensorflow

    return import_tensorflow()[1]


@pytest.fixture(scope="module")
def my_models(tmp_path_factory):
    """A user's module registering the model ``my_net``, imported as ``imports`` would."""
    from trainer.startup import import_user_modules

    folder = tmp_path_factory.mktemp("user_code")
    (folder / "my_models.py").write_text(MY_MODELS)
    sys.path.insert(0, str(folder))
    try:
        import_user_modules(["my_models"])
    finally:
        sys.path.remove(str(folder))
    return folder


# The docs' example, word for word (test_the_docs_show_the_custom_model_example checks it).
MY_MODELS = '''\
# my_models.py
import keras
from trainer.models.registry import register_model


@register_model("my_net")
def my_net(cfg, input_shape, num_classes):
    """Dense layers of cfg["units"] (default 64) on the flattened image."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    for units in cfg.get("units", [64]):
        x = keras.layers.Dense(units, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs)
'''

FAMILIES = {
    "resnet": OmegaConf.to_container(OmegaConf.structured(ResNetConfig)),
    "resnet_dropout": {
        **OmegaConf.to_container(OmegaConf.structured(ResNetConfig)),
        "depth": None,
        "block": "bottleneck",
        "stage_blocks": [1, 1],
        "width": 8,
        "dropout": 0.3,
    },
    "keras_app": OmegaConf.to_container(OmegaConf.structured(KerasAppConfig)),
    "keras_app_dropout": {
        **OmegaConf.to_container(OmegaConf.structured(KerasAppConfig)),
        "application": "MobileNet",
        "dropout": 0.3,
    },
    "custom": {"name": "my_net", "units": [16]},
}


def built(family: str, shape, classes: int = CLASSES):
    from trainer.models.registry import build_model

    return build_model(OmegaConf.create(FAMILIES[family]), shape, classes)


# --------------------------------------------------------------------------- config

ALL_APPLICATIONS = ", ".join(KERAS_APPLICATIONS)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.depth=17"],
            "model.depth must be one of 18, 34, 50, 101, 152, or null with model.block and "
            "model.stage_blocks, got 17",
        ),
        (["model.width=0"], "model.width must be an integer >= 1, got 0"),
        (["model.dropout=1.0"], "model.dropout must be in [0, 1), got 1.0"),
        (["model.dropout=-0.1"], "model.dropout must be in [0, 1), got -0.1"),
        (["model.bn_momentum=1.0"], "model.bn_momentum must be in [0, 1), got 1.0"),
        (["model.bn_epsilon=0"], "model.bn_epsilon must be > 0, got 0.0"),
        (
            ["model.block=basic"],
            "model.block must be null when model.depth is set (18), got 'basic'",
        ),
        (
            ["model.stage_blocks=[2,2]"],
            "model.stage_blocks must be null when model.depth is set (18), got [2, 2]",
        ),
        (
            ["model.depth=null", "model.stage_blocks=[2,2]"],
            "model.block must be basic or bottleneck when model.depth is null, got None",
        ),
        (
            ["model.depth=null", "model.block=basic", "model.stage_blocks=[2,0]"],
            "model.stage_blocks must be a non-empty list of positive integers (residual blocks "
            "per stage) when model.depth is null, got [2, 0]",
        ),
        (
            ["model.depth=null", "model.block=basic"],
            "model.stage_blocks must be a non-empty list of positive integers (residual blocks "
            "per stage) when model.depth is null, got None",
        ),
    ],
)
def test_bad_resnet_values_are_one_line(overrides, message):
    with pytest.raises(UserError) as error:
        validate(composed("model=resnet", *overrides))
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.application=ResNet18"],
            f"model.application must be one of {ALL_APPLICATIONS}, got 'ResNet18'",
        ),
        (["model.image_size=0"], "model.image_size must be null or an integer >= 1, got 0"),
        (
            ["model.bn_momentum=1.5"],
            "model.bn_momentum must be null (the application's own) or in [0, 1), got 1.5",
        ),
        (["model.dropout=1.5"], "model.dropout must be in [0, 1), got 1.5"),
    ],
)
def test_bad_keras_app_values_are_one_line(overrides, message):
    with pytest.raises(UserError) as error:
        validate(composed("model=keras_app", *overrides))
    assert str(error.value) == message


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=resnet", "model.stem=tiny"],
        ["model=resnet", "model.block=wide"],
        ["model=keras_app", "model.weights=random"],
        ["model=resnet", "model.filters=[8]"],  # a cnn key
    ],
)
def test_closed_model_choices_and_keys_fail_at_composition(overrides):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        composed(*overrides)


def test_a_custom_model_needs_its_name_and_takes_keys_of_its_own():
    with pytest.raises(UserError) as error:
        validate(composed("model=custom"))
    assert str(error.value).startswith(
        "no value given for model.name: add model.name=VALUE to the command line"
    )
    cfg = composed("model=custom", "model.name=my_net", "+model.units=[16]", "+model.depth=17")
    validate(cfg)  # its builder checks its keys, not the resnet schema
    assert OmegaConf.to_container(cfg.model) == {"name": "my_net", "units": [16], "depth": 17}


@pytest.mark.parametrize("option", ["resnet", "keras_app"])
def test_a_saved_model_section_reads_back_typed(option):
    saved = OmegaConf.to_container(composed(f"model={option}").model, enum_to_str=True)
    assert OmegaConf.to_container(typed_section("model", saved), enum_to_str=True) == saved
    with pytest.raises(
        UserError,
        match=f"model config is not valid: unknown key model.units; known keys of model={option}",
    ):
        typed_section("model", {**saved, "units": 3})
    with pytest.raises(UserError, match="model config is not valid"):
        typed_section("model", {**saved, "dropout": "lots"})


def test_the_docs_show_the_custom_model_example():
    page = (REPO / "docs" / "datasets-and-models.md").read_text()
    assert MY_MODELS in page
    assert "model=custom model.name=my_net" in page


# --------------------------------------------------------------------------- building


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("family", ["resnet", "keras_app", "custom"])
def test_each_family_gives_float32_logits_for_each_input_shape(keras, my_models, family, shape):
    model = built(family, shape)
    images = np.random.default_rng(0).uniform(size=(3, *shape)).astype("float32")
    logits = model(images, training=False)
    assert tuple(logits.shape) == (3, CLASSES)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert model.get_layer("logits").dtype_policy.compute_dtype == "float32"


@pytest.fixture
def mixed_bfloat16(keras):
    before = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_dtype_policy(before)


@pytest.mark.parametrize("family", ["resnet", "keras_app"])
def test_the_logits_stay_float32_under_mixed_precision(keras, mixed_bfloat16, family):
    model = built(family, (32, 32, 3))
    # the body computes in bfloat16, the logits do not
    computes = {layer.dtype_policy.compute_dtype for layer in model.layers[1:-1]}
    assert "bfloat16" in computes
    logits = model(np.zeros((2, 32, 32, 3), "float32"), training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert tuple(logits.shape) == (2, CLASSES)


def _trainable_parameters(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize(
    ("depth", "parameters"),
    # torchvision's resnet18/resnet50 (the paper's 11.7M and 25.6M): same layers, same count
    [(18, 11_689_512), (50, 25_557_032)],
)
def test_resnets_at_width_64_have_the_papers_parameter_counts(keras, depth, parameters):
    from trainer.models.registry import build_model

    cfg = OmegaConf.structured(ResNetConfig(depth=depth, width=64))
    model = build_model(cfg, (224, 224, 3), 1000)
    assert model.name == f"resnet{depth}"
    assert _trainable_parameters(model) == parameters


def test_a_resnet_of_explicit_stages_is_cifars_resnet20(keras):
    from trainer.models.registry import build_model

    cfg = OmegaConf.structured(
        ResNetConfig(depth=None, block="basic", stage_blocks=[3, 3, 3], width=16)
    )
    model = build_model(cfg, (32, 32, 3), 10)
    assert model.name == "resnet20"
    # The paper's 0.27M, plus the two 1x1 projection shortcuts (option B, not A): 0.272M.
    assert 270_000 < _trainable_parameters(model) < 275_000
    stage3 = model.get_layer("stage3_block3_out").output
    assert tuple(stage3.shape[1:]) == (8, 8, 64)  # 32 px halved twice, width 16 doubled twice


@pytest.mark.parametrize(
    ("stem", "side", "pooled", "after_stem"),
    [
        ("auto", 32, False, 32),
        ("auto", 64, False, 64),
        ("auto", 96, True, 24),
        ("imagenet", 32, True, 8),
        ("small", 96, False, 96),
    ],
)
def test_the_stem_keeps_small_images_whole(keras, stem, side, pooled, after_stem):
    from trainer.models.registry import build_model

    model = build_model(OmegaConf.structured(ResNetConfig(stem=stem)), (side, side, 3), 10)
    names = {layer.name for layer in model.layers}
    assert ("stem_pool" in names) == pooled
    assert model.get_layer("stage1_block1_out").output.shape[1] == after_stem


def test_zero_init_residual_zeroes_the_last_gamma_of_each_block_only(keras):
    from trainer.models.registry import build_model

    cfg = OmegaConf.structured(ResNetConfig(zero_init_residual=True))
    model = build_model(cfg, (32, 32, 3), 10)
    gammas = {layer.name: np.asarray(layer.gamma) for layer in model.layers if "_bn" in layer.name}
    last = {name for name in gammas if name.endswith("_2_bn")}
    assert len(last) == 8  # ResNet-18: 8 basic blocks
    assert all(not gammas[name].any() for name in last)
    assert all((gammas[name] == 1).all() for name in gammas.keys() - last)


def test_builds_with_one_seed_are_equal_and_another_seed_differs(keras):
    from checkpoints.state import seed_generator_variables
    from trainer.build import build_model_for

    info = types.SimpleNamespace(input_shape=(8, 8, 1), num_classes=CLASSES)

    def state(family: str, seed: int):
        model = build_model_for({"seed": seed, "model": FAMILIES[family]}, info)
        generators = seed_generator_variables(model)
        assert generators, "the dropout layer's generator is seeded by position"
        return [np.asarray(v) for v in model.weights + generators]

    for family in ("resnet_dropout", "keras_app_dropout"):
        first, again, other = state(family, 1), state(family, 1), state(family, 2)
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


# --------------------------------------------------------------------------- keras_app


def test_the_applications_the_config_allows_are_keras_own(keras):
    from trainer.models.keras_app import INPUT_SCALING, application_module

    constructors = {
        name
        for name in dir(keras.applications)
        if not name.startswith("_") and callable(getattr(keras.applications, name))
    }
    assert set(KERAS_APPLICATIONS) == constructors
    modules = {application_module(getattr(keras.applications, n)) for n in KERAS_APPLICATIONS}
    assert modules == set(INPUT_SCALING)


def test_each_application_refuses_one_pixel_below_its_minimum(keras):
    from trainer.models.keras_app import DEFAULT_MIN_SIZE, MIN_SIZE

    for name in KERAS_APPLICATIONS:
        side = MIN_SIZE.get(name, DEFAULT_MIN_SIZE) - 1
        with pytest.raises(ValueError, match="at least"):  # Keras' check, before any layer
            getattr(keras.applications, name)(
                include_top=False, weights=None, input_shape=(side, side, 3)
            )


def test_an_application_with_a_larger_minimum_gets_images_resized_to_it(keras):
    from trainer.models.registry import build_model

    cfg = OmegaConf.structured(KerasAppConfig(application="Xception"))
    model = build_model(cfg, (8, 8, 1), 10)
    assert tuple(model.get_layer("resize").output.shape[1:3]) == (71, 71)
    explicit = build_model(OmegaConf.structured(KerasAppConfig(image_size=48)), (8, 8, 1), 10)
    assert tuple(explicit.get_layer("resize").output.shape[1:3]) == (48, 48)
    as_they_come = build_model(OmegaConf.structured(KerasAppConfig()), (32, 32, 3), 10)
    names = {layer.name for layer in as_they_come.layers}
    assert "resize" not in names  # 32 px is MobileNetV3Small's minimum: no resizing


def test_an_image_size_below_the_applications_minimum_is_one_line(keras):
    from trainer.models.registry import build_model

    cfg = OmegaConf.structured(KerasAppConfig(application="InceptionV3", image_size=64))
    with pytest.raises(UserError) as error:
        build_model(cfg, (32, 32, 3), 10)
    assert str(error.value) == (
        "model.image_size must be >= 75 for InceptionV3 (its smallest input side), got 64"
    )


@pytest.mark.parametrize("channels", [3, 1])
def test_images_in_0_1_reach_each_application_as_its_preprocess_input_makes_them(keras, channels):
    """Our fixed input map of x in [0, 1] equals keras.applications.<module>.preprocess_input
    of 255 x (identity for the applications that scale inside the model), grey as RGB."""
    from trainer.models.keras_app import INPUT_SCALING, input_scaling

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, channels)).astype("float32")
    rgb = np.repeat(pixels, 3, axis=-1) if channels == 1 else pixels
    for module in INPUT_SCALING:
        kernel, bias = input_scaling(module, channels)
        ours = (pixels / 255.0) @ kernel + bias
        theirs = np.asarray(getattr(keras.applications, module).preprocess_input(rgb.copy()))
        np.testing.assert_allclose(ours, theirs, atol=1e-4, err_msg=module)


def test_a_frozen_base_trains_only_the_head(keras):
    from trainer.models.registry import build_model

    cfg = OmegaConf.structured(KerasAppConfig(trainable_base=False, bn_momentum=0.5))
    model = build_model(cfg, (32, 32, 3), 10)
    assert [v.path for v in model.trainable_weights] == ["logits/kernel", "logits/bias"]
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = {layer.momentum for layer in norms}
    assert momenta == {0.5}


MOBILENET_V3_SMALL_NO_TOP = "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"


@pytest.fixture
def keras_home(keras, tmp_path, monkeypatch):
    """An empty Keras cache, and a network that fails the test if a download is tried."""
    from keras.src.backend import config
    from keras.src.utils import file_utils

    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setattr(config, "_KERAS_DIR", str(home))

    def no_network(*args, **kwargs):
        pytest.fail(f"a download was attempted: {args}")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    return home


def test_imagenet_weights_missing_from_the_cache_are_one_line_and_no_download(keras_home):
    from trainer.models.registry import build_model

    cfg = OmegaConf.structured(KerasAppConfig(weights="imagenet"))
    with pytest.raises(UserError) as error:
        build_model(cfg, (32, 32, 3), 10)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"model.weights=imagenet needs {keras_home / 'models' / MOBILENET_V3_SMALL_NO_TOP} "
        "in the Keras cache"
    )
    assert list((keras_home / "models").iterdir()) == []


def test_imagenet_weights_that_do_not_match_their_hash_are_refused_and_kept(keras_home):
    from trainer.models.registry import build_model

    damaged = keras_home / "models" / MOBILENET_V3_SMALL_NO_TOP
    damaged.write_bytes(b"half a download")
    cfg = OmegaConf.structured(KerasAppConfig(weights="imagenet"))
    with pytest.raises(UserError, match="does not match its expected hash"):
        build_model(cfg, (32, 32, 3), 10)
    assert damaged.read_bytes() == b"half a download"  # Keras would delete and re-download it


def test_imagenet_weights_in_the_cache_are_loaded_for_grey_images(keras, keras_home, monkeypatch):
    """The file Keras names, where Keras looks for it, is what the base starts from."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    from keras.src.utils import file_utils

    from trainer.models.registry import build_model

    keras.utils.set_random_seed(3)
    pretrained = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    with h5py.File(keras_home / "models" / MOBILENET_V3_SMALL_NO_TOP, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, pretrained)  # as Keras ships them
    # The real file's sha256 cannot be made; everything but the hash check is Keras' own.
    monkeypatch.setattr(file_utils, "validate_file", lambda *args, **kwargs: True)

    cfg = OmegaConf.structured(KerasAppConfig(weights="imagenet"))
    model = build_model(cfg, (8, 8, 1), 10)
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for ours, theirs in zip(base.weights, pretrained.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert tuple(model(np.zeros((2, 8, 8, 1), "float32")).shape) == (2, 10)


def test_cached_weights_of_another_model_are_one_line(keras, keras_home, monkeypatch):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    from keras.src.utils import file_utils

    from trainer.models.registry import build_model

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with h5py.File(keras_home / "models" / MOBILENET_V3_SMALL_NO_TOP, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, other)
    monkeypatch.setattr(file_utils, "validate_file", lambda *args, **kwargs: True)
    with pytest.raises(UserError) as error:
        build_model(OmegaConf.structured(KerasAppConfig(weights="imagenet")), (32, 32, 3), 10)
    assert str(error.value).startswith("model.application=MobileNetV3Small cannot be built: ")
    assert "\n" not in str(error.value)


def test_a_keras_app_model_exports_to_a_file_safe_mode_loads(keras, tmp_path):
    model = built("keras_app", (8, 8, 1))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = np.random.default_rng(1).uniform(size=(2, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(images)), np.asarray(loaded(images)))


# --------------------------------------------------------------------------- learning


def brightest_channel(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16x16 RGB noise in [0, 1] whose class is the channel made brighter (by 0.25)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = rng.uniform(0, 0.6, (count, 16, 16, 3)).astype("float32")
    images[np.arange(count), :, :, labels] += 0.25
    return np.clip(images, 0, 1), labels


def _test_accuracy(keras, model, steps: int) -> float:
    keras.utils.set_random_seed(0)
    images, labels = brightest_channel(32 * steps, seed=0)
    test_images, test_labels = brightest_channel(512, seed=1)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(images, labels, batch_size=32, epochs=1, verbose=0)
    return model.evaluate(test_images, test_labels, verbose=0, return_dict=True)["accuracy"]


@pytest.mark.slow  # in-process, but seconds of training: kept out of the fast loop
def test_a_resnet_learns_which_channel_is_brightest(keras):
    from trainer.models.registry import build_model

    keras.utils.set_random_seed(0)
    cfg = ResNetConfig(depth=None, block="basic", stage_blocks=[1, 1], width=8)
    model = build_model(OmegaConf.structured(cfg), (16, 16, 3), 3)
    assert _test_accuracy(keras, model, steps=150) >= 0.9  # chance: 1/3


@pytest.mark.slow  # no train.py, but ~30 s of CPU: MobileNetV3 is 200 small ops per step
def test_a_keras_application_learns_which_channel_is_brightest(keras):
    from trainer.models.registry import build_model

    keras.utils.set_random_seed(0)
    cfg = KerasAppConfig(application="MobileNetV3Small", bn_momentum=0.9)
    model = build_model(OmegaConf.structured(cfg), (16, 16, 3), 3)
    assert _test_accuracy(keras, model, steps=100) >= 0.9  # chance: 1/3


# --------------------------------------------------------------------------- train.py

# A small deterministic ResNet with dropout on digits: 41 steps per epoch, a checkpoint
# at the end of each epoch (step-00000041, step-00000082), all kept.
RESNET_ARGS = (
    "model=resnet",
    "model.depth=null",
    "model.block=basic",
    "model.stage_blocks=[1,1]",
    "model.width=8",
    "model.dropout=0.2",
    "trainer.deterministic=true",
    "trainer.epochs=2",
    "checkpoint.keep_last=5",
)


def resnet_args(digits_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"dataset.data_dir={digits_dir}",
        f"checkpoint.dir={run_dir}",
        "hydra.run.dir=" + str(run_dir.parent / "hydra"),
        *RESNET_ARGS,
        *extra,
    ]


@pytest.fixture(scope="module")
def resnet_run(digits_dir, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("resnet")
    run_train(*resnet_args(digits_dir, work / "run"), cwd=work)
    return work / "run"


@pytest.mark.slow
def test_a_resnet_run_on_digits_resumed_from_epoch_1_ends_bitwise_equal(
    resnet_run, digits_dir, tmp_path
):
    import yaml

    from tests.test_resume import assert_bitwise_equal

    summary = json.loads((resnet_run / "summary.json").read_text())
    assert (summary["epochs_completed"], summary["global_step"]) == (2, 82)
    assert summary["test_accuracy"] > 0.3  # ten classes: chance is 0.1 (0.45 here, 82 steps)
    assert sorted(p.name for p in resnet_run.glob("step-*")) == ["step-00000041", "step-00000082"]
    saved = yaml.safe_load((resnet_run / "step-00000082" / "config.yaml").read_text())["model"]
    assert saved == {
        "name": "resnet",
        "depth": None,
        "block": "basic",
        "stage_blocks": [1, 1],
        "width": 8,
        "stem": "auto",
        "bn_momentum": 0.9,
        "bn_epsilon": 1e-05,
        "zero_init_residual": False,
        "dropout": 0.2,
    }

    branch = tmp_path / "branch"
    process = run_train(
        *resnet_args(digits_dir, branch), f"+resume={resnet_run / 'step-00000041'}", cwd=tmp_path
    )
    assert f"Resuming from {resnet_run / 'step-00000041'}: step 41, epoch 2" in process.stdout
    assert sorted(p.name for p in branch.glob("step-*")) == ["step-00000082"]
    assert_bitwise_equal(resnet_run / "step-00000082", branch / "step-00000082")


def assert_exports_as_rebuilt(keras, run_dir: Path, out: Path) -> Any:
    """``python -m trainer export RUN OUT`` writes a model plain Keras loads in safe mode, and
    it predicts what the model rebuilt from the run's latest checkpoint predicts;
    ``inspect`` reads the checkpoint's model section and counts its parameters."""
    from trainer.build import build_model_from_checkpoint
    from trainer.config.saved import read_checkpoint_config
    from trainer.tools.finding import valid_checkpoint

    process = subprocess.run(
        [sys.executable, "-m", "trainer", "export", str(run_dir), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    loaded = keras.saving.load_model(out, safe_mode=True)
    checkpoint = valid_checkpoint(str(run_dir))
    rebuilt, _, _ = build_model_from_checkpoint(checkpoint, read_checkpoint_config(checkpoint))
    images = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(rebuilt(images)))
    inspected = subprocess.run(
        [sys.executable, "-m", "trainer", "inspect", str(run_dir), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    info = json.loads(inspected.stdout)
    assert (inspected.returncode, info["problems"]) == (0, [])
    assert info["config"]["model"]["name"] == read_checkpoint_config(checkpoint)["model"]["name"]
    assert info["parameters"] == loaded.count_params()
    return loaded


@pytest.mark.slow
def test_a_resnet_checkpoint_exports_to_a_file_plain_keras_loads(resnet_run, tmp_path, keras):
    assert assert_exports_as_rebuilt(keras, resnet_run, tmp_path / "model.keras").name == "resnet6"


@pytest.mark.slow
def test_a_keras_app_run_checkpoints_and_exports(digits_dir, tmp_path, keras):
    run_dir = tmp_path / "run"
    run_train(
        f"dataset.data_dir={digits_dir}",
        f"checkpoint.dir={run_dir}",
        "hydra.run.dir=" + str(tmp_path / "hydra"),
        "model=keras_app",
        "model.dropout=0.2",
        "trainer.max_steps=3",
        cwd=tmp_path,
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["global_step"], summary["latest_checkpoint"]) == (3, "step-00000003")
    loaded = assert_exports_as_rebuilt(keras, run_dir, tmp_path / "model.keras")
    assert loaded.name == "keras_app_MobileNetV3Small"


@pytest.mark.slow
def test_a_users_registered_model_trains_from_the_command_line(digits_dir, my_models):
    run_dir = my_models / "run"
    run_train(
        f"dataset.data_dir={digits_dir}",
        f"checkpoint.dir={run_dir}",
        "hydra.run.dir=" + str(my_models / "hydra"),
        "imports=[my_models]",
        "model=custom",
        "model.name=my_net",
        "+model.units=[16]",
        "trainer.epochs=1",
        cwd=my_models,  # imports are searched for in the working directory first
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_completed"] == 1
    import yaml

    saved = yaml.safe_load((run_dir / summary["latest_checkpoint"] / "config.yaml").read_text())
    assert saved["model"] == {"name": "my_net", "units": [16]}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["model=resnet", "model.depth=17"],
            "error: model.depth must be one of 18, 34, 50, 101, 152, or null with model.block "
            "and model.stage_blocks, got 17",
        ),
        (
            ["model=custom", "model.name=nope"],
            "error: unknown model 'nope'; known: cnn, keras_app, keras_builtin, resnet",
        ),
    ],
)
def test_bad_model_choices_from_train_py_are_one_line_and_exit_2(tmp_path, overrides, line):
    process = run_train(
        *overrides,
        f"checkpoint.dir={tmp_path / 'run'}",
        "hydra.run.dir=" + str(tmp_path / "hydra"),
        cwd=tmp_path,
        check=False,
    )
    assert process.returncode == 2
    assert process.stderr.strip() == line
    assert not (tmp_path / "run" / "config.yaml").exists()
