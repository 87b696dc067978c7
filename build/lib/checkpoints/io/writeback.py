"""Start the disk writing a file's bytes as soon as they are written, not at its fsync.

A checkpoint file is fsynced once, when complete (``checkpoints.durable
.write_pieces_durably``). Without a hint, the kernel holds the written bytes
in the page cache until then, and the fsync waits for all of them; with
``sync_file_range(SYNC_FILE_RANGE_WRITE)`` after each piece, the disk writes
piece ``k`` while Python hashes it and writes piece ``k + 1``, and the final
fsync waits only for the last ones. It is a hint, never a durability
guarantee (the fsync is that): it does not wait, and errors it meets are
reported by the fsync, so its own result is ignored.

Python's ``os`` module has no ``sync_file_range`` (Linux only), hence ctypes;
elsewhere :func:`start_writeback` does nothing and the fsync does it all.
No TensorFlow here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing the dirty pages of the range, don't wait


def _sync_file_range():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = function.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing bytes ``[offset, offset + length)`` of ``fd`` to
    disk now, without waiting for them (see the module)."""
    if _SYNC_FILE_RANGE is not None and length > 0:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)
