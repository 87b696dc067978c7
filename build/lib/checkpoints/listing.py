"""A run's checkpoints: listing them, its pointers, and which checkpoint a resume starts from.

A run directory holds its checkpoints (``step-NNNNNNNN/``, see ``checkpoints.layout``)
and two pointers, ``latest`` and ``best``: one line each, a checkpoint's name,
replaced atomically (``checkpoints.durable.write_text_atomically``). Listing
reads names only; :func:`latest_valid_checkpoint` and :func:`resolve_resume_path`
verify (``checkpoints.manifest.verify``) and fall back past a checkpoint that does
not verify, saying so. No TensorFlow here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from checkpoints.errors import UserError
from checkpoints.layout import CHECKPOINT_PREFIX, MANIFEST, is_checkpoint_name
from checkpoints.manifest import Checkpoint, verify
from checkpoints.reading import read_pointer_file


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoint directories of a run, oldest step first (not verified)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(
        (p for p in run_dir.iterdir() if p.is_dir() and is_checkpoint_name(p.name)),
        key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]),  # by step: 9-digit steps sort last
    )


def read_pointer(run_dir: Path, pointer: str) -> str | None:
    """The checkpoint name a pointer file names, or None when absent or malformed.

    A pointer is read only as a small regular file (never through a symlink,
    never a FIFO or device): see ``checkpoints.reading.read_pointer_file``.
    """
    try:
        name = read_pointer_file(Path(run_dir) / pointer)
    except ValueError:
        return None
    return name if is_checkpoint_name(name) else None


def latest_valid_checkpoint(
    run_dir: Path, report: Callable[[str], None] = print, *, hashes: bool = True
) -> Checkpoint | None:
    """The newest checkpoint of ``run_dir`` that verifies; each one skipped is reported."""
    for path in reversed(list_checkpoints(run_dir)):
        checkpoint = verify(path, hashes=hashes)
        if checkpoint.valid:
            return checkpoint
        report(f"checkpoint {path} does not verify ({'; '.join(checkpoint.problems)}); skipping it")
    return None


def resolve_resume_path(
    path: str | os.PathLike, report: Callable[[str], None] = print, *, hashes: bool = True
) -> Checkpoint:
    """The checkpoint that ``+resume=path`` names: a checkpoint directory, or a run directory.

    A run directory resumes from its newest checkpoint that verifies (falling
    back past broken ones, and saying so); a checkpoint directory resumes from
    exactly that checkpoint, and only if it verifies. ``hashes``: as in ``verify``.
    """
    target = Path(path).expanduser()
    if not target.exists():
        raise UserError(f"resume path {str(path)!r} does not exist")
    if not target.is_dir():
        raise UserError(f"resume path {str(path)!r} is not a directory (a run or a checkpoint)")
    if (target / MANIFEST).exists() or is_checkpoint_name(target.name):
        checkpoint = verify(target, hashes=hashes)
        if not checkpoint.valid:
            raise UserError(
                f"checkpoint {target} does not verify: {'; '.join(checkpoint.problems)}"
            )
        return checkpoint
    if not list_checkpoints(target):
        raise UserError(
            f"resume path {str(path)!r} holds no checkpoints "
            f"(expected a run directory with {CHECKPOINT_PREFIX}* folders, or one of those)"
        )
    checkpoint = latest_valid_checkpoint(target, report, hashes=hashes)
    if checkpoint is None:
        raise UserError(f"run {target} holds no checkpoint that verifies")
    return checkpoint
