"""``trainer evaluate CHECKPOINT [OVERRIDES]``: a checkpoint's figures on a split of its data.

The model is the one ``export`` writes (``trainer.build.build_model_from_checkpoint``:
built from the checkpoint's config as training builds it, weights restored as
a resume restores them). The data is the checkpoint's own dataset config,
loaded with ``trainer.data.pipeline.load_data``; only overrides that leave the
examples unchanged are taken (:data:`DATASET_OVERRIDES`). Loss and accuracy
come from ``trainer.training.evaluation.Evaluation``, the evaluation the training loop
runs, compiled as the run compiled it (``trainer.jit_compile``): for a
checkpoint a run ended with, they equal the run's ``test_loss`` and
``test_accuracy`` (``summary.json``) and, on ``--split validation``, its last
``val_loss`` and ``val_accuracy`` (``metrics.csv``), bit for bit, when the run
trained on one device (under a ``tf.distribute`` strategy the loss is
averaged over examples rather than batches). The loss is the mean of the
per-batch losses, so another ``dataset.batch_size`` may move it slightly;
accuracy does not depend on it.

Beyond them, from the logits of the same forward pass: top-k accuracy (Keras'
``SparseTopKCategoricalAccuracy``), per-class accuracy and the confusion
matrix (``tf.math.confusion_matrix``; rows: true class, columns: predicted),
optionally drawn into a PNG.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from trainer.errors import UserError
from trainer.exits import OK
from trainer.runs.remote_run import location
from trainer.tools.arguments import add_import_argument, add_top_k_argument
from trainer.tools.finding import valid_checkpoint
from trainer.tools.output import class_names, print_json, print_table
from trainer.tools.plots import add_force_argument, figure_output, pyplot, save_figure

NAME = "evaluate"
HELP = "loss, accuracy, top-k, per-class accuracy and confusion matrix of a checkpoint"
DESCRIPTION = """\
Evaluate a checkpoint on its dataset's test split (or the validation split
held out in training): loss, accuracy, top-k accuracy, per-class accuracy and
the confusion matrix, optionally drawn into a PNG. The model and the data come
from the checkpoint's own config; for the checkpoint a run ended with, loss
and accuracy equal what the run reported (summary.json, metrics.csv).
CHECKPOINT is a checkpoint, or a run (its newest valid one).

Overrides (Hydra syntax) may change where the data is read from and how it is
batched, never the examples: dataset.data_dir, dataset.download,
dataset.batch_size, dataset.cache, dataset.path (an image folder that moved).

examples:
  python -m trainer evaluate runs/<run>
  python -m trainer evaluate runs/<run>/step-00000450 --split validation --json
  python -m trainer evaluate runs/<run> dataset.data_dir=/data/tfds \\
      --confusion-matrix confusion.png --top-k 3"""

SPLITS = ("test", "validation")
# The dataset keys an evaluation may override: where the examples are read from
# and how they are batched and held, not which examples there are.
DATASET_OVERRIDES = ("data_dir", "download", "batch_size", "cache", "path")
# Confusion matrices up to this many classes get a count written in each cell.
MAX_ANNOTATED_CLASSES = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint or run directory")
    parser.add_argument(
        "overrides",
        metavar="OVERRIDE",
        nargs="*",
        help="dataset.KEY=VALUE for " + ", ".join(DATASET_OVERRIDES),
    )
    parser.add_argument(
        "--split", choices=SPLITS, default="test", help="the split to evaluate (default test)"
    )
    add_top_k_argument(parser)
    parser.add_argument(
        "--confusion-matrix",
        metavar="FILE",
        help="also draw the confusion matrix into FILE (.png, .pdf, .svg...)",
    )
    add_force_argument(parser, "--confusion-matrix")
    add_import_argument(parser, "model or dataset")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(extra_overrides=True)  # __main__ passes leftover KEY=VALUE words here


def dataset_with_overrides(dataset: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The checkpoint's ``dataset`` section with ``overrides`` (Hydra syntax) applied.

    Only ``dataset.<key>=<value>`` for a key of :data:`DATASET_OVERRIDES` that
    the section has; anything else (another key, ``+``/``~``, a sweep) is a
    UserError naming it. The result is checked against the dataset's schema.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import OverrideParseException
    from omegaconf import OmegaConf

    from trainer.config import typed_section

    allowed = [f"dataset.{key}" for key in DATASET_OVERRIDES if key in dataset]
    result = dict(dataset)
    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except OverrideParseException as error:
            cause = (str(error).splitlines() or ["?"])[0]
            raise UserError(f"override {text!r} is not valid: {cause}") from None
        key = override.key_or_group
        if (
            key not in allowed
            or override.type != OverrideType.CHANGE
            or override.is_sweep_override()
            or override.package is not None
        ):
            raise UserError(
                f"override {text!r} is not allowed: only {', '.join(allowed)} may be set "
                "(where the examples are read from and how they are batched; never which "
                "examples, nor the model)"
            )
        result[key.removeprefix("dataset.")] = override.value()
    return OmegaConf.to_container(typed_section("dataset", result), enum_to_str=True)


def split_batches(data: Any, split: str):
    """The batches of ``split`` ("test" or "validation"); a UserError if the run had none."""
    if split == "test":
        return data.test()
    batches = data.validation()
    if batches is None:
        raise UserError(
            "the checkpoint's run held out no validation split (dataset.validation_split is 0); "
            "use --split test"
        )
    return batches


def summarize(logits: Any, labels: Any, top_k: int, names: Sequence[str]) -> dict[str, Any]:
    """Top-k accuracy, per-class accuracy and the confusion matrix of ``logits`` (N, C)
    against ``labels`` (N,): plain data."""
    import keras
    import numpy as np
    import tensorflow as tf

    num_classes = len(names)
    top = keras.metrics.SparseTopKCategoricalAccuracy(k=top_k)
    top.update_state(labels, logits)
    predicted = np.argmax(logits, axis=-1)
    matrix = tf.math.confusion_matrix(labels, predicted, num_classes=num_classes).numpy()
    per_class = []
    for index, name in enumerate(names):
        examples, correct = int(matrix[index].sum()), int(matrix[index, index])
        per_class.append(
            {
                "class": name,
                "index": index,
                "examples": examples,
                "correct": correct,
                "accuracy": correct / examples if examples else None,
            }
        )
    return {
        "top_k": top_k,
        "top_k_accuracy": float(top.result()),
        "per_class": per_class,
        "confusion_matrix": matrix.astype(int).tolist(),
    }


def run(args: argparse.Namespace) -> int:
    out = None
    if args.confusion_matrix:
        pyplot()  # fail now, not after TensorFlow's start-up, if matplotlib is missing
        out = figure_output(args.confusion_matrix, "--confusion-matrix", args.force)

    from trainer.config.saved import read_checkpoint_config
    from trainer.startup import import_tensorflow, import_user_modules

    checkpoint = valid_checkpoint(args.checkpoint)
    config = read_checkpoint_config(checkpoint)
    dataset = dataset_with_overrides(config["dataset"], args.overrides)
    import_user_modules(args.imports)
    tf, _ = import_tensorflow()
    if config["trainer"].get("deterministic"):
        tf.config.experimental.enable_op_determinism()  # as the run evaluated

    from trainer.build import build_model_from_checkpoint
    from trainer.data.pipeline import load_data
    from trainer.training.evaluation import Evaluation

    data = load_data(dataset, seed=int(config.get("seed", 0)))
    batches = split_batches(data, args.split)
    model, input_shape, num_classes = build_model_from_checkpoint(checkpoint, config)
    if tuple(data.info.input_shape) != input_shape or data.info.num_classes != num_classes:
        raise UserError(
            f"dataset {data.info.name!r} has images {tuple(data.info.input_shape)} in "
            f"{data.info.num_classes} classes, but the checkpoint's model takes {input_shape} "
            f"and predicts {num_classes}: the data is not the checkpoint's"
        )
    evaluation = Evaluation(model, jit_compile=bool(config["trainer"].get("jit_compile", False)))
    figures = evaluation.evaluate(batches)
    logits, labels = evaluation.logits(batches)
    # The names the model was trained with (its manifest's), else the data's.
    trained_names = checkpoint.manifest.get("class_names")
    names = class_names(trained_names or getattr(data.info, "class_names", None), num_classes)
    details = summarize(logits, labels, min(args.top_k, num_classes), names)
    result = {
        "checkpoint": location(checkpoint.path),
        "global_step": checkpoint.global_step,
        "dataset": data.info.name,
        "split": args.split,
        "examples": len(labels),
        "batch_size": data.info.batch_size,
        "loss": figures["loss"],
        "accuracy": figures["accuracy"],
        **details,
        "confusion_matrix_plot": str(out) if out else None,
    }
    if out is not None:
        draw_confusion_matrix(result, out, args.force)
    if args.json:
        print_json(result)
        return OK
    print_report(result)
    return OK


def print_report(result: Mapping[str, Any]) -> None:
    print(f"Checkpoint: {result['checkpoint']} (step {result['global_step']})")
    print(
        f"Split: {result['dataset']} {result['split']}, {result['examples']} examples "
        f"in batches of {result['batch_size']}"
    )
    print(
        f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}, "
        f"top-{result['top_k']} accuracy {result['top_k_accuracy']:.4f}"
    )
    print_table(
        ["class", "examples", "correct", "accuracy"],
        [[c["class"], c["examples"], c["correct"], c["accuracy"]] for c in result["per_class"]],
    )
    if result["confusion_matrix_plot"]:
        print(f"Confusion matrix: {result['confusion_matrix_plot']}")


def draw_confusion_matrix(result: Mapping[str, Any], out, force: bool) -> None:
    """The confusion matrix as a heat map (rows: true class, columns: predicted), counts
    written in the cells of a small one."""
    import numpy as np

    plt = pyplot()
    matrix = np.asarray(result["confusion_matrix"])
    names = [c["class"] for c in result["per_class"]]
    size = min(4 + 0.5 * len(names), 30)
    figure, axes = plt.subplots(figsize=(size + 1.5, size), dpi=100)
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, label="examples")
    ticks = range(len(names))
    axes.set_xticks(ticks, names, rotation=90 if max(map(len, names)) > 3 else 0)
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(
        f"{result['dataset']} {result['split']}, step {result['global_step']}: "
        f"accuracy {result['accuracy']:.4f} ({result['examples']} examples)"
    )
    if len(names) <= MAX_ANNOTATED_CLASSES:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), count in np.ndenumerate(matrix):
            color = "white" if count > threshold else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=color, fontsize=8)
    save_figure(plt, figure, out, "--confusion-matrix", force)
