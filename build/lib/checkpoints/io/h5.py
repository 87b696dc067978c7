"""The one reader of HDF5 files: every ``.h5`` the project reads is checked here first.

A checkpoint's ``model.weights.h5`` and ``optimizer.h5``, a rescued legacy
``.h5`` model and the ``model.weights.h5`` inside a ``.keras`` zip all go
through :func:`check_h5_file` before h5py or Keras reads a value from them.
It refuses what would make reading the file read something else or read
without bound:

- external links, and soft links (neither writer makes them; a soft link may
  lead through an external one), so every object is one of this file's own;
- datasets stored in outside files (HDF5 external storage) and virtual
  datasets (views of other files): a manifest's sha256 covers this file only;
- filters (compression: a few KB could inflate to gigabytes), and datasets
  whose data is not all in the file (fill values of any size cost nothing to store);
- datasets of anything but numbers (bool, int, uint, float), and objects
  other than groups and datasets; more than MAX_OBJECTS links.

So every value read is bytes of this file, read once: reading is bounded
by the file's size, which a manifest has checked. The other functions read
a checked file: :func:`datasets` (paths, shapes, dtypes, names),
:func:`layout_problems` (a file against the layout a model or optimizer
built from config has), :func:`read_datasets` (values; given a file's bytes, views
of them rather than copies), :func:`dataset_extents` (where each value lies, for a
restore that reads it straight into the tensor it loads) and
:func:`optimizer_datasets`.

No TensorFlow here (h5py never imports it).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from checkpoints.layout import MAX_GLOBAL_STEP
from checkpoints.reading import open_regular

MAX_OBJECTS = 100_000  # links in one file: a large model has a few thousand
MAX_PROBLEMS = 5  # reported per file: the first few say enough
NUMERIC_KINDS = "biuf"  # numpy dtype kinds: bool, signed and unsigned integer, float

# What check_h5_file takes: a path, the bytes of a file (a zip member), or an open file.
Source = str | os.PathLike | bytes | io.IOBase


@dataclass(frozen=True)
class Array:
    """A dataset's shape and dtype (``numpy.dtype.str`` without byte order, e.g. ``f4``)."""

    shape: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        return f"{self.dtype} {self.shape}"


@dataclass(frozen=True)
class Dataset:
    """One dataset of a checked file: its path, shape and dtype, and its name attributes."""

    path: str
    array: Array
    name: str | None = None  # its own ``path`` attribute (optimizer.h5)
    parent_name: str | None = None  # its group's ``name`` attribute (Keras: the layer)
    size: int = field(default=0)


def dtype_name(dtype: Any) -> str:
    """``float32`` -> ``f4``: kind and size, the same in either byte order."""
    return f"{dtype.kind}{dtype.itemsize}"


@contextlib.contextmanager
def _open(source: Source) -> Iterator[Any]:
    """``source`` opened with h5py; ValueError if it is not a regular, readable HDF5 file."""
    import h5py

    if isinstance(source, bytes | bytearray):
        handle = io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        handle = open_regular(Path(source))  # never a symlink, FIFO or device
    else:
        handle = source
    try:
        try:
            h5 = h5py.File(handle, "r")
        except Exception as error:  # h5py raises OSError, ValueError, RuntimeError...
            raise ValueError(f"not a readable HDF5 file ({_one_line(error)})") from None
        with h5:
            yield h5
    finally:
        if handle is not source:
            handle.close()


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines)[:200] or type(error).__name__


def check_h5_file(source: Source) -> list[str]:
    """What makes ``source`` unsafe or unreadable as an HDF5 file (see the module); [] if
    nothing. Each problem is one line naming the object (``layers/dense/vars/0: ...``)."""
    try:
        with _open(source) as handle:
            return _problems(handle)
    except ValueError as error:
        return [str(error)]
    except Exception as error:  # a damaged file can fail anywhere in h5py
        return [f"cannot be read as HDF5 ({_one_line(error)})"]


def _problems(handle: Any) -> list[str]:
    import h5py

    problems: list[str] = []
    links = 0

    def visit(name: str, link: Any) -> bool | None:
        nonlocal links
        links += 1
        if links > MAX_OBJECTS:
            problems.append(f"holds more than {MAX_OBJECTS} objects")
            return True  # stops the walk
        if isinstance(link, h5py.ExternalLink):
            problems.append(f"{name}: an external link (to {link.filename[:80]!r})")
        elif isinstance(link, h5py.SoftLink):
            problems.append(f"{name}: a soft link (to {link.path[:80]!r})")
        else:
            item = handle.get(name)
            if isinstance(item, h5py.Dataset):
                if found := _dataset_problem(item):
                    problems.append(f"{name}: {found}")
            elif not isinstance(item, h5py.Group):
                problems.append(f"{name}: a {type(item).__name__}, not a group or dataset")
        return True if len(problems) >= MAX_PROBLEMS else None

    # Visits every link once (a group hard-linked into itself included) without
    # following soft or external links.
    handle.visititems_links(visit)
    return problems


def _dataset_problem(dataset: Any) -> str | None:
    if dataset.is_virtual:
        return "a virtual dataset (its data lives in other files)"
    if dataset.external:
        return f"stored in an outside file ({str(dataset.external[0][0])[:80]!r})"
    if dataset.id.get_create_plist().get_nfilters():
        return "compressed or filtered (HDF5 filters are not allowed)"
    dtype = dataset.dtype
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        return f"holds {dtype} values, not numbers"
    if dataset.id.get_storage_size() != dataset.nbytes:
        return "its data is not stored in the file"
    return None


def refuse_problems(source: Source, what: str) -> None:
    """ValueError ``what: problem`` for the first problem :func:`check_h5_file` finds."""
    problems = check_h5_file(source)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"{what}: {problems[0]}{more}")


def datasets(source: Source, what: str) -> list[Dataset]:
    """Every dataset of ``source`` (checked first: a ValueError names its first problem)."""
    import h5py

    refuse_problems(source, what)
    found: list[Dataset] = []

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            found.append(
                Dataset(
                    path=name,
                    array=Array(tuple(int(n) for n in item.shape), dtype_name(item.dtype)),
                    name=_text_attribute(item, "path"),
                    parent_name=_text_attribute(item.parent, "name"),
                    size=int(item.size),
                )
            )

    with _open(source) as handle:
        handle.visititems(visit)
    return found


def _text_attribute(item: Any, key: str) -> str | None:
    """A short string attribute, or None (absent, not a string, too long)."""
    try:
        value = item.attrs.get(key)
    except Exception:  # an attribute of a type h5py cannot read
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and len(value) <= 256 else None


def layout_problems(
    found: Mapping[str, Array], expected: Mapping[str, Array], what: str, built: str
) -> list[str]:
    """How the datasets ``found`` in ``what`` differ from the ``expected`` ones of the
    ``built`` object (e.g. "the model built from its config"): one line each."""
    problems = []
    for path, array in expected.items():
        if path not in found:
            problems.append(f"{what} lacks {path} ({array}) that {built} has")
        elif found[path] != array:
            problems.append(f"{what}: {path} is {found[path]}, {built} has {array}")
    problems.extend(
        f"{what} holds {path} ({array}), which {built} does not have"
        for path, array in found.items()
        if path not in expected
    )
    return problems


def read_datasets(source: Source, paths: list[str], what: str) -> list[Any]:
    """The values (numpy arrays) of datasets ``paths`` of ``source``, checked first; a
    ValueError if the file has a problem or one of ``paths`` is not a dataset."""
    refuse_problems(source, what)
    with _open(source) as handle:
        return [_value(_dataset(handle, path, what), source, what) for path in paths]


def _dataset(handle: Any, path: str, what: str) -> Any:
    """The dataset ``path`` of an open file; a ValueError if it is missing or not a dataset."""
    import h5py

    item = handle.get(path)
    if not isinstance(item, h5py.Dataset):
        kind = "missing" if item is None else f"a {type(item).__name__}, not a dataset"
        raise ValueError(f"{what}: {path} is {kind}")
    return item


def _value(dataset: Any, source: Source, what: str) -> Any:
    """The value of a checked ``dataset``: when ``source`` is the file's bytes and the
    dataset is stored in one piece, a read-only NumPy view of those bytes (the file is
    read once, and what is loaded is what was hashed); else h5py reads it (a copy)."""
    offset = dataset.id.get_offset() if isinstance(source, bytes) else None
    if offset is None:  # a path, or a small dataset kept in its header
        return dataset[()]
    if offset + dataset.nbytes > len(source):
        raise ValueError(f"{what}: {dataset.name.lstrip('/')} lies beyond the end of the file")
    array = np.frombuffer(source, dtype=dataset.dtype, count=dataset.size, offset=offset)
    return array.reshape(dataset.shape)


@dataclass(frozen=True)
class Extent:
    """Where the value of a checked dataset lies: bytes ``[offset, offset + nbytes)`` of its
    file, stored as ``dtype`` (byte order included) in ``shape``; or, for a dataset kept in
    the file's metadata (small, chunked or empty), ``offset`` None and ``value`` as h5py
    read it."""

    offset: int | None
    nbytes: int
    dtype: np.dtype
    shape: tuple[int, ...]
    value: Any = None


def dataset_extents(source: Source, paths: list[str], what: str) -> list[Extent]:
    """The :class:`Extent` of each dataset ``paths`` of ``source``, checked first; a
    ValueError if the file has a problem or one of ``paths`` is not a dataset. Nothing but
    metadata (and the values kept in it) is read: ``checkpoints.io.read_into`` reads
    the rest, once, where it is loaded."""
    refuse_problems(source, what)
    extents = []
    with _open(source) as handle:
        for path in paths:
            item = _dataset(handle, path, what)
            offset = item.id.get_offset() if item.nbytes else None
            shape = tuple(int(n) for n in item.shape)
            value = item[()] if offset is None else None
            extents.append(Extent(offset, int(item.nbytes), item.dtype, shape, value))
    return extents


def optimizer_datasets(source: Source, what: str, global_step: int | None) -> list[str]:
    """The dataset names of an ``optimizer.h5`` (``checkpoints.state``), ``0`` to
    ``N-1``: index order; checked by :func:`optimizer_file_problem` first (a ValueError says
    what is wrong)."""
    problem = optimizer_file_problem(source, what, global_step)
    if problem:
        raise ValueError(problem)
    with _open(source) as handle:
        return [str(index) for index in range(len(handle))]


def optimizer_file_problem(source: Source, what: str, global_step: int | None) -> str | None:
    """What is wrong with an ``optimizer.h5``, or None; reads no value but the step.

    The file must pass :func:`check_h5_file` and hold exactly datasets ``0`` to
    ``N-1`` at its root, the first the step: an integer scalar in
    ``[0, MAX_GLOBAL_STEP]``, equal to ``global_step`` (the manifest's) when given.
    """
    import h5py

    problems = check_h5_file(source)
    if problems:
        return f"{what}: {problems[0]}"
    with _open(source) as handle:
        members = list(handle)
        names = [str(index) for index in range(len(members))]
        odd = sorted(set(members) - set(names))
        if odd or not names:
            held = f"holds {odd[0][:40]!r}" if odd else "holds none"
            return f"{what} must hold datasets named 0 to N-1 at its root, {held}"
        for name in names:
            item = handle[name]
            if not isinstance(item, h5py.Dataset):
                return f"{what}: {name} is a {type(item).__name__}, not a dataset"
        step = handle["0"]
        if step.shape != () or step.dtype.kind not in "iu":
            shown = Array(tuple(step.shape), dtype_name(step.dtype))
            return f"{what}: the step (dataset 0) is {shown}, not an integer scalar"
        value = int(step[()])
    if not 0 <= value <= MAX_GLOBAL_STEP:
        return f"{what}: the step is {value}, outside [0, {MAX_GLOBAL_STEP}]"
    if global_step is not None and value != global_step:
        return f"{what}: the step is {value}, the manifest says {global_step}"
    return None
