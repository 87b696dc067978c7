"""CheckpointManager: save a run's checkpoints, keep the right ones, never lose the last good one.

``save()`` writes the state files into a staging directory (the only part the
training loop waits for, unless saving is synchronous), then *commits* it:
fsync, sha256 of every file into ``manifest.json``, rename into place, move
the ``latest``/``best`` pointers, prune by the :class:`~checkpoints.keep.KeepPolicy`
(a pruned checkpoint is renamed out of sight at once and deleted by a background
thread, which ``close`` joins).
With ``asynchronous=True`` the commit runs on a background thread while
training goes on; at most one commit is in flight (the next ``save`` waits for
it), and an error in the background is raised by the next ``save``, ``wait``
or ``close``: never swallowed.

A save the machine refuses (disk full, read-only, permission denied: in
h5py, in a write, an fsync or a rename, here or in the background) raises a
:class:`CheckpointError` whose one line names the checkpoint, the reason and
its errno; its staging directory is removed first, and the checkpoints
committed before it are untouched (a commit only ever adds a directory by
renaming it into place).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from checkpoints.durable import (
    move_aside,
    remove_stale_staging,
    staging_dir,
    write_text_atomically,
)
from checkpoints.errors import StorageError, storage_errors, storage_failure
from checkpoints.keep import KeepPolicy
from checkpoints.layout import checkpoint_name
from checkpoints.listing import list_checkpoints, read_pointer
from checkpoints.manifest import commit_checkpoint, read_checkpoint, read_manifest

BACKGROUND_NICENESS = 10  # added to the commit thread's nice value: training goes first


def _yield_to_training() -> None:
    """Lower this thread's CPU priority (Linux: nice is per thread, and the threads it
    starts inherit it), so that a background commit takes the cores training leaves
    idle instead of slowing its steps. Where that is not possible it runs as it is."""
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), current + BACKGROUND_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: only slower for training
        pass


class CheckpointError(StorageError):
    """The machine refused to write a checkpoint (disk full, permissions, ...): one line."""


class CheckpointManager:
    """Writes checkpoints of one run into ``run_dir``.

    ``write_files(staging_path)`` writes the state files, or holds a snapshot of
    them and returns ``finish(staging_path)``, which writes them: the manager runs
    it with the commit, on the background thread when asynchronous (see
    ``checkpoints.state.snapshot_state``). ``manifest`` adds the step, epoch,
    metrics and learning rate to the manifest.
    """

    def __init__(
        self,
        run_dir: Path,
        policy: KeepPolicy,
        asynchronous: bool = False,
        report: Callable[[str], None] = print,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.policy = policy
        self.asynchronous = asynchronous
        self.report = report
        self._thread: threading.Thread | None = None
        self._error: tuple[Path, BaseException] | None = None  # (checkpoint, what failed)
        self._deleting: threading.Thread | None = None  # pruned checkpoints being deleted
        with storage_errors(f"prepare run directory {self.run_dir} for checkpoints"):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(self.run_dir)

    # ------------------------------------------------------------------ public

    def save(
        self,
        global_step: int,
        write_files: Callable[[Path], Callable[[Path], None] | None],
        manifest: Mapping[str, Any],
    ) -> Path:
        """Snapshot now, commit now or in the background; return the final checkpoint path.

        A step outside ``[0, MAX_GLOBAL_STEP]`` is a ValueError before anything is written.
        """
        final = self.run_dir / checkpoint_name(global_step)  # the last guard on the step
        self.wait()
        manifest = {**manifest, "global_step": int(global_step)}
        staging = None
        try:
            staging = staging_dir(self.run_dir, global_step)
            finish = write_files(staging)
            if not self.asynchronous:
                if finish is not None:
                    finish(staging)
                self._commit(staging, final, manifest)
        except BaseException as error:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            failure = self._checkpoint_error(final, error)
            if failure is None or failure is error:
                raise
            raise failure from error
        if self.asynchronous:
            self._thread = threading.Thread(
                target=self._commit_in_background,
                args=(staging, final, manifest, finish),
                name="checkpoint-commit",
                daemon=False,
            )
            self._thread.start()
        return final

    def wait(self) -> None:
        """Block until the commit in flight (if any) is done; raise its error if it failed.

        Pruned checkpoints may still be being deleted (out of sight): see :meth:`close`.
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            (final, error), self._error = self._error, None
            failure = self._checkpoint_error(final, error)
            if failure is error:
                raise error
            if failure is None:  # not the machine: a bug, shown with its traceback
                failure = RuntimeError(f"saving checkpoint {final} in the background failed")
            raise failure from error

    def close(self) -> None:
        """:meth:`wait`, then for the deletion of pruned checkpoints to end."""
        try:
            self.wait()
        finally:
            if self._deleting is not None:
                self._deleting.join()
                self._deleting = None

    @property
    def latest(self) -> str | None:
        return read_pointer(self.run_dir, "latest")

    @property
    def best(self) -> str | None:
        return read_pointer(self.run_dir, "best")

    # ------------------------------------------------------------------ commit

    def _commit_in_background(
        self, staging: Path, final: Path, manifest: dict, finish: Callable[[Path], None] | None
    ) -> None:
        _yield_to_training()
        try:
            if finish is not None:
                finish(staging)
            self._commit(staging, final, manifest)
        except BaseException as error:  # surfaced by the next save()/wait()
            self._error = (final, error)
            shutil.rmtree(staging, ignore_errors=True)

    def _checkpoint_error(self, final: Path, error: BaseException) -> CheckpointError | None:
        """The one line for a save of ``final`` the machine refused; None for other errors."""
        if isinstance(error, CheckpointError):
            return error
        reason = storage_failure(error)
        if reason is None:
            return None
        return CheckpointError(
            f"cannot save checkpoint {final.name} in {self.run_dir}: {reason}; "
            "the older checkpoints are intact"
        )

    def _commit(self, staging: Path, final: Path, manifest: Mapping[str, Any]) -> None:
        commit_checkpoint(staging, final, manifest)
        write_text_atomically(self.run_dir / "latest", final.name + "\n")
        if self._is_new_best(manifest):
            write_text_atomically(self.run_dir / "best", final.name + "\n")
        self._prune()

    def _is_new_best(self, manifest: Mapping[str, Any]) -> bool:
        score = self.policy.score(manifest)
        if score is None:
            return False
        best = self.best
        if best is None:
            return True
        try:
            best_score = self.policy.score(read_manifest(self.run_dir / best))
        except (OSError, ValueError):
            return True  # the old best is gone or broken: this one replaces it
        return best_score is None or score > best_score

    def _prune(self) -> None:
        # Manifests are read, not re-hashed: pruning must stay cheap; verification
        # is for resuming and for `trainer verify`.
        # A checkpoint whose manifest is unusable is one pruning may delete, never a crash.
        scanned = [read_checkpoint(path) for path in list_checkpoints(self.run_dir)]
        protected = [name for name in (self.latest, self.best) if name]
        doomed = []
        for path in self.policy.to_remove(scanned, protected):
            with contextlib.suppress(OSError):  # as a failed delete: pruning never fails a save
                doomed.append(move_aside(path))  # out of every listing now, deleted below
        if doomed:
            self._delete_in_background(doomed)

    def _delete_in_background(self, paths: list[Path]) -> None:
        """Delete the pruned ``paths`` on a thread of their own, after the ones before."""
        previous = self._deleting

        def delete() -> None:
            if previous is not None:
                previous.join()
            _yield_to_training()
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)

        self._deleting = threading.Thread(target=delete, name="checkpoint-prune", daemon=False)
        self._deleting.start()
