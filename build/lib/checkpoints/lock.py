"""One writer per run directory: a lock held for as long as a process writes into a run.

::

    <run>/.lock               the lock: flock(2) through ``filelock``; the OS releases it
                              when its holder exits, however it exits (SIGKILL included)
    <run>/.lock-holder.json   who holds it: {"pid", "host", "since"}; written once the
                              lock is taken, removed when it is released

``run_lock(run_dir)`` takes the lock at once or refuses: a second writer gets
one line naming the holder (``error: run /x/y is being written by pid 1234 on
host h (since 2026-12-01 21:00:00); wait for it or stop it``). A holder file
found once the lock is taken was left by a process that died holding it (the
OS released its lock, the file stayed): it is taken over, and that is said in
one line. filelock closes the lock's descriptor in a child made by
``os.fork``, so a child that outlives its parent does not keep the run locked.

Who takes it is decided by the callers (``trainer.runs.run_dir``):
training and ``rescue`` do, on the chief only in a multi-worker run; the tools
that only read never do. The lock file itself stays (deleting a flock file on
release would let two processes lock two different inodes of the same name).

No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import filelock

from checkpoints.durable import write_text_atomically
from checkpoints.errors import UserError, storage_errors
from checkpoints.layout import RUN_LOCK, RUN_LOCK_HOLDER
from checkpoints.reading import read_mapping

MAX_HOLDER_BYTES = 4096


@dataclass(frozen=True)
class Holder:
    """The process that holds a run's lock, as its holder file records it."""

    pid: int
    host: str
    since: float  # time.time() when it took the lock

    @classmethod
    def this_process(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), time.time())

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on host {self.host} (since {since})"

    def is_gone(self) -> bool:
        """Whether it is known not to be running: on this host, and no such pid."""
        if self.host != socket.gethostname():
            return False  # another host's processes cannot be checked from here
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's process: it exists
            return False
        return False


def read_holder(run_dir: Path) -> Holder | None:
    """The holder ``run_dir``'s holder file records; None when absent or unreadable."""
    try:
        data = read_mapping(Path(run_dir) / RUN_LOCK_HOLDER, MAX_HOLDER_BYTES)
        holder = Holder(int(data["pid"]), str(data["host"]), float(data["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return holder


@contextlib.contextmanager
def run_lock(run_dir: Path, report: Callable[[str], None] = print) -> Iterator[Holder]:
    """Hold ``run_dir``'s lock for the block; a UserError naming the holder if another has it.

    ``run_dir`` must exist. A write the machine refuses (a read-only run
    directory...) is a one-line StorageError. Released when the block ends,
    however it ends; if the process is killed, by the OS.
    """
    run_dir = Path(run_dir)
    lock = filelock.FileLock(run_dir / RUN_LOCK, thread_local=False)
    with storage_errors(f"lock run {run_dir} for writing"):
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            raise UserError(_refusal(run_dir)) from None
    try:
        left = read_holder(run_dir)
        if left is not None:
            report(
                f"Taking over the lock of run {run_dir}: its holder, {left.describe()}, "
                "ended without releasing it"
            )
        holder = Holder.this_process()
        with storage_errors(f"lock run {run_dir} for writing"):
            write_text_atomically(run_dir / RUN_LOCK_HOLDER, json.dumps(asdict(holder)) + "\n")
        yield holder
    finally:
        with contextlib.suppress(OSError):
            (run_dir / RUN_LOCK_HOLDER).unlink(missing_ok=True)
        lock.release()


def _refusal(run_dir: Path) -> str:
    holder = read_holder(run_dir)
    if holder is None:  # it has just taken the lock and not yet said who it is
        who = "another process"
    elif holder.is_gone():  # the lock lives on in a process it started
        who = (
            f"a process started by {holder.describe()}, which has ended "
            f"(fuser -v {run_dir / RUN_LOCK} names it)"
        )
    else:
        who = holder.describe()
    return f"run {run_dir} is being written by {who}; wait for it or stop it"
