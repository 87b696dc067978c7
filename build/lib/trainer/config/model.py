"""``conf/model/``: the model families' schemas, the catalogs their names are checked
against without importing Keras, and their value checks (:data:`MODEL_CHECKS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from trainer.config.checks import (
    int_or_none,
    is_int,
    is_number,
    option_name,
    plain_data,
    positive_int,
    require,
)

# Closed choices are StrEnums: a member equals, formats and serialises as its string, so
# code that compares with "max" and configs saved as plain strings both keep working.


class Pooling(StrEnum):
    max = "max"
    avg = "avg"
    none = "none"


class ResNetBlock(StrEnum):
    basic = "basic"  # two 3x3 convs (ResNet-18/34)
    bottleneck = "bottleneck"  # 1x1 -> 3x3 -> 1x1 with 4x expansion (ResNet-50 and deeper)


class ResNetStem(StrEnum):
    auto = "auto"  # small for inputs of at most RESNET_SMALL_STEM_MAX_SIZE pixels, else imagenet
    small = "small"  # 3x3 conv, stride 1, no pooling (CIFAR-style)
    imagenet = "imagenet"  # 7x7 conv, stride 2, then 3x3 max-pool, stride 2


class KerasWeights(StrEnum):
    imagenet = "imagenet"  # from the Keras cache only: never downloaded by a run


# The names keras.activations.get takes (keras 3 ALL_OBJECTS_DICT), kept here so the
# config is checked without importing Keras; tests compare it with Keras' own.
# "threshold" is left out: it needs arguments a name cannot give.
ACTIVATIONS = (
    "celu",
    "elu",
    "exponential",
    "gelu",
    "glu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softmax",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
    "squareplus",
    "swish",
    "tanh",
    "tanh_shrink",
)


# The ResNet depths of He et al. (2016), Table 1: depth -> (block, blocks per stage).
RESNET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
RESNET_SMALL_STEM_MAX_SIZE = 64  # stem=auto: inputs up to this side (CIFAR's 32) keep their size


# The constructors of keras.applications (Keras 3.15), kept here so the config is checked
# without importing Keras; tests compare it with Keras' own.
KERAS_APPLICATIONS = (
    "ConvNeXtBase",
    "ConvNeXtLarge",
    "ConvNeXtSmall",
    "ConvNeXtTiny",
    "ConvNeXtXLarge",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
    "EfficientNetB0",
    "EfficientNetB1",
    "EfficientNetB2",
    "EfficientNetB3",
    "EfficientNetB4",
    "EfficientNetB5",
    "EfficientNetB6",
    "EfficientNetB7",
    "EfficientNetV2B0",
    "EfficientNetV2B1",
    "EfficientNetV2B2",
    "EfficientNetV2B3",
    "EfficientNetV2L",
    "EfficientNetV2M",
    "EfficientNetV2S",
    "InceptionResNetV2",
    "InceptionV3",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "NASNetLarge",
    "NASNetMobile",
    "ResNet101",
    "ResNet101V2",
    "ResNet152",
    "ResNet152V2",
    "ResNet50",
    "ResNet50V2",
    "VGG16",
    "VGG19",
    "Xception",
)


@dataclass
class CNNConfig:
    name: str = "cnn"
    filters: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    pooling: Pooling = Pooling.max
    batch_norm: bool = False
    activation: str = "relu"  # one of ACTIVATIONS
    dropout: float = 0.25
    dense_units: list[int] = field(default_factory=lambda: [128])


@dataclass
class ResNetConfig:
    """Either ``depth`` (one of RESNET_DEPTHS) or, with ``depth: null``, both ``block`` and
    ``stage_blocks``; stage i has ``width * 2**i`` filters (x4 out of a bottleneck)."""

    name: str = "resnet"
    depth: int | None = 18
    block: ResNetBlock | None = None
    stage_blocks: list[int] | None = None
    width: int = 16
    stem: ResNetStem = ResNetStem.auto
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    zero_init_residual: bool = False  # last BN gamma of each block starts at 0
    dropout: float = 0.0  # before the logits layer; 0 disables


@dataclass
class KerasAppConfig:
    name: str = "keras_app"
    application: str = "MobileNetV3Small"  # one of KERAS_APPLICATIONS
    weights: KerasWeights | None = None  # None: random init; imagenet: from the Keras cache
    trainable_base: bool = True  # false: the application is frozen (BN in inference mode)
    image_size: int | None = None  # None: as they come, or the application's minimum side
    bn_momentum: float | None = None  # None: the application's own (MobileNets: 0.999)
    dropout: float = 0.0  # before the logits layer; 0 disables


def validate_model(model: Mapping[str, Any]) -> None:
    """The ``model`` section, checked by the family its name picks (:data:`MODEL_CHECKS`);
    a model of the user's own (``model=custom``) is checked by its builder."""
    check = MODEL_CHECKS.get(option_name(model))
    if check is not None:
        check(model)


def _validate_dropout(model: Mapping[str, Any]) -> None:
    dropout = model.get("dropout")
    require(is_number(dropout) and 0 <= dropout < 1, "model.dropout", dropout, "in [0, 1)")


def validate_cnn(model: Mapping[str, Any]) -> None:
    """``model=cnn``: filters, kernel size, dropout, dense units, activation."""
    if "filters" in model:
        filters = plain_data(model["filters"])
        require(
            len(filters) > 0 and all(positive_int(f) for f in filters),
            "model.filters",
            filters,
            "a non-empty list of positive integers",
        )
    if "kernel_size" in model:
        require(
            positive_int(model["kernel_size"]),
            "model.kernel_size",
            model["kernel_size"],
            "an integer >= 1",
        )
    if "dropout" in model:
        _validate_dropout(model)
    if "dense_units" in model:
        units = plain_data(model["dense_units"])
        require(
            all(positive_int(u) for u in units),
            "model.dense_units",
            units,
            "a list of positive integers",
        )
    if "activation" in model:
        require(
            model["activation"] in ACTIVATIONS,
            "model.activation",
            model["activation"],
            "one of " + ", ".join(ACTIVATIONS),
        )


def validate_resnet(model: Mapping[str, Any]) -> None:
    """``model=resnet``: a standard ``depth``, or ``depth: null`` with ``block`` and
    ``stage_blocks``; width, batch norm and dropout."""
    depth, stages = model["depth"], plain_data(model["stage_blocks"])
    block = None if model["block"] is None else str(model["block"])  # the name, not the Enum
    depths = ", ".join(map(str, RESNET_DEPTHS))
    require(
        depth is None or (is_int(depth) and depth in RESNET_DEPTHS),
        "model.depth",
        depth,
        f"one of {depths}, or null with model.block and model.stage_blocks",
    )
    if depth is not None:
        for key, value in (("block", block), ("stage_blocks", stages)):
            require(value is None, f"model.{key}", value, f"null when model.depth is set ({depth})")
    else:
        blocks = " or ".join(ResNetBlock)
        require(block is not None, "model.block", block, f"{blocks} when model.depth is null")
        require(
            isinstance(stages, list) and len(stages) > 0 and all(map(positive_int, stages)),
            "model.stage_blocks",
            stages,
            "a non-empty list of positive integers (residual blocks per stage) when "
            "model.depth is null",
        )
    require(positive_int(model["width"]), "model.width", model["width"], "an integer >= 1")
    momentum, epsilon = model["bn_momentum"], model["bn_epsilon"]
    require(0 <= momentum < 1, "model.bn_momentum", momentum, "in [0, 1)")
    require(epsilon > 0, "model.bn_epsilon", epsilon, "> 0")
    _validate_dropout(model)


def validate_keras_app(model: Mapping[str, Any]) -> None:
    """``model=keras_app``: a constructor of keras.applications, image size and dropout
    (whether the application takes that size, and whether its ImageNet weights are in the
    Keras cache, is checked when it is built)."""
    application = model["application"]
    require(
        application in KERAS_APPLICATIONS,
        "model.application",
        application,
        "one of " + ", ".join(KERAS_APPLICATIONS),
    )
    size = model["image_size"]
    require(int_or_none(size), "model.image_size", size, "null or an integer >= 1")
    momentum = model["bn_momentum"]
    require(
        momentum is None or 0 <= momentum < 1,
        "model.bn_momentum",
        momentum,
        "null (the application's own) or in [0, 1)",
    )
    _validate_dropout(model)


# The value checks of each model family that has a schema, by model.name.
MODEL_CHECKS = {"cnn": validate_cnn, "resnet": validate_resnet, "keras_app": validate_keras_app}
