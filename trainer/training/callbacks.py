"""Users' Keras callbacks, by registered name, and their state in the checkpoint.

A user's module (listed in ``imports``) registers a factory, a
``keras.callbacks.Callback`` subclass or any callable returning one::

    from trainer.training.callbacks import register_callback

    @register_callback("print_every")
    class PrintEvery(keras.callbacks.Callback):
        def __init__(self, every: int = 1): ...

and the config names it, with keyword arguments from YAML:
``'callbacks=[print_every]'`` or ``'callbacks=[{name: print_every, every: 2}]'``.
Nothing is instantiated from a checkpoint's own content: a resumed run builds
the callbacks its checkpoint's config names, from the registry its command line
filled (``imports`` is never read from a checkpoint), as schedules are.

A callback with ``get_state()`` / ``set_state(state)`` has its state saved in
every checkpoint (``trainer_state.json``, ``loop.callbacks``) and given back
before a resumed run trains on: the state must be JSON data that survives a
round trip unchanged (dicts with string keys, lists, strings, integers, finite
floats, booleans, None), at most ``checkpoints.schemas.MAX_CALLBACK_STATE_BYTES`` as JSON.

This module never imports TensorFlow; :func:`build_callbacks` runs the factories.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from checkpoints.callback_state import check_callback_state, has_state
from trainer.errors import UserError
from trainer.registry import Registry

CALLBACKS: Registry[Callable[..., Any]] = Registry("callback")
register_callback = CALLBACKS.register


def callback_specs(callbacks: Sequence[Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """The config's ``callbacks`` as (name, keyword arguments) pairs.

    >>> callback_specs(["a", {"name": "b", "every": 2}])
    [('a', {}), ('b', {'every': 2})]
    """
    from omegaconf import OmegaConf

    if OmegaConf.is_config(callbacks):
        callbacks = OmegaConf.to_container(callbacks, resolve=True)
    specs = []
    for item in callbacks or []:
        if isinstance(item, Mapping):
            arguments = {k: v for k, v in item.items() if k != "name"}
            specs.append((str(item["name"]), arguments))
        else:
            specs.append((str(item), {}))
    return specs


def check_callbacks(callbacks: Sequence[Any] | None) -> None:
    """Refuse, in one line, a name no module registered or arguments its factory does not
    take (by its signature: nothing is built here)."""
    for index, (name, arguments) in enumerate(callback_specs(callbacks)):
        factory = CALLBACKS.get(name)
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # a builtin without a signature: leave it to the call
            continue
        try:
            signature.bind(**arguments)
        except TypeError as error:
            takes = ", ".join(
                p.name
                for p in signature.parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            )
            raise UserError(
                f"callbacks[{index}] ({name}): {error}; it takes: {takes or 'no arguments'}"
            ) from None


def build_callbacks(callbacks: Sequence[Any] | None) -> list[Any]:
    """The ``keras.callbacks.Callback`` of each entry of ``callbacks``, in order."""
    import keras

    check_callbacks(callbacks)
    built = []
    for index, (name, arguments) in enumerate(callback_specs(callbacks)):
        try:
            callback = CALLBACKS.get(name)(**arguments)
        except (TypeError, ValueError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"callbacks[{index}] ({name}): {first_line}") from None
        if not isinstance(callback, keras.callbacks.Callback):
            raise UserError(
                f"callbacks[{index}] ({name}): the registered factory returned "
                f"{type(callback).__name__}, not a keras.callbacks.Callback"
            )
        built.append(callback)
    return built


def callback_states(names: Sequence[str], callbacks: Sequence[Any]) -> list[dict[str, Any]]:
    """What the checkpoint saves of ``callbacks`` (named ``names``): one
    ``{"name", "state"}`` per callback, state None for one without ``get_state``.

    A state a checkpoint cannot keep is refused in one line naming the callback
    (``checkpoints.callback_state.check_callback_state``).
    """
    saved = []
    for index, (name, callback) in enumerate(zip(names, callbacks, strict=True)):
        state = callback.get_state() if has_state(callback) else None
        if state is not None:
            check_callback_state(f"callbacks[{index}] ({name})", state)
        saved.append({"name": name, "state": state})
    return saved


def restore_callback_states(
    names: Sequence[str], callbacks: Sequence[Any], saved: Sequence[Mapping[str, Any]]
) -> None:
    """Give each callback with ``set_state`` the state the checkpoint saved for it.

    The checkpoint's config named the same callbacks in the same order (a resumed run
    builds them from it), so ``saved`` is matched by position; a checkpoint whose
    list differs is refused in one line. A checkpoint from before callbacks were
    saved (``saved`` empty) leaves them as built.
    """
    if not saved:
        return
    saved_names = [entry.get("name") for entry in saved]
    if saved_names != list(names):
        raise UserError(
            f"the checkpoint saved the state of callbacks {saved_names}, the run has {list(names)}"
        )
    for callback, entry in zip(callbacks, saved, strict=True):
        if entry.get("state") is not None and has_state(callback):
            callback.set_state(entry["state"])
