"""The training state a checkpoint holds, written from live Keras objects.

Written into a checkpoint's staging directory (see ``checkpoints``):

- ``model.weights.h5``: ``model.save_weights`` (plain Keras can load it);
- ``optimizer.h5``: every optimizer variable by index (``iterations`` first,
  then the slots), each with its Keras path and shape, read back with h5py;
- ``trainer_state.json``: the data position, the RNG states of the model's
  seed generators (dropout) and the loop's own state (callbacks, best metric);
- ``config.yaml``: the run's config, model/optimizer/schedule side by side;
- ``early_stopping_best.weights.h5``, only when given best weights
  (``trainer.early_stopping.restore_best_weights``): those, in the layout of
  ``model.weights.h5``.

The files are written from values held at one instant (:func:`snapshot_state`),
on any thread, while training goes on; the manager then commits them
(``checkpoints.manager``, ``checkpoints.manifest.commit_checkpoint``). Restoring them
into Keras objects is ``checkpoints.restore``.

The two HDF5 files are never written by HDF5 itself. When a write fails under
HDF5 (disk full, a file size limit, an I/O error), HDF5 1.14 frees part of
the file's state while failing to close it, and h5py's close reaches that
state again: a traceback from ``ObjectID.__dealloc__``, then a segmentation
fault, in the close or at exit (reproduced with h5py 3.14 / HDF5 1.14.6 under
RLIMIT_FSIZE; h5py issues #914 "bug-in-external-lib", #1775, PR #1642). So
h5py lays out each file's metadata in memory (``checkpoints.io.h5_layout``:
a few KB per dataset, where no HDF5 write can fail), and Python writes the
file, streaming each variable's own buffer to its offset and hashing it in
the same pass (``checkpoints.durable.write_pieces_durably``): a failed
write is a plain ``OSError`` with its errno, which the manager reports in one
line. No copy of the state is made: variables are held as tensors
(``tf.identity``, which copies nothing) and viewed through DLPack.

What goes into ``model.weights.h5`` is what Keras' own writer stores
(``saving_lib._save_state`` handed a :class:`_HeldStore`, which records the
groups and values instead of writing them), so the file is the one
``model.save_weights`` writes (``tests/test_run_dir.py`` compares them).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras.src.saving import saving_lib  # Keras' weights writer: see _HeldStore

from checkpoints.durable import write_bytes_durably, write_pieces_durably
from checkpoints.io.h5 import Array, dtype_name
from checkpoints.io.h5_layout import H5Layout
from checkpoints.layout import (
    BEST_WEIGHTS_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
)
from checkpoints.manifest import recorded_class_names
from checkpoints.reading import to_json


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
    best_weights: list[np.ndarray] | None = None,
) -> None:
    """Write the four state files of a checkpoint into ``directory`` (five with
    ``best_weights``, see :func:`snapshot_state`)."""
    snapshot_state(model, optimizer, loop_state, config_yaml, best_weights)(directory)


def snapshot_state(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loop_state: Mapping[str, Any],
    config_yaml: str,
    best_weights: list[np.ndarray] | None = None,
) -> Callable[[Path], None]:
    """Hold the state as it is now; return ``write(directory)``, which writes it later.

    ``best_weights``: arrays in the order of ``model.weights`` (``get_weights()``),
    written as ``early_stopping_best.weights.h5``; the caller must not change them.

    ``write`` writes the files of :func:`write_state` from the held values, on
    any thread, while training changes the live variables. Holding takes a few
    milliseconds whatever the model's size: the variables are held by one
    ``tf.identity_n``, which copies nothing; TensorFlow copies a variable's buffer
    before updating it while another tensor still holds it, so the held values
    stay those of now (that copy is paid once, by the next optimizer step: at
    most one extra copy of the state, for as long as the write runs).
    """
    weights = _held_weights_file(model)
    slots = HeldFile(groups=[])
    variables = optimizer.variables
    for index, (variable, held) in enumerate(zip(variables, _hold_all(variables), strict=True)):
        slots.datasets.append(("", str(index), held, {"path": variable.path}))
    state = _with_rng_state(model, loop_state)  # a few numbers: copied now
    best = None if best_weights is None else _weights_file_of(model, best_weights)

    def write(directory: Path) -> None:
        weights.write(directory / MODEL_FILE)
        slots.write(directory / OPTIMIZER_FILE)
        if best is not None:
            best.write(directory / BEST_WEIGHTS_FILE)
        _write_small_files(directory, state, config_yaml)

    return write


def save_weights(model: keras.Model, path: Path) -> None:
    """Write ``model``'s weights file as ``model.save_weights(path)`` does (see the module)."""
    _held_weights_file(model).write(path)


class HeldFile:
    """An HDF5 file to write: its groups (path, attributes) and its datasets (group
    path, name, value held by :func:`_hold`, attributes), in the order made."""

    def __init__(self, groups: list[tuple[str, dict[str, Any]]]) -> None:
        self.groups = groups
        self.datasets: list[tuple[str, str, Any, dict[str, Any]]] = []

    def layout(self) -> dict[str, Array]:
        """Dataset path -> shape and dtype, as h5py stores them (nothing written)."""
        return {
            f"{group}/{name}" if group else name: _array_of(value)
            for group, name, value, _ in self.datasets
        }

    def write(self, path: Path) -> None:
        with H5Layout() as layout:
            for group, attrs in self.groups:
                created = layout.root.create_group(group)
                for key, value in attrs.items():
                    created.attrs[key] = value
            for group, name, value, attrs in self.datasets:
                layout.add(layout.root[group] if group else layout.root, name, _view(value), attrs)
        write_pieces_durably(path, layout.pieces())


class _HeldStore(saving_lib.H5IOStore):
    """The weights store Keras' ``_save_state`` writes into, recording instead of writing.

    It mirrors ``H5IOStore``'s write mode (Keras 3.15): ``make(path, metadata)``
    names the entry, whose group ``<path>/vars`` (root: ``vars``) is created with
    ``metadata`` as attributes when given, else at the first value stored; a
    bfloat16 value gets the attribute ``dtype="bfloat16"``.
    """

    def __init__(self) -> None:  # no file: see the class docstring
        self.mode = "w"
        self.file = HeldFile(groups=[])
        self._entry: str = ""
        self._group: str | None = None

    def __bool__(self) -> bool:
        return True

    def make(self, path: str, metadata: dict | None = None) -> _HeldStore:
        self._entry, self._group = path, None
        if metadata:
            self._create(metadata)
        return self

    def _create(self, metadata: dict | None) -> str:
        self._group = f"{self._entry}/vars" if self._entry else "vars"
        self.file.groups.append((self._group, dict(metadata or {})))
        return self._group

    def __setitem__(self, key: str, value: Any) -> None:
        group = self._group if self._group is not None else self._create(None)
        bfloat16 = keras.backend.standardize_dtype(value.dtype) == "bfloat16"
        self.file.datasets.append((group, key, value, {"dtype": "bfloat16"} if bfloat16 else {}))

    def _own(self) -> list[str]:
        return [name for group, name, _, _ in self.file.datasets if group == self._group]

    def __len__(self) -> int:
        return len(self._own())

    def keys(self) -> list[str]:
        return self._own()

    def __contains__(self, key: object) -> bool:
        return key in self._own()

    def close(self) -> None:
        pass


def _held_weights_file(model: keras.Model) -> HeldFile:
    """The weights file of ``model`` as it is now (see :func:`weights_plan`), values held."""
    plan = weights_plan(model)
    held = HeldFile(groups=plan.groups)
    values = _hold_all([value for _, _, value, _ in plan.datasets])
    held.datasets = [
        (group, name, value, attrs)
        for (group, name, _, attrs), value in zip(plan.datasets, values, strict=True)
    ]
    return held


# model -> (ids of its weights, the file Keras' writer made of them). Keras' traversal
# costs tens of milliseconds per call (Keras 3.15 builds throw-away layers each time:
# get_attr_skipset reads its cache under another name than it writes it), which an
# asynchronous save would add to the time it blocks training.
_PLANS: weakref.WeakKeyDictionary[keras.Model, tuple[tuple[int, ...], HeldFile]] = (
    weakref.WeakKeyDictionary()
)


def weights_plan(model: keras.Model) -> HeldFile:
    """What Keras' own writer stores for ``model``, its values as Keras handed them.

    Kept for the next call when every value is one of the model's variables (then
    the same variables make the same file) and used while the model's weights are
    the same objects; else (a layer that stores a computed tensor) made anew each time.
    The caller must not change it: ``checkpoints.restore`` reads its ``datasets`` to
    assign each one back to the variable Keras stored it from.
    """
    key = tuple(id(variable) for variable in model.weights)
    cached = _PLANS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    store = _HeldStore()
    saving_lib._save_state(
        model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set()
    )
    ours = {id(variable) for variable in model.variables}
    if all(id(value) in ours for _, _, value, _ in store.file.datasets):
        _PLANS[model] = (key, store.file)
    return store.file


def _weights_file_of(model: keras.Model, values: list[np.ndarray]) -> HeldFile:
    """The weights file of ``model`` holding ``values`` (in ``model.weights`` order) instead
    of its own: the layout Keras' writer gives the model, with other values."""
    plan = weights_plan(model)
    position = {id(variable): index for index, variable in enumerate(model.weights)}
    held = HeldFile(groups=plan.groups)
    for group, name, value, attrs in plan.datasets:
        if id(value) not in position or len(values) != len(position):
            raise ValueError("the best weights do not match the model's weights")
        held.datasets.append((group, name, np.asarray(values[position[id(value)]]), attrs))
    return held


def _hold_all(values: list[Any]) -> list[Any]:
    """:func:`_hold` of each value; the variables' all in one ``tf.identity_n`` (one op
    instead of one per variable: this is the time an asynchronous save blocks)."""
    held = [None if isinstance(v, keras.Variable | tf.Variable) else _hold(v) for v in values]
    variables = [i for i, value in enumerate(values) if held[i] is None]
    if variables:
        reads = [
            values[i].value if isinstance(values[i], keras.Variable) else values[i]
            for i in variables
        ]
        for index, tensor in zip(variables, tf.identity_n(reads), strict=True):
            held[index] = tensor
    return held


def _hold(value: Any) -> Any:
    """``value`` as it is now, for writing later: a tensor (a variable's is held with
    ``tf.identity``, which copies nothing), or a copy of anything else."""
    if isinstance(value, keras.Variable):
        return tf.identity(value.value)
    if isinstance(value, tf.Variable):
        return tf.identity(value)
    if tf.is_tensor(value):
        return value
    return np.array(value)


def _view(value: Any) -> np.ndarray:
    """A held value as a NumPy array: a view of the tensor's own buffer where DLPack gives
    one (CPU memory), else a copy (a GPU tensor, a dtype DLPack has not)."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.from_dlpack(value)
    except (TypeError, ValueError, BufferError, RuntimeError):
        return keras.ops.convert_to_numpy(value)


def _array_of(value: Any) -> Array:
    dtype = np.dtype(value.dtype.as_numpy_dtype) if tf.is_tensor(value) else value.dtype
    return Array(tuple(int(n) for n in value.shape), dtype_name(dtype))


def _with_rng_state(model: keras.Model, loop_state: Mapping[str, Any]) -> dict[str, Any]:
    state = dict(loop_state)
    # By position: Keras names seed generators with a process-wide counter.
    state["rng"] = [
        {"path": v.path, "state": np.asarray(v).tolist()} for v in seed_generator_variables(model)
    ]
    return state


def _write_small_files(directory: Path, state: Mapping[str, Any], config_yaml: str) -> None:
    # A diverged run's NaN loss is written as null: the reader refuses NaN.
    write_bytes_durably(directory / STATE_FILE, to_json(state, indent=2, sort_keys=True).encode())
    write_bytes_durably(directory / CONFIG_FILE, config_yaml.encode())


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
    ``DataInfo`` (input shape and classes let tools rebuild the model, the class names
    let them name its predictions; the fingerprint of an image folder's files lets a
    resume check it trains on the same images).
    """
    fingerprint = getattr(info, "fingerprint", None)
    names = recorded_class_names(getattr(info, "class_names", None))
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
        **({"class_names": names} if names is not None else {}),
        **({"data_fingerprint": fingerprint} if fingerprint is not None else {}),
        **extra,
    }


def weights_layout(model: keras.Model) -> dict[str, Array]:
    """The datasets (path -> shape and dtype) that ``model.save_weights`` writes.

    Found by Keras' own writer of that file (recorded, nothing written or
    copied): Keras' file layout is its own, and this is the one way to get it
    right in every version.
    """
    return _held_weights_file(model).layout()
