"""Finding what a tool's arguments name: runs and checkpoints on disk (or at a URL).

A path that does not exist, holds no checkpoint, or names a checkpoint that
does not verify where one must is a ``UserError`` (one line, exit status 2).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
from trainer.errors import UserError


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


def directory_size(path: Path) -> int:
    """The bytes of the regular files in ``path`` (symlinks are not followed)."""
    total = 0
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total
