"""``trainer export CHECKPOINT OUT``: a model file that plain Keras or TF Serving loads.

The model is rebuilt from the checkpoint's config through the model registry
(``trainer.models.build_model``) for the input shape and class count the
manifest records, and its weights are restored with
``trainer.checkpoint.state.restore_state``, exactly as a resume does. Then:

- ``--format keras``: ``model.save(OUT.keras)``. Not compiled by default, so
  the file holds no optimizer and no schedule: plain
  ``keras.saving.load_model(OUT, safe_mode=True)`` loads it with no custom
  objects. ``--compile`` compiles it with the checkpoint's optimizer class at
  a constant learning rate (the rate at the saved step) with the checkpoint's
  step and moments, sparse categorical cross-entropy on logits and accuracy:
  still loadable without custom objects, and ready for ``fit``.
- ``--format savedmodel``: ``model.export(OUT)``, a TensorFlow SavedModel with
  a ``serve`` endpoint, for TF Serving or ``tf.saved_model.load``.

The model maps float32 images scaled to [0, 1] to logits (no softmax).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from trainer.errors import UserError, storage_errors
from trainer.tools import OK, add_import_argument, new_output_path, print_json, valid_checkpoint

NAME = "export"
HELP = "write a checkpoint's model as a .keras file or a SavedModel"
DESCRIPTION = """\
Rebuild the model of a checkpoint from its config, restore its weights, and
write it for use outside this project: a .keras file that plain
keras.saving.load_model(path, safe_mode=True) loads with no custom objects, or
a TensorFlow SavedModel for serving. Inputs: float32 images scaled to [0, 1];
outputs: logits. CHECKPOINT is a checkpoint, or a run (its newest valid one).
OUT must not exist.

examples:
  python -m trainer export runs/<run>/step-00000450 model.keras
  python -m trainer export runs/<run> --format savedmodel serving/digits/1
  python -m trainer export runs/<run> model.keras --compile"""

FORMATS = ("keras", "savedmodel")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint or run directory")
    parser.add_argument("out", metavar="OUT", help="the .keras file or SavedModel folder to write")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="keras or savedmodel (default: keras if OUT ends in .keras, else savedmodel)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="(keras) compile with the checkpoint's optimizer at a constant learning rate",
    )
    add_import_argument(parser, "model builder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def rebuild_model(checkpoint, config: dict[str, Any]):
    """The checkpoint's model, built from its config through the registry, weights restored."""
    import trainer.rescued_model  # noqa: F401  (registers "keras_builtin", rescued models)
    from trainer.checkpoint.state import restore_state
    from trainer.models import build_model

    manifest = checkpoint.manifest
    input_shape, num_classes = manifest.get("input_shape"), manifest.get("num_classes")
    if input_shape is None or num_classes is None:
        # Checkpoints written before the manifest recorded them: ask the dataset.
        from trainer.data import load_data

        print(
            "The manifest lacks input_shape/num_classes: reading the dataset's info",
            file=sys.stderr,
        )
        dataset = dict(config["dataset"], download=False)
        info = load_data(dataset, seed=int(config.get("seed", 0))).info
        input_shape, num_classes = info.input_shape, info.num_classes
    model = build_model(config["model"], tuple(input_shape), int(num_classes))
    restore_state(checkpoint, model, None)
    return model, tuple(input_shape), int(num_classes)


def run(args: argparse.Namespace) -> int:
    from trainer.checkpoint.reading import read_checkpoint_config
    from trainer.startup import import_tensorflow, import_user_modules

    checkpoint = valid_checkpoint(args.checkpoint)
    out = new_output_path(args.out)
    export_format = args.format or ("keras" if out.suffix == ".keras" else "savedmodel")
    if export_format == "keras" and out.suffix != ".keras":
        raise UserError(
            f"--format keras writes a .keras file; OUT must end in .keras, got {args.out!r}"
        )
    if args.compile and export_format != "keras":
        raise UserError("--compile applies to --format keras only")
    config = read_checkpoint_config(checkpoint)
    import_user_modules(args.imports)
    _, keras = import_tensorflow()
    model, input_shape, num_classes = rebuild_model(checkpoint, config)
    compiled = None
    if export_format == "keras" and args.compile:
        compiled = _compile(keras, model, config, checkpoint)
    try:
        with storage_errors(f"write {str(out)!r}"):
            _write(model, out, export_format)
    except BaseException:  # OUT did not exist before: what was written of it goes
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out, ignore_errors=True)
        else:
            out.unlink(missing_ok=True)
        raise
    result = {
        "checkpoint": str(checkpoint.path),
        "out": str(out),
        "format": export_format,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "outputs": "logits",
        "compiled": compiled,
    }
    if args.json:
        print_json(result)
        return OK
    print(f"Exported {checkpoint.path} (step {checkpoint.global_step}) to {out}")
    print(
        f"Model: float32 images {input_shape} scaled to [0, 1] -> {num_classes} logits "
        "(apply softmax for probabilities)"
    )
    if export_format == "keras":
        if compiled:
            print(
                f"Compiled with {compiled['optimizer']} at a constant learning rate "
                f"{compiled['learning_rate']:.4g} (the rate at the saved step; no schedule), "
                f"optimizer state: {compiled['state']}; sparse categorical cross-entropy on "
                "logits, accuracy"
            )
        else:
            print(
                "Not compiled: no optimizer or schedule in the file (add --compile to include one)"
            )
        print(f"Load with: keras.saving.load_model({str(out)!r})  # no custom objects needed")
    else:
        print(f"Serve with TF Serving, or: tf.saved_model.load({str(out)!r}).serve(images)")
    return OK


def _write(model, out: Path, export_format: str) -> None:
    if export_format == "keras":
        model.save(out)
        return
    try:
        model.export(str(out), format="tf_saved_model", verbose=False)
    except TypeError:  # a Keras without the verbose argument
        model.export(str(out), format="tf_saved_model")


def _compile(keras, model, config: dict[str, Any], checkpoint) -> dict[str, Any]:
    from trainer.optimizers import build_optimizer

    learning_rate = checkpoint.manifest.get("learning_rate")
    if not isinstance(learning_rate, int | float) or learning_rate <= 0:
        learning_rate = float(config["optimizer"]["learning_rate"])
    optimizer = build_optimizer(config["optimizer"], float(learning_rate))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    optimizer.build(model.trainable_variables)  # saved built, so loading restores its variables
    return {
        "optimizer": config["optimizer"]["name"],
        "learning_rate": float(learning_rate),
        "state": _copy_optimizer_state(checkpoint, optimizer),
    }


def _copy_optimizer_state(checkpoint, optimizer) -> str:
    """The checkpoint's step and moments into ``optimizer``, when they fit; say what happened.

    ``optimizer.h5`` holds ``[iterations, *slots]`` of an optimizer driven by a
    schedule; this one, at a constant rate, also has a ``learning_rate`` variable.
    """
    from trainer.checkpoint.state import read_optimizer_values

    saved = read_optimizer_values(checkpoint)  # checked: a bad file or step is a UserError
    slots = [
        v
        for v in optimizer.variables
        if v is not optimizer.iterations and v.name != "learning_rate"
    ]
    if len(saved) != len(slots) + 1 or any(
        tuple(s.shape) != tuple(v.shape) or s.dtype.kind != "f"
        for s, v in zip(saved[1:], slots, strict=True)
    ):
        return "fresh (the checkpoint's optimizer variables do not fit)"
    optimizer.iterations.assign(saved[0])
    for value, variable in zip(saved[1:], slots, strict=True):
        variable.assign(value)
    return f"step {int(saved[0])} and moments from the checkpoint"
