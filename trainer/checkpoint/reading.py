"""The one reader of what a run directory holds: bounded in size, parsed as data only.

Everything the trainer and its tools read back from a run (manifests, trainer
state, configs, pointers) comes through here: files larger than their limit
are not read, JSON and YAML are parsed with safe loaders, so no tag or key in
a file can construct an object or run code.

No TensorFlow here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.checkpoint.layout import CONFIG_FILE, STATE_FILE
from trainer.errors import UserError

if TYPE_CHECKING:
    from trainer.checkpoint.format import Checkpoint

MAX_CONFIG_BYTES = 1 << 20
MAX_STATE_BYTES = 16 << 20
# The sections of the config a checkpoint saves: what a resumed run trains with.
SAVED_SECTIONS = ("dataset", "model", "optimizer", "schedule", "trainer", "checkpoint")

# Hydra's instantiation keys: a config read from a checkpoint holding any of them
# is refused, since nothing read from a checkpoint is ever instantiated.
FORBIDDEN_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def read_mapping(path: Path, max_bytes: int) -> dict[str, Any]:
    """A small JSON (``.json``) or YAML file parsed as data: a mapping, or ValueError why not.

    Files larger than ``max_bytes`` are not read; YAML goes through the safe
    loader, so no tag in the file can construct an object.
    """
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path.name} is larger than {max_bytes} bytes")
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = path.read_text()
        if kind == "JSON":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path.name} is not valid {kind} ({error})") from None
    except Exception as error:  # yaml.YAMLError, whose module is imported lazily
        raise ValueError(
            f"{path.name} is not valid {kind} ({str(error).splitlines()[0]})"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path.name} is not a {'JSON object' if kind == 'JSON' else 'YAML mapping'}"
        )
    return data


def find_forbidden_key(node: Any, path: str = "") -> str | None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in FORBIDDEN_KEYS:
                return where
            found = find_forbidden_key(value, where)
            if found:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found = find_forbidden_key(value, f"{path}[{index}]")
            if found:
                return found
    return None


def read_checkpoint_config(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint's config.yaml, parsed safely and checked; a UserError if it is not sound."""
    from omegaconf import OmegaConf  # imported here: listing and verifying need neither

    from trainer.config import typed_section

    path = checkpoint.file(CONFIG_FILE)
    try:
        raw = read_mapping(path, MAX_CONFIG_BYTES)
    except ValueError as error:
        raise UserError(f"checkpoint {checkpoint.path}: {error}") from None
    forbidden = find_forbidden_key(raw)
    if forbidden:
        raise UserError(f"{path} contains {forbidden!r}: checkpoints are never instantiated")
    missing = [s for s in SAVED_SECTIONS if not isinstance(raw.get(s), dict)]
    if missing:
        raise UserError(f"{path} lacks the config section(s) {', '.join(missing)}")
    for section in SAVED_SECTIONS:
        raw[section] = OmegaConf.to_container(
            typed_section(section, raw[section]), enum_to_str=True
        )
    resolved = raw.get("resolved_schedule")
    if not isinstance(resolved, dict):
        raise UserError(f"{path} lacks the resolved_schedule section")
    if resolved.get("name") != raw["schedule"].get("name"):
        raise UserError(
            f"{path} is inconsistent: resolved_schedule names {resolved.get('name')!r}, "
            f"schedule names {raw['schedule'].get('name')!r}"
        )
    return raw


def read_trainer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint's ``trainer_state.json``; a UserError if it cannot be read as data."""
    try:
        return read_mapping(checkpoint.file(STATE_FILE), MAX_STATE_BYTES)
    except ValueError as error:
        raise UserError(f"checkpoint {checkpoint.path}: {error}") from None
