"""Durable writes: a file, a pointer, a checkpoint directory is there in full or not at all.

- A file is written by :func:`write_pieces_durably` (or :func:`write_bytes_durably`):
  created, written piece by piece, hashed in the same pass, fsynced once. Its
  size and sha256 (:class:`FileEntry`) are remembered for the commit.
- A small file that readers may be reading (a pointer, a lock's holder, a run's
  summary) is replaced by :func:`write_text_atomically`: a temporary sibling,
  fsync, rename, fsync of the directory. Readers see the old file or the new one.
- A checkpoint is written into a hidden staging directory beside its final one
  (:func:`staging_dir`), on the same file system; :func:`file_entries` fsyncs and
  hashes what was not hashed while written, and :func:`rename_into_place` fsyncs
  the directory and renames it into place (``checkpoints.manifest.commit_checkpoint``
  writes the manifest in between). A checkpoint that is not complete is never
  visible under its final name; what a process that died left behind is removed
  (or put back) by :func:`remove_stale_staging`.

The bytes are Python's own writes, never HDF5's: a full disk is an ``OSError``
with its errno (see ``checkpoints.state`` for why). No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkpoints.io.writeback import start_writeback
from checkpoints.layout import CHECKPOINT_PREFIX, checkpoint_name
from checkpoints.reading import open_regular


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of regular file ``path`` (ValueError if it is a symlink, FIFO, device)."""
    with open_regular(path) as handle:
        return _sha256(handle, chunk)


def _sha256(handle: Any, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    while block := handle.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (opened read-only, which Linux allows for both)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Flush a written file, or every file and folder of a written folder, to the disk."""
    if not Path(path).is_dir():
        fsync_path(path)
        return
    for directory, _, files in os.walk(path):
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory))


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half.

    If a write fails (disk full...), the old file is untouched and the temporary removed.
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_bytes_durably(temporary, text.encode())
        _written_entry(temporary)  # not a checkpoint's file: nothing to remember
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_bytes_durably(path: Path, data: bytes | memoryview) -> FileEntry:
    """Create ``path`` holding ``data``, fsynced; its size and sha256 (see
    :func:`write_pieces_durably`)."""
    return write_pieces_durably(path, [data])


@dataclass(frozen=True)
class FileEntry:
    """A file's entry in a manifest: its size and the sha256 of its bytes."""

    size: int
    sha256: str


def write_pieces_durably(path: Path, pieces: Iterable[bytes | memoryview]) -> FileEntry:
    """Create ``path`` holding ``pieces`` one after the other, fsynced once at the end;
    return its size and sha256, computed from the same buffers as they are written.

    The file is hashed in the pass that writes it, never re-read: each piece is
    written, the disk is told to start writing it (``checkpoints.io.writeback``),
    and it is hashed while the disk does, so the fsync at the end waits for the
    last pieces only. One thread: on a machine whose cores are busy, a hasher
    thread beside the writer made a save slower, not faster (BENCHMARKS.md 6.).
    The entry is also remembered for :func:`file_entries` (a checkpoint's commit),
    which then neither re-reads nor re-fsyncs the file (it checks the file is still the one
    written: same inode, size and mtime). Python's own writes: a full disk is an
    ``OSError`` with its errno (see ``checkpoints.state`` for why HDF5
    files come here).
    """
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        for piece in pieces:
            view = memoryview(piece).cast("B")
            written = 0
            while written < len(view):  # os.write may write less than asked
                written += os.write(fd, view[written:])
            start_writeback(fd, size, len(view))
            digest.update(view)  # while the disk writes it
            size += len(view)
        os.fsync(fd)
    finally:
        os.close(fd)
    entry = FileEntry(size, digest.hexdigest())
    _remember(path, entry)
    return entry


# Files written by write_pieces_durably, with their entry, until file_entries (a commit)
# takes them: path -> (inode, size, mtime_ns, entry). Bounded: entries of staging
# directories that never committed (a failed save) are dropped oldest first.
_WRITTEN: dict[str, tuple[int, int, int, FileEntry]] = {}
_WRITTEN_LOCK = threading.Lock()
_MAX_WRITTEN = 256


def _remember(path: Path, entry: FileEntry) -> None:
    status = os.stat(path)
    with _WRITTEN_LOCK:
        _WRITTEN[str(path)] = (status.st_ino, status.st_size, status.st_mtime_ns, entry)
        while len(_WRITTEN) > _MAX_WRITTEN:
            del _WRITTEN[next(iter(_WRITTEN))]


def _written_entry(path: Path) -> FileEntry | None:
    """The entry :func:`write_pieces_durably` gave ``path``, if the file is still that one."""
    with _WRITTEN_LOCK:
        remembered = _WRITTEN.pop(str(path), None)
    if remembered is None:
        return None
    status = os.lstat(path)
    if (status.st_ino, status.st_size, status.st_mtime_ns) != remembered[:3]:
        return None
    return remembered[3]


def file_entries(directory: Path, *, leave_out: str) -> dict[str, FileEntry]:
    """name -> size and sha256 of every file in ``directory`` but ``leave_out``, each
    fsynced, in name order.

    A file written by :func:`write_pieces_durably` (and unchanged since) was hashed
    and fsynced as it was written, any other is read, hashed and fsynced now.
    """
    files = {}
    for file_path in sorted(directory.iterdir()):
        if file_path.name == leave_out:
            continue
        entry = _written_entry(file_path)
        if entry is None:  # not written by write_pieces_durably: hashed and fsynced here
            fsync_path(file_path)
            entry = FileEntry(file_path.stat().st_size, sha256_of(file_path))
        files[file_path.name] = entry
    return files


def rename_into_place(staging: Path, final: Path) -> None:
    """Fsync directory ``staging``, rename it to ``final``, fsync their parent.

    If ``final`` exists (a re-save of the same step: the epoch-end save after a
    step save), it is moved aside to a hidden sibling first, put back if the
    rename fails (a failed save loses nothing), and deleted once the new one is in
    place; a process that dies in between leaves it to :func:`remove_stale_staging`.
    """
    fsync_path(staging)
    replaced = None
    if final.exists():  # a re-save of the same step: the epoch-end save after a step save
        replaced = final.with_name(f".{final.name}.tmp-replaced-{os.getpid()}-{time.time_ns()}")
        os.rename(final, replaced)
    try:
        os.rename(staging, final)
    except BaseException:
        if replaced is not None:  # the old one goes back: a failed save loses nothing
            os.rename(replaced, final)
        raise
    fsync_path(final.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def staging_dir(run_dir: Path, global_step: int) -> Path:
    """A fresh hidden directory beside the final one, on the same filesystem."""
    path = Path(run_dir) / f".{checkpoint_name(global_step)}.tmp-{os.getpid()}-{time.time_ns()}"
    path.mkdir(parents=True)
    return path


def move_aside(path: Path) -> Path:
    """Rename checkpoint directory ``path`` to a hidden sibling, to be deleted later; return it.

    One rename, however large the checkpoint: pruning takes it out of every
    listing at once and leaves the unlinks (tens of ms per 100 MiB) to a
    background thread (``CheckpointManager``). If the process dies first, the
    next manager's :func:`remove_stale_staging` deletes it (a ``.tmp-`` sibling).
    """
    hidden = path.with_name(f".{path.name}.tmp-pruned-{os.getpid()}-{time.time_ns()}")
    os.rename(path, hidden)
    return hidden


def remove_stale_staging(run_dir: Path) -> None:
    """Delete half-written checkpoints left by a process that died while saving, and
    pruned ones it had not finished deleting (:func:`move_aside`).

    A checkpoint moved aside to be replaced (``.step-N.tmp-replaced-*``) whose
    replacement never arrived is put back instead: it is complete.
    """
    for path in Path(run_dir).glob(f".{CHECKPOINT_PREFIX}*.tmp-replaced-*"):
        final = path.with_name(path.name[1:].split(".tmp-", 1)[0])
        if not final.exists():
            os.rename(path, final)
    for path in Path(run_dir).glob(f".{CHECKPOINT_PREFIX}*.tmp-*"):
        shutil.rmtree(path, ignore_errors=True)
