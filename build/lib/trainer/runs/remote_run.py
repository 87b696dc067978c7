"""A run whose ``checkpoint.dir`` (or ``+resume``) is a URL: a local working copy, uploaded.

The fast local writer is used unchanged: a remote run trains into a *working
copy*, a local directory that stands for the URL, and every checkpoint the
local :class:`~checkpoints.manager.CheckpointManager` commits there is
then uploaded (``checkpoints.remote``: files first, manifest last), with
the pointers and the run's files, and the remote checkpoints are pruned by the
same ``KeepPolicy`` (:class:`RemoteCheckpointManager`). With
``checkpoint.async=true`` the upload is part of the background commit.

1. :func:`localize` replaces the URLs in a config by local paths before the
   run is planned, so that the resume policy, the sweep rules and the run
   directory rules all work on local directories as they always have:

   a. ``+resume=URL`` (a run, or ``URL/step-N``): the newest committed
      checkpoint that downloads and verifies (or exactly the one named) is
      downloaded and ``resume`` becomes its local path; a skipped one is said.
   b. ``checkpoint.dir=URL``, or a resume in place of a remote run: the run's
      working copy (2) becomes ``checkpoint.dir``. A new run is refused if the
      URL already holds checkpoints or run files; with ``+resume=auto`` the
      newest valid checkpoint and the run's files are downloaded first, so that
      ``trainer.runs.sweep``'s rules decide as for a local run.

2. A working copy lives under ``$XDG_CACHE_HOME/keras-hydra-trainer/remote/``
   (``~/.cache`` by default), in a folder keyed by the URL, one per process
   (``work-<pid>-<ns>``). Only the process holding the folder's lock (the
   run-directory lock, ``checkpoints.lock``) writes the URL; it deletes
   the working copies of processes that are gone and the remote checkpoints
   whose upload never finished. Limitation: this lock guards one machine (or a
   shared cache directory). Two machines writing the same URL at once are not
   detected: S3 has no lock, and a lease by conditional put is not supported by
   s3fs; give each run its own prefix (the default ``runs/<date>/<time>`` or
   the Slurm job id under ``paths.root`` does).

3. A checkpoint counts as saved once its manifest is uploaded. A checkpoint
   committed locally whose upload was cut (SIGKILL) is not on the URL: a
   resume continues from the last one that is.

No TensorFlow here.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from checkpoints.layout import POINTERS
from checkpoints.listing import read_pointer
from checkpoints.lock import run_lock
from checkpoints.manager import CheckpointError, CheckpointManager
from checkpoints.manifest import read_manifest
from checkpoints.remote import (
    RUN_TOP_FILES,
    TENSORBOARD_DIR,
    RemoteStore,
    is_url,
    remote_errors,
    remote_failure,
    split_checkpoint_url,
)
from trainer.errors import UserError
from trainer.runs.sweep_dir import AUTO, current_job_subdir

_HELD = contextlib.ExitStack()  # the locks of the URLs this process writes, held until it exits
atexit.register(_HELD.close)
_WORKING: dict[str, RemoteStore] = {}  # working copy (resolved path) -> the store it stands for


def cache_root() -> Path:
    """Where working copies and downloads live (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().resolve() / "keras-hydra-trainer" / "remote"


def url_folder(url: str) -> Path:
    """The cache folder of ``url``: readable, and unique by a hash of the URL."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", url.split("://", 1)[-1])[-60:]
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:12]
    return cache_root() / f"{readable}-{digest}"


def store_for(path: str | Path) -> RemoteStore | None:
    """The store that working copy ``path`` stands for; None for a local run directory."""
    return _WORKING.get(str(Path(path).expanduser().resolve()))


def location(path: str | Path) -> str:
    """How to name ``path`` to the user: its URL when it is a working copy or a tool's copy
    of a remote run (or a checkpoint in one), else the path itself."""
    resolved = Path(path).expanduser().resolve()
    for candidate in (resolved, resolved.parent):
        store = store_for(candidate)
        url = store.url if store is not None else _COPIES.get(str(candidate))
        if url is not None:
            return url if candidate == resolved else f"{url}/{resolved.name}"
    return str(path)


# --------------------------------------------------------------------------- tools


_COPIES: dict[str, str] = {}  # a tool's local copy of a remote run -> the run's URL
_COPIED: dict[str, Path] = {}  # a URL a tool was given -> its local copy


def remote_copy(url: str) -> Path:
    """A local copy of the run or checkpoint ``url`` names, for the tools that read.

    Every committed checkpoint is copied as stored (sizes checked against its
    manifest before fetching, not verified: ``verify`` reports what is wrong),
    with the run's files and pointers. Uncommitted checkpoints are left out, as
    every reader leaves them out. Copied once per URL per process; removed at exit.
    """
    if url.rstrip("/") in _COPIED:
        return _COPIED[url.rstrip("/")]
    run_url, name = split_checkpoint_url(url)
    store = RemoteStore(run_url)
    store.check_reachable()
    committed = store.committed()
    if name is not None and name not in committed:
        raise UserError(f"{url!r} is not a committed checkpoint (its run holds {len(committed)})")
    if not committed:
        raise UserError(f"{url!r} holds no committed checkpoints")
    folder = _download_folder(run_url).resolve()
    for each in [name] if name else committed:
        store.copy_checkpoint(each, folder)
    _download_run_files(store, folder)
    _COPIES[str(folder)] = store.url
    _COPIED[url.rstrip("/")] = folder / name if name else folder
    return _COPIED[url.rstrip("/")]


# --------------------------------------------------------------------------- rule 1


def localize(cfg: DictConfig, report: Callable[[str], None] = print) -> DictConfig:
    """``cfg`` with the URLs of ``checkpoint.dir`` and ``resume`` replaced by local paths
    (rule 1 of the module docstring); ``cfg`` itself when it names none."""
    resume, directory = cfg.get("resume"), cfg.checkpoint.dir
    if not is_url(resume) and not is_url(directory):
        return cfg

    if is_url(directory) and current_job_subdir() is not None:
        raise UserError(
            f"checkpoint.dir {directory!r}: a sweep (-m) on object storage is not supported; "
            "run each job with its own checkpoint.dir=URL, or sweep into a local directory"
        )
    cfg = copy.deepcopy(cfg)  # the caller's config keeps its URLs
    with open_dict(cfg):
        if is_url(resume):  # rule 1a
            run_url, name = split_checkpoint_url(str(resume))
            continues = directory is None and not cfg.trainer.fine_tune  # resume in place
            writes = continues or (is_url(directory) and _same(directory, run_url))
            if writes and name is not None:
                _refuse_older_in_place(RemoteStore(run_url), name)
            into = working_copy(run_url, report) if writes else _download_folder(run_url)
            cfg.resume = str(_download_resume(RemoteStore(run_url), name, into, report))
        if is_url(directory):  # rule 1b
            store = RemoteStore(str(directory))
            if resume is None:  # a new run: refused before anything is locked or written
                store.check_reachable()
                _refuse_used(store)
            working = working_copy(store.url, report)
            if resume == AUTO:
                _download_for_auto(store, working, report)
            cfg.checkpoint.dir = str(working)
    return cfg


def _same(url: str, other: str) -> bool:
    return url.rstrip("/") == other.rstrip("/")


def _refuse_used(store: RemoteStore) -> None:
    if store.committed():
        raise UserError(
            f"checkpoint.dir {store.url!r} already holds checkpoints; resume it with "
            f"+resume={store.url} or choose another checkpoint.dir"
        )
    found = store.holds_run_files()
    if found:
        raise UserError(
            f"checkpoint.dir {store.url!r} already holds {', '.join(found)}, which a new run "
            "would overwrite; choose another checkpoint.dir"
        )


def _refuse_older_in_place(store: RemoteStore, name: str) -> None:
    """``plan_start``'s rule 6 on a URL: continuing an older checkpoint in place would
    prune the newer ones, which only the remote listing knows of."""
    store.check_reachable()
    step = int(name.split("-", 1)[1])
    newer = [n for n in store.committed() if int(n.split("-", 1)[1]) > step]
    if newer:
        raise UserError(
            f"checkpoint {store.url}/{name} is not the newest of its run ({newer[-1]} is); "
            "continuing it there would overwrite newer checkpoints: add "
            "checkpoint.dir=NEW_DIR to branch off into a new directory"
        )


def _download_resume(
    store: RemoteStore, name: str | None, into: Path, report: Callable[[str], None]
) -> Path:
    """The local path of the checkpoint ``+resume`` names (rule 1a), downloaded and verified."""
    store.check_reachable()
    committed = store.committed()
    if name is not None:
        if name not in committed:
            raise UserError(f"resume path {store.url}/{name} is not a committed checkpoint")
        checkpoint = store.download_checkpoint(name, into)
        if not checkpoint.valid:
            raise UserError(
                f"checkpoint {store.url}/{name} does not verify: {'; '.join(checkpoint.problems)}"
            )
        return checkpoint.path
    if not committed:
        raise UserError(f"resume path {store.url!r} holds no committed checkpoints")
    for candidate in reversed(committed):
        checkpoint = store.download_checkpoint(candidate, into)
        if checkpoint.valid:
            _download_run_files(store, into)
            return into  # the run: plan_start picks the downloaded checkpoint in it
        report(
            f"checkpoint {store.url}/{candidate} does not verify "
            f"({'; '.join(checkpoint.problems)}); skipping it"
        )
    raise UserError(f"run {store.url} holds no checkpoint that verifies")


def _download_for_auto(store: RemoteStore, working: Path, report: Callable[[str], None]) -> None:
    """``+resume=auto`` on a URL: what ``trainer.runs.sweep`` looks at, made local."""
    if store.committed():
        _download_resume(store, None, working, report)
    else:
        _download_run_files(store, working)


def _download_run_files(store: RemoteStore, into: Path) -> None:
    """The run's top-level files and pointers, so a resumed run appends to them."""
    for name in (*RUN_TOP_FILES, *POINTERS):
        if not (into / name).exists():
            store.fetch_file(name, into / name, limit=256 << 20)


def _download_folder(url: str) -> Path:
    """A fresh folder for a download that no run writes (a branch, fine-tuning, tools)."""
    folder = url_folder(url) / f"download-{os.getpid()}-{time.time_ns()}"
    folder.mkdir(parents=True)
    atexit.register(shutil.rmtree, folder, True)
    return folder


# --------------------------------------------------------------------------- rule 2


def working_copy(url: str, report: Callable[[str], None] = print) -> Path:
    """This process's working copy of ``url``, created once, the URL's lock held (rule 2).

    A second process (on this machine) writing the same URL is refused in one
    line naming the holder. Remote checkpoints whose upload never finished are
    deleted: the holder of the lock is the run's one writer.
    """
    store = RemoteStore(url)
    for path, known in _WORKING.items():
        if known.url == store.url:
            return Path(path)
    store.check_reachable()  # bad bucket, credentials, endpoint: one line, before any write
    folder = url_folder(store.url)
    folder.mkdir(parents=True, exist_ok=True)
    _HELD.enter_context(run_lock(folder, report))
    for stale in folder.glob("work-*"):  # left by processes that held the lock and are gone
        shutil.rmtree(stale, ignore_errors=True)
    working = folder / f"work-{os.getpid()}-{time.time_ns()}"
    working.mkdir()
    store.remove_uncommitted(report)
    _WORKING[str(working)] = store
    return working


# --------------------------------------------------------------------------- uploading


class RemoteCheckpointManager(CheckpointManager):
    """A ``CheckpointManager`` on a working copy that uploads each checkpoint it commits.

    After the local commit (files, manifest, pointers, local pruning): the
    checkpoint is uploaded (manifest last), then the pointers and run files, then
    the remote checkpoints are pruned by the same policy (manifest first). On the
    background thread when ``asynchronous``. A failed upload is a
    ``CheckpointError`` (one line) raised by this or the next save, as a full disk is.
    """

    def __init__(self, run_dir: Path, policy: Any, store: RemoteStore, **options: Any) -> None:
        super().__init__(run_dir, policy, **options)
        self.store = store

    def _commit(self, staging: Path, final: Path, manifest: Mapping[str, Any]) -> None:
        super()._commit(staging, final, manifest)
        try:
            self.store.upload_checkpoint(final)
            self.store.manifests[final.name] = read_manifest(final)
            publish_run_files(self.run_dir)
            protected = [name for name in (self.latest, self.best) if name]
            self.store.prune(self.policy, protected)
        except Exception as error:
            reason = str(error) if isinstance(error, UserError) else remote_failure(error)
            if reason is None:
                raise
            raise CheckpointError(
                f"cannot upload checkpoint {final.name} to {self.store.url}: {reason}; "
                "the checkpoints uploaded before it are intact"
            ) from error

    def _is_new_best(self, manifest: Mapping[str, Any]) -> bool:
        # The best checkpoint may exist only remotely (a resume downloads the newest).
        best = self.best
        if best is not None and not (self.run_dir / best).exists():
            saved = self.store.manifest(best)
            score, best_score = self.policy.score(manifest), None
            if saved is not None:
                best_score = self.policy.score(saved)
            if score is None:
                return False
            return best_score is None or score > best_score
        return super()._is_new_best(manifest)


def checkpoint_manager(run_dir: Path, policy: Any, **options: Any) -> CheckpointManager:
    """The manager for ``run_dir``: uploading when it is a working copy, else local."""
    store = store_for(run_dir)
    if store is None:
        return CheckpointManager(run_dir, policy, **options)
    return RemoteCheckpointManager(run_dir, policy, store, **options)


def publish_run_files(run_dir: Path) -> None:
    """Upload the run's top-level files, pointers and TensorBoard events when ``run_dir``
    is a working copy (nothing otherwise). Pointers go after the checkpoints they name."""
    store = store_for(run_dir)
    if store is None:
        return
    run_dir = Path(run_dir)
    with remote_errors(f"upload the run's files to {store.url}"):
        for name in (*RUN_TOP_FILES, *POINTERS):
            if (run_dir / name).is_file() and (name not in POINTERS or read_pointer(run_dir, name)):
                store.upload_file(run_dir / name, name)
        events = run_dir / TENSORBOARD_DIR
        if events.is_dir():
            for path in sorted(events.rglob("*")):
                if path.is_file():
                    store.upload_file(path, path.relative_to(run_dir).as_posix())
