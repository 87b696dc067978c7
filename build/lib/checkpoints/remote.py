"""Checkpoints on object storage (``s3://``, ``gs://``): the same format, committed by a marker.

A remote run holds what a local run directory holds, as objects::

    s3://bucket/prefix/
        config.yaml, metrics.csv, summary.json, tensorboard/...   the run's files
        latest, best                                              pointers
        step-00000450/model.weights.h5, ... , manifest.json       a checkpoint

Object stores have no atomic rename, so a checkpoint is *committed by its
manifest*: its files are uploaded under their final names first, the manifest
(which lists every file's size and sha256) last. A checkpoint prefix without a
manifest is an upload that has not finished (or never will): every reader
(:meth:`RemoteStore.committed`, resume, the tools, pruning) treats it as
absent, and the run's one writer deletes it when it starts
(:meth:`RemoteStore.remove_uncommitted`). Replacing or pruning a checkpoint
deletes its manifest first, then the rest, so a half-deleted checkpoint is
never taken for a whole one. This is Orbax's commit-file mode, with the manifest
as the commit file.

Reading downloads into a local directory, then uses the local readers: every
file's size is checked against the manifest before it is fetched, the
manifest's own size is bounded (``manifest.MAX_MANIFEST_BYTES``), and the
checkpoint is verified locally (sha256, HDF5 checks, ``read_mapping``'s bounds)
before it is used: a checkpoint whose download does not verify is never used.

Why fsspec (``s3fs``, ``gcsfs``) and not ``tf.io.gfile``: measured on TensorFlow
2.21, ``tf.io.gfile.exists("s3://...")`` raises ``UnimplementedError: File system
scheme 's3' not implemented``; gfile's S3 support moved to ``tensorflow-io``, whose
newest release (0.37.1) is built for TensorFlow 2.16. gfile still has ``gs://``,
but one code path for every scheme is simpler, and fsspec keeps this module
TensorFlow-free, so the tools that only read stay fast.

Credentials and the endpoint come from where botocore and google-auth look
(``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``, ``~/.aws``, ``AWS_ENDPOINT_URL``;
``GOOGLE_APPLICATION_CREDENTIALS``): nothing here takes them as arguments, so
they never reach a config, a checkpoint or a log. Connections time out fast
(:data:`S3_CONFIG`): an unreachable endpoint is one line in seconds, not
minutes of retries.

No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from checkpoints.errors import UserError
from checkpoints.layout import (
    MANIFEST,
    POINTERS,
    RUN_FILES,
    TENSORBOARD_DIR,
    is_checkpoint_name,
)
from checkpoints.manifest import (
    MAX_MANIFEST_BYTES,
    Checkpoint,
    read_manifest,
    verify,
)

# The schemes a run may be stored under, and the package that serves each.
SCHEMES = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# botocore's defaults retry for minutes against an endpoint that does not answer.
S3_CONFIG = {
    "connect_timeout": 5,
    "read_timeout": 60,
    "retries": {"max_attempts": 3, "mode": "standard"},
}
# The files of a run's top level that are uploaded beside its checkpoints: the run files
# (layout.RUN_FILES) less the pointers (uploaded after each commit) and TensorBoard's folder.
RUN_TOP_FILES = tuple(n for n in RUN_FILES if n not in POINTERS and n != TENSORBOARD_DIR)


def is_url(path: Any) -> bool:
    """Whether ``path`` names a location by URL (``s3://b/p``) rather than a local path.

    >>> is_url("s3://bucket/run"), is_url("runs/a"), is_url(None)
    (True, False, False)
    """
    return isinstance(path, str) and bool(_URL.match(path))


def split_checkpoint_url(url: str) -> tuple[str, str | None]:
    """``(run url, checkpoint name or None)`` for a URL naming a run or one checkpoint.

    >>> split_checkpoint_url("s3://b/runs/a/step-00000004/")
    ('s3://b/runs/a', 'step-00000004')
    >>> split_checkpoint_url("s3://b/runs/a")
    ('s3://b/runs/a', None)
    """
    url = url.rstrip("/")
    head, _, last = url.rpartition("/")
    if is_checkpoint_name(last) and is_url(head + "/"):
        return head, last
    return url, None


def remote_failure(error: BaseException) -> str | None:
    """One line for an error an object store (or the way to it) raised; None for others.

    botocore's and google-auth's errors, and s3fs's OSErrors (a missing bucket is a
    FileNotFoundError, access denied a PermissionError), are turned into what the
    user can fix.
    """
    name = type(error).__name__
    module = type(error).__module__ or ""
    if name == "NoCredentialsError" or "DefaultCredentialsError" in name:
        return (
            "no credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE; "
            "for gs://, GOOGLE_APPLICATION_CREDENTIALS)"
        )
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
        return f"the endpoint cannot be reached ({error}); check AWS_ENDPOINT_URL or the network"
    if isinstance(error, FileNotFoundError) and "bucket" in str(error).lower():
        return "the bucket does not exist (create it first, or check the name)"
    if isinstance(error, PermissionError):
        return f"access denied ({error}); check the credentials' permissions"
    if module.startswith(("botocore", "aiobotocore", "google", "gcsfs", "s3fs")):
        return f"{name}: {error}".splitlines()[0]
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
        return str(error).splitlines()[0] or name
    return None


@contextlib.contextmanager
def remote_errors(what: str) -> Iterator[None]:
    """Turn a store's error inside the block into one UserError line: ``cannot <what>: ...``."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        reason = remote_failure(error)
        if reason is None:
            raise
        raise UserError(f"cannot {what}: {reason}") from None


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem serving ``url`` and the path inside it (``bucket/prefix``).

    A scheme other than :data:`SCHEMES`, or one whose package is not installed
    (``gs://`` without gcsfs), is a UserError that says what to install.
    """
    match = _URL.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme not in SCHEMES:
        raise UserError(
            f"{url!r}: unsupported storage scheme {scheme!r}; use a local path, s3:// or gs://"
        )
    import fsspec

    # botocore says at INFO where it found credentials and the endpoint: noise in a run's log.
    for name in ("botocore", "aiobotocore", "s3fs"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        cls = fsspec.get_filesystem_class(scheme)
    except ImportError:
        package = SCHEMES[scheme]
        raise UserError(
            f"{url!r} needs the {package} package: pip install {package} "
            f"(or pip install 'keras-hydra-trainer[{'s3' if scheme == 's3' else 'gcs'}]')"
        ) from None
    options: dict[str, Any] = {"skip_instance_cache": True}
    if scheme == "s3":
        # Listings are never cached: a reader must see the commit marker another wrote.
        options.update(config_kwargs=S3_CONFIG, use_listings_cache=False)
    else:
        options.update(cache_timeout=0, retries=2)
    root = url[match.end() :].strip("/")
    if not root:
        raise UserError(f"{url!r} names no bucket; use {scheme}://BUCKET/PREFIX")
    return cls(**options), root


class RemoteStore:
    """One run's prefix in an object store: list, upload, download, prune its checkpoints.

    The manifests it has read or written are kept (``manifests``): pruning and
    the ``best`` comparison need them at every save, and they never change
    once committed.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(self.url)
        self.manifests: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

    def _path(self, *names: str) -> str:
        return "/".join((self.root, *names))

    # ------------------------------------------------------------------ reading

    def check_reachable(self) -> None:
        """A UserError (one line) if the bucket is missing, the credentials or endpoint bad."""
        bucket = self.root.split("/", 1)[0]
        with remote_errors(f"reach {self.url}"):
            self.fs.ls(bucket, detail=False)  # a missing bucket: FileNotFoundError

    def objects(self) -> dict[str, int]:
        """Every object directly under the run or one level down: relative name -> size."""
        with remote_errors(f"list {self.url}"):
            found = self.fs.find(self.root, maxdepth=2, detail=True)
        prefix = self.root + "/"
        return {
            name[len(prefix) :]: int(info.get("size") or 0)
            for name, info in found.items()
            if name.startswith(prefix) and info.get("type") != "directory"
        }

    def checkpoint_prefixes(self) -> tuple[list[str], list[str]]:
        """``(committed, uncommitted)`` checkpoint names, oldest step first.

        Committed: its manifest exists. Uncommitted: objects under a checkpoint
        name but no manifest (an upload in progress or interrupted).
        """
        names: dict[str, bool] = {}
        for relative in self.objects():
            head, _, tail = relative.partition("/")
            if is_checkpoint_name(head) and tail:
                names[head] = names.get(head, False) or tail == MANIFEST
        order = sorted(names, key=lambda n: int(n.split("-", 1)[1]))
        return [n for n in order if names[n]], [n for n in order if not names[n]]

    def committed(self) -> list[str]:
        """The committed checkpoints' names, oldest first (readers see only these)."""
        return self.checkpoint_prefixes()[0]

    def holds_run_files(self) -> list[str]:
        """Which of a run's top-level files or pointers the prefix holds."""
        objects = self.objects()
        return [
            name
            for name in (*RUN_TOP_FILES, *POINTERS, TENSORBOARD_DIR)
            if name in objects or any(o.startswith(name + "/") for o in objects)
        ]

    def fetch_file(self, name: str, local: Path, limit: int | None = None) -> bool:
        """Download object ``name`` (relative) to ``local``; False if it does not exist.

        ``limit``: the most bytes it may have (checked before it is fetched).
        """
        remote = self._path(name)
        with remote_errors(f"download {self.url}/{name}"):
            try:
                size = int(self.fs.info(remote).get("size") or 0)
            except FileNotFoundError:
                return False
            if limit is not None and size > limit:
                raise UserError(f"{self.url}/{name} is {size} bytes, more than {limit} allowed")
            self.fs.get_file(remote, str(local))
        return True

    def manifest(self, name: str) -> dict[str, Any] | None:
        """The committed manifest of checkpoint ``name``, checked; None if unusable."""
        if name not in self.manifests:
            scratch = Path(_scratch_dir()) / f"{name}-{os.getpid()}-{time.time_ns()}"
            scratch.mkdir(parents=True)
            try:
                if not self.fetch_file(
                    f"{name}/{MANIFEST}", scratch / MANIFEST, MAX_MANIFEST_BYTES
                ):
                    return None
                self.manifests[name] = read_manifest(scratch)
            except (OSError, ValueError, UserError):
                return None
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return self.manifests[name]

    def download_checkpoint(self, name: str, into: Path, *, hashes: bool = True) -> Checkpoint:
        """Download committed checkpoint ``name`` to ``into/name`` and verify it there.

        The files go into a hidden sibling first and are renamed into place once
        all arrived; each file's size is checked against the manifest before it is
        fetched. The result's ``.problems`` say why it is unusable (it is then
        left out of ``into``): a checkpoint that does not verify is never used.
        """
        into = Path(into)
        final = into / name
        staging = into / f".{name}.tmp-download-{os.getpid()}-{time.time_ns()}"
        staging.mkdir(parents=True)
        try:
            if not self.fetch_file(f"{name}/{MANIFEST}", staging / MANIFEST, MAX_MANIFEST_BYTES):
                return Checkpoint(final, problems=["not committed (no manifest.json)"])
            try:
                manifest = read_manifest(staging)
            except (OSError, ValueError) as error:
                return Checkpoint(final, problems=[str(error)])
            sizes = self.objects_under(name)
            for file_name, entry in manifest["files"].items():
                size = sizes.get(file_name)
                if size is None:
                    return Checkpoint(final, manifest, [f"{file_name}: missing"])
                if size != entry["size"]:
                    problem = f"{file_name}: size {size} bytes, manifest says {entry['size']}"
                    return Checkpoint(final, manifest, [problem])
            names = list(manifest["files"])
            with remote_errors(f"download {self.url}/{name}"):  # concurrently, in one call
                self.fs.get([self._path(name, n) for n in names], [str(staging / n) for n in names])
            checkpoint = verify(staging, hashes=hashes)
            if not checkpoint.valid:
                return Checkpoint(final, checkpoint.manifest, checkpoint.problems)
            if final.exists():  # an older download of the same checkpoint
                shutil.rmtree(final)
            os.rename(staging, final)
            self.manifests[name] = checkpoint.manifest
            return Checkpoint(final, checkpoint.manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def copy_checkpoint(self, name: str, into: Path) -> Path:
        """Copy checkpoint ``name`` into ``into/name`` as stored, for a tool to verify.

        Only the manifest if it is unreadable; a file whose size differs from its
        manifest entry is not fetched (``verify`` then says it is missing).
        """
        target = Path(into) / name
        target.mkdir(parents=True)
        if not self.fetch_file(f"{name}/{MANIFEST}", target / MANIFEST, MAX_MANIFEST_BYTES):
            return target
        try:
            manifest = read_manifest(target)
        except (OSError, ValueError):
            return target
        sizes = self.objects_under(name)
        for file_name, entry in manifest["files"].items():
            if sizes.get(file_name) == entry["size"]:
                self.fetch_file(f"{name}/{file_name}", target / file_name)
        return target

    def objects_under(self, name: str) -> dict[str, int]:
        """The objects of checkpoint ``name``: file name -> size."""
        with remote_errors(f"list {self.url}/{name}"):
            found = self.fs.find(self._path(name), maxdepth=1, detail=True)
        prefix = self._path(name) + "/"
        return {
            key[len(prefix) :]: int(info.get("size") or 0)
            for key, info in found.items()
            if key.startswith(prefix)
        }

    # ------------------------------------------------------------------ writing

    def upload_checkpoint(self, local: Path) -> None:
        """Upload the committed local checkpoint ``local`` under its name; manifest last.

        A checkpoint of the same name already there (the epoch-end save after a
        step save) is first uncommitted: its manifest is deleted before any of
        its files is replaced.
        """
        name = local.name
        self._uncommit(name)
        files = [path for path in sorted(local.iterdir()) if path.name != MANIFEST]
        # One call for all files: s3fs uploads them concurrently.
        self.fs.put([str(p) for p in files], [self._path(name, p.name) for p in files])
        self.fs.put_file(str(local / MANIFEST), self._path(name, MANIFEST))  # the commit

    def _uncommit(self, name: str) -> None:
        """Delete checkpoint ``name``'s manifest, if there is one (S3 deletes of a missing
        key succeed: one request either way)."""
        self.manifests.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name, MANIFEST))

    def upload_file(self, local: Path, name: str) -> None:
        """Upload ``local`` as object ``name`` (relative to the run)."""
        self.fs.put_file(str(local), self._path(name))

    def delete_checkpoint(self, name: str) -> None:
        """Uncommit checkpoint ``name`` (its manifest goes first), then delete the rest."""
        self._uncommit(name)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(name), recursive=True)

    def remove_uncommitted(self, report: Callable[[str], None] = print) -> list[str]:
        """Delete the checkpoints whose upload never finished (the run's writer only)."""
        _, uncommitted = self.checkpoint_prefixes()
        for name in uncommitted:
            report(f"Removing {self.url}/{name}: its upload never finished (no {MANIFEST})")
            self.delete_checkpoint(name)
        return uncommitted

    def prune(self, policy: Any, protected: list[str]) -> list[str]:
        """Delete the committed checkpoints ``policy`` (a KeepPolicy) does not keep."""
        scanned = [
            Checkpoint(Path(name), manifest, [] if manifest else ["unreadable manifest"])
            for name in self.committed()
            for manifest in [self.manifest(name)]
        ]
        removed = [path.name for path in policy.to_remove(scanned, protected)]
        for name in removed:
            self.delete_checkpoint(name)
        return removed


def _scratch_dir() -> str:
    import tempfile

    return tempfile.gettempdir()
