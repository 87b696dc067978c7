"""Models a config can name, built through the ``MODELS`` registry.

A builder takes the model section of the config, the input shape and the
number of classes (both from the dataset's info) and returns an unbuilt-free
``keras.Model`` whose variables are created, so weights can be restored into
it at once. Register your own with ``@register_model("name")`` and select it
with ``model=custom model.name=<name>`` (docs/datasets-and-models.md, "Your own model").

A builder takes images as float32 in [0, 1], NHWC, and returns logits (no
softmax), best from a float32 layer named ``logits`` whatever the dtype policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from trainer.models.keras_app import build_keras_app
from trainer.models.resnet import build_resnet
from trainer.registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register
# The families of their own modules (one each), registered here so that importing this
# module is what makes every built-in name known.
register_model("resnet")(build_resnet)
register_model("keras_app")(build_keras_app)


@register_model("cnn")
def build_cnn(
    cfg: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """Conv blocks (conv -> [batch norm] -> activation -> [2x2 pooling]) then a dense head.

    Pooling is skipped once the feature map is 1 pixel wide, so the same config
    works on 8x8 digits and 32x32 CIFAR images. The dropout layers' seeds are
    set from the run's seed by ``trainer.build.build_model_for`` (by position);
    their generator state is saved with each checkpoint.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    size = min(input_shape[0], input_shape[1])
    for index, filters in enumerate(cfg["filters"]):
        x = keras.layers.Conv2D(
            filters,
            cfg["kernel_size"],
            padding="same",
            use_bias=not cfg["batch_norm"],
            name=f"conv{index}",
        )(x)
        if cfg["batch_norm"]:
            x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.Activation(cfg["activation"], name=f"act{index}")(x)
        if cfg["pooling"] != "none" and size >= 2:
            pool = (
                keras.layers.MaxPooling2D
                if cfg["pooling"] == "max"
                else keras.layers.AveragePooling2D
            )
            x = pool(2, name=f"pool{index}")(x)
            size //= 2
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(cfg["dense_units"]):
        if cfg["dropout"]:
            x = keras.layers.Dropout(cfg["dropout"], name=f"dropout{index}")(x)
        x = keras.layers.Dense(units, activation=cfg["activation"], name=f"dense{index}")(x)
    if cfg["dropout"]:
        x = keras.layers.Dropout(cfg["dropout"], name="dropout_head")(x)
    # float32 logits under a mixed dtype policy too (the convention of every builder).
    outputs = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_model(
    cfg: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """The model named by ``cfg["name"]``, built for this input shape and class count."""
    return MODELS.get(cfg["name"])(cfg, input_shape, num_classes)
