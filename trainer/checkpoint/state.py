"""The training state a checkpoint holds, written from and restored into live Keras objects.

Written into a checkpoint's staging directory (see ``trainer.checkpoint``):

- ``model.weights.h5``: ``model.save_weights`` (plain Keras can load it);
- ``optimizer.h5``: every optimizer variable by index (``iterations`` first,
  then the slots), each with its Keras path and shape, read back with h5py;
- ``trainer_state.json``: the data position, the RNG states of the model's
  seed generators (dropout) and the loop's own state (callbacks, best metric);
- ``config.yaml``: the run's config, model/optimizer/schedule side by side.

Restoring builds nothing: the model and optimizer are rebuilt from config by
the caller, then every variable is matched by position and shape here. No
Keras object deserialization is involved, so nothing from the file can run.
Both HDF5 files are checked by ``trainer.checkpoint.h5`` before anything is
read from them: the weights file must hold exactly the datasets (paths,
shapes, dtypes) that ``save_weights`` of the rebuilt model writes, the
optimizer file exactly one numeric dataset per optimizer variable, the step
first (an integer scalar, the manifest's ``global_step``).

The two HDF5 files are built in memory and written to disk by Python
(``write_bytes_durably``), never by HDF5 itself. When a write fails under
HDF5 (disk full, a file size limit, an I/O error), HDF5 1.14 frees part of
the file's state while failing to close it, and h5py's close reaches that
state again: a traceback from ``ObjectID.__dealloc__``, then a segmentation
fault, in the close or at exit (reproduced with h5py 3.14 / HDF5 1.14.6 under
RLIMIT_FSIZE; h5py issues #914 "bug-in-external-lib", #1775, PR #1642). In
memory no HDF5 write can fail, and a failed write of the bytes is a plain
``OSError`` with its errno, which the manager reports in one line. The cost:
the file is held in memory once while it is written.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import tensorflow as tf

from trainer.checkpoint.format import Checkpoint, write_bytes_durably
from trainer.checkpoint.h5 import Array, datasets, dtype_name, layout_problems, read_optimizer_file
from trainer.checkpoint.layout import CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE
from trainer.checkpoint.reading import read_trainer_state, to_json
from trainer.errors import UserError


def seed_generator_variables(model: keras.Model) -> list[keras.Variable]:
    """The model's RNG state variables (e.g. dropout's), which ``save_weights`` leaves out."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def write_state(
    directory: Path,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loop_state: Mapping[str, Any],
    config_yaml: str,
) -> None:
    """Write the four state files of a checkpoint into ``directory``."""
    save_weights(model, directory / MODEL_FILE)
    _write_optimizer(directory, [(v.path, v) for v in optimizer.variables])
    _write_small_files(directory, _with_rng_state(model, loop_state), config_yaml)


def snapshot_state(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loop_state: Mapping[str, Any],
    config_yaml: str,
    *,
    shadow: keras.Model,
) -> Callable[[Path], None]:
    """Hold the state as it is now; return ``write(directory)``, which writes it later.

    ``write`` writes the files of :func:`write_state` from the held values, on
    any thread, while training changes the live variables. Holding takes a few
    milliseconds whatever the model's size: each value is held with
    ``tf.identity``, which copies nothing; TensorFlow copies a variable's buffer
    before updating it while another tensor still holds it, so the held values
    stay those of now (that copy is paid once, by the next optimizer step).
    ``shadow`` is a model of the same structure (built from the same config),
    used by one ``write`` at a time: the weights file is written from it by
    :func:`save_weights`, so it is the file ``write_state`` writes.
    """
    weights = [tf.identity(v.value) for v in model.weights]
    slots = [(v.path, tf.identity(v.value)) for v in optimizer.variables]
    state = _with_rng_state(model, loop_state)  # a few numbers: copied now

    def write(directory: Path) -> None:
        shadow.set_weights([value.numpy() for value in weights])
        save_weights(shadow, directory / MODEL_FILE)
        _write_optimizer(directory, slots)
        _write_small_files(directory, state, config_yaml)

    return write


def save_weights(model: keras.Model, path: Path) -> None:
    """Write ``model``'s weights file as ``model.save_weights(path)`` does, HDF5 in memory.

    Keras' own writer of that file (``saving_lib.H5IOStore`` and ``_save_state``,
    which ``save_weights`` runs) is handed a BytesIO instead of the path (Keras'
    public API takes a path only; see the module docstring for why not a path).
    The file holds the same groups, datasets and attributes as ``save_weights``'
    (h5py's file-object driver lays out free space differently, so the bytes
    differ); ``tests/test_run_dir.py`` checks that, so a Keras upgrade that
    changes these names or what they write fails there.
    """
    write_bytes_durably(path, _weights_file(model).getbuffer())


def _weights_file(model: keras.Model) -> io.BytesIO:
    """The file ``model.save_weights`` writes, in memory (see :func:`save_weights`)."""
    from keras.src.saving import saving_lib

    buffer = io.BytesIO()
    store = saving_lib.H5IOStore(buffer, mode="w")
    saving_lib._save_state(
        model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set()
    )
    store.close()
    return buffer


def _write_optimizer(directory: Path, variables: list[tuple[str, Any]]) -> None:
    buffer = io.BytesIO()  # HDF5 in memory: see the module docstring
    with h5py.File(buffer, "w") as handle:
        for index, (path, value) in enumerate(variables):
            dataset = handle.create_dataset(str(index), data=np.asarray(value))
            dataset.attrs["path"] = path
    write_bytes_durably(directory / OPTIMIZER_FILE, buffer.getbuffer())


def _with_rng_state(model: keras.Model, loop_state: Mapping[str, Any]) -> dict[str, Any]:
    state = dict(loop_state)
    # By position: Keras names seed generators with a process-wide counter.
    state["rng"] = [
        {"path": v.path, "state": np.asarray(v).tolist()} for v in seed_generator_variables(model)
    ]
    return state


def _write_small_files(directory: Path, state: Mapping[str, Any], config_yaml: str) -> None:
    # A diverged run's NaN loss is written as null: the reader refuses NaN.
    (directory / STATE_FILE).write_text(to_json(state, indent=2, sort_keys=True))
    (directory / CONFIG_FILE).write_text(config_yaml)


def progress_manifest(
    step: int,
    loop_state: Mapping[str, Any],
    steps_per_epoch: int,
    metrics: Mapping[str, float],
    learning_rate: float,
    monitor: str,
    info: Any,
    **extra: Any,
) -> dict[str, Any]:
    """What a checkpoint's manifest says about the run besides its files.

    ``loop_state`` is a ``LoopState.to_dict()``; ``info`` the dataset's
    ``DataInfo`` (input shape and classes let tools rebuild the model; the fingerprint
    of an image folder's files lets a resume check it trains on the same images).
    """
    fingerprint = getattr(info, "fingerprint", None)
    return {
        "global_step": step,
        "epoch": loop_state["epoch"],
        "batches_done": loop_state["batches_done"],
        "epochs_completed": loop_state["epochs_completed"],
        "steps_per_epoch": steps_per_epoch,
        "metrics": dict(metrics),
        "learning_rate": learning_rate,
        "monitor": monitor,
        "input_shape": list(info.input_shape),
        "num_classes": info.num_classes,
        **({"data_fingerprint": fingerprint} if fingerprint is not None else {}),
        **extra,
    }


def restore_state(
    checkpoint: Checkpoint,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer | None,
) -> dict[str, Any]:
    """Load weights (and optimizer variables, unless ``optimizer`` is None) from ``checkpoint``.

    Every variable must match in count, shape and dtype, else a UserError says
    which one does not: a checkpoint of another model is refused, never half-loaded.
    Returns the loop state saved with the checkpoint.
    """
    _check_weights_file(checkpoint, model)
    try:
        with warnings.catch_warnings():  # Keras warns, then raises: the error says it all
            warnings.simplefilter("ignore")
            model.load_weights(checkpoint.file(MODEL_FILE))
    except (ValueError, KeyError) as error:
        raise UserError(
            f"checkpoint {checkpoint.path} does not fit the model built from its config: "
            f"{keras_reason(error)}"
        ) from None
    state = read_trainer_state(checkpoint)
    generators = seed_generator_variables(model)
    rng = state.get("rng", [])
    if len(rng) != len(generators):
        raise UserError(
            f"checkpoint {checkpoint.path} holds {len(rng)} RNG states, the model built from "
            f"its config has {len(generators)}"
        )
    for variable, saved in zip(generators, rng, strict=True):
        value = np.asarray(saved["state"])
        if value.shape != tuple(variable.shape) or value.dtype.kind not in "iu":
            raise UserError(
                f"checkpoint {checkpoint.path}: malformed RNG state for {variable.path}"
            )
        variable.assign(value.astype(variable.dtype))
    if optimizer is not None:
        _restore_optimizer(checkpoint, model, optimizer)
    return state


def keras_reason(error: BaseException) -> str:
    """Keras' load error in one line, its reason included.

    Keras says "A total of 1 objects could not be loaded. Example error message
    for object <Dense ...>:", then the reason on a line of its own, then a list
    of the objects: the list is left out, and so are variable values.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = []
    for line in lines:
        if line.startswith("List of objects"):
            break
        kept.append(line)
    text = re.sub(r", value=[^>]*>", ">", " ".join(kept) or type(error).__name__)
    return text if len(text) <= 400 else text[:397] + "..."


def weights_layout(model: keras.Model) -> dict[str, Array]:
    """The datasets (path -> shape and dtype) that ``model.save_weights`` writes.

    Found by writing that file (in memory, by Keras' own writer): Keras' file
    layout is its own, and this is the one way to get it right in every version.
    """
    found = datasets(_weights_file(model).getvalue(), "expected weights")
    return {dataset.path: dataset.array for dataset in found}


def _check_weights_file(checkpoint: Checkpoint, model: keras.Model) -> None:
    try:
        found = {d.path: d.array for d in datasets(checkpoint.file(MODEL_FILE), MODEL_FILE)}
    except ValueError as error:
        raise UserError(f"checkpoint {checkpoint.path}: {error}") from None
    problems = layout_problems(
        found, weights_layout(model), MODEL_FILE, "the model built from its config"
    )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(
            f"checkpoint {checkpoint.path} does not fit the model built from its config: "
            f"{problems[0]}{more}"
        )


def read_optimizer_values(checkpoint: Checkpoint) -> list[np.ndarray]:
    """The variables of the checkpoint's ``optimizer.h5``, checked (step first, see
    ``trainer.checkpoint.h5.read_optimizer_file``); a UserError if the file is not sound."""
    try:
        return read_optimizer_file(
            checkpoint.file(OPTIMIZER_FILE), OPTIMIZER_FILE, checkpoint.global_step
        )
    except ValueError as error:
        raise UserError(f"checkpoint {checkpoint.path}: {error}") from None


def _restore_optimizer(
    checkpoint: Checkpoint, model: keras.Model, optimizer: keras.optimizers.Optimizer
) -> None:
    optimizer.build(model.trainable_variables)
    saved = read_optimizer_values(checkpoint)
    if len(saved) != len(optimizer.variables):
        raise UserError(
            f"checkpoint {checkpoint.path} holds {len(saved)} optimizer variables, "
            f"the optimizer built from its config has {len(optimizer.variables)}"
        )
    for variable, value in zip(optimizer.variables, saved, strict=True):  # all, then assign
        ours = Array(tuple(variable.shape), dtype_name(np.dtype(variable.dtype)))
        theirs = Array(np.shape(value), dtype_name(np.asarray(value).dtype))
        if theirs != ours:
            raise UserError(
                f"optimizer variable {variable.path}: {ours} in the optimizer, {theirs} in "
                f"checkpoint {checkpoint.path}"
            )
    for variable, value in zip(optimizer.variables, saved, strict=True):
        variable.assign(value)
