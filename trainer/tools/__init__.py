"""The command-line tools: ``python -m trainer <command>`` (one module per command).

What every command shares lives here: finding runs and checkpoints on disk,
printing a table or JSON, writing plots. (Composing a config and importing
Keras quietly are ``trainer.startup``'s.) Importing this package is cheap:
no TensorFlow, no Hydra, no NumPy; commands import those when they need them.

Exit status, for every command: 0 when all is well, 1 when the thing checked
is bad (``verify`` found a corrupt checkpoint) or the machine refused a write
(a full disk: ``StorageError``), 2 for bad input (a path that does not exist, a
directory that holds no checkpoint, an unknown name, an output that exists),
with one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from checkpoints import (
    CHECKPOINT_PREFIX,
    MANIFEST,
    Checkpoint,
    is_checkpoint_name,
    latest_valid_checkpoint,
    list_checkpoints,
    verify,
)
from checkpoints.remote import is_url
from trainer.errors import UserError, storage_errors
from trainer.exits import BAD, BAD_INPUT, OK  # noqa: F401 (every command's exit statuses)

# The command modules, in the order ``--help`` lists them. Each defines
# NAME, HELP, DESCRIPTION, add_arguments(parser) and run(args) -> exit status.
COMMAND_MODULES = (
    "list_runs",
    "inspect_checkpoint",
    "verify_checkpoints",
    "compare",
    "export",
    "rescue",
    "plot_schedule",
    "evaluate",
    "predict",
)


class ToolParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``error: ...`` and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see: {self.prog} --help)")


# --------------------------------------------------------------------------- finding things


def existing_path(text: str) -> Path:
    """``text`` as a Path that exists; a UserError otherwise.

    A URL (``s3://bucket/run``, ``.../step-N``) is copied to a local folder first
    (``trainer.runs.remote_run.remote_copy``): every tool reads it as a local run.
    """
    if is_url(text):
        from trainer.runs.remote_run import remote_copy

        return remote_copy(text)
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError(f"{text!r} does not exist")
    return path


def is_checkpoint_dir(path: Path) -> bool:
    return path.is_dir() and (is_checkpoint_name(path.name) or (path / MANIFEST).is_file())


def find_runs(root: Path) -> list[Path]:
    """Run directories at or under ``root`` (directories holding ``step-*`` folders), sorted.

    Hidden directories (staging, ``.hydra``) and the checkpoints themselves are
    not searched; symlinked directories are not followed.
    """
    runs = []
    for directory, subdirs, _ in os.walk(root):
        names = [name for name in subdirs if is_checkpoint_name(name)]
        if names:
            runs.append(Path(directory))
        subdirs[:] = sorted(
            name for name in subdirs if not name.startswith(".") and not is_checkpoint_name(name)
        )
    return sorted(runs)


def checkpoints_under(text: str) -> dict[Path, list[Path]]:
    """Run directory -> its checkpoint directories, for a checkpoint, a run or a root.

    A UserError if the path does not exist or holds no checkpoint.
    """
    path = existing_path(text)
    if is_checkpoint_dir(path):
        return {path.parent: [path]}
    if not path.is_dir():
        raise UserError(f"{text!r} is not a directory (a checkpoint, a run, or a folder of runs)")
    found = {run: list_checkpoints(run) for run in find_runs(path)}
    if not found:
        raise UserError(
            f"no checkpoints under {text!r} (expected a run directory with "
            f"{CHECKPOINT_PREFIX}* folders, one of those, or a folder above runs)"
        )
    return found


def one_checkpoint(text: str, report=None) -> Checkpoint:
    """The checkpoint ``text`` names: a checkpoint directory, or a run (its newest valid one).

    The result is verified; a checkpoint given by name is returned even if it
    does not verify (``.problems`` says why) so that ``inspect`` can show it.
    """
    path = existing_path(text)
    if is_checkpoint_dir(path):
        return verify(path)
    if not path.is_dir():
        raise UserError(f"{text!r} is not a checkpoint directory")
    if not list_checkpoints(path):
        raise UserError(
            f"{text!r} is not a checkpoint (no {MANIFEST}) nor a run directory "
            f"(no {CHECKPOINT_PREFIX}* folders)"
        )
    checkpoint = latest_valid_checkpoint(
        path, report or (lambda line: print(line, file=sys.stderr))
    )
    if checkpoint is None:
        raise UserError(f"run {text!r} holds no checkpoint that verifies")
    print(f"Using {checkpoint.path} (the newest valid checkpoint of the run)", file=sys.stderr)
    return checkpoint


def valid_checkpoint(text: str) -> Checkpoint:
    """Like :func:`one_checkpoint`, but a checkpoint that does not verify is refused."""
    checkpoint = one_checkpoint(text)
    if not checkpoint.valid:
        raise UserError(
            f"checkpoint {checkpoint.path} does not verify: {'; '.join(checkpoint.problems)}"
        )
    return checkpoint


def new_output_path(text: str) -> Path:
    """An output path that does not exist yet (tools never overwrite what is there)."""
    path = Path(text).expanduser()
    if path.exists():
        raise UserError(f"{text!r} already exists; choose a new output path")
    if not path.absolute().parent.is_dir():
        raise UserError(f"the folder of {text!r} does not exist")
    return path


# --------------------------------------------------------------------------- output


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


def directory_size(path: Path) -> int:
    """The bytes of the regular files in ``path`` (symlinks are not followed)."""
    total = 0
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total


# --------------------------------------------------------------------------- heavy imports


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


def add_import_argument(parser: Any, what: str) -> None:
    """``--import MODULE`` (repeatable): modules that register the user's own ``what``."""
    parser.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help=f"a module that registers your own {what} (as imports=[...] in training)",
    )
