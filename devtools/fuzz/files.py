"""Mutations of the file system of a run: replaced files, pointers, the run directory.

- :class:`ReplaceFile`: a checkpoint file (or pointer) replaced by a symlink
  (to a copy, the other checkpoint, a secret outside the run, nowhere, itself,
  ``/dev/null``, a directory, a FIFO), a FIFO, a directory, a large or empty file;
- :class:`WritePointer`: ``latest`` or ``best`` rewritten or replaced;
- :class:`ChangeRun`: extra, linked or moved checkpoint directories;
- :class:`ExtraFile`, :class:`Nothing`: changes a resume must not notice.

See ``devtools.fuzz.mutations`` for the protocol. No TensorFlow here.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from checkpoints.layout import (
    CONFIG_FILE,
    MANIFEST,
    MODEL_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
)
from devtools.fuzz.mutations import (
    LARGE_BYTES,
    Context,
    Mutation,
    NotApplicable,
    read_bytes,
    short,
)

# --------------------------------------------------------------------------- file system

CHECKPOINT_FILES = (MANIFEST, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, CONFIG_FILE)
REPLACEMENTS = (
    "symlink_copy",  # a symlink to an identical copy outside the run
    "symlink_other",  # a symlink to the same file of the other checkpoint
    "symlink_secret",  # a symlink to a file outside the run that holds a secret
    "symlink_dangling",
    "symlink_loop",
    "symlink_dev_null",
    "symlink_dir",
    "symlink_fifo",
    "fifo",
    "directory",
    "large",  # the file extended (sparse) to LARGE_BYTES
    "empty",
)


def secret_file(ctx: Context) -> Path:
    """A file outside the run whose content must never appear in what a reader prints."""
    path = ctx.dirs.outside / "secret.txt"
    if not path.exists():
        path.write_text(f"{ctx.canary.file_secret}\n")
    return path


def fifo(ctx: Context) -> Path:
    path = ctx.dirs.outside / "fifo"
    if not path.exists():
        os.mkfifo(path)
    return path


@dataclass(frozen=True)
class ReplaceFile(Mutation):
    """A file of a checkpoint (or a pointer of the run) replaced by something else."""

    file: str
    replacement: str
    where: str = "newest"  # newest | older | run (a pointer)

    @property
    def phase(self) -> str:  # type: ignore[override]
        return "manifest" if self.file == MANIFEST else "file"

    def apply(self, ctx: Context) -> str:
        base = ctx.dirs.run_dir if self.where == "run" else ctx.dirs.checkpoint(self.where)
        path = base / self.file
        _replace_path(path, self.replacement, ctx)
        return f"{self.where} {self.file}: replaced by {self.replacement}"


def _replace_path(path: Path, replacement: str, ctx: Context) -> None:  # noqa: C901
    # One branch per kind of replacement, read top to bottom like the list of kinds.
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise NotApplicable(f"{path.name} was already replaced")
    if replacement == "large":
        with open(path, "ab") as handle:
            handle.truncate(LARGE_BYTES)
        return
    if replacement == "empty":
        path.write_bytes(b"")
        return
    original = read_bytes(path) if path.is_file() else b""
    target: Path | str | None = None
    if replacement == "symlink_copy":
        target = ctx.dirs.outside / f"copy-{path.parent.name}-{path.name}"
        target.write_bytes(original)
    elif replacement == "symlink_other":
        other = ctx.dirs.older if path.parent == ctx.dirs.newest else ctx.dirs.newest
        target = other / path.name
    elif replacement == "symlink_secret":
        target = secret_file(ctx)
    elif replacement == "symlink_dangling":
        target = ctx.dirs.outside / "does-not-exist"
    elif replacement == "symlink_loop":
        target = path
    elif replacement == "symlink_dev_null":
        target = "/dev/null"
    elif replacement == "symlink_dir":
        target = ctx.dirs.outside
    elif replacement == "symlink_fifo":
        target = fifo(ctx)
    path.unlink(missing_ok=True)
    if target is not None:
        os.symlink(target, path)
    elif replacement == "fifo":
        os.mkfifo(path)
    elif replacement == "directory":
        path.mkdir()
        (path / "inside").write_bytes(original)
    else:
        raise NotApplicable(f"unknown replacement {replacement!r}")


POINTER_CONTENTS = (
    b"\xff\xfe\x00garbage",
    b"step-99999999\n",
    b"../../../etc/passwd\n",
    b"step-00000041\n\nextra lines\n",
    b"step-" + b"9" * 5000 + b"\n",
    b"\x00" * 64,
    b"",
    b"step-00000082\x00\n",
)


@dataclass(frozen=True)
class WritePointer(Mutation):
    """A pointer (``latest``, ``best``) rewritten: garbage, a name that leads nowhere, or
    replaced by a symlink, a FIFO, a directory or a large file (``replacement``)."""

    pointer: str
    content: bytes = b""
    replacement: str = ""

    def touches_newest(self) -> bool:
        return False  # resuming reads no pointer

    def apply(self, ctx: Context) -> str:
        path = ctx.dirs.run_dir / self.pointer
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise NotApplicable(f"pointer {self.pointer} was already replaced")
        if self.replacement:
            _replace_path(path, self.replacement, ctx)
            return f"pointer {self.pointer}: replaced by {self.replacement}"
        path.write_bytes(self.content)
        return f"pointer {self.pointer}: content {short(self.content)}"


RUN_CHANGES = (
    "empty_step_dir",  # step-99999999/ holding nothing
    "garbage_step_dir",  # step-99999999/ holding a manifest that is not JSON
    "copy_step_dir",  # step-99999999/ a copy of the newest checkpoint
    "symlink_step_dir",  # step-99999999 -> the newest checkpoint
    "symlink_outside_step_dir",  # the newest checkpoint moved outside, a symlink left
    "fifo_step",  # step-99999999 is a FIFO
    "file_step",  # step-99999999 is a file
    "manifest_in_run_dir",  # a manifest.json at the top of the run
    "step_dir_loop",  # step-99999999 -> the run directory itself
)


@dataclass(frozen=True)
class ChangeRun(Mutation):
    """A change to the run directory itself: extra or moved checkpoint directories."""

    kind: str

    def apply(self, ctx: Context) -> str:
        run, newest = ctx.dirs.run_dir, ctx.dirs.newest
        bogus = run / "step-99999999"
        if bogus.exists() or bogus.is_symlink() or newest.is_symlink():
            raise NotApplicable("the run directory was already changed")
        if self.kind == "empty_step_dir":
            bogus.mkdir()
        elif self.kind == "garbage_step_dir":
            bogus.mkdir()
            (bogus / MANIFEST).write_bytes(b"\x00not json")
        elif self.kind == "copy_step_dir":
            shutil.copytree(newest, bogus, symlinks=True, ignore=_special_files)
        elif self.kind == "symlink_step_dir":
            os.symlink(newest, bogus)
        elif self.kind == "symlink_outside_step_dir":
            moved = ctx.dirs.outside / newest.name
            shutil.move(newest, moved)
            os.symlink(moved, newest)
        elif self.kind == "fifo_step":
            os.mkfifo(bogus)
        elif self.kind == "file_step":
            bogus.write_text("not a directory\n")
        elif self.kind == "manifest_in_run_dir":
            (run / MANIFEST).write_bytes(read_bytes(newest / MANIFEST))
        elif self.kind == "step_dir_loop":
            os.symlink(run, bogus)
        else:
            raise NotApplicable(f"unknown run change {self.kind!r}")
        return f"run: {self.kind}"


def _special_files(directory: str, names: list[str]) -> list[str]:
    """Entries a copy must skip: FIFOs and the like (copying one would block)."""
    return [
        name
        for name in names
        if not (Path(directory, name).is_symlink() or Path(directory, name).is_file())
        and not Path(directory, name).is_dir()
    ]


@dataclass(frozen=True)
class ExtraFile(Mutation):
    """A file the manifest does not list, dropped into a checkpoint: nothing reads it."""

    name: str
    data: bytes = b"notes\n"
    where: str = "newest"

    def expect(self) -> str:
        return "benign"

    def apply(self, ctx: Context) -> str:
        path = ctx.dirs.checkpoint(self.where) / self.name
        if path.exists() or path.is_symlink():
            raise NotApplicable(f"{self.name} exists")
        path.write_bytes(self.data)
        return f"{self.where}: unlisted file {self.name}"


@dataclass(frozen=True)
class Nothing(Mutation):
    """No change at all (with the re-hash: the manifest rewritten with the same hashes)."""

    def expect(self) -> str:
        return "benign"

    def apply(self, ctx: Context) -> str:
        return "no change"
