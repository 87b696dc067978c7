"""``model=keras_app``: a constructor of ``keras.applications`` as the base of a classifier.

image [0, 1] -> [resize] -> input scaling -> application (include_top=False,
pooling="avg") -> [dropout] -> logits (float32).

What each application expects is made from what the dataset gives:

- **Size**: an application refuses images smaller than its minimum side
  (:data:`MIN_SIZE`, from each constructor's check in the Keras source), so
  smaller ones are resized up to it (bilinear); ``image_size`` resizes to a
  side of your choice instead (e.g. 224 for ImageNet weights).
- **Batch norm**: ``bn_momentum`` replaces the momentum of every batch-norm layer
  of the application; the MobileNets' 0.999 needs thousands of steps before the
  statistics used at inference settle, too slow for a short run from scratch.
- **Range and channels**: our images are float32 in [0, 1]; each application
  family expects what its ``keras.applications.<module>.preprocess_input`` makes
  of [0, 255] pixels (:data:`INPUT_SCALING`): [-1, 1] ("tf"), ImageNet-normalised
  ("torch"), BGR minus the ImageNet mean ("caffe"), or [0, 255] itself for those
  whose preprocessing layers are part of the model. That is a fixed affine map of
  each pixel's colour, from C channels to the 3 the applications take, so grey
  images are repeated to RGB by the same map.
- **ImageNet weights** (``weights: imagenet``) are read from the Keras cache
  only (``$KERAS_HOME/models`` or ``~/.keras/models``): a run never downloads.
  While the application is built, Keras' ``get_file`` is replaced by
  :func:`_cached_file_only`, which returns the file Keras asks for if it is in
  the cache with the expected hash, and otherwise refuses in one line naming it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np

from trainer.errors import UserError

# The smallest side each application accepts (Keras' obtain_input_shape(min_size=...)).
DEFAULT_MIN_SIZE = 32
MIN_SIZE = {"InceptionResNetV2": 75, "InceptionV3": 75, "Xception": 71}

# What each application module's preprocess_input does to [0, 255] RGB pixels.
INPUT_SCALING = {
    "convnext": "in_model",
    "densenet": "torch",
    "efficientnet": "in_model",
    "efficientnet_v2": "in_model",
    "inception_resnet_v2": "tf",
    "inception_v3": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "mobilenet_v3": "in_model",
    "nasnet": "tf",
    "resnet": "caffe",
    "resnet_v2": "tf",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "xception": "tf",
}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])  # RGB, of pixels in [0, 1] ("torch")
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
CAFFE_MEAN = np.array([123.68, 116.779, 103.939])  # RGB, of pixels in [0, 255] ("caffe")


def build_keras_app(
    cfg: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """The classifier ``cfg`` (a ``KerasAppConfig`` section, checked by
    ``validate_keras_app``) describes, for images of ``input_shape`` (H, W, C) in [0, 1]."""
    name = str(cfg["application"])
    constructor = getattr(keras.applications, name)
    height, width, channels = input_shape
    size = _image_size(cfg, name, height, width)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if size != (height, width):
        x = keras.layers.Resizing(*size, name="resize")(x)
    scaling = keras.layers.Dense(3, trainable=False, dtype="float32", name="input_scaling")
    x = scaling(x)
    scaling.set_weights(list(input_scaling(application_module(constructor), channels)))

    weights = None if cfg["weights"] is None else str(cfg["weights"])
    try:
        with _cached_file_only(name):
            base = constructor(
                include_top=False, weights=weights, input_shape=(*size, 3), pooling="avg"
            )
    except ValueError as error:  # the application's own argument checks
        reason = str(error).strip().splitlines()[0]
        raise UserError(f"model.application={name} cannot be built: {reason}") from None
    if cfg["bn_momentum"] is not None:
        for layer in base.layers:  # the applications are flat functional models
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(cfg["bn_momentum"])
    base.trainable = bool(cfg["trainable_base"])
    # A frozen base keeps its batch norm in inference mode (Keras' fine-tuning guide).
    x = base(x, training=None if base.trainable else False)
    if cfg["dropout"]:
        x = keras.layers.Dropout(cfg["dropout"], name="dropout_head")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=f"keras_app_{name}")


def application_module(constructor: Any) -> str:
    """The ``keras.applications`` module of a constructor: ``mobilenet_v3``, ``resnet``..."""
    return constructor.__module__.rsplit(".", 1)[-1]


def input_scaling(module: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of the affine map from ``channels`` colours in [0, 1] to the 3 inputs
    the application of ``module`` expects: ``x @ kernel + bias``.

    A Dense layer rather than Rescaling: Rescaling scales each channel by itself and
    cannot reorder channels (caffe's RGB -> BGR) or repeat grey into three.
    """
    mode = INPUT_SCALING[module]
    if mode == "in_model":
        scale, offset = np.full(3, 255.0), np.zeros(3)
    elif mode == "tf":
        scale, offset = np.full(3, 2.0), np.full(3, -1.0)
    elif mode == "torch":
        scale, offset = 1.0 / IMAGENET_STD, -IMAGENET_MEAN / IMAGENET_STD
    else:  # caffe: BGR, each channel in [0, 255] minus its ImageNet mean, no scaling
        scale, offset = np.full(3, 255.0), -CAFFE_MEAN
    order = [2, 1, 0] if mode == "caffe" else [0, 1, 2]  # output channel <- input colour
    kernel = np.zeros((channels, 3))
    for out, colour in enumerate(order):
        if channels == 1:
            kernel[0, out] = scale[colour]  # grey: the same value in every colour
        else:
            kernel[colour, out] = scale[colour]
    return kernel.astype("float32"), offset[order].astype("float32")


def _image_size(cfg: Mapping[str, Any], name: str, height: int, width: int) -> tuple[int, int]:
    minimum = MIN_SIZE.get(name, DEFAULT_MIN_SIZE)
    if cfg["image_size"] is None:
        return max(height, minimum), max(width, minimum)
    size = int(cfg["image_size"])
    if size < minimum:
        raise UserError(
            f"model.image_size must be >= {minimum} for {name} (its smallest input side), "
            f"got {size}"
        )
    return size, size


@contextlib.contextmanager
def _cached_file_only(application: str) -> Iterator[None]:
    """While building ``application``, Keras' ``get_file`` returns files from its cache only.

    The applications fetch their weights with ``keras.src.utils.file_utils.get_file``,
    which downloads a missing file, and re-downloads (deleting the old one) a file
    whose hash does not match. Here a missing or mismatching file is a UserError
    instead, raised before any network access or change to the cache.
    """
    from keras.src.utils import file_utils

    def get_file(fname=None, origin=None, *, cache_subdir="datasets", cache_dir=None, **kwargs):
        path = keras_cache_path(fname, origin, cache_subdir, cache_dir)
        file_hash = kwargs.get("file_hash") or kwargs.get("md5_hash")
        algorithm = kwargs.get("hash_algorithm", "auto") if kwargs.get("file_hash") else "md5"
        fix = f"download it where a network is, e.g. keras.applications.{application}("
        fix += "weights='imagenet', include_top=False), and copy it there"
        if not os.path.isfile(path):
            raise UserError(f"model.weights=imagenet needs {path} in the Keras cache: {fix}")
        if file_hash and not file_utils.validate_file(path, file_hash, algorithm=algorithm):
            raise UserError(
                f"model.weights=imagenet: {path} in the Keras cache does not match its "
                f"expected hash (an incomplete download?): {fix}"
            )
        return path

    original = file_utils.get_file
    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = original


def keras_cache_path(
    fname: str | None, origin: str | None, cache_subdir: str, cache_dir: str | None = None
) -> str:
    """Where Keras' ``get_file(fname, origin, cache_subdir=...)`` keeps its file.

    The same rules as ``keras.src.utils.file_utils.get_file`` (Keras 3.15), which
    has no function of its own for them: ``cache_dir`` or the Keras home, or
    ``/tmp/.keras`` when that is not writable; the file name from ``origin`` when
    ``fname`` is not given.
    """
    from keras.src.backend import config

    base = os.path.expanduser(cache_dir or config.keras_home())
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    name = os.fspath(fname) if fname else os.path.basename(urllib.parse.urlsplit(origin).path)
    return os.path.join(base, cache_subdir, name)
