"""What every entry point shares: quiet TensorFlow, and one line for a user's mistake."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from trainer.errors import UserError

# TensorFlow's C++ logging: errors only. Must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a UserError into ``error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except UserError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
