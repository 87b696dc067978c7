"""The real checkpoint the fuzzer mutates, the copy each case gets, and what an attacker redoes.

- :func:`train_source_run`: one tiny deterministic ``python train.py`` run (two
  epochs, so two checkpoints and the ``latest``/``best`` pointers), made once
  per fuzz session and never touched again;
- :func:`copy_case`: a fresh copy of that run for one case, beside an
  ``outside/`` folder that links in the copy may point at;
- :func:`snapshot` / :func:`changes`: every entry of a tree as (type, size,
  mtime, sha256 or link target), compared before and after the readers ran;
- :func:`rehash_manifest`: the size and sha256 of every listed file recomputed
  and written back, as anyone who can write the directory can do.

No TensorFlow here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkpoints.layout import MANIFEST
from checkpoints.listing import list_checkpoints
from devtools.fault_injection import TRAIN, small_run_args


def source_run_args(data_dir: Path, run_dir: Path, hydra_dir: Path) -> list[str]:
    """Overrides for a small deterministic run: 2 epochs, a checkpoint after each."""
    return small_run_args(data_dir, run_dir, hydra_dir, epochs=2)


@dataclass(frozen=True)
class SourceRun:
    """The pristine run every case copies: never mutated, checked unchanged by every case."""

    root: Path  # holds run/ (and tfds/, hydra/ when this session prepared them)
    run_dir: Path

    @property
    def checkpoints(self) -> list[Path]:
        return list_checkpoints(self.run_dir)


def train_source_run(work: Path, data_dir: Path | None = None, timeout: float = 600) -> SourceRun:
    """Train the source run under ``work/source`` with ``python train.py``; a RuntimeError
    with train.py's output if it fails. ``data_dir``: a TFDS data_dir (default: prepared
    under ``work/source/tfds``)."""
    root = Path(work) / "source"
    root.mkdir(parents=True, exist_ok=True)
    run_dir = root / "run"
    args = source_run_args(Path(data_dir or root / "tfds"), run_dir, root / "hydra")
    process = subprocess.run(
        [sys.executable, str(TRAIN), *args],
        cwd=root,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if process.returncode != 0 or len(list_checkpoints(run_dir)) < 2:
        raise RuntimeError(
            f"the source run failed (exit {process.returncode}):\n{process.stderr[-3000:]}"
        )
    return SourceRun(root=root, run_dir=run_dir)


@dataclass(frozen=True)
class CaseDirs:
    """One case's tree: a copy of the source run and an ``outside/`` folder beside it."""

    root: Path
    run_dir: Path
    newest: Path  # the copy of the newest checkpoint: what a resume uses
    older: Path  # the copy of the checkpoint before it
    outside: Path  # files outside the run that links in the copy may point at

    def checkpoint(self, which: str) -> Path:
        return self.newest if which == "newest" else self.older


def copy_case(source: SourceRun, root: Path) -> CaseDirs:
    """A fresh copy of ``source``'s run under ``root/run`` (``root`` must not exist)."""
    root = Path(root)
    root.mkdir(parents=True)
    run_dir = root / "run"
    shutil.copytree(source.run_dir, run_dir, symlinks=True)
    (root / "outside").mkdir()
    checkpoints = list_checkpoints(run_dir)
    return CaseDirs(root, run_dir, checkpoints[-1], checkpoints[-2], root / "outside")


# --------------------------------------------------------------------------- snapshots

Entry = tuple[Any, ...]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def snapshot(*roots: Path) -> dict[str, Entry]:
    """Every entry under ``roots`` (links not followed): path -> (type, size, mtime_ns, content).

    ``content`` is a regular file's sha256 or a link's target; special files
    (FIFOs, sockets) are never opened, so taking a snapshot cannot block.
    """
    entries: dict[str, Entry] = {}
    for root in roots:
        for directory, subdirs, files in os.walk(root):
            for name in [*subdirs, *files]:
                path = Path(directory) / name
                info = path.lstat()
                if stat.S_ISREG(info.st_mode):
                    entry = ("file", info.st_size, info.st_mtime_ns, _sha256(path))
                elif stat.S_ISLNK(info.st_mode):
                    entry = ("link", 0, info.st_mtime_ns, os.readlink(path))
                elif stat.S_ISDIR(info.st_mode):
                    entry = ("dir", 0, info.st_mtime_ns, None)
                else:
                    entry = ("special", 0, info.st_mtime_ns, stat.S_IFMT(info.st_mode))
                entries[str(path)] = entry
    return entries


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """What differs between two snapshots, one line per path: changed, deleted, created."""
    found = []
    for path, entry in before.items():
        if path not in after:
            found.append(f"deleted {path}")
        elif after[path] != entry:
            found.append(f"changed {path}")
    found.extend(f"created {path}" for path in after.keys() - before.keys())
    return sorted(found)


# --------------------------------------------------------------------------- the attacker


def rehash_manifest(checkpoint: Path) -> bool:
    """Recompute the size and sha256 of every file the manifest lists that is a regular
    file (links followed, as ``verify`` follows them) and write the manifest back.

    What anyone who can write the directory can do, so that a mutated checkpoint
    still verifies. False when the manifest is not a JSON object with a ``files``
    mapping (there is nothing to re-hash; the mutation stands as it is).
    """
    path = Path(checkpoint) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return False
    for name, entry in manifest["files"].items():
        file_path = Path(checkpoint) / name
        try:
            regular = stat.S_ISREG(os.stat(file_path).st_mode)
        except (OSError, ValueError):
            continue
        if regular and isinstance(entry, dict):
            entry["size"] = file_path.stat().st_size
            entry["sha256"] = _sha256(file_path)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return True
