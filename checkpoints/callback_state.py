"""What a checkpoint keeps of a user's callback: its ``get_state()``, as JSON data.

One check for the trainer's callbacks (``trainer.training.callbacks``) and for those
beside a ``model.fit`` script's ``ResumableCheckpoint``: a state that is not JSON
data, changes in a JSON round trip (tuples, non-string keys: ``set_state`` would get
other values) or is larger than :data:`MAX_CALLBACK_STATE_BYTES` is refused in one
line naming the callback. No TensorFlow here.
"""

from __future__ import annotations

import json
from typing import Any

from checkpoints.errors import UserError
from checkpoints.schemas import MAX_CALLBACK_STATE_BYTES


def has_state(callback: Any) -> bool:
    """Whether ``callback`` offers ``get_state`` and ``set_state``."""
    return callable(getattr(callback, "get_state", None)) and callable(
        getattr(callback, "set_state", None)
    )


def check_callback_state(where: str, state: Any) -> None:
    """Refuse, in one line naming ``where``, a ``get_state()`` a checkpoint cannot keep."""
    try:
        text = json.dumps(state, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise UserError(f"{where}: get_state() must return JSON data: {error}") from None
    if json.loads(text) != state:
        raise UserError(
            f"{where}: get_state() must return JSON data that survives a round trip "
            "unchanged (lists, not tuples; string keys)"
        )
    if len(text.encode()) > MAX_CALLBACK_STATE_BYTES:
        raise UserError(
            f"{where}: get_state() is {len(text.encode())} bytes as JSON, at most "
            f"{MAX_CALLBACK_STATE_BYTES} are saved"
        )
