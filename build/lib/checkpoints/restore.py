"""The training state of a checkpoint, restored into live Keras objects.

Restoring builds nothing: the model and optimizer are rebuilt from config by
the caller, then every variable is matched by position and shape here. No
Keras object deserialization is involved, so nothing from the file can run.
Both HDF5 files are checked by ``checkpoints.io.h5`` before anything is
read from them: the weights file must hold exactly the datasets (paths,
shapes, dtypes) that ``save_weights`` of the rebuilt model writes, the
optimizer file exactly one numeric dataset per optimizer variable, the step
first (an integer scalar, the manifest's ``global_step``).

Each file is read once, start to end, its sha256 checked on the way (or not
again, when ``verify`` hashed this very file, unchanged since): see
:func:`restore_state`. Nothing is assigned from a file whose bytes are not the
ones its manifest lists. Writing the state is ``checkpoints.state``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import keras
import numpy as np
import tensorflow as tf

from checkpoints.errors import UserError
from checkpoints.io.h5 import (
    Array,
    Extent,
    dataset_extents,
    datasets,
    dtype_name,
    layout_problems,
    optimizer_datasets,
)
from checkpoints.io.read_into import read_into
from checkpoints.layout import BEST_WEIGHTS_FILE, MODEL_FILE, OPTIMIZER_FILE
from checkpoints.manifest import Checkpoint, file_identity, in_background, was_verified
from checkpoints.reading import open_regular, read_trainer_state
from checkpoints.state import seed_generator_variables, weights_layout, weights_plan


def restore_state(
    checkpoint: Checkpoint,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer | None,
) -> dict[str, Any]:
    """Load weights (and optimizer variables, unless ``optimizer`` is None) from ``checkpoint``.

    Every variable must match in count, shape and dtype, else a UserError says
    which one does not: a checkpoint of another model is refused, never half-loaded.
    Returns the loop state saved with the checkpoint.

    Each HDF5 file is read once, start to end (:func:`_load_values`). A file that
    ``verify`` hashed, unchanged since (what a resume and every tool restore), is
    read straight into the memory of its variables, and not hashed again. ``model``
    and ``optimizer`` must then be ones the caller has just built: that memory is
    written without TensorFlow's copy-on-write, so a tensor read from a variable
    before and still held would change too. Any other file (and a variable on an
    accelerator, or a distributed one) is read into new tensors, hashed on the
    way, and assigned only once the sha256 matched. The optimizer's file is read
    on a second thread meanwhile (sha256 is one core's work per file). The weights
    go straight into the variables Keras' writer stored them from (the layout is
    Keras': ``model.load_weights`` reads the file too, and is what loads it where
    a layer stores anything but its own variables).
    """
    # The optimizer's file is read (and hashed) on a thread of its own while this one
    # loads the weights: sha256 is one core's work per file, and both release the GIL.
    optimizer_file = None
    if optimizer is not None:
        optimizer.build(model.trainable_variables)
        optimizer_file = in_background(
            _optimizer_values, checkpoint, optimizer.variables, name="restore"
        )
    try:
        with _listed_file(checkpoint, MODEL_FILE) as weights:
            _check_weights_file(checkpoint, model, MODEL_FILE, weights)
            _load_weights(checkpoint, model, weights)
        state = _restore_rng_state(checkpoint, model)
        if optimizer_file is not None:
            for variable, value in zip(optimizer.variables, optimizer_file.result(), strict=True):
                if value is not None:  # None: read into the variable itself
                    variable.assign(value)
    finally:
        if optimizer_file is not None and not optimizer_file.cancel():
            optimizer_file.exception()  # waits: it is never left reading after a failure
    return state


def _restore_rng_state(checkpoint: Checkpoint, model: keras.Model) -> dict[str, Any]:
    """The loop state of ``checkpoint``, its RNG states (dropout's) assigned to ``model``."""
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


def read_best_weights(checkpoint: Checkpoint, model: keras.Model) -> list[np.ndarray] | None:
    """The weights ``early_stopping_best.weights.h5`` of ``checkpoint`` holds, in the order of
    ``model.weights``; None if it has none. Checked as ``model.weights.h5`` is, then loaded
    by Keras into ``model`` and read back (``model``'s own weights are put back after)."""
    if BEST_WEIGHTS_FILE not in ((checkpoint.manifest or {}).get("files") or {}):
        return None
    _check_weights_file(checkpoint, model, BEST_WEIGHTS_FILE)
    current = model.get_weights()
    try:
        model.load_weights(checkpoint.file(BEST_WEIGHTS_FILE))
        return model.get_weights()
    except (ValueError, KeyError) as error:
        raise UserError(
            f"checkpoint {checkpoint.path}: {BEST_WEIGHTS_FILE} does not fit the model: "
            f"{keras_reason(error)}"
        ) from None
    finally:
        model.set_weights(current)


@dataclass(frozen=True)
class _Listed:
    """A checkpoint file open for reading, its size the one its manifest lists."""

    checkpoint: Checkpoint
    name: str
    handle: IO[bytes]
    status: os.stat_result

    @property
    def entry(self) -> Mapping[str, Any]:
        return self.checkpoint.manifest["files"][self.name]

    @property
    def verified(self) -> bool:
        """Whether ``verify`` hashed this very file, unchanged since (then not hashed again)."""
        path = self.checkpoint.file(self.name)
        return was_verified(path, self.status, self.entry["sha256"])

    def refuse(self, reason: str) -> UserError:
        return UserError(f"checkpoint {self.checkpoint.path}: {self.name} {reason}")


@contextlib.contextmanager
def _listed_file(checkpoint: Checkpoint, name: str) -> Iterator[_Listed]:
    """The checkpoint's file ``name``, open; a UserError unless its size is the manifest's."""
    try:
        handle = open_regular(checkpoint.file(name))
    except ValueError as error:
        raise UserError(f"checkpoint {checkpoint.path}: {name} cannot be read ({error})") from None
    with handle:
        listed = _Listed(checkpoint, name, handle, os.fstat(handle.fileno()))
        if listed.status.st_size != listed.entry["size"]:
            raise listed.refuse(_NOT_LISTED)
        yield listed


_NOT_LISTED = "is not the file its manifest lists (its size or sha256 differ)"


def _read_listed(listed: _Listed, placements: list[tuple[int, memoryview]]) -> None:
    """Read ``listed`` once (``checkpoints.io.read_into``: ``placements`` filled, the
    rest only hashed); a UserError unless every byte is the manifest's (its sha256, taken
    on the way unless ``verify`` hashed this very file, unchanged since) and the file did
    not change while it was read (inode, size, mtime, ctime)."""
    digest = None if listed.verified else hashlib.sha256()
    try:
        read_into(listed.handle.fileno(), listed.entry["size"], placements, digest)
        after = os.fstat(listed.handle.fileno())
    except ValueError as error:
        raise listed.refuse(f"cannot be loaded: {error}") from None
    except OSError as error:
        raise listed.refuse(f"cannot be read ({error.strerror})") from None
    if file_identity(after) != file_identity(listed.status) or (
        digest is not None and digest.hexdigest() != listed.entry["sha256"]
    ):
        raise listed.refuse(_NOT_LISTED)


def _unsound(listed: _Listed, problem: str) -> UserError:
    """The error for a file whose HDF5 structure has ``problem``: that its bytes are not the
    manifest's, if so (what a damaged file is told first), else ``problem``."""
    _read_listed(listed, [])  # raises if the bytes are not the listed ones
    return UserError(f"checkpoint {listed.checkpoint.path}: {problem}")


def _extents(listed: _Listed, paths: list[str]) -> list[Extent]:
    """Where the values of datasets ``paths`` of ``listed`` lie (its metadata, checked)."""
    try:
        return dataset_extents(listed.handle, paths, listed.name)
    except ValueError as error:
        raise _unsound(listed, str(error)) from None


def _load_values(
    listed: _Listed, extents: list[Extent], variables: list[Any] | None = None
) -> list[Any]:
    """The values ``extents`` of ``listed`` locate, read by :func:`_read_listed`.

    Each is a new CPU tensor that nobody else holds (assigning it to a variable
    hands its memory over, where TensorFlow would copy a NumPy array twice), or a
    NumPy array where the file stores a value otherwise (in its metadata, or in
    another byte order); or None where the value was read straight into the memory
    of its variable (``variables``, in the order of ``extents``, shapes and dtypes
    checked by the caller): when the file was verified already, so that its bytes
    are known good before they are read, and the variable is a plain one on the
    CPU (:func:`_memory_of_variable`). That saves the new memory, which costs more
    to fault in than the read itself (1 to 2 s per GiB on the machine measured).
    """
    in_place = listed.verified and variables is not None
    made = []  # (tensor, memory the bytes go to, whether that is the variable's own)
    for index, extent in enumerate(extents):
        memory = None
        if in_place and extent.offset is not None:
            memory = _memory_of_variable(variables[index], extent)
        made.append((None, memory, True) if memory is not None else _destination(extent))
    placements = sorted(
        (extent.offset, buffer)
        for extent, (_, buffer, _) in zip(extents, made, strict=True)
        if extent.offset is not None
    )
    _read_listed(listed, placements)
    values = []
    for extent, (tensor, buffer, own) in zip(extents, made, strict=True):
        if extent.offset is None:
            values.append(extent.value)
        elif own:
            values.append(None)
        elif tensor is not None:
            values.append(tensor)
        else:
            array = np.frombuffer(buffer, extent.dtype).reshape(extent.shape)
            values.append(array.astype(extent.dtype.newbyteorder("=")))
    return values


def _destination(extent: Extent) -> tuple[Any, memoryview | None, bool]:
    """Where the bytes of ``extent`` are read to: (a new tensor, its memory, False), or
    (None, new scratch memory, False) where no tensor can take them as they are (another
    byte order)."""
    if extent.offset is None:
        return None, None, False
    if extent.dtype.isnative:
        try:
            with tf.device("CPU:0"):
                tensor = tf.raw_ops.Empty(
                    shape=extent.shape, dtype=tf.as_dtype(extent.dtype), init=False
                )
            return tensor, _memory_of(tensor), False
        except (TypeError, ValueError, BufferError, RuntimeError):
            pass
    return None, memoryview(bytearray(extent.nbytes)), False


def _memory_of(tensor: Any) -> memoryview:
    """The bytes of ``tensor`` (a CPU tensor just made by ``Empty``), writable.

    TensorFlow gives no writable view of a tensor (DLPack hands NumPy a read-only
    one), so this is made from the address that view has (ctypes). It is written
    once, before anyone else sees the tensor: the caller made it and holds its
    only reference, and the view (which does not keep the tensor alive) is used
    only while the caller holds it.
    """
    view = np.from_dlpack(tensor)
    address, size = view.ctypes.data, view.nbytes
    del view  # it holds the tensor: assigning the tensor to a variable would then copy it
    return memoryview((ctypes.c_char * size).from_address(address)).cast("B")


def _memory_of_variable(variable: Any, extent: Extent) -> memoryview | None:
    """The memory ``variable`` keeps its value in, writable, or None where the bytes of
    ``extent`` cannot go there as they are.

    Only for a plain TensorFlow variable on the CPU (not a distributed one, not
    on an accelerator) whose dtype (byte order included) and shape are the
    dataset's, reading which returns its own buffer: two reads held at once have
    one address (a variable in copy-on-read mode, after sparse updates, gives each
    read a copy). Writing there bypasses TensorFlow's copy-on-write, so the
    variable's value must be held by nothing else: ``restore_state`` restores into
    a model and optimizer its caller has just built.
    """
    inner = getattr(variable, "_value", variable)  # Keras' TensorFlow backend: a tf.Variable
    if not isinstance(inner, tf.Variable) or isinstance(inner, tf.distribute.DistributedValues):
        return None
    if "CPU" not in inner.device:
        return None
    if not extent.dtype.isnative or tuple(inner.shape) != extent.shape:
        return None
    if np.dtype(inner.dtype.as_numpy_dtype) != extent.dtype or not extent.nbytes:
        return None
    try:
        first, second = inner.read_value(), inner.read_value()
        addresses = {np.from_dlpack(read).ctypes.data for read in (first, second)}
    except (TypeError, ValueError, BufferError, RuntimeError):
        return None
    del first, second
    if len(addresses) != 1:
        return None
    (address,) = addresses
    return memoryview((ctypes.c_char * extent.nbytes).from_address(address)).cast("B")


def _load_weights(checkpoint: Checkpoint, model: keras.Model, weights: _Listed) -> None:
    """Assign the values of the weights file (``weights``: open, layout checked) to ``model``."""
    plan = weights_plan(model)
    ours = {id(variable) for variable in model.variables}
    if all(
        isinstance(value, keras.Variable) and id(value) in ours and not attrs
        for _, _, value, attrs in plan.datasets
    ):  # each dataset is a variable's value, as Keras wrote it: assigned back to it
        paths = [f"{group}/{name}" if group else name for group, name, _, _ in plan.datasets]
        variables = [variable for _, _, variable, _ in plan.datasets]
        values = _load_values(weights, _extents(weights, paths), variables)
        for variable, value in zip(variables, values, strict=True):
            if value is not None:  # None: read into the variable itself
                variable.assign(value)
        return
    _read_listed(weights, [])  # the sha256, before Keras reads anything
    try:  # a layer that stores computed values, or bfloat16 ones: Keras' own loader
        with warnings.catch_warnings():  # Keras warns, then raises: the error says it all
            warnings.simplefilter("ignore")
            model.load_weights(checkpoint.file(MODEL_FILE))
    except (ValueError, KeyError) as error:
        raise UserError(
            f"checkpoint {checkpoint.path} does not fit the model built from its config: "
            f"{keras_reason(error)}"
        ) from None


def _check_weights_file(
    checkpoint: Checkpoint,
    model: keras.Model,
    name: str = MODEL_FILE,
    listed: _Listed | None = None,
) -> None:
    """The weights file ``name`` (``listed``: it, open; else read from the checkpoint) must
    hold the datasets ``model.save_weights`` writes; a UserError names the first
    difference (or says the bytes are not the listed ones, if they are not)."""
    try:
        found = {
            d.path: d.array
            for d in datasets(checkpoint.file(name) if listed is None else listed.handle, name)
        }
    except ValueError as error:
        if listed is not None:
            raise _unsound(listed, str(error)) from None
        raise UserError(f"checkpoint {checkpoint.path}: {error}") from None
    problems = layout_problems(
        found, weights_layout(model), name, "the model built from its config"
    )
    if problems:
        if listed is not None:
            _read_listed(listed, [])
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(
            f"checkpoint {checkpoint.path} does not fit the model built from its config: "
            f"{problems[0]}{more}"
        )


def read_optimizer_values(checkpoint: Checkpoint) -> list[np.ndarray]:
    """The variables of the checkpoint's ``optimizer.h5`` as NumPy arrays, checked (see
    :func:`_optimizer_values`); a UserError if the file is not sound."""
    return [np.asarray(value) for value in _optimizer_values(checkpoint)]


def _optimizer_values(checkpoint: Checkpoint, variables: list[Any] | None = None) -> list[Any]:
    """The variables of ``optimizer.h5``, step first (``checkpoints.io.h5
    .optimizer_datasets``), read once by :func:`_load_values` (its sha256 checked).

    ``variables``: the optimizer's, which the values are for: each must match its
    dataset in shape and dtype (a UserError names the first that does not, before
    anything is read), and a value read into its variable is None here.
    """
    with _listed_file(checkpoint, OPTIMIZER_FILE) as listed:
        try:
            paths = optimizer_datasets(listed.handle, OPTIMIZER_FILE, checkpoint.global_step)
        except ValueError as error:
            raise _unsound(listed, str(error)) from None
        extents = _extents(listed, paths)
        if variables is not None:
            _check_optimizer_fits(checkpoint, extents, variables)
        return _load_values(listed, extents, variables)


def _check_optimizer_fits(checkpoint: Checkpoint, extents: list[Extent], variables: list) -> None:
    if len(extents) != len(variables):
        raise UserError(
            f"checkpoint {checkpoint.path} holds {len(extents)} optimizer variables, "
            f"the optimizer built from its config has {len(variables)}"
        )
    for variable, extent in zip(variables, extents, strict=True):
        ours = Array(tuple(variable.shape), dtype_name(np.dtype(variable.dtype)))
        theirs = Array(extent.shape, dtype_name(extent.dtype))
        if theirs != ours:
            raise UserError(
                f"optimizer variable {variable.path}: {ours} in the optimizer, {theirs} in "
                f"checkpoint {checkpoint.path}"
            )
