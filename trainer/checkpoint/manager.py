"""CheckpointManager: save a run's checkpoints, keep the right ones, never lose the last good one.

``save()`` writes the state files into a staging directory (the only part the
training loop waits for, unless saving is synchronous), then *commits* it:
fsync, sha256 of every file into ``manifest.json``, rename into place, move
the ``latest``/``best`` pointers, prune by the :class:`~trainer.checkpoint.keep.KeepPolicy`.
With ``asynchronous=True`` the commit runs on a background thread while
training goes on; at most one commit is in flight (the next ``save`` waits for
it), and an error in the background is raised by the next ``save``, ``wait``
or ``close``: never swallowed.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainer.checkpoint.format import (
    commit_checkpoint,
    list_checkpoints,
    read_checkpoint,
    read_manifest,
    read_pointer,
    remove_stale_staging,
    staging_dir,
    write_text_atomically,
)
from trainer.checkpoint.keep import KeepPolicy
from trainer.checkpoint.layout import checkpoint_name


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions, ...)."""


class CheckpointManager:
    """Writes checkpoints of one run into ``run_dir``.

    ``write_files(staging_path)`` writes the state files, or holds a snapshot of
    them and returns ``finish(staging_path)``, which writes them: the manager runs
    it with the commit, on the background thread when asynchronous (see
    ``trainer.checkpoint.state.snapshot_state``). ``manifest`` adds the step, epoch,
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
        self._error: BaseException | None = None
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
        staging = staging_dir(self.run_dir, global_step)
        try:
            finish = write_files(staging)
            if finish is not None and not self.asynchronous:
                finish(staging)
                finish = None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        manifest = {**manifest, "global_step": int(global_step)}
        if self.asynchronous:
            self._thread = threading.Thread(
                target=self._commit_in_background,
                args=(staging, final, manifest, finish),
                name="checkpoint-commit",
                daemon=False,
            )
            self._thread.start()
        else:
            try:
                self._commit(staging, final, manifest)
            except OSError as error:
                shutil.rmtree(staging, ignore_errors=True)
                raise CheckpointError(f"saving checkpoint {final} failed: {error}") from error
        return final

    def wait(self) -> None:
        """Block until the commit in flight (if any) is done; raise its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise CheckpointError(
                f"saving a checkpoint in the background failed: {error}"
            ) from error

    close = wait

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
        try:
            if finish is not None:
                finish(staging)
            self._commit(staging, final, manifest)
        except BaseException as error:  # surfaced by the next save()/wait()
            self._error = error
            shutil.rmtree(staging, ignore_errors=True)

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
        for path in self.policy.to_remove(scanned, protected):
            shutil.rmtree(path, ignore_errors=True)
