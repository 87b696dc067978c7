"""A plain Keras model file (``.keras`` zip or legacy ``.h5``) read as data, for ``rescue``.

Nothing in the file is deserialized or run: every zip member is read with a
size bound (``checkpoints.reading``), every HDF5 file is checked by
``checkpoints.io.h5`` first (no external storage or links, numeric datasets
stored in the file), and the JSON configs are plain data. The model config is
returned for ``trainer.models.keras_builtin`` to check against its allow-list;
the optimizer's class, config and variables are returned as they are, the
schedule's class and parameters only to be shown (:func:`describe_file_schedule`).
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checkpoints.io.h5 import check_h5_file, read_datasets
from checkpoints.layout import MAX_GLOBAL_STEP
from checkpoints.reading import extract_zip_member, parse_json, read_zip_member
from trainer.errors import UserError

MAX_CONFIG_BYTES = 16 << 20  # config.json of a .keras file
MAX_METADATA_BYTES = 1 << 20  # metadata.json: a version and a date
MAX_WEIGHTS_BYTES = 1 << 34  # model.weights.h5 of a .keras file (16 GiB), extracted to a file


@dataclass
class KerasFile:
    """What a Keras model file holds, read as data."""

    path: Path
    kind: str  # "keras" (zip) or "h5" (legacy)
    model_config: dict[str, Any]
    keras_version: str | None = None
    optimizer_class: str | None = None
    optimizer_config: dict[str, Any] = field(default_factory=dict)
    optimizer_variables: list[Any] | None = None  # numpy arrays, iteration first
    weights_file: Path | None = None  # a .keras file's model.weights.h5, extracted and checked
    scratch: Any = None  # the temporary directory holding weights_file (removed with self)


def read_keras_file(path: Path) -> KerasFile:
    """Parse a ``.keras`` zip or a legacy ``.h5`` file without deserializing anything."""
    if zipfile.is_zipfile(path):
        return _read_keras_zip(path)
    problems = check_h5_file(path)
    if problems and problems[0].startswith("not a readable HDF5 file"):
        raise UserError(f"{str(path)!r} is neither a .keras file (zip) nor an HDF5 model file")
    _refuse_h5_problems(path, problems)
    import h5py

    with h5py.File(path, "r") as handle:
        if "model_config" not in handle.attrs:
            raise UserError(
                f"{str(path)!r} is an HDF5 file without a model config: a weights-only file, "
                "not a saved model"
            )
        model_config = _json_attribute(handle, "model_config", path)
        result = KerasFile(path, "h5", model_config, _version(handle.attrs.get("keras_version")))
        if "training_config" in handle.attrs:
            training = _json_attribute(handle, "training_config", path)
            optimizer = training.get("optimizer_config") if isinstance(training, dict) else None
            _take_optimizer(result, optimizer)
        group = handle.get("optimizer_weights")
        names = _attribute(group, "weight_names") if isinstance(group, h5py.Group) else None
    if getattr(names, "ndim", None) == 1:  # a numpy array of names, as Keras 2 writes it
        paths = [f"optimizer_weights/{_text(name)}" for name in names]
        try:
            result.optimizer_variables = read_datasets(path, paths, path.name) or None
        except ValueError:  # weight names that are not its datasets: the moments start fresh
            result.optimizer_variables = None
    return result


def _refuse_h5_problems(path: Path, problems: list[str], member: str = "") -> None:
    if problems:
        where = f"{str(path)!r}" + (f" ({member})" if member else "")
        raise UserError(f"{where}: {problems[0]}")


def _read_keras_zip(path: Path) -> KerasFile:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError(f"{str(path)!r} is not a readable zip file ({error})") from None
    with archive:
        names = set(archive.namelist())
        if "config.json" not in names:
            raise UserError(f"{str(path)!r} is a zip file without config.json: not a .keras file")
        try:
            config = parse_json(
                read_zip_member(archive, "config.json", MAX_CONFIG_BYTES), "config.json"
            )
            metadata = (
                parse_json(
                    read_zip_member(archive, "metadata.json", MAX_METADATA_BYTES), "metadata.json"
                )
                if "metadata.json" in names
                else {}
            )
        except ValueError as error:
            raise UserError(f"{str(path)!r}: {error}") from None
        if not isinstance(config, dict):
            raise UserError(f"{str(path)!r}: config.json is not a model config")
        result = KerasFile(
            path,
            "keras",
            {k: v for k, v in config.items() if k != "compile_config"},
            _version(metadata.get("keras_version")) if isinstance(metadata, dict) else None,
        )
        compile_config = config.get("compile_config")
        if isinstance(compile_config, dict):
            _take_optimizer(result, compile_config.get("optimizer"))
        if "model.weights.h5" in names:
            result.scratch = tempfile.TemporaryDirectory(prefix="trainer-rescue-")
            result.weights_file = Path(result.scratch.name) / "model.weights.h5"
            try:
                extract_zip_member(
                    archive, "model.weights.h5", result.weights_file, MAX_WEIGHTS_BYTES
                )
            except ValueError as error:
                raise UserError(f"{str(path)!r}: {error}") from None
    weights = result.weights_file
    if weights is not None:
        _refuse_h5_problems(path, check_h5_file(weights), "model.weights.h5")
        import h5py

        with h5py.File(weights, "r") as handle:
            group = handle.get("optimizer/vars")
            is_group = isinstance(group, h5py.Group)
            keys = sorted((k for k in group if k.isdigit()), key=int) if is_group else []
        values = read_datasets(weights, [f"optimizer/vars/{k}" for k in keys], "model.weights.h5")
        result.optimizer_variables = values or None
    return result


def _take_optimizer(result: KerasFile, optimizer: Any) -> None:
    if isinstance(optimizer, dict):
        class_name = optimizer.get("class_name")
        if not isinstance(class_name, str | None):
            raise UserError(
                f"{str(result.path)!r}: the optimizer's class_name is a "
                f"{type(class_name).__name__}, not a name"
            )
        result.optimizer_class = class_name
        config = optimizer.get("config")
        result.optimizer_config = config if isinstance(config, dict) else {}


def _json_attribute(handle, name: str, path: Path) -> Any:
    try:
        return parse_json(_text(_attribute(handle, name)), f"attribute {name}")
    except (ValueError, TypeError) as error:
        raise UserError(f"{str(path)!r}: {error}") from None


def _attribute(item, name: str) -> Any:
    try:
        return item.attrs.get(name)
    except Exception:  # an attribute of a type h5py cannot read
        return None


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _version(value: Any) -> str | None:
    """A Keras version string as the file states it, or None if it is not a short string."""
    value = _text(value)
    return value if isinstance(value, str) and len(value) <= 64 else None


def describe_file_schedule(saved: KerasFile) -> str:
    """What the file says its learning rate was (a schedule's class and parameters, as data)."""
    rate = saved.optimizer_config.get("learning_rate")
    if isinstance(rate, dict):
        params = rate.get("config")
        return f"schedule {rate.get('class_name')} {json.dumps(params)}"
    if isinstance(rate, int | float):
        return f"a fixed learning rate {rate:g}"
    return "no optimizer"


def file_step(variables: list[Any] | None) -> int | None:
    """The optimizer step: the file's first optimizer variable, a scalar integer."""
    import numpy as np

    if not variables:
        return None
    first = np.asarray(variables[0])
    if first.shape != () or not np.issubdtype(first.dtype, np.integer):
        return None
    if not 0 <= int(first) <= MAX_GLOBAL_STEP:
        raise UserError(
            f"the file's optimizer step is {int(first)}, outside [0, {MAX_GLOBAL_STEP}]: "
            "not a step a model can have reached"
        )
    return int(first)
