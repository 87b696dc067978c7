"""What a ``model.fit`` script built, recorded beside the weights and checked on resume.

The script builds its model and optimizer itself; nothing is deserialized from a
checkpoint. Each checkpoint's ``config.yaml`` records what was built::

    written_by: checkpoints.keras.ResumableCheckpoint
    keras_version: 3.15.1
    model: {class: Sequential, weights: [{name: kernel, shape: [3, 3, 1, 8], dtype: float32}, ...]}
    optimizer: {class: Adam, config: {...}}  # get_config(), learning_rate schedule included

and a resume compares it with what the script built now (:func:`mismatch`): the
optimizer's class, every key of its config (its ``name`` aside, and a constant
learning rate, which callbacks change and the restored variable holds), the
number of model weights and each one's name, shape and dtype, by position (the
variables' paths carry layer names that Keras numbers per process, so they are
not compared). The first difference is one line; nothing is loaded then.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the tools that read a record need no TensorFlow
    import keras

WRITTEN_BY = "checkpoints.keras.ResumableCheckpoint"


def _as_json_gives_it(data: Any) -> Any:
    """``data`` as JSON would give it back (NumPy numbers as Python's, tuples as lists)."""
    return json.loads(json.dumps(data, default=lambda value: value.item()))


def built_record(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict[str, Any]:
    """The record of ``model`` and ``optimizer`` that a checkpoint's config.yaml holds."""
    import keras

    config = _as_json_gives_it(optimizer.get_config())
    config.pop("name", None)
    return {
        "written_by": WRITTEN_BY,
        "keras_version": keras.__version__,
        "model": {
            "class": type(model).__name__,
            "weights": [
                {
                    "name": weight.path.rsplit("/", 1)[-1],
                    "shape": [int(n) for n in weight.shape],
                    "dtype": str(weight.dtype),
                }
                for weight in model.weights
            ],
        },
        "optimizer": {"class": type(optimizer).__name__, "config": config},
    }


def mismatch(saved: Mapping[str, Any], built: Mapping[str, Any]) -> str | None:
    """The first difference between a checkpoint's record and the script's, or None.

    >>> mismatch({"written_by": "me"}, {})
    "it was not written by checkpoints.keras.ResumableCheckpoint (written_by: 'me')"
    """
    if saved.get("written_by") != WRITTEN_BY:
        return f"it was not written by {WRITTEN_BY} (written_by: {saved.get('written_by')!r})"
    ours, theirs = built["optimizer"], saved.get("optimizer") or {}
    if ours["class"] != theirs.get("class"):
        return f"the optimizer is {ours['class']} in the script, {theirs.get('class')} there"
    found = _config_difference(ours["config"], theirs.get("config") or {})
    if found:
        return found
    ours, theirs = built["model"]["weights"], (saved.get("model") or {}).get("weights") or []
    if len(ours) != len(theirs):
        return f"the model has {len(ours)} weights in the script, {len(theirs)} there"
    for index, (mine, saved_weight) in enumerate(zip(ours, theirs, strict=True)):
        for key in ("name", "shape", "dtype"):
            if mine[key] != saved_weight.get(key):
                return (
                    f"model weight {index} ({mine['name']}) has {key} {mine[key]} in the "
                    f"script, {saved_weight.get(key)} there"
                )
    return None


def _config_difference(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> str | None:
    for key in sorted(set(ours) | set(theirs)):
        mine, saved = ours.get(key), theirs.get(key)
        if key == "learning_rate" and _is_number(mine) and _is_number(saved):
            continue  # a constant rate lives in a variable: restored, and callbacks change it
        if mine != saved:
            return f"the optimizer's {key} is {_shown(mine)} in the script, {_shown(saved)} there"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."
