"""The canary: what runs if anything read from a checkpoint is ever executed, and says so.

Mutations that try to run code (YAML ``!!python/...`` tags, ``_target_`` keys,
``imports``, OmegaConf interpolations) aim at these tripwires; each one leaves
a marker file in ``markers/`` when it fires:

- ``command(tag)``: a shell command that creates a marker (``os.system``,
  ``subprocess``);
- ``python(tag)``: Python source that creates a marker (``exec``, ``eval``);
- ``MODULE`` (``fuzz_canary_module``), importable from the canary folder: a
  marker when imported, and ``run(tag)`` / ``Canary(tag)`` make one when called;
- ``RESOLVER`` (``fuzz_canary``): an OmegaConf resolver that makes one when an
  interpolation ``${fuzz_canary:tag}`` is resolved; ``oc.env`` makes one when
  it reads the secret below (it is wrapped, otherwise unchanged);
- ``SECRET_ENV``: an environment variable whose random value must never show up
  in anything a reader prints, raises or returns (``${oc.env:...}``);
  ``file_secret``: the same for the content of a file outside the run that a
  symlink in the checkpoint points at.

No TensorFlow here.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

MODULE = "fuzz_canary_module"
RESOLVER = "fuzz_canary"
SECRET_ENV = "FUZZ_CANARY_SECRET"

_MODULE_SOURCE = '''\
"""Importing or calling anything here means checkpoint content was executed."""
from pathlib import Path

MARKERS = Path({markers!r})
(MARKERS / "imported-{module}").touch()


def run(tag="called"):
    (MARKERS / f"run-{{tag}}").touch()


class Canary:
    def __init__(self, *args, **kwargs):
        (MARKERS / "constructed").touch()
'''


@dataclass(frozen=True)
class Canary:
    """Tripwires under ``directory``; :meth:`install` arms them for this process."""

    directory: Path
    secret: str

    @classmethod
    def create(cls, directory: Path) -> Canary:
        directory = Path(directory)
        (directory / "markers").mkdir(parents=True, exist_ok=True)
        canary = cls(directory, secrets.token_hex(16))
        (directory / f"{MODULE}.py").write_text(
            _MODULE_SOURCE.format(markers=str(directory / "markers"), module=MODULE)
        )
        return canary

    @property
    def markers(self) -> Path:
        return self.directory / "markers"

    def command(self, tag: str) -> str:
        return f"touch {self.markers / tag}"

    def python(self, tag: str) -> str:
        return f"open({str(self.markers / tag)!r}, 'w').close()"

    def install(self) -> None:
        """Arm the tripwires: the module on ``sys.path``, the secret in the environment,
        the resolvers registered. Canaries nest: the last one installed is the armed one,
        and uninstalling it re-arms the one before."""
        if not _ARMED:
            _register_resolvers()
        _ARMED.append(self)
        sys.path.insert(0, str(self.directory))
        os.environ[SECRET_ENV] = self.secret

    def uninstall(self) -> None:
        _ARMED.remove(self)
        sys.path.remove(str(self.directory))
        sys.modules.pop(MODULE, None)
        if _ARMED:
            os.environ[SECRET_ENV] = _ARMED[-1].secret
            return
        os.environ.pop(SECRET_ENV, None)
        _unregister_resolvers()

    def fired(self) -> list[str]:
        """The markers present (each one a tripwire that fired); remove them with :meth:`reset`."""
        return sorted(p.name for p in self.markers.iterdir())

    def reset(self) -> None:
        for path in self.markers.iterdir():
            path.unlink()
        sys.modules.pop(MODULE, None)  # so that a second import fires again

    @property
    def file_secret(self) -> str:
        """What only a file outside the run holds (``secret.txt``): a leak if a reader shows it."""
        return "outside-" + hashlib.sha256(self.secret.encode()).hexdigest()[:32]

    def leaked(self, text: str) -> bool:
        """Whether ``text`` holds the secret: a value read from the environment."""
        return self.secret in text


_ARMED: list[Canary] = []  # installed canaries, the armed one last


def _register_resolvers() -> None:
    from omegaconf import OmegaConf
    from omegaconf._utils import _DEFAULT_MARKER_
    from omegaconf.resolvers import oc

    def tripped(tag: object = "resolver") -> str:
        (_ARMED[-1].markers / f"resolver-{tag}").touch()
        return "resolved"

    def env(key: str, default: object = _DEFAULT_MARKER_) -> object:
        # oc.env as OmegaConf defines it, plus a marker when it reads the secret.
        if key == SECRET_ENV:
            (_ARMED[-1].markers / "oc.env").touch()
        return oc.env(key, default)

    OmegaConf.register_new_resolver(RESOLVER, tripped, replace=True)
    OmegaConf.register_new_resolver("oc.env", env, replace=True)


def _unregister_resolvers() -> None:
    from omegaconf import OmegaConf
    from omegaconf.resolvers import oc

    OmegaConf.clear_resolver(RESOLVER)
    OmegaConf.register_new_resolver("oc.env", oc.env, replace=True)  # OmegaConf's own again
