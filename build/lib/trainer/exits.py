"""How an error reaches the person who ran a command: one line and an exit status.

The one mapping from an exception to an exit status, for ``train.py`` and the tools:

=================  ======  =====================================================
exception          status  what it means
=================  ======  =====================================================
(none)             0       done
``StorageError``   1       the machine refused a write (disk full, read-only); the
                           tools also exit 1 when the thing checked is bad
``UserError``      2       bad input: a config value, a name, a path
``StopRequested``  128+N   a signal N stopped the run after saving a checkpoint
=================  ======  =====================================================
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from trainer.errors import StopRequested, StorageError, UserError
from trainer.runs.cluster import requeue_after_preemption

OK, BAD, BAD_INPUT = 0, 1, 2
_STATUS = {UserError: BAD_INPUT, StorageError: BAD}


def report(error: UserError | StorageError) -> int:
    """Print ``error: <message>`` to stderr; return the exit status of ``error``'s kind."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    return next(status for kind, status in _STATUS.items() if isinstance(error, kind))


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """A UserError or a StorageError becomes one line on stderr and its exit status
    (:func:`report`); a StopRequested says where its checkpoint is, asks for the job
    to be requeued after a preemption signal (``trainer.runs.cluster``), and exits with
    the signal's status."""
    try:
        yield
    except (UserError, StorageError) as error:
        sys.exit(report(error))
    except StopRequested as stop:
        print(f"Stopped by {stop}; checkpoint saved in {stop.run_dir}", file=sys.stderr)
        print(f"Resume with: python train.py +resume={stop.run_dir}", file=sys.stderr)
        requeue_after_preemption(stop, report=lambda line: print(line, file=sys.stderr))
        sys.exit(stop.exit_code)
