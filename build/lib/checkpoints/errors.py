"""The two errors a checkpoint operation raises for a person to read, never a traceback.

- :class:`UserError`: bad input (a path, a name, a file that is not a checkpoint);
- :class:`StorageError`: the machine refused a write (disk full, read-only, ...).

Both carry one line. Whoever runs the operation prints it: ``trainer``'s entry points
(``trainer.exits``) with exit status 2 and 1, a ``model.fit`` script as it likes.
Imports nothing of this project.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import os
import re
from collections.abc import Iterator


class UserError(Exception):
    """Bad input from the user: a config value, a name, a path.

    The message is one line that says what was wrong and what is allowed.
    Entry points catch it, print ``error: <message>`` to stderr and exit with
    status 2; nothing existing has been changed when it is raised.
    """


class StorageError(Exception):
    """The machine refused a write the run needs: disk full, a read-only or
    permission-denied directory, a file size limit, an I/O error.

    The message is one line: what could not be written, where, the system's
    reason with its errno, and what is still intact. Entry points print
    ``error: <message>`` to stderr and exit with status 1. The writer has
    removed what it left half-written before raising it.
    """


# Failures of the machine that a write can meet, and the text the C library gives each:
# HDF5 puts "errno = N" into its messages, TensorFlow only the text.
_STORAGE_ERRNOS = tuple(
    getattr(errno_codes, name)
    for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM", "EIO", "ENOENT")
    if hasattr(errno_codes, name)
)
_HDF5_ERRNO = re.compile(r"errno = (\d+)")


def storage_failure(error: BaseException) -> str | None:
    """``'<reason> (errno N)'`` when ``error`` is the machine refusing a write, else None.

    >>> storage_failure(OSError(28, "No space left on device"))
    'No space left on device (errno 28)'
    >>> storage_failure(RuntimeError("Can't decrement id ref count (errno = 27, ...)"))
    'File too large (errno 27)'
    >>> storage_failure(ValueError("not a write")) is None
    True

    An ``OSError`` carries its errno (h5py raises some with it, filelock's
    ``Timeout`` is an OSError without one); HDF5's own errors (h5py raises them
    as RuntimeError too) name it in the message; TensorFlow's only have the
    system's text, e.g. ``...; No space left on device``.
    """
    code = getattr(error, "errno", None) if isinstance(error, OSError) else None
    if code is None:
        found = _HDF5_ERRNO.search(str(error))
        code = int(found.group(1)) if found else None
    if code is None:
        text = str(error)
        code = next((c for c in _STORAGE_ERRNOS if os.strerror(c) in text), None)
    if code is None or (not isinstance(error, OSError) and code not in _STORAGE_ERRNOS):
        return None
    return f"{os.strerror(code)} (errno {code})"


@contextlib.contextmanager
def storage_errors(what: str, intact: str = "") -> Iterator[None]:
    """A write failure of the machine in the block becomes a one-line StorageError.

    ``'cannot <what>: <reason> (errno N)[; <intact>]'``; any other error passes
    unchanged, so a bug still shows its traceback.
    """
    try:
        yield
    except (StorageError, UserError):
        raise
    except Exception as error:
        reason = storage_failure(error)
        if reason is None:
            raise
        raise StorageError(f"cannot {what}: {reason}{f'; {intact}' if intact else ''}") from error
