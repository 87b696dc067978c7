"""``trainer predict CHECKPOINT IMAGE_OR_DIR...``: the top-k classes of image files.

The model is the one ``evaluate`` and ``export`` use
(``trainer.build.build_model_from_checkpoint``), run through the same forward pass
as the evaluation (``trainer.training.evaluation.Evaluation.logits``); probabilities
are the softmax of its logits.

Each file is decoded with ``tf.io.decode_image`` (PNG, JPEG, WebP, GIF: its first
frame, BMP), then made what the model was trained on (:func:`model_input`):
an alpha channel dropped, grayscale <-> RGB converted
(``tf.image.rgb_to_grayscale``, ``grayscale_to_rgb``), scaled to float32 in
[0, 1] as training scales (``x / 255``), and resized to the checkpoint's
``input_shape`` when its size differs: by area averaging when it shrinks
(each output pixel the mean of the pixels it covers), bilinear with
antialiasing otherwise. An image already of the model's size and channels is
exactly what the training pipeline fed the model.

A directory means every file in it and its subdirectories (hidden ones
skipped, symlinked directories not followed) whose name ends in an image
suffix (:data:`IMAGE_SUFFIXES`), in sorted order. Every input is read and
decoded before anything is predicted; one that cannot be (a file given by
name that is not an image, a truncated image, a folder with no image) is one
line ``error: ...`` naming it, exit status 2, and nothing is printed: a partial
answer would read like a complete one.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from trainer.errors import UserError
from trainer.exits import OK
from trainer.runs.remote_run import location
from trainer.tools.arguments import add_import_argument, add_top_k_argument
from trainer.tools.finding import existing_path, valid_checkpoint
from trainer.tools.output import class_names, print_json

NAME = "predict"
HELP = "the top-k classes and their probabilities for image files"
DESCRIPTION = """\
Predict the classes of image files (PNG, JPEG, GIF, BMP, WebP) with a checkpoint's
model: for each image the top-k classes and their probabilities. Images are
converted to the model's channels (grayscale <-> RGB), scaled to [0, 1] and
resized to its input size, as training fed it. A directory means every image
file under it (recursively, sorted). A file that cannot be decoded is refused
with one line naming it. CHECKPOINT is a checkpoint, or a run (its newest
valid one).

examples:
  python -m trainer predict runs/<run> digit.png
  python -m trainer predict runs/<run>/step-00000450 photos/ --top-k 3 --json"""

# What tf.io.decode_image reads, by file name; in a directory, other files are not images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
MAX_IMAGE_BYTES = 256 << 20  # a file larger than this is not an image to classify
BATCH_SIZE = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint or run directory")
    parser.add_argument(
        "inputs", metavar="IMAGE_OR_DIR", nargs="+", help="image files or directories of them"
    )
    add_top_k_argument(parser)
    add_import_argument(parser, "model builder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def image_files(inputs: list[str]) -> list[Path]:
    """The image files ``inputs`` name, in order (see the module docstring); a UserError
    for a path that does not exist or a directory with no image file."""
    files: list[Path] = []
    for text in inputs:
        path = existing_path(text)
        if not path.is_dir():
            files.append(path)
            continue
        found = []
        for directory, subdirs, names in os.walk(path):
            subdirs[:] = [name for name in subdirs if not name.startswith(".")]
            found.extend(
                Path(directory) / name
                for name in names
                if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)
            )
        if not found:
            raise UserError(
                f"{text!r} holds no image file (names ending in {', '.join(IMAGE_SUFFIXES)})"
            )
        files.extend(sorted(found))
    return files


def read_image(path: Path) -> bytes:
    """The bytes of image file ``path``; a UserError naming it if it cannot be read."""
    if not path.is_file():  # a FIFO or a device would block or never end
        raise UserError(f"{str(path)!r} is not a regular file")
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise UserError(f"{str(path)!r} is larger than {MAX_IMAGE_BYTES} bytes")
        return path.read_bytes()
    except OSError as error:
        raise UserError(f"{str(path)!r} cannot be read ({error.strerror})") from None


def model_input(path: Path, data: bytes, input_shape: tuple[int, ...]):
    """``data`` (an encoded image) as the model's input, float32 ``input_shape`` in [0, 1],
    and the decoded image's shape (height, width, channels).

    See the module docstring for the conversions; a UserError naming ``path``
    if it is not an image, or the model takes channels it cannot be given.
    """
    import tensorflow as tf

    height, width, channels = input_shape
    try:
        # uint8, as the datasets store images; the first frame of an animation.
        image = tf.io.decode_image(data, expand_animations=False)
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise UserError(
            f"{str(path)!r} is not an image tf.io.decode_image can read "
            f"(PNG, JPEG, GIF, BMP, WebP): {decoder_reason(error)}"
        ) from None
    decoded_shape = [int(d) for d in image.shape]
    image = tf.cast(image, tf.float32) / 255.0  # as trainer.data.pipeline scales a batch
    found = decoded_shape[-1]
    if found in (2, 4):  # gray + alpha, RGB + alpha: the colour alone
        image = image[..., : found - 1]
        found -= 1
    if found == 3 and channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    elif found == 1 and channels == 3:
        image = tf.image.grayscale_to_rgb(image)
    elif found != channels:
        raise UserError(
            f"{str(path)!r} has {found} channels; the model takes {channels}, and only "
            "grayscale <-> RGB is converted"
        )
    size = tuple(decoded_shape[:2])
    if size != (height, width):
        shrinks = size[0] >= height and size[1] >= width
        image = tf.image.resize(
            image, (height, width), method="area" if shrinks else "bilinear", antialias=True
        )
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image.numpy(), decoded_shape


def decoder_reason(error: Exception) -> str:
    """TensorFlow's reason, without the op and function names it wraps it in."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]", "", text)
    return " ".join(text.split())[:200] or type(error).__name__


def predictions(logits, top_k: int, names: list[str]) -> list[list[dict[str, Any]]]:
    """For each row of ``logits``: its ``top_k`` classes, most probable first (softmax)."""
    import numpy as np
    import tensorflow as tf

    probabilities = tf.nn.softmax(tf.constant(logits), axis=-1).numpy()
    result = []
    for row in probabilities:
        best = np.argsort(-row, kind="stable")[:top_k]
        result.append(
            [{"class": names[i], "index": int(i), "probability": float(row[i])} for i in best]
        )
    return result


def run(args: argparse.Namespace) -> int:
    from trainer.config.saved import read_checkpoint_config
    from trainer.startup import import_tensorflow, import_user_modules

    checkpoint = valid_checkpoint(args.checkpoint)
    config = read_checkpoint_config(checkpoint)
    files = image_files(args.inputs)
    encoded = [read_image(path) for path in files]  # all readable before TensorFlow starts
    import_user_modules(args.imports)
    tf, _ = import_tensorflow()

    from trainer.build import build_model_from_checkpoint
    from trainer.training.evaluation import Evaluation

    model, input_shape, num_classes = build_model_from_checkpoint(checkpoint, config)
    if len(input_shape) != 3:
        raise UserError(f"the checkpoint's model takes {input_shape}, not images (H, W, C)")
    inputs, sizes = [], []
    for path, data in zip(files, encoded, strict=True):
        image, size = model_input(path, data, input_shape)
        inputs.append(image)
        sizes.append(size)
    batches = tf.data.Dataset.from_tensor_slices(tf.stack(inputs)).batch(BATCH_SIZE)
    evaluation = Evaluation(model, jit_compile=bool(config["trainer"].get("jit_compile", False)))
    logits, _ = evaluation.logits(batches)
    names = class_names(checkpoint.manifest.get("class_names"), num_classes)
    top = predictions(logits, min(args.top_k, num_classes), names)
    images = [
        {"path": str(path), "size": size, "top": best}
        for path, size, best in zip(files, sizes, top, strict=True)
    ]
    if args.json:
        print_json(
            {
                "checkpoint": location(checkpoint.path),
                "global_step": checkpoint.global_step,
                "input_shape": list(input_shape),
                "top_k": min(args.top_k, num_classes),
                "images": images,
            }
        )
        return OK
    for image in images:
        shown = ", ".join(f"{t['class']} {t['probability']:.4f}" for t in image["top"])
        print(f"{image['path']}: {shown}")
    return OK
