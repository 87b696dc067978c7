"""The protocol of a mutation: what an attacker who can write a checkpoint does to a copy.

Each mutation is plain data (so hypothesis can print and replay it) with
``apply(ctx) -> str``, which changes the case's copy and returns a one-line
description of what it did (raising :class:`NotApplicable` when the copy
offers nothing to change, e.g. an edit of a key that an earlier mutation
deleted). Three more members say how a case is run:

- ``phase``: ``"file"`` mutations run before the manifest is re-hashed,
  ``"manifest"`` ones after it (so a lie in the manifest stays a lie);
- :meth:`Mutation.expect`: what a resume of the newest checkpoint must do:
  ``"benign"`` (resume, restoring exactly the original arrays), ``"refuse"``
  (a one-line UserError, or a fallback to another checkpoint) or ``"either"``
  (a refusal, or a resume that restores exactly what the files hold);
- :meth:`Mutation.touches_newest`: whether it changes the newest checkpoint at
  all (a change elsewhere must leave its resume exact).

The mutations themselves, one dataclass per kind of change: ``documents``
(JSON and YAML: structure, types, values, raw text), ``files`` (symlinks,
FIFOs, directories, large files, pointers, the run directory) and ``h5``
(HDF5). No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.fuzz.canary import MODULE, RESOLVER, SECRET_ENV, Canary
from devtools.fuzz.source import CaseDirs

LARGE_BYTES = 32 << 20  # past every reader's limit, small enough to read whole without harm


class NotApplicable(Exception):
    """This mutation has nothing to change in this copy; the case is skipped."""


@dataclass(frozen=True)
class Context:
    """What a mutation works on: the case's copy and the canary its payloads aim at."""

    dirs: CaseDirs
    canary: Canary

    def fill(self, template: str) -> str:
        """A payload template with the canary's tripwires (``{command}``, ...) and the big
        values (``{long_string}``, ``{deep_list}``, ``{long_number}``) filled in."""
        return template.format(
            command=self.canary.command("os-system"),
            python=self.canary.python("exec"),
            module=MODULE,
            resolver=RESOLVER,
            secret_env=SECRET_ENV,
            long_string="x" * 2_000_000,  # past every size limit
            deep_list="[" * 100_000 + "]" * 100_000,  # past every recursion limit
            long_number="1" + "0" * 5000,  # past Python's int-from-text limit
        )


@dataclass(frozen=True)
class Mutation:
    """A change to one case's copy; see the module docstring."""

    phase = "file"

    def apply(self, ctx: Context) -> str:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def expect(self) -> str:
        return "either"

    def touches_newest(self) -> bool:
        """Whether it changes the newest checkpoint (else a resume of it must be unaffected)."""
        return getattr(self, "where", "newest") == "newest"


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def editable(path: Path) -> Path:
    """``path`` if it is a regular file and not a symlink; else NotApplicable.

    Every mutation that changes a file in place checks this first: a FIFO is
    never opened (that would block), and nothing is written through a link an
    earlier mutation made (which could change the file of another checkpoint).
    """
    if path.is_symlink() or not path.is_file():
        raise NotApplicable(f"{path.name} was replaced by an earlier mutation")
    return path


def read_bytes(path: Path) -> bytes:
    """The bytes of an :func:`editable` file."""
    return editable(path).read_bytes()
