"""``trainer inspect CHECKPOINT``: what one checkpoint holds, without building anything.

The manifest (step, epoch, metrics, learning rate at the saved step), every
section of the config a resumed run trains with (``trainer.config.SAVED_SECTIONS``:
dataset, model, optimizer, schedule, trainer, checkpoint, augment, ...), then the
schedule resolved to steps, read safely from its ``config.yaml``
(``trainer.config.saved.read_checkpoint_config``), and every variable's name and
shape read with h5py from ``model.weights.h5`` and ``optimizer.h5``, with the
parameter count. No TensorFlow, nothing executed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from checkpoints.io.h5 import datasets
from checkpoints.layout import MODEL_FILE, OPTIMIZER_FILE
from trainer.errors import UserError
from trainer.exits import BAD, OK
from trainer.runs.remote_run import location
from trainer.tools.finding import one_checkpoint
from trainer.tools.output import local_time, print_json

NAME = "inspect"
HELP = "show a checkpoint's manifest, config and variables"
DESCRIPTION = """\
Show what a checkpoint holds: its manifest (step, epoch, metrics, learning
rate at the saved step), every section of the config it resumes with (dataset,
model, optimizer, schedule, trainer, checkpoint, augment) and the schedule
resolved to steps, and the name and shape of every model and optimizer variable.
CHECKPOINT is a checkpoint directory, or a run directory (its newest valid one).

examples:
  python -m trainer inspect runs/2026-11-26/10-00-00/step-00000450
  python -m trainer inspect runs/2026-11-26/10-00-00 --json

Exit status 1 if the checkpoint does not verify (what can be read is still shown)."""

# After the saved sections (trainer.config.SAVED_SECTIONS): the schedule as resolved.
RESOLVED_SECTIONS = ("resolved_schedule",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint or run directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def model_variables(path: Path) -> list[dict[str, Any]]:
    """Every weight in a Keras ``.weights.h5`` file: layer name, index, shape, h5 path.

    The file is checked first (``checkpoints.io.h5``): a ValueError names its problem.
    """
    found = []
    for dataset in datasets(path, MODEL_FILE):
        group, _, index = dataset.path.rpartition("/")
        found.append(
            {
                "name": f"{dataset.parent_name or '/' + group}/{index}",
                "shape": list(dataset.array.shape),
                "size": dataset.size,
                "h5_path": dataset.path,
            }
        )
    return found


def optimizer_variables(path: Path) -> list[dict[str, Any]]:
    """The variables of ``optimizer.h5`` (``checkpoints.state``), in index order."""
    found = [d for d in datasets(path, OPTIMIZER_FILE) if "/" not in d.path]
    found.sort(key=lambda d: int(d.path) if d.path.isdigit() else -1)
    return [
        {
            "index": dataset.path,
            "name": dataset.name or dataset.path,
            "shape": list(dataset.array.shape),
            "size": dataset.size,
        }
        for dataset in found
    ]


def gather(checkpoint) -> dict[str, Any]:
    """Everything ``inspect`` shows, as a JSON-ready dict; unreadable parts become problems.

    ``config``: the checkpoint's seed, then each of its config sections, in
    :func:`config_sections` order."""
    from trainer.config.saved import read_checkpoint_config

    manifest = checkpoint.manifest or {}
    info: dict[str, Any] = {
        "path": location(checkpoint.path),
        "valid": checkpoint.valid,
        "problems": list(checkpoint.problems),
        "manifest": {k: v for k, v in manifest.items() if k != "files"},
        "files": manifest.get("files", {}),
        "config": None,
        "model_variables": None,
        "parameters": None,
        "optimizer_variables": None,
    }
    if checkpoint.manifest is None:
        return info
    try:
        config = read_checkpoint_config(checkpoint)
        info["config"] = {"seed": config.get("seed")}
        info["config"].update({k: config.get(k) for k in config_sections()})
    except UserError as error:
        info["config"] = _fit_record(checkpoint)
        if info["config"] is None:
            info["problems"].append(f"config.yaml: {error}")
    for key, name, read in (
        ("model_variables", MODEL_FILE, model_variables),
        ("optimizer_variables", OPTIMIZER_FILE, optimizer_variables),
    ):
        try:
            info[key] = read(checkpoint.file(name))
        except (UserError, ValueError) as error:
            reason = str(error).removeprefix(f"{name}: ")
            info["problems"].append(f"{name}: cannot be read ({reason})")
    if info["model_variables"] is not None:
        info["parameters"] = sum(v["size"] for v in info["model_variables"])
    return info


def _fit_record(checkpoint) -> dict[str, Any] | None:
    """The record a ``model.fit`` checkpoint (``checkpoints.keras``) keeps instead of a
    trainer config, or None when the config is not one."""
    from checkpoints.keras.match import WRITTEN_BY
    from checkpoints.reading import read_plain_config

    try:
        record = read_plain_config(checkpoint)
    except UserError:
        return None
    return record if record.get("written_by") == WRITTEN_BY else None


def config_sections() -> tuple[str, ...]:
    """The config sections ``inspect`` shows: every section a checkpoint saves, then the
    resolved schedule. Imported here: ``trainer.config`` needs OmegaConf, which reading
    the config needs anyway, and ``--help`` does not."""
    from trainer.config import SAVED_SECTIONS

    return (*SAVED_SECTIONS, *RESOLVED_SECTIONS)


def run(args: argparse.Namespace) -> int:
    checkpoint = one_checkpoint(args.checkpoint)
    info = gather(checkpoint)
    status = OK if checkpoint.valid and not info["problems"] else BAD
    if args.json:
        print_json(info)
        return status
    _print_text(info)
    return status


def _print_text(info: dict[str, Any]) -> None:
    manifest = info["manifest"]
    print(f"checkpoint   {info['path']}")
    if info["problems"]:
        print("status       DOES NOT VERIFY")
        for problem in info["problems"]:
            print(f"  - {problem}")
    else:
        print("status       verifies (every file matches its sha256)")
    if not manifest:
        return
    epoch = f"epoch {manifest.get('epoch')}"
    if manifest.get("batches_done"):
        epoch += f" + {manifest['batches_done']} batches"
    print(
        f"position     step {manifest.get('global_step')}, {epoch} "
        f"({manifest.get('steps_per_epoch')} steps per epoch)"
    )
    print(
        f"written      {local_time(manifest.get('written_at'))} by trainer "
        f"{manifest.get('project_version')} (format {manifest.get('format_version')})"
    )
    if manifest.get("rescued_from"):
        print(f"rescued from {manifest['rescued_from']}")
    monitor = manifest.get("monitor")
    metrics = manifest.get("metrics") or {}
    shown = ", ".join(
        f"{k} {v:.4g}" + (" (monitored)" if k == monitor else "")
        for k, v in sorted(metrics.items())
        if isinstance(v, int | float) and k not in ("lr", "epoch_seconds")
    )
    print(f"metrics      {shown or '-'}")
    print(f"lr at step   {manifest.get('learning_rate')}")
    if manifest.get("input_shape") is not None:
        print(
            f"data         input {tuple(manifest['input_shape'])}, "
            f"{manifest.get('num_classes')} classes"
        )
    if info["config"]:
        _print_config(info["config"])
    variables = info["model_variables"]
    if variables is not None:
        print(f"\nmodel weights (model.weights.h5): {info['parameters']:,} parameters")
        _print_variables(variables)
    variables = info["optimizer_variables"]
    if variables is not None:
        print(f"\noptimizer variables (optimizer.h5): {len(variables)}")
        _print_variables(variables)


def _print_config(config: dict[str, Any]) -> None:
    """The config sections, or what built a ``model.fit`` checkpoint (``checkpoints.keras``)."""
    import yaml

    if "written_by" in config:
        print(f"\nwritten by   {config['written_by']} (keras {config.get('keras_version')})")
        print(yaml.safe_dump(config.get("optimizer"), sort_keys=False).rstrip())
        return
    print(f"dataset      {(config.get('dataset') or {}).get('name')}, seed {config['seed']}")
    for section in config_sections():
        value = config.get(section)
        if section == "model" and isinstance(value, dict) and "keras_config" in value:
            value = _summarise_keras_model(value)
        print(f"\n{section}:")
        text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip()
        print("\n".join("  " + line for line in text.splitlines()))


def _print_variables(variables: list[dict[str, Any]]) -> None:
    width = max((len(v["name"]) for v in variables), default=0)
    for variable in variables:
        shape = "(" + ", ".join(str(d) for d in variable["shape"]) + ")"
        print(f"  {variable['name']:<{width}}  {shape:<16} {variable['size']:>10,}")


def _summarise_keras_model(model: dict[str, Any]) -> dict[str, Any]:
    """A rescued model's section with its Keras config reduced to the layer classes."""
    layers = (model.get("keras_config") or {}).get("config", {}).get("layers", [])
    summary = {k: v for k, v in model.items() if k != "keras_config"}
    summary["keras_layers"] = [
        f"{layer.get('class_name')} {layer.get('config', {}).get('name', '')}".strip()
        for layer in layers
        if isinstance(layer, dict)
    ]
    return summary
