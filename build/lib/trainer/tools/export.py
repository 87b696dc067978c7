"""``trainer export CHECKPOINT OUT``: a checkpoint's model for Keras, TF Serving, ONNX or LiteRT.

The model is rebuilt from the checkpoint's config as training builds it
(``trainer.build.build_model_from_checkpoint``) for the input shape and class
count the manifest records, and its weights are restored with
``checkpoints.restore.restore_state``, exactly as a resume does. Then:

- ``--format keras``: ``model.save(OUT.keras)``. Not compiled by default, so
  the file holds no optimizer and no schedule: plain
  ``keras.saving.load_model(OUT, safe_mode=True)`` loads it with no custom
  objects. ``--compile`` compiles it with the checkpoint's optimizer class at
  a constant learning rate (the rate at the saved step) with the checkpoint's
  step and moments, sparse categorical cross-entropy on logits and accuracy:
  still loadable without custom objects, and ready for ``fit``.
- ``--format savedmodel``: ``model.export(OUT)``, a TensorFlow SavedModel with
  a ``serve`` endpoint, for TF Serving or ``tf.saved_model.load``.
- ``--format onnx``: ``model.export(OUT.onnx, format="onnx")`` (Keras converts
  through ``tf2onnx``), for ONNX Runtime.
- ``--format litert``: ``model.export(OUT.tflite, format="litert")`` (Keras
  converts through TensorFlow's own ``tf.lite`` converter), for the LiteRT
  interpreter (``ai-edge-litert``).

Without ``--format`` the suffix of OUT chooses: ``.keras``, ``.onnx``,
``.tflite``, anything else a SavedModel folder. The packages ``onnx`` needs
come with the ``export`` extra (``pip install "keras-hydra-trainer[export]"``);
without them the command says so in one line and writes nothing.

The model maps float32 images scaled to [0, 1] to logits (no softmax); every
format's input is named ``image``, with any batch size. OUT is written under a
temporary name beside it and renamed into place once complete, so OUT is
either absent or whole, and nothing already at OUT is ever replaced.

The model is written in float32 whatever ``trainer.precision`` the run trained in (the
weights are float32 in every precision; serving does not need a dtype policy).
A checkpoint of a run with ``optimizer.ema`` and ``trainer.evaluate_with_ema``
exports the moving average of the weights, as validation and test evaluated
it: the checkpoint's optimizer is rebuilt from its config, its variables (the
averages among them) restored by position as a resume restores them, and
Keras' ``finalize_variable_values`` puts the averages into the model.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import UserError, storage_errors
from trainer.exits import OK
from trainer.runs.remote_run import location
from trainer.tools.arguments import add_import_argument
from trainer.tools.finding import valid_checkpoint
from trainer.tools.output import new_output_path, print_json, write_new_output

NAME = "export"
HELP = "write a checkpoint's model as a .keras file, a SavedModel, ONNX or LiteRT"
DESCRIPTION = """\
Rebuild the model of a checkpoint from its config, restore its weights, and
write it for use outside this project: a .keras file that plain
keras.saving.load_model(path, safe_mode=True) loads with no custom objects, a
TensorFlow SavedModel for serving, an .onnx file for ONNX Runtime, or a .tflite
file for the LiteRT interpreter. Inputs: float32 images scaled to [0, 1], named
"image"; outputs: logits. CHECKPOINT is a checkpoint, or a run (its newest
valid one). OUT must not exist; it appears only once complete.

examples:
  python -m trainer export runs/<run>/step-00000450 model.keras
  python -m trainer export runs/<run> --format savedmodel serving/digits/1
  python -m trainer export runs/<run> model.keras --compile
  python -m trainer export runs/<run> model.onnx      # needs the export extra
  python -m trainer export runs/<run> model.tflite"""

EXTRA = 'pip install "keras-hydra-trainer[export]"'
INPUT_NAME = "image"  # the input of every format (trainer.models.registry names its input so too)


@dataclass(frozen=True)
class ExportFormat:
    """What ``--format NAME`` writes, how, and what it needs."""

    name: str
    suffix: str  # the suffix OUT must have; "" for a folder of any name
    keras_format: str | None  # ``model.export(format=...)``; None: ``model.save``
    packages: tuple[str, ...]  # modules the conversion imports, from the export extra
    usage: str  # the line that says how to load it: a template of {out} and {input}


FORMATS = {
    f.name: f
    for f in (
        ExportFormat(
            "keras",
            ".keras",
            None,
            (),
            "Load with: keras.saving.load_model({out!r})  # no custom objects needed",
        ),
        ExportFormat(
            "savedmodel",
            "",
            "tf_saved_model",
            (),
            "Serve with TF Serving, or: tf.saved_model.load({out!r}).serve(images)",
        ),
        ExportFormat(
            "onnx",
            ".onnx",
            "onnx",
            ("tf2onnx", "onnx"),
            "Run with: onnxruntime.InferenceSession({out!r}).run(None, {{{input!r}: images}})",
        ),
        # Keras converts through TensorFlow's own tf.lite: nothing to install to write the
        # file; ai-edge-litert (in the extra) is the interpreter that runs it.
        ExportFormat(
            "litert",
            ".tflite",
            "litert",
            (),
            "Run with: ai_edge_litert.interpreter.Interpreter({out!r}).get_signature_runner()"
            "({input}=images)",
        ),
    )
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint or run directory")
    parser.add_argument(
        "out", metavar="OUT", help="the .keras, .onnx or .tflite file, or SavedModel folder"
    )
    parser.add_argument(
        "--format",
        choices=tuple(FORMATS),
        help="default: from OUT's suffix (.keras, .onnx, .tflite; anything else savedmodel)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="(keras) compile with the checkpoint's optimizer at a constant learning rate",
    )
    add_import_argument(parser, "model builder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from trainer.build import build_model_from_checkpoint, uses_average_weights
    from trainer.config.saved import read_checkpoint_config
    from trainer.startup import import_tensorflow, import_user_modules

    checkpoint = valid_checkpoint(args.checkpoint)
    out = new_output_path(args.out)
    export_format = choose_format(args.format, out, args.out)
    if args.compile and export_format.name != "keras":
        raise UserError("--compile applies to --format keras only")
    config = read_checkpoint_config(checkpoint)
    import_user_modules(args.imports)
    tf, keras = import_tensorflow()
    require_packages(export_format)
    model, input_shape, num_classes = build_model_from_checkpoint(checkpoint, config)
    compiled = None
    if export_format.name == "keras" and args.compile:
        compiled = _compile(keras, model, config, checkpoint)
    # The tool's contract, stated rather than inferred from the model: float32 images of the
    # checkpoint's input shape, any batch size (ONNX export refuses an uncalled model without it).
    signature = [tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME)]
    with storage_errors(f"write {str(out)!r}"):
        write_new_output(
            out, export_format.suffix, lambda path: _write(model, path, export_format, signature)
        )
    result = {
        "checkpoint": location(checkpoint.path),
        "out": str(out),
        "format": export_format.name,
        "input": INPUT_NAME,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "outputs": "logits",
        "compiled": compiled,
        "weights": "moving average" if uses_average_weights(config) else "trained",
    }
    if args.json:
        print_json(result)
        return OK
    print(f"Exported {location(checkpoint.path)} (step {checkpoint.global_step}) to {out}")
    if uses_average_weights(config):
        print("Weights: the moving average (optimizer.ema with trainer.evaluate_with_ema)")
    print(
        f"Model: float32 images {input_shape} scaled to [0, 1] -> {num_classes} logits "
        "(apply softmax for probabilities)"
    )
    if export_format.name == "keras":
        print(_compiled_line(compiled))
    print(export_format.usage.format(out=str(out), input=INPUT_NAME))
    return OK


def choose_format(name: str | None, out: Path, text: str) -> ExportFormat:
    """``--format NAME``, or else the format OUT's suffix names (any other: a SavedModel).

    A UserError if the format writes a file of a suffix OUT does not end in.
    """
    if name is None:
        by_suffix = {f.suffix: f for f in FORMATS.values() if f.suffix}
        export_format = by_suffix.get(out.suffix.lower(), FORMATS["savedmodel"])
    else:
        export_format = FORMATS[name]
    suffix = export_format.suffix
    if suffix and out.suffix.lower() != suffix:
        raise UserError(
            f"--format {export_format.name} writes a {suffix} file; OUT must end in {suffix}, "
            f"got {text!r}"
        )
    return export_format


def require_packages(export_format: ExportFormat) -> None:
    """A UserError naming the extra to install if a module the format needs does not import."""
    from trainer.startup import quiet_stderr

    for module in export_format.packages:
        with quiet_stderr():  # importing a converter may log to fd 2
            error = _import_error(module)
        if error is not None:
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            raise UserError(
                f"--format {export_format.name} needs the package {module!r}, which cannot be "
                f"imported ({reason}); install it with: {EXTRA}"
            )


def _import_error(module: str) -> ImportError | None:
    try:
        importlib.import_module(module)
    except ImportError as error:
        return error
    return None


def _compiled_line(compiled: dict[str, Any] | None) -> str:
    if not compiled:
        return "Not compiled: no optimizer or schedule in the file (add --compile to include one)"
    return (
        f"Compiled with {compiled['optimizer']} at a constant learning rate "
        f"{compiled['learning_rate']:.4g} (the rate at the saved step; no schedule), "
        f"optimizer state: {compiled['state']}; sparse categorical cross-entropy on "
        "logits, accuracy"
    )


def _write(model, path: Path, export_format: ExportFormat, signature: list) -> None:
    if export_format.keras_format is None:
        model.save(path)
        return
    from trainer.startup import quiet_stderr

    # The converters log their passes to fd 2 (MLIR, tf2onnx): kept off the console, and
    # shown if the conversion fails.
    with quiet_stderr():
        model.export(
            str(path),
            format=export_format.keras_format,
            input_signature=signature,
            verbose=False,
        )


def _compile(keras, model, config: dict[str, Any], checkpoint) -> dict[str, Any]:
    from trainer.optim.optimizers import build_optimizer

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
    from checkpoints.restore import read_optimizer_values
    from trainer.optim.optimizers import step_counter

    saved = read_optimizer_values(checkpoint)  # checked: a bad file or step is a UserError
    step = step_counter(optimizer)
    slots = [v for v in optimizer.variables if v is not step and v.name != "learning_rate"]
    if len(saved) != len(slots) + 1 or any(
        tuple(s.shape) != tuple(v.shape) or s.dtype.kind != "f"
        for s, v in zip(saved[1:], slots, strict=True)
    ):
        return "fresh (the checkpoint's optimizer variables do not fit)"
    step.assign(saved[0])
    for value, variable in zip(saved[1:], slots, strict=True):
        variable.assign(value)
    return f"step {int(saved[0])} and moments from the checkpoint"
