"""Never lose a ``model.fit`` run: :class:`ResumableCheckpoint`, a Keras callback on the
checkpoint library (see ``docs/from-model-fit.md``).

=============  ============================================================================
module         what it holds
=============  ============================================================================
``callback``   ``ResumableCheckpoint``: save, keep, resume, the callbacks beside it
``data``       ``EpochData``: each epoch's batches a function of the epoch, for exact resumes
``match``      the record of what the script built, and the one-line mismatch
``internals``  the private Keras names the callback relies on, fenced, each with its check
=============  ============================================================================

Importing this package is cheap: Keras and TensorFlow are imported with
``ResumableCheckpoint`` (``python -m trainer inspect`` reads ``match`` without them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ResumableCheckpoint"]


def __getattr__(name: str) -> Any:
    """``ResumableCheckpoint`` on first use (PEP 562), with TensorFlow and Keras."""
    if name == "ResumableCheckpoint":
        from checkpoints.keras.callback import ResumableCheckpoint

        return ResumableCheckpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
