"""Plots the tools write (``compare``, ``evaluate``, ``plot-schedule``): matplotlib on the
Agg backend, an output path checked before any work, and a file that is whole or absent.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from trainer.errors import UserError, storage_errors


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display needed)."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_output(text: str, option: str, force: bool) -> Path:
    """The path ``option`` names for a plot: a suffix matplotlib writes, a folder that
    exists, and no file there unless ``force`` (``--force``) says to replace it.

    Checked before any work is done; a UserError otherwise.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(text).expanduser()
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if path.suffix[1:].lower() not in formats:
        raise UserError(
            f"{option} {text!r}: the file name must end in one of the formats matplotlib "
            f"writes: {', '.join('.' + f for f in formats)}"
        )
    if not path.absolute().parent.is_dir():
        raise UserError(f"the folder of {option} {text!r} does not exist")
    if path.is_dir():
        raise UserError(f"{option} {text!r} is a directory; name a file")
    if path.exists() and not force:
        raise UserError(f"{option} {text!r} already exists; add --force to replace it")
    return path


def add_force_argument(parser: Any, option: str) -> None:
    parser.add_argument(
        "--force", action="store_true", help=f"replace the file {option} names if it exists"
    )


def save_figure(plt: Any, figure: Any, out: Path, option: str, force: bool) -> None:
    """Lay out ``figure``, write it to ``out`` (see :func:`figure_output`) and close it.

    Without ``force`` the file is created exclusively, so a file that appeared
    since the check is never replaced; with it, the figure is written beside
    ``out`` and renamed over it, so a failed write leaves the old file whole.
    A write the machine refuses is a one-line StorageError.
    """
    out = Path(out)
    figure.tight_layout()
    written = out.with_name(f".{out.name}.tmp-{os.getpid()}-{time.time_ns()}") if force else out
    try:
        with storage_errors(f"write {option} {str(out)!r}"):
            try:
                _write_new_file(figure, written, out.suffix[1:].lower())
            except FileExistsError:
                raise UserError(
                    f"{option} {str(out)!r} already exists; add --force to replace it"
                ) from None
            if force:
                os.replace(written, out)
    finally:
        plt.close(figure)
        if force:
            written.unlink(missing_ok=True)


def _write_new_file(figure: Any, path: Path, file_format: str) -> None:
    """Create ``path`` (FileExistsError if it exists) holding the figure; a failed write
    removes it again."""
    with open(path, "xb") as handle:
        try:
            figure.savefig(handle, format=file_format)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
