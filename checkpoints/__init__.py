"""Checkpoints: the checkpoint manager as a library, standing apart from any trainer.

Its modules, top to bottom (each imports only those below it: the ``layers``
contract in ``pyproject.toml``, checked by ``lint-imports``):

=================  ==========================================================  ==========
module             what it holds                                               TensorFlow
=================  ==========================================================  ==========
``keras``          ``ResumableCheckpoint``: the manager as a ``model.fit``      on use
                   callback (TensorFlow imported with it)
``manager``        ``CheckpointManager``: save, commit (maybe in the           no
                   background), pointers, pruning
``remote``         checkpoints on object storage (fsspec): commit by manifest  no
``lock``           the lock of a run's one writer, naming its holder           no
``restore``        the state files, read back into Keras objects               yes
``state``          the state files, written from Keras objects                 yes
``listing``        a run's checkpoints and pointers, which one a resume uses   no
``manifest``       the manifest: schema, commit, reading, ``verify``           no
``durable``        durable writes: fsync, atomic replace, staging, rename      no
``io``             low-level I/O: HDF5 checks and layout, reads, writeback     no
``reading``        the one bounded, typed reader of what a run holds           no
``schemas``        the field kinds of those types; the trainer state's         no
``keep``           ``KeepPolicy``: which checkpoints survive pruning           no
``layout``         the names of every file and directory, defined once         no
``errors``         ``UserError`` and ``StorageError``: one line for a person   no
``version``        the project's version, written into every manifest          no
=================  ==========================================================  ==========

Importing this package imports none of the TensorFlow modules; it re-exports
the format's public names, so ``from checkpoints import verify`` works.
"""

from checkpoints.durable import (
    remove_stale_staging,
    sha256_of,
    staging_dir,
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
from checkpoints.listing import (
    latest_valid_checkpoint,
    list_checkpoints,
    read_pointer,
    resolve_resume_path,
)
from checkpoints.manifest import (
    MAX_MANIFEST_BYTES,
    Checkpoint,
    checkpoint_arrays,
    commit_checkpoint,
    read_checkpoint,
    read_manifest,
    verify,
    verify_in_background,
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
