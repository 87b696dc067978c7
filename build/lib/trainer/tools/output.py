"""What the tools print and write: tables, JSON, sizes and times as people read them, class
names, and new output files or folders that appear whole or not at all.

Tools never overwrite what is there: :func:`new_output_path` refuses an output
that exists, and :func:`write_new_output` publishes a result by a rename onto
a name it claimed exclusively.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from checkpoints.durable import fsync_path, fsync_tree
from trainer.errors import UserError

# --------------------------------------------------------------------------- printing


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain left-aligned table, two spaces between columns, like ``git`` or ``ls -l``."""
    text_rows = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [list(headers), *text_rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"  # unreachable


def local_time(timestamp: Any) -> str | None:
    if not isinstance(timestamp, int | float):
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def class_names(names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The name of each class: ``names`` when there is one per class, else the indices."""
    if names is not None and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return list(names)
    return [str(index) for index in range(num_classes)]


# --------------------------------------------------------------------------- new outputs


def new_output_path(text: str) -> Path:
    """An output path that does not exist yet (tools never overwrite what is there)."""
    path = Path(text).expanduser()
    if path.exists():
        raise UserError(f"{text!r} already exists; choose a new output path")
    if not path.absolute().parent.is_dir():
        raise UserError(f"the folder of {text!r} does not exist")
    return path


def write_new_output(out: Path, suffix: str, write: Callable[[Path], None]) -> None:
    """``write(path)`` to a temporary ``path`` beside ``out``, then name the result ``out``.

    ``path`` ends in ``suffix`` (Keras' writers check it). Until the rename nothing is at
    ``out``, and a failure (of ``write`` or later) removes what was written: ``out`` is
    absent or whole. Nothing already at ``out`` is replaced, even if it appeared after the
    tool checked: the name is claimed first by an exclusive create (a file) or ``mkdir`` (a
    folder), which fail if anything is there, and the result is renamed onto that empty
    placeholder, which is all a rename can replace then. (Python exposes no
    rename-without-replace: ``renameat2(RENAME_NOREPLACE)`` is Linux-only and not in ``os``.)
    """
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}-{time.time_ns()}{suffix}")
    placeholder = False
    try:
        write(temporary)
        fsync_tree(temporary)
        try:
            if temporary.is_dir():
                out.mkdir()
            else:
                os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            raise UserError(f"{str(out)!r} already exists; choose a new output path") from None
        placeholder = True
        os.replace(temporary, out)
        placeholder = False
        fsync_path(out.parent)
    except BaseException:
        _remove(temporary)
        if placeholder:  # the rename failed: the empty placeholder goes, nothing else
            with contextlib.suppress(OSError):
                if out.is_dir():
                    out.rmdir()  # refuses a folder someone has written into
                elif out.stat().st_size == 0:
                    out.unlink()
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
