"""Read a file once, start to end, each stretch of it straight into the memory it is loaded
from, and hash every byte on the way.

A restore used to read a checkpoint file into a new ``bytes``, hash it, then hand
NumPy views of it to TensorFlow, which copied each one (twice: ``value.copy()``
in its conversion, then the assignment): three passes over fresh memory for
each byte. :func:`read_into` is one pass: the bytes of each dataset go from the
page cache into the buffer the caller gives for it (``checkpoints.restore``
gives the memory of a new tensor, which the variable then adopts), the bytes
between them (HDF5's metadata, a few KB) into scratch memory, and all of them,
in file order, to the hash on a second thread, which hashes piece ``k`` while
this one reads piece ``k + 1`` (both release the GIL). So a restore takes the
longer of reading and hashing, not their sum.

No TensorFlow, no h5py here: offsets and buffers come from the caller.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from typing import Any

PIECE = 16 << 20  # bytes read (and handed to the hash) at a time
QUEUED = 2  # pieces read ahead of the hash at most: scratch memory stays bounded


def read_into(
    fd: int, size: int, placements: Sequence[tuple[int, memoryview]], digest: Any
) -> None:
    """Read bytes ``[0, size)`` of the open file ``fd`` in order, once.

    ``placements``: ``(offset, buffer)`` pairs, each writable ``buffer`` (a flat
    byte ``memoryview``) receiving bytes ``[offset, offset + len(buffer))``;
    sorted by offset, not overlapping, inside the file (a ValueError otherwise,
    before anything is read). ``digest`` (a ``hashlib`` object, or None for no
    hash) is updated with every byte, in order. A ValueError if the file ends
    before ``size`` bytes; an OSError as the read raises it.
    """
    end = 0
    for offset, buffer in placements:
        if offset < end:
            raise ValueError(f"two datasets share the bytes at offset {offset}")
        end = offset + len(buffer)
        if end > size:
            raise ValueError(f"a dataset at offset {offset} lies beyond the end of the file")
    if hasattr(os, "posix_fadvise"):  # a longer read-ahead where the file is not cached
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_SEQUENTIAL)
    hasher = _Hasher(digest)
    try:
        position = 0
        for offset, buffer in [*placements, (size, memoryview(b""))]:
            while position < offset:  # the bytes before this placement: hashed only
                scratch = hasher.scratch(min(PIECE, offset - position))
                piece = scratch[: min(len(scratch), offset - position)]
                _read_fully(fd, piece, position)
                hasher.add(piece, scratch)
                position += len(piece)
            for start in range(0, len(buffer), PIECE):
                piece = buffer[start : start + PIECE]
                _read_fully(fd, piece, position)
                hasher.add(piece)
                position += len(piece)
    finally:
        hasher.finish()


def _read_fully(fd: int, buffer: memoryview, offset: int) -> None:
    done = 0
    while done < len(buffer):
        got = os.preadv(fd, [buffer[done:]], offset + done)
        if got == 0:
            raise ValueError(f"the file ends at {offset + done} bytes, before its listed size")
        done += got


class _Hasher:
    """``digest.update`` of each piece added, in order, on a thread of its own; and the
    scratch memory for bytes that are only hashed, each buffer reused once hashed (new
    memory for each piece costs more to fault in than the hash, on some machines)."""

    def __init__(self, digest: Any) -> None:
        self.digest = digest
        self.pieces: queue.Queue[tuple[memoryview, memoryview | None] | None]
        self.pieces = queue.Queue(QUEUED)
        self.free: queue.Queue[memoryview] = queue.Queue()
        self.made = 0
        self.thread = None
        if digest is not None:
            self.thread = threading.Thread(target=self._run, name="read-hash", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while (item := self.pieces.get()) is not None:
            piece, scratch = item
            self.digest.update(piece)
            if scratch is not None:
                self.free.put(scratch)

    def scratch(self, wanted: int) -> memoryview:
        """A buffer that no piece waiting to be hashed is in: a free one (of any size), or
        a new one of ``wanted`` bytes while fewer than QUEUED + 1 were made (one without a
        hash); else the next to be freed."""
        if self.free.empty() and self.made < (QUEUED + 1 if self.thread is not None else 1):
            self.made += 1
            return memoryview(bytearray(wanted))
        return self.free.get()

    def add(self, piece: memoryview, scratch: memoryview | None = None) -> None:
        """Hash ``piece`` next; ``scratch``: the buffer :meth:`scratch` gave that it is in,
        free again once it is hashed."""
        if self.thread is not None:
            self.pieces.put((piece, scratch))
        elif scratch is not None:
            self.free.put(scratch)

    def finish(self) -> None:
        """Wait until every piece added is hashed (the caller's buffers are free after)."""
        if self.thread is not None:
            self.pieces.put(None)
            self.thread.join()
