"""The ``keras_builtin`` model: a Keras model of built-in layers, kept as its Keras config.

``trainer rescue`` turns a model saved by plain Keras into a checkpoint of
this project. Its architecture is not a ``cnn`` of the registry, so the
checkpoint's model section holds the model's own Keras config, as data::

    model:
      name: keras_builtin
      keras_config: {module: keras.src.models.functional, class_name: Functional, config: ...}

Rebuilding it is Keras deserialization, which this project otherwise never
does from a file. It is allowed here only behind two locks:

1. :func:`check_keras_config` walks the whole config first. Every object it
   names must be in an allow-list of Keras built-ins: layers (no ``Lambda``,
   no wrappers of foreign code), initializers, regularizers, constraints,
   dtype policies, activations by name. A custom or registered class
   (``registered_name`` of its own), a serialized function or lambda, a module
   outside Keras, an OmegaConf interpolation (``${...}``) or a Hydra
   instantiation key (``_target_``) anywhere is refused.
2. ``keras.saving.deserialize_keras_object(config, safe_mode=True)``.

Nothing of the user's code is ever needed or run: a model that uses custom
layers cannot be rescued this way (its weights can still be read with h5py).
The builder then checks that the model takes the dataset's input shape and
gives one output of ``num_classes`` logits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import keras

from checkpoints.reading import FORBIDDEN_KEYS
from trainer.config import ACTIVATIONS as CONFIG_ACTIVATIONS
from trainer.errors import UserError
from trainer.models.registry import register_model

NAME = "keras_builtin"

LAYERS = frozenset(
    """
    InputLayer Dense EinsumDense Embedding Identity Masking
    Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose Conv3DTranspose
    SeparableConv1D SeparableConv2D DepthwiseConv1D DepthwiseConv2D
    MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D
    GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D
    GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D
    Flatten Reshape Permute RepeatVector Cropping1D Cropping2D Cropping3D
    ZeroPadding1D ZeroPadding2D ZeroPadding3D UpSampling1D UpSampling2D UpSampling3D
    Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D
    GaussianNoise GaussianDropout AlphaDropout ActivityRegularization
    BatchNormalization LayerNormalization GroupNormalization UnitNormalization
    Activation ReLU LeakyReLU PReLU ELU Softmax
    Rescaling Normalization CenterCrop Resizing
    RandomFlip RandomRotation RandomTranslation RandomZoom RandomContrast RandomCrop
    Add Subtract Multiply Average Maximum Minimum Concatenate Dot
    """.split()  # noqa: SIM905 (a word list reads better than dozens of quoted names)
)
INITIALIZERS = frozenset(
    """
    Constant GlorotNormal GlorotUniform HeNormal HeUniform Identity IdentityInitializer
    LecunNormal LecunUniform Ones Orthogonal OrthogonalInitializer RandomNormal
    RandomUniform TruncatedNormal VarianceScaling Zeros
    """.split()  # noqa: SIM905 (a word list reads better than dozens of quoted names)
)
ALLOWED: dict[str, frozenset[str]] = {
    "keras.layers": LAYERS,
    "keras.initializers": INITIALIZERS,
    "keras.regularizers": frozenset({"L1", "L2", "L1L2", "OrthogonalRegularizer"}),
    "keras.constraints": frozenset({"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"}),
    "keras": frozenset({"DTypePolicy", "FloatDTypePolicy", "Sequential", "Functional", "Model"}),
    "keras.models": frozenset({"Sequential", "Functional", "Model"}),
    "keras.src.models.functional": frozenset({"Functional"}),
    "keras.src.models.sequential": frozenset({"Sequential"}),
}
MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})  # "Model": older Keras 2 files
# Plain data markers of Keras' config format (a symbolic tensor reference, a tuple).
MARKERS = frozenset({"__keras_tensor__", "__tuple__"})
# Keras' built-in activation names: the list the config's model.activation is checked against.
ACTIVATIONS = frozenset(CONFIG_ACTIVATIONS)
_ANY_ALLOWED = frozenset().union(*ALLOWED.values())
MAX_DEPTH = 64
MAX_NODES = 200_000


def check_keras_config(config: Any) -> None:
    """Refuse (UserError) a Keras model config that names anything but allowed built-ins.

    Pure data inspection: nothing is imported or built. Legacy configs (Keras 2
    ``.h5`` files) have no ``module`` keys; their class names must be allowed
    built-ins of some allowed module.
    """
    class_name = config.get("class_name") if isinstance(config, Mapping) else None
    if not (isinstance(class_name, str) and class_name in MODEL_CLASSES):
        found = repr(class_name)[:60] if isinstance(config, Mapping) else type(config).__name__
        raise UserError(
            f"the model is a {found}; only Keras Sequential or functional models "
            "of built-in layers can be rescued (a subclassed model's code is not in the file)"
        )
    _ConfigWalk().node(config, "", 0)


class _ConfigWalk:
    """Visits every node of a model config once, bounded in depth and count."""

    def __init__(self) -> None:
        self.nodes = 0

    def node(self, node: Any, where: str, depth: int) -> None:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise UserError("the model config is nested too deeply or too large to be a model")
        if isinstance(node, Mapping):
            self.mapping(node, where, depth)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                self.node(item, f"{where}[{index}]", depth + 1)
        elif isinstance(node, str):
            if "${" in node:
                raise UserError(
                    f"the model config holds an interpolation at {where}: {node[:60]!r}"
                )
        elif node is not None and not isinstance(node, bool | int | float):
            raise UserError(f"the model config holds a {type(node).__name__} at {where}")

    def mapping(self, node: Mapping[str, Any], where: str, depth: int) -> None:
        if "class_name" in node:
            _check_object(node, where)
        for key, value in node.items():
            if not isinstance(key, str):
                raise UserError(f"the model config has a non-string key at {where}")
            if key in FORBIDDEN_KEYS:  # a resume would refuse the checkpoint: refuse it now
                raise UserError(f"the model config holds the key {key!r} at {where}")
            is_activation = key in ("activation", "recurrent_activation")
            if is_activation and isinstance(value, str) and value not in ACTIVATIONS:
                raise UserError(
                    f"activation {value!r} at {where} is not a Keras built-in activation"
                )
            self.node(value, f"{where}.{key}" if where else key, depth + 1)


def _check_object(node: Mapping[str, Any], where: str) -> None:
    class_name = node.get("class_name")
    module = node.get("module")
    registered = node.get("registered_name")
    for key, value in (("class_name", class_name), ("module", module)):
        if not isinstance(value, str | None):
            raise UserError(
                f"the model config's {key} at {where or 'the top'} is a "
                f"{type(value).__name__}, not a name"
            )
    if not isinstance(registered, str | None):
        raise UserError(f"the model config's registered_name at {where} is not a name")
    label = f"{module}.{class_name}" if module else str(class_name)
    if class_name in MARKERS and module is None:
        return
    if class_name == "function":
        if module == "keras.activations" and node.get("config") in ACTIVATIONS:
            return
        raise UserError(
            f"the model config holds a function ({label} {node.get('config')!r}) at {where}; "
            "only built-in layers and activations can be rescued"
        )
    if registered not in (None, class_name):
        raise UserError(
            f"the model uses {registered!r} (a custom registered class) at {where}; only "
            "Keras built-in layers can be rescued, nothing of your own code is run"
        )
    allowed = ALLOWED.get(module) if module is not None else _ANY_ALLOWED
    if allowed is None or class_name not in allowed:
        raise UserError(
            f"the model uses {label} at {where}, which is not an allowed Keras built-in "
            "(Lambda layers, custom classes and foreign code are never rebuilt)"
        )


def plain_config(model: keras.Model) -> dict[str, Any]:
    """The Keras config of ``model`` as plain JSON data (tuples become lists)."""
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    return json.loads(json.dumps(config))


def rebuild(config: Mapping[str, Any]) -> keras.Model:
    """The model of a checked Keras config, deserialized with ``safe_mode=True``."""
    check_keras_config(config)
    try:
        model = keras.saving.deserialize_keras_object(dict(config), safe_mode=True)
    except Exception as error:  # Keras raises TypeError, ValueError, KeyError...
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"the model's Keras config could not be rebuilt: {first_line}") from None
    if not isinstance(model, keras.Model):
        raise UserError(f"the model's Keras config builds a {type(model).__name__}, not a model")
    return model


@register_model(NAME)
def build_keras_builtin(
    cfg: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """The model ``cfg["keras_config"]`` describes, checked against the data's shapes."""
    config = cfg.get("keras_config")
    if not hasattr(config, "items"):
        raise UserError(f"model {NAME!r} needs model.keras_config, the model's Keras config")
    if not isinstance(config, dict):  # an OmegaConf node, from a resumed run's config
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(config, resolve=False)
    model = rebuild(config)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(
            f"the rescued model has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; this trainer trains models with one image input and one output"
        )
    model_input = tuple(model.inputs[0].shape[1:])
    if model_input != tuple(input_shape):
        raise UserError(
            f"the rescued model takes inputs of shape {model_input}, the dataset gives "
            f"{tuple(input_shape)}: choose the dataset it was trained on (dataset=...)"
        )
    model_output = tuple(model.outputs[0].shape[1:])
    if model_output != (num_classes,):
        raise UserError(
            f"the rescued model outputs shape {model_output}, the dataset has {num_classes} "
            "classes: choose the dataset it was trained on (dataset=...)"
        )
    return model


def without_output_softmax(config: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The config with a final softmax removed (this trainer's loss takes logits), and a note.

    Handles a last layer with ``activation: softmax`` (set to linear) and a
    trailing ``Softmax``/``Activation(softmax)`` layer (dropped). The argmax of
    the outputs, hence every prediction, is unchanged.
    """
    config = json.loads(json.dumps(config))
    body = config.get("config", {})
    layers = body.get("layers") if isinstance(body, dict) else None
    if not (isinstance(layers, list) and layers and all(isinstance(x, dict) for x in layers)):
        return config, None  # not a layer list: Keras' rebuild says what is wrong
    if config.get("class_name") == "Sequential":
        last = layers[-1]
    else:
        outputs = body.get("output_layers")
        if isinstance(outputs, list) and len(outputs) == 1 and isinstance(outputs[0], list):
            outputs = outputs[0]
        if not (isinstance(outputs, list) and len(outputs) == 3 and isinstance(outputs[0], str)):
            return config, None  # several outputs: the builder refuses them
        matches = [layer for layer in layers if layer.get("name") == outputs[0]]
        if len(matches) != 1:
            return config, None
        last = matches[0]
    layer_config = last.get("config", {})
    if not isinstance(layer_config, dict):
        return config, None
    name = layer_config.get("name", last.get("class_name"))
    if layer_config.get("activation") == "softmax" and last.get("class_name") != "Activation":
        layer_config["activation"] = "linear"
        return config, f"the softmax of output layer {name!r} was set to linear"
    is_softmax_layer = last.get("class_name") == "Softmax" or (
        last.get("class_name") == "Activation" and layer_config.get("activation") == "softmax"
    )
    if not is_softmax_layer:
        return config, None
    if config.get("class_name") == "Sequential":
        layers.pop()
        return config, f"the final softmax layer {name!r} was removed"
    try:
        history = last["inbound_nodes"][0]["args"][0]["config"]["keras_history"]
    except (KeyError, IndexError, TypeError):
        return config, None
    users = [
        layer
        for layer in layers
        if layer is not last and f'"keras_history": ["{name}"' in json.dumps(layer)
    ]
    if users:
        return config, None
    layers.remove(last)
    body["output_layers"] = list(history)
    return config, f"the final softmax layer {name!r} was removed"
