"""A checkpoint's config read back: plain data (``checkpoints.reading``), then the trainer's
schema on each saved section, so a resumed run rebuilds from checked values only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from checkpoints.layout import CONFIG_FILE
from checkpoints.reading import read_plain_config
from trainer.errors import UserError

if TYPE_CHECKING:
    from checkpoints.manifest import Checkpoint

# Saved sections added after checkpoints were first written: what a checkpoint written
# without one reads back as (the option that behaves as the trainer did then).
SECTIONS_ADDED_LATER = {"augment": {"name": "none"}}


def read_checkpoint_config(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint's config.yaml, parsed safely and checked; a UserError if it is not sound."""
    from omegaconf import OmegaConf  # imported here: listing and verifying need neither

    from trainer.config.closed import SAVED_SECTIONS, typed_section

    path = checkpoint.file(CONFIG_FILE)
    raw = read_plain_config(checkpoint)
    for section, before in SECTIONS_ADDED_LATER.items():
        raw.setdefault(section, dict(before))
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
