"""A checkpoint directory's manifest: its schema, writing it (the commit), reading it, verifying it.

A run directory holds one directory per checkpoint::

    <run>/step-00000450/
        manifest.json       format and project version, step, epoch, metrics, learning
                            rate, and the size and sha256 of every other file
        model.weights.h5    plain Keras: model.load_weights() on the model built from config
        optimizer.h5        the optimizer's variables (iterations and slots), by index
        trainer_state.json  data position, RNG states, callback states, best metric
        config.yaml         the run's config: model, optimizer, schedule side by side,
                            plus the schedule resolved to steps (`resolved_schedule`)
    <run>/latest, <run>/best   one line: the name of a checkpoint directory

A checkpoint is committed by :func:`commit_checkpoint`: every file of its
staging directory hashed and fsynced (``checkpoints.durable``), the manifest
written last, then the directory renamed into place. :func:`verify` re-hashes
every file against the manifest and checks the HDF5 files; a checkpoint whose
manifest does not verify is never used. Listing a run's checkpoints and its
pointers is ``checkpoints.listing``.

This module never imports TensorFlow and never executes anything it reads:
files are read through ``checkpoints.reading`` (regular files only,
bounded, plain data; the manifest checked against :data:`MANIFEST_SCHEMA`)
and HDF5 files checked by ``checkpoints.io.h5``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from checkpoints.durable import file_entries, rename_into_place
from checkpoints.errors import UserError
from checkpoints.io.h5 import (
    check_h5_file,
    datasets,
    optimizer_file_problem,
    read_datasets,
)
from checkpoints.io.read_into import PIECE, read_into
from checkpoints.layout import (
    CHECKED_H5_FILES,
    CHECKPOINT_PREFIX,
    FORMAT_VERSION,
    H5_FILES,
    MANIFEST,
    MAX_GLOBAL_STEP,
    OPTIMIZER_FILE,
)
from checkpoints.reading import open_regular, read_mapping, to_json
from checkpoints.schemas import (
    COUNT,
    Integer,
    ListOf,
    MappingOf,
    Nullable,
    Number,
    Record,
    Text,
)
from checkpoints.version import __version__

if TYPE_CHECKING:
    from concurrent.futures import Future

MAX_MANIFEST_BYTES = 1 << 20  # a manifest lists a handful of files; anything bigger is hostile
MAX_ENTRIES = 1000  # entries of a checkpoint directory looked at by verify
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# The dataset's class names (label i is class_names[i]), recorded so that `predict` and
# `evaluate` can name classes: each one line of printable text (tools print them), and all
# of them within MAX_CLASS_NAMES_CHARS, a quarter of what a manifest may hold. A dataset
# whose names do not fit is recorded without them: the tools then show indices.
MAX_CLASS_NAME = 256
MAX_CLASS_NAMES_CHARS = MAX_MANIFEST_BYTES // 4
CLASS_NAMES = ListOf(
    Text(MAX_CLASS_NAME, pattern=r"[^\x00-\x1f\x7f]+"), max_length=MAX_CLASS_NAMES_CHARS // 2
)

# What a manifest holds (commit_checkpoint and checkpoints.state.progress_manifest
# write it). Only the first three are required: older checkpoints lack the others.
FILE_ENTRY = Record(
    {"size": Integer(0, 1 << 50), "sha256": Text(64, pattern="[0-9a-f]{64}")},
    required=("size", "sha256"),
)
MANIFEST_SCHEMA = Record(
    {
        "format_version": Integer(1, FORMAT_VERSION),
        "global_step": Integer(0, MAX_GLOBAL_STEP),
        "files": MappingOf(FILE_ENTRY, max_length=64),
        "project_version": Text(64),
        "written_at": Number(0, 253402300799),  # to 9999-12-31: what local time can show
        "epoch": COUNT,
        "batches_done": COUNT,
        "epochs_completed": COUNT,
        "steps_per_epoch": Integer(1, MAX_GLOBAL_STEP),
        "metrics": MappingOf(Nullable(Number()), max_length=1000),  # null: was NaN or inf
        "learning_rate": Nullable(Number(0)),
        "monitor": Text(256),
        "input_shape": ListOf(Integer(1, 1 << 31), max_length=8),
        "num_classes": Integer(1, 1 << 31),
        "class_names": CLASS_NAMES,  # one per class (read_manifest checks the count)
        "num_replicas": Integer(1, 1 << 20),
        "data_fingerprint": Text(64, pattern="[0-9a-f]{64}"),  # trainer.data.folder
        "rescued_from": Text(),
    },
    required=("format_version", "global_step", "files"),
)


def recorded_class_names(names: Iterable[Any] | None) -> list[str] | None:
    """``names`` as a manifest records them, or None when they cannot be (not strings,
    not each one printable line, or more than :data:`MAX_CLASS_NAMES_CHARS` in all)."""
    if names is None:
        return None
    names = list(names)
    if CLASS_NAMES.problem(names, "class_names"):
        return None
    if sum(len(name) + 4 for name in names) > MAX_CLASS_NAMES_CHARS:  # 4: JSON's '"", '
        return None
    return names


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ModelShape:
    """What a manifest records of the data a model is built for (the part of a dataset's
    info that ``checkpoints.state.progress_manifest`` and a model's rebuild read)."""

    input_shape: tuple[int, ...]
    num_classes: int


@dataclass
class Checkpoint:
    """One checkpoint directory and its parsed manifest (``None`` when unreadable)."""

    path: Path
    manifest: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.manifest is not None and not self.problems

    @property
    def global_step(self) -> int:
        if self.manifest is not None:
            return int(self.manifest["global_step"])
        return int(self.path.name[len(CHECKPOINT_PREFIX) :])

    def file(self, name: str) -> Path:
        """Path of a file the manifest lists; refuses names that could leave the directory."""
        if self.manifest is None or name not in self.manifest["files"]:
            raise UserError(f"checkpoint {self.path} has no file {name!r} in its manifest")
        return self.path / name


def read_manifest(path: Path) -> dict[str, Any]:
    """The parsed manifest of checkpoint ``path``, checked against :data:`MANIFEST_SCHEMA`;
    ValueError says in one line what is wrong with it."""
    manifest_path = path / MANIFEST
    if not os.path.lexists(manifest_path):
        raise ValueError(f"no {MANIFEST}")
    manifest = read_mapping(manifest_path, MAX_MANIFEST_BYTES)
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{MANIFEST} has no integer format_version")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"format version {version} is newer than this trainer reads ({FORMAT_VERSION}); "
            "upgrade the trainer"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError(f"{MANIFEST} lists no files")
    for name in files:
        if not _FILE_NAME.match(name) or name in (".", "..") or name == MANIFEST:
            raise ValueError(f"{MANIFEST} lists a file name that is not allowed: {name!r}")
    if not isinstance(manifest.get("global_step"), int):
        raise ValueError(f"{MANIFEST} has no integer global_step")
    problem = MANIFEST_SCHEMA.problem(manifest, "")
    steps, done = manifest.get("steps_per_epoch"), manifest.get("batches_done")
    if problem is None and steps is not None and done is not None and done > steps:
        problem = f"batches_done is {done}, more than steps_per_epoch ({steps})"
    names, classes = manifest.get("class_names"), manifest.get("num_classes")
    if problem is None and names is not None and len(names) != classes:
        problem = f"class_names has {len(names)} names, but num_classes is {classes}"
    if problem:
        raise ValueError(f"{MANIFEST}: {problem}")
    return manifest


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at ``path`` with its manifest read and checked, its files not
    looked at (listing, pruning: cheap); ``.problems`` says why it is unusable.

    A checkpoint directory that is a symlink is refused: a run holds its own.
    """
    checkpoint = Checkpoint(Path(path))
    if checkpoint.path.is_symlink():
        checkpoint.problems.append("the checkpoint directory is a symlink")
        return checkpoint
    try:
        checkpoint.manifest = read_manifest(checkpoint.path)
    except (OSError, ValueError) as error:
        checkpoint.problems.append(str(error))
    return checkpoint


# --------------------------------------------------------------------------- writing


def commit_checkpoint(staging: Path, final: Path, manifest: Mapping[str, Any]) -> None:
    """Hash and fsync every file in ``staging``, write the manifest, rename to ``final``.

    ``manifest`` gives everything but the file list, which is computed here: a
    file written by ``checkpoints.durable.write_pieces_durably`` (and unchanged
    since) was hashed and fsynced as it was written, any other is read, hashed
    and fsynced now (``checkpoints.durable.file_entries``).
    """
    files = {
        name: {"size": entry.size, "sha256": entry.sha256}
        for name, entry in file_entries(staging, leave_out=MANIFEST).items()
    }
    full = {
        "format_version": FORMAT_VERSION,
        "project_version": __version__,
        "written_at": time.time(),
        **manifest,
        "files": files,
    }
    with open(staging / MANIFEST, "w") as handle:
        handle.write(to_json(full, indent=2, sort_keys=True))  # NaN metrics as null
        handle.flush()
        os.fsync(handle.fileno())
    rename_into_place(staging, final)


# --------------------------------------------------------------------------- verifying


def verify(path: Path, *, hashes: bool = True) -> Checkpoint:
    """Re-hash every file of the checkpoint at ``path``; ``.problems`` lists what is wrong.

    Besides the manifest and each file's size and sha256: the directory and the
    files in it must not be symlinks, each file must be a regular one, and each
    HDF5 file must pass ``checkpoints.io.h5.check_h5_file`` (no external
    storage or links, numeric datasets stored in the file), ``optimizer.h5``
    hold one dataset per variable, its step the manifest's ``global_step``.
    ``hashes=False`` checks all that but the sha256s: a truncated or missing
    file is caught, a changed byte is not (see ``verify_in_background``).
    """
    checkpoint = read_checkpoint(path)
    if checkpoint.manifest is None:
        return checkpoint
    checkpoint.problems.extend(_symlinks(checkpoint.path, skip=checkpoint.manifest["files"]))
    files = checkpoint.manifest["files"]
    found = file_problems(checkpoint.path, files, hashes=hashes)
    for name in files:
        file_path = checkpoint.path / name
        if problem := found[name]:
            checkpoint.problems.append(f"{name}: {problem}")
        elif name == OPTIMIZER_FILE:
            step = checkpoint.manifest["global_step"]
            if problem := optimizer_file_problem(file_path, name, step):
                checkpoint.problems.append(problem)
        elif name in CHECKED_H5_FILES:
            checkpoint.problems.extend(f"{name}: {p}" for p in check_h5_file(file_path))
    return checkpoint


def _symlinks(directory: Path, skip: Iterable[str]) -> list[str]:
    """A problem for each symlink in ``directory``, but those in ``skip`` (reported apart)."""
    skip = set(skip)
    problems = []
    try:
        with os.scandir(directory) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_ENTRIES:
                    problems.append(f"the directory holds more than {MAX_ENTRIES} entries")
                    break
                if entry.is_symlink() and entry.name not in skip:
                    problems.append(f"{entry.name}: a symlink (a checkpoint holds files only)")
    except OSError as error:
        problems.append(f"the directory cannot be listed ({error.strerror})")
    return problems


def file_problems(
    directory: Path, files: Mapping[str, Mapping[str, Any]], *, hashes: bool = True
) -> dict[str, str | None]:
    """name -> what is wrong with ``directory/name`` against its manifest entry (``files``:
    size, sha256), or None. The large files are hashed side by side, one per core (sha256
    is one core's work per file; reading and hashing release the GIL); a file found sound
    is remembered (``was_verified``) until it changes."""

    def problem(name: str) -> str | None:
        return _file_problem(directory / name, files[name], hashes)

    large = [name for name in files if files[name]["size"] >= PIECE] if hashes else []
    workers = min(len(large), os.cpu_count() or 1)
    found: dict[str, str | None] = {}
    if workers >= 2:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, thread_name_prefix="sha256") as executor:
            found = dict(zip(large, executor.map(problem, large), strict=True))
    return {name: found[name] if name in found else problem(name) for name in files}


def _file_problem(file_path: Path, entry: Mapping[str, Any], hashes: bool) -> str | None:
    if not os.path.lexists(file_path):
        return "missing"
    try:
        with open_regular(file_path) as handle:
            status = os.fstat(handle.fileno())
            if status.st_size != entry["size"]:
                return f"size {status.st_size} bytes, manifest says {entry['size']}"
            if hashes:
                if _sha256_of_size(handle, entry["size"]) != entry["sha256"]:
                    return "sha256 does not match the manifest"
                _remember_verified(file_path, status, entry["sha256"])
    except ValueError as error:
        return str(error).removeprefix(f"{file_path.name} ")
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    return None


def _sha256_of_size(handle: Any, size: int) -> str | None:
    """The sha256 of the first ``size`` bytes of ``handle`` (a regular file), read and
    hashed side by side (``checkpoints.io.read_into``: the disk reads piece ``k + 1``
    while piece ``k`` is hashed); None if the file ends before."""
    digest = hashlib.sha256()
    try:
        read_into(handle.fileno(), size, [], digest)
    except ValueError:
        return None
    return digest.hexdigest()


# Files whose sha256 verify() found to match their manifest: path -> (identity, sha256),
# the identity being (inode, size, mtime_ns, ctime_ns). Bounded: the oldest are dropped.
_VERIFIED: dict[str, tuple[tuple[int, int, int, int], str]] = {}
_VERIFIED_LOCK = threading.Lock()
_MAX_VERIFIED = 256


def file_identity(status: os.stat_result) -> tuple[int, int, int, int]:
    """What changes whenever a file's bytes do (through the file system): inode, size,
    mtime, ctime."""
    return (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def _remember_verified(path: Path, status: os.stat_result, sha256: str) -> None:
    with _VERIFIED_LOCK:
        _VERIFIED[str(path)] = (file_identity(status), sha256)
        while len(_VERIFIED) > _MAX_VERIFIED:
            del _VERIFIED[next(iter(_VERIFIED))]


def was_verified(path: Path, status: os.stat_result, sha256: str) -> bool:
    """Whether :func:`verify` hashed ``path`` to ``sha256`` and the file, as ``status``
    (an ``fstat`` of it open now) shows it, is still that one: same inode, size, mtime
    and ctime. A restore then loads it without hashing it again (a resume verifies
    beside TensorFlow's import, then restores: one hash of each byte, not two)."""
    with _VERIFIED_LOCK:
        remembered = _VERIFIED.get(str(path))
    return remembered == (file_identity(status), sha256)


def forget_verified() -> None:
    """Forget what :func:`verify` hashed: the next restore of any file hashes it (benchmarks)."""
    with _VERIFIED_LOCK:
        _VERIFIED.clear()


def verify_in_background(path: Path) -> Future[Checkpoint]:
    """``verify(path)`` on a thread of its own; the future's result is its ``Checkpoint``.

    Reading and hashing release the GIL, so this runs beside TensorFlow's
    import (seconds, one core) instead of before it, and leaves the files in the
    page cache for the restore that follows.
    """
    return in_background(verify, Path(path), name="verify")


def in_background(function: Callable[..., Any], *args: Any, name: str) -> Future:
    """``function(*args)`` on a thread of its own (named ``name``); its future."""
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(1, thread_name_prefix=name)
    future = executor.submit(function, *args)
    executor.shutdown(wait=False)  # the thread ends with its one task
    return future


def checkpoint_arrays(path: Path) -> dict[str, Any]:
    """Every array of a checkpoint's model and optimizer files, keyed ``<file>/<h5 path>``.

    For comparing checkpoints (tests, fault injection, tools); each file is checked
    by ``checkpoints.io.h5`` first (a ValueError names its problem).
    """
    found: dict[str, Any] = {}
    for name in H5_FILES:
        source = Path(path) / name
        paths = [dataset.path for dataset in datasets(source, name)]
        found.update(
            (f"{name}/{key}", value)
            for key, value in zip(paths, read_datasets(source, paths, name), strict=True)
        )
    return found
