"""The project's TensorFlow-free readers of a checkpoint, as the oracle runs them in-process.

The format and reading functions each under its own contract (``verify``,
``list_checkpoints``, ``latest_valid_checkpoint``, ``read_pointer`` never
raise; ``read_manifest`` raises ValueError; the others raise UserError), and
the commands ``list``, ``verify`` and ``inspect`` through
``trainer.__main__.main`` (exit status 0, 1 or 2; on 2, one ``error:`` line).
The resume path, which needs TensorFlow, is ``devtools.fuzz.resume``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from checkpoints import (
    POINTERS,
    latest_valid_checkpoint,
    list_checkpoints,
    read_manifest,
    read_pointer,
    resolve_resume_path,
    verify,
)
from checkpoints.reading import read_trainer_state
from devtools.fuzz.oracle import TRACEBACK, UNCLEAR, Judgement, Reader, unclear
from devtools.fuzz.source import CaseDirs
from trainer.config.saved import read_checkpoint_config

COMMANDS = (
    ("list", "{run}"),
    ("list", "--json", "--no-verify", "{run}"),
    ("verify", "{run}"),
    ("inspect", "{checkpoint}"),
    ("inspect", "--json", "{run}"),
)


def tf_free_readers(dirs: CaseDirs, resume_target: Path) -> list[Reader]:
    """Every TensorFlow-free reader, on the case's newest checkpoint and its run."""
    checkpoint, run = dirs.newest, dirs.run_dir

    def with_manifest(read: Any) -> Any:
        def call() -> Any:
            verified = verify(checkpoint)
            return None if verified.manifest is None else read(verified)

        return call

    readers = [
        Reader("verify", lambda: verify(checkpoint), allowed=()),
        Reader("verify(hashes=False)", lambda: verify(checkpoint, hashes=False), allowed=()),
        Reader("read_manifest", lambda: read_manifest(checkpoint), (ValueError,), names_file=False),
        Reader("read_checkpoint_config", with_manifest(read_checkpoint_config)),
        Reader("read_trainer_state", with_manifest(read_trainer_state)),
        Reader("list_checkpoints", lambda: list_checkpoints(run), allowed=()),
        Reader("latest_valid_checkpoint", lambda: latest_valid_checkpoint(run, print), allowed=()),
        Reader("read_pointer", lambda: [read_pointer(run, p) for p in POINTERS], allowed=()),
        Reader("resolve_resume_path", lambda: resolve_resume_path(resume_target, print)),
    ]
    for command in COMMANDS:
        args = [a.format(run=run, checkpoint=checkpoint) for a in command]
        readers.append(command_reader(args))
    return readers


def command_reader(args: list[str]) -> Reader:
    """``python -m trainer ARGS`` run in-process by ``trainer.__main__.main``."""

    def call() -> int:
        from trainer.__main__ import main

        return main(args)

    name = "trainer " + " ".join(a for a in args if a.startswith("-") or not a.startswith("/"))
    return Reader(name, call, allowed=(), judge=judge_command)


def judge_command(status: Any, stdout: str, stderr: str) -> Judgement:
    """A command's exit status is 0, 1 or 2, with no traceback; on 2 its last line is the
    one ``error: ...`` line, and that line is clear."""
    if "Traceback" in stderr or status not in (0, 1, 2):
        return TRACEBACK, f"exit status {status!r}: {stderr.strip()[-300:]!r}"
    if status == 2:
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        if len(errors) != 1 or not stderr.rstrip().endswith(errors[0]):
            return UNCLEAR, f"exit status 2 without one final error line: {stderr[-300:]!r}"
        problem = unclear(errors[0][len("error: ") :], names_file=True)
        if problem:
            return UNCLEAR, f"{problem}: {errors[0][:200]!r}"
    return None
