"""``model=resnet``: residual networks (He et al. 2016, "Deep Residual Learning").

stem -> stages of residual blocks -> global average pooling -> [dropout] -> logits.

- Depth: ``depth`` 18/34 (basic blocks: two 3x3 convs) or 50/101/152
  (bottleneck blocks: 1x1 -> 3x3 -> 1x1 with 4x expansion), the paper's Table 1
  (``trainer.config.model.RESNET_DEPTHS``); or ``depth: null`` with ``block`` and
  ``stage_blocks`` for any other shape (e.g. CIFAR's ResNet-20 as
  ``block=basic stage_blocks=[3,3,3]``).
- Widths: stage ``i`` has ``width * 2**i`` filters (x4 at a bottleneck's output).
  Every stage after the first halves the feature map, in the 3x3 conv of its first
  block (the "v1.5" placement torchvision uses; the paper strides the first 1x1).
  A block whose input and output shapes differ has a 1x1 conv + batch-norm
  shortcut (the paper's option B).
- Stem: ``imagenet`` is a 7x7 conv of stride 2 and a 3x3 max-pool of stride 2;
  ``small`` a 3x3 conv of stride 1 and no pooling, for small images (32 px
  CIFAR) that the ImageNet stem would shrink 4x at once; ``auto`` picks small for
  inputs of at most ``RESNET_SMALL_STEM_MAX_SIZE`` pixels a side.

Convolutions have no bias (batch norm follows each one) and He-normal initial
weights. The logits layer is float32 whatever the dtype policy, so mixed
precision keeps a float32 loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from trainer.config import RESNET_DEPTHS, RESNET_SMALL_STEM_MAX_SIZE

BOTTLENECK_EXPANSION = 4


def build_resnet(
    cfg: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """The ResNet ``cfg`` (a ``ResNetConfig`` section, checked by ``validate_resnet``)
    describes, for images of ``input_shape`` (H, W, C) and ``num_classes`` logits."""
    block, stage_blocks = resnet_blocks(cfg)
    layers = _Layers(cfg)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _stem(layers, inputs, cfg["width"], _stem_kind(cfg["stem"], input_shape))
    residual_block = _bottleneck_block if block == "bottleneck" else _basic_block
    for stage, blocks in enumerate(stage_blocks):
        filters = cfg["width"] * 2**stage
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            x = residual_block(layers, x, filters, stride, f"stage{stage + 1}_block{index + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if cfg["dropout"]:
        x = keras.layers.Dropout(cfg["dropout"], name="dropout_head")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=resnet_name(cfg))


def resnet_blocks(cfg: Mapping[str, Any]) -> tuple[str, list[int]]:
    """(block kind, residual blocks per stage): from ``depth``, else ``block`` and
    ``stage_blocks``."""
    if cfg["depth"] is not None:
        block, stage_blocks = RESNET_DEPTHS[int(cfg["depth"])]
        return block, list(stage_blocks)
    return str(cfg["block"]), [int(n) for n in cfg["stage_blocks"]]


def resnet_name(cfg: Mapping[str, Any]) -> str:
    block, stage_blocks = resnet_blocks(cfg)
    convs_per_block = 3 if block == "bottleneck" else 2
    return f"resnet{convs_per_block * sum(stage_blocks) + 2}"  # + the stem and the logits


def _stem_kind(stem: str, input_shape: tuple[int, ...]) -> str:
    if stem != "auto":
        return str(stem)
    return "small" if min(input_shape[:2]) <= RESNET_SMALL_STEM_MAX_SIZE else "imagenet"


class _Layers:
    """The conv, batch-norm and activation layers every block uses, configured once."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.momentum = float(cfg["bn_momentum"])
        self.epsilon = float(cfg["bn_epsilon"])
        self.zero_init_residual = bool(cfg["zero_init_residual"])

    def conv_bn(
        self, x: Any, filters: int, kernel: int, stride: int, name: str, *, last: bool = False
    ) -> Any:
        """conv -> batch norm; ``last``: the block's last one (zero gamma if configured)."""
        x = keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"{name}_conv",
        )(x)
        return keras.layers.BatchNormalization(
            momentum=self.momentum,
            epsilon=self.epsilon,
            gamma_initializer="zeros" if last and self.zero_init_residual else "ones",
            name=f"{name}_bn",
        )(x)

    def relu(self, x: Any, name: str) -> Any:
        return keras.layers.ReLU(name=name)(x)

    def shortcut(self, x: Any, filters: int, stride: int, name: str) -> Any:
        """The identity, or a 1x1 conv + batch norm when the shape changes (option B)."""
        if stride == 1 and x.shape[-1] == filters:
            return x
        return self.conv_bn(x, filters, 1, stride, f"{name}_shortcut")


def _stem(layers: _Layers, x: Any, filters: int, kind: str) -> Any:
    if kind == "small":
        return layers.relu(layers.conv_bn(x, filters, 3, 1, "stem"), "stem_relu")
    x = layers.relu(layers.conv_bn(x, filters, 7, 2, "stem"), "stem_relu")
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)


def _basic_block(layers: _Layers, x: Any, filters: int, stride: int, name: str) -> Any:
    shortcut = layers.shortcut(x, filters, stride, name)
    y = layers.relu(layers.conv_bn(x, filters, 3, stride, f"{name}_1"), f"{name}_1_relu")
    y = layers.conv_bn(y, filters, 3, 1, f"{name}_2", last=True)
    return layers.relu(keras.layers.Add(name=f"{name}_add")([shortcut, y]), f"{name}_out")


def _bottleneck_block(layers: _Layers, x: Any, filters: int, stride: int, name: str) -> Any:
    out = filters * BOTTLENECK_EXPANSION
    shortcut = layers.shortcut(x, out, stride, name)
    y = layers.relu(layers.conv_bn(x, filters, 1, 1, f"{name}_1"), f"{name}_1_relu")
    y = layers.relu(layers.conv_bn(y, filters, 3, stride, f"{name}_2"), f"{name}_2_relu")
    y = layers.conv_bn(y, out, 1, 1, f"{name}_3", last=True)
    return layers.relu(keras.layers.Add(name=f"{name}_add")([shortcut, y]), f"{name}_out")
