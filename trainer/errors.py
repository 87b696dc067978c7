"""What a user sees instead of a traceback: a one-line error, or a clean stop after a signal."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator


class UserError(Exception):
    """Bad input from the user: a config value, a name, a path.

    The message is one line that says what was wrong and what is allowed.
    Entry points catch it, print ``error: <message>`` to stderr and exit with
    status 2; nothing existing has been changed when it is raised.
    """


class StopRequested(Exception):
    """A signal asked the run to stop; a checkpoint of ``run_dir`` has been saved.

    The exit status is the shell's for that signal: ``128 + signum``.
    """

    def __init__(self, signum: int, run_dir: object = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum
        self.run_dir = run_dir


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """A UserError becomes ``error: <message>`` on stderr and exit status 2; a
    StopRequested says where its checkpoint is and exits with the signal's status."""
    try:
        yield
    except UserError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    except StopRequested as stop:
        print(f"Stopped by {stop}; checkpoint saved in {stop.run_dir}", file=sys.stderr)
        print(f"Resume with: python train.py +resume={stop.run_dir}", file=sys.stderr)
        sys.exit(stop.exit_code)
