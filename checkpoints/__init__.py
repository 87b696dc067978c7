"""Checkpoints: the on-disk format, the manager, the training-state files, the resume policy.

=================  ==========================================================  ==========
module             what it holds                                               TensorFlow
=================  ==========================================================  ==========
``layout``         the names of every file and directory, defined once         no
``reading``        the one bounded, typed reader of what a run holds           no
``h5``             the one checker and reader of HDF5 files (h5py)             no
``format``         checkpoint directories: atomic commit, manifest, verify     no
``keep``           ``KeepPolicy``: which checkpoints survive pruning           no
``manager``        ``CheckpointManager``: save, commit (maybe in the           no
                   background), pointers, pruning
``lock``           the lock of a run's one writer, naming its holder           no
``run_dir``        where a run writes, and where a new run may not             no
``resume``         the resume policy: how a run starts (``plan_start``)        no
``remote``         checkpoints on object storage (fsspec): commit by manifest  no
``remote_run``     a URL run's local working copy, uploaded after each commit  no
``state``          the state files, written from and restored into Keras       yes
``checkpointer``   ``RunCheckpointer``: a built run's checkpoints, wired once  yes
=================  ==========================================================  ==========

Importing this package imports none of the TensorFlow modules; it re-exports
the format's public names, so ``from checkpoints import verify`` works.
"""

from checkpoints.format import (
    MAX_MANIFEST_BYTES,
    Checkpoint,
    checkpoint_arrays,
    commit_checkpoint,
    latest_valid_checkpoint,
    list_checkpoints,
    read_checkpoint,
    read_manifest,
    read_pointer,
    remove_stale_staging,
    resolve_resume_path,
    sha256_of,
    staging_dir,
    verify,
    verify_in_background,
    write_text_atomically,
)
from checkpoints.keep import KeepPolicy
from checkpoints.layout import (
    CHECKPOINT_PREFIX,
    FORMAT_VERSION,
    MANIFEST,
    POINTERS,
    checkpoint_name,
    is_checkpoint_name,
)
from checkpoints.reading import read_mapping

__all__ = [
    "CHECKPOINT_PREFIX",
    "FORMAT_VERSION",
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "POINTERS",
    "Checkpoint",
    "KeepPolicy",
    "checkpoint_arrays",
    "checkpoint_name",
    "commit_checkpoint",
    "is_checkpoint_name",
    "latest_valid_checkpoint",
    "list_checkpoints",
    "read_checkpoint",
    "read_manifest",
    "read_mapping",
    "read_pointer",
    "remove_stale_staging",
    "resolve_resume_path",
    "sha256_of",
    "staging_dir",
    "verify",
    "verify_in_background",
    "write_text_atomically",
]
