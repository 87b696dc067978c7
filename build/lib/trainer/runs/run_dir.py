"""Where a run writes, and the rules that keep it from writing where it must not.

1. The run directory is ``checkpoint.dir`` if set, else the job's Hydra output
   directory (``hydra.runtime.output_dir``): ``paths.run_dir``, or
   ``paths.sweep_dir/<job number>`` in a multirun (``conf/paths/default.yaml``:
   ``runs/<date>/<time>[/<job>]``), so Hydra's ``.hydra/`` and log sit beside the
   checkpoints in one folder per run. Outside a Hydra job (tools, tests) it is
   ``paths.run_dir``. Hydra writes its files there before the run is planned;
   none of them is a file rule 4e looks for, so they never make the folder "used".
   Under Slurm it is ``<paths.root>/slurm-<job id>[/<job number>]``
   (``trainer.runs.cluster``), so that a requeued job finds its run again.
2. One writer: a process writes into a run directory only while it holds the
   run's lock (``checkpoints.lock``); a second one is refused with one
   line naming the holder. In a multi-worker run only the chief takes it (the
   other workers write into scratch directories); tools that only read take none.
3. A run that continues in its own directory (a resume in place, or a sweep's
   job restarting in its own directory: ``trainer.runs.sweep`` rule 3) writes there
   under rule 2 alone.
4. A new run (fresh, fine-tuned, or a resume branching off with
   ``checkpoint.dir``; ``rescue``'s OUT too) refuses, in one line, exit status 2
   and nothing touched:

   a. the filesystem root;
   b. a path that exists and is not a directory;
   c. a directory inside a checkpoint: it or an ancestor is named
      ``step-NNNNNNNN`` or holds ``manifest.json``;
   d. a sweep's directory (``trainer.runs.sweep_dir.is_sweep_dir``), or a directory
      inside a run (an ancestor holds checkpoints), such as a sweep's job;
   e. a directory that holds checkpoints, or any file a run writes
      (``layout.RUN_FILES``: config.yaml, metrics.csv, summary.json,
      tensorboard/, steps.csv, latest, best).

   They are checked when the run is planned (before TensorFlow is imported)
   and again once the lock is held, since another process may have written
   there in between.

Rule 4d looks for a sweep at the directory itself and for runs above it, not
for sweeps above it: by ``is_sweep_dir``'s own test (a directory of runs) the
``<root>/<date>`` folder of the default layout is a sweep as soon as one run
of that day exists, and so is any folder a user keeps runs in
(``checkpoint.dir=runs/a``, then ``runs/b``).

No TensorFlow here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from checkpoints.layout import MANIFEST, RUN_FILES, is_checkpoint_name
from checkpoints.listing import list_checkpoints
from checkpoints.lock import run_lock
from trainer.errors import UserError, storage_errors
from trainer.runs.cluster import slurm_run_name
from trainer.runs.sweep_dir import is_sweep_dir


@dataclass(frozen=True)
class RunDirectory:
    """A run's directory (``path``) and whether the run is new there (rule 4 applies)."""

    path: Path
    new: bool
    label: str = "checkpoint.dir"  # how the user named it, for the messages

    @contextlib.contextmanager
    def writing(
        self, *, writer: bool = True, report: Callable[[str], None] = print
    ) -> Iterator[Path]:
        """Hold the run's lock for the block (rule 2), rule 4 checked again under it.

        ``writer=False`` (a worker that is not the chief) takes no lock: such a
        process writes nothing into ``path``.
        """
        if not writer:
            yield self.path
            return
        with run_lock(self.path, report):
            if self.new:
                refuse_new_run_in(self.path, self.label)
            yield self.path


def run_directory(cfg: DictConfig, *, in_place: bool) -> RunDirectory:
    """The run directory of ``cfg`` (rule 1), created; a UserError if a new run may not
    write there (rule 4). ``in_place``: the run continues in its own directory (rule 3).

    A run continuing in place records the absolute path in ``cfg.checkpoint.dir``.
    """
    path = Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else default_run_dir(cfg)
    path = path.expanduser().absolute()
    if not in_place:
        refuse_new_run_in(path, "checkpoint.dir")
    with storage_errors(f"create run directory {path}"):
        path.mkdir(parents=True, exist_ok=True)
    if in_place:
        cfg.checkpoint.dir = str(path)
    return RunDirectory(path, new=not in_place)


def refuse_new_run_in(path: Path, label: str, *, leftovers_ok: bool = False) -> None:
    """A UserError if a new run may not write into ``path`` (rule 4); ``label`` names the
    setting that chose it (``checkpoint.dir``, ``OUT``). ``leftovers_ok``: the run files
    of rule 4e are allowed (a run starting again in its own directory, which it left
    before its first checkpoint: ``+resume=auto``)."""
    shown = f"{label} {str(path)!r}"
    real = Path(path).expanduser().resolve()  # symlinks followed: where the files would go
    if real == Path(real.anchor):  # rule 4a
        raise UserError(f"{shown} is the filesystem root; choose a directory for the run")
    if real.exists() and not real.is_dir():  # rule 4b
        raise UserError(f"{shown} is a file, not a directory; choose a directory for the run")
    for directory in (real, *real.parents):  # rule 4c
        if is_checkpoint_name(directory.name) or (directory / MANIFEST).exists():
            where = "a checkpoint" if directory == real else f"inside checkpoint {directory}"
            raise UserError(
                f"{shown} is {where}; a run never writes into a checkpoint: choose a "
                "directory outside it"
            )
    if _is_sweep_dir(real):  # rule 4d
        raise UserError(
            f"{shown} is a sweep directory (one run per job); choose a directory of its own "
            "for the run"
        )
    for directory in real.parents:
        if _holds_checkpoints(directory):
            raise UserError(
                f"{shown} is inside the run {directory} (it holds checkpoints); choose a "
                "directory outside it"
            )
    if _holds_checkpoints(real):  # rule 4e
        raise UserError(
            f"{shown} already holds checkpoints; resume it with +resume={path} or choose "
            f"another {label}"
        )
    found = [name for name in RUN_FILES if (real / name).exists()]
    if found and not leftovers_ok:
        raise UserError(
            f"{shown} already holds {', '.join(found)}, which a new run would overwrite; "
            f"choose another {label}"
        )


def _holds_checkpoints(directory: Path) -> bool:
    try:
        return bool(list_checkpoints(directory))
    except OSError:  # a directory this user may not list holds no run of theirs
        return False


def _is_sweep_dir(directory: Path) -> bool:
    try:
        return is_sweep_dir(directory)
    except OSError:
        return False


def default_run_dir(cfg: DictConfig) -> Path:
    """Where a run writes without ``checkpoint.dir`` (rule 1): under Slurm the job's
    name under ``paths.root``; else this Hydra job's output directory, or
    ``paths.run_dir`` outside one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    slurm = slurm_run_name()
    if slurm is not None:
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        name = Path(slurm) / str(HydraConfig.get().sweep.subdir) if multirun else Path(slurm)
        return Path(OmegaConf.select(cfg, "paths.root", default="runs")) / name
    if HydraConfig.initialized():
        output_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir")
        if output_dir:
            return Path(output_dir)
    run_dir = OmegaConf.select(cfg, "paths.run_dir")
    if not run_dir:
        raise UserError("paths.run_dir is not set: give checkpoint.dir=DIR or paths.run_dir=DIR")
    return Path(run_dir)
