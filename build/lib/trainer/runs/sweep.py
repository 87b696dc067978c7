"""Runs that continue in their own directory: a sweep's jobs, and ``+resume=auto``.

``+resume=auto`` (with ``checkpoint.dir=DIR``, or under Slurm with none: see
``trainer.runs.cluster``) makes the same command start a run and continue it: DIR
is the run's own directory, and rules 1-3 below apply to it, so a job that a
scheduler runs again after a preemption continues where it stopped. In a
multirun DIR is the sweep's directory and each job's run is ``DIR/<job>``.

Every job of a multirun writes its own run directory, Hydra's job directory,
under the sweep's (``trainer.runs.run_dir`` rule 1)::

    <paths.sweep_dir>/                      runs/<date>/<time>/: the sweep directory
        multirun.yaml                       Hydra's record of the sweep
        0/  1/  2/ ...                      one run directory per job (hydra.sweep.subdir),
                                            with the job's .hydra/ and log
        summary.csv, summary.json           written when the sweep ends (trainer.runs.sweep_summary)

Re-running the same sweep command with ``+resume=<checkpoint sweep directory>``
continues it. Each job looks at its own run directory ``<sweep dir>/<job>``:

1. it holds ``summary.json`` and reached the length this command asks for
   (``trainer.epochs``, ``trainer.max_steps``, or it stopped early): the job is
   finished; it returns its saved best metric without training, so Optuna and
   the sweep summary still see it;
2. it holds checkpoints: the job resumes from its newest valid one, under the
   usual resume rules (``trainer.runs.resume.plan_start``);
3. it holds no checkpoint (the job never started, or died before its first
   one): the job starts fresh in that directory.

A job's command-line overrides must be the ones it ran with (a resume refuses
overrides whose values differ from the checkpoint's config), so resume a sweep
with the same command, and an Optuna sweep with the same sampler seed: the
sampler then proposes the same trials again, in the same order.

This module never imports TensorFlow.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from checkpoints import list_checkpoints
from checkpoints.layout import SUMMARY
from checkpoints.reading import read_run_summary
from trainer.errors import UserError
from trainer.runs.cluster import slurm_run_name
from trainer.runs.remote_run import location
from trainer.runs.resume import plan_start
from trainer.runs.run_dir import refuse_new_run_in
from trainer.runs.sweep_dir import AUTO, is_sweep_dir


@dataclass
class SweepJob:
    """How this job of a resumed sweep starts; ``finished``: nothing left to train."""

    cfg: DictConfig  # the config to plan the start with (``resume`` pointing at the job's run)
    run_dir: Path | None = None  # None: not a sweep resume, cfg unchanged
    finished: bool = False
    best: float | None = None  # the finished job's saved best metric
    resumes_itself: bool = False  # +resume=auto: the same command continues the run


def sweep_runs_dir(config: DictConfig) -> Path:
    """The directory holding one run per job of the multirun ``config`` describes: the
    ``+resume`` sweep directory, ``checkpoint.dir`` with ``+resume=auto``, under Slurm
    ``<paths.root>/slurm-<job id>``, else Hydra's sweep directory, which holds each job's
    run in its job directory (``trainer.runs.run_dir`` rule 1)."""

    resume = config.get("resume")
    if resume == AUTO:
        return auto_run_dir(config, None)
    if resume is not None and is_sweep_dir(resume):
        return Path(str(resume)).expanduser().absolute()
    slurm = slurm_run_name()
    if slurm is not None:
        return (Path(config.paths.root) / slurm).expanduser().absolute()
    return Path(str(config.hydra.sweep.dir)).expanduser().absolute()


def job_resume_path(resume_path: str | Path, job_subdir: str) -> Path | None:
    """``<resume_path>/<job_subdir>`` when ``resume_path`` is a sweep directory, else None.

    None means an ordinary resume: ``resume_path`` names a run or a checkpoint.
    """
    if not is_sweep_dir(resume_path):
        return None
    return Path(resume_path).expanduser().absolute() / job_subdir


def read_job_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``summary.json`` a finished run wrote; None when there is none or it is not sound
    (``checkpoints.reading.read_run_summary``: bounded, typed)."""
    return read_run_summary(Path(run_dir) / SUMMARY)


def reached_length(summary: Mapping[str, Any], epochs: int, max_steps: int | None) -> bool:
    """Whether a run that wrote ``summary`` went as far as ``epochs``/``max_steps`` ask.

    A job resumed with a longer ``trainer.epochs`` is not finished: it trains on.
    """
    if summary.get("stopped_early"):
        return True
    if max_steps is not None and int(summary.get("global_step") or 0) >= max_steps:
        return True
    return int(summary.get("epochs_completed") or 0) >= epochs


def finished_job_metric(run_dir: str | Path) -> float | None:
    """The best monitored metric a finished job saved in its ``summary.json`` (None if absent)."""
    summary = read_job_summary(run_dir)
    best = summary.get("best") if summary else None
    return float(best) if isinstance(best, (int, float)) else None


def auto_run_dir(cfg: DictConfig, job_subdir: str | None) -> Path:
    """The run ``+resume=auto`` continues, or starts when it holds no checkpoint.

    ``checkpoint.dir`` (in a multirun, the sweep's directory: the job's run is
    ``<checkpoint.dir>/<job>``), else, under Slurm, the job's default run
    directory (``trainer.runs.cluster``: ``<paths.root>/slurm-<job id>[/<job>]``).
    """

    if cfg.checkpoint.dir:
        path = Path(cfg.checkpoint.dir)
    else:
        name = slurm_run_name()
        if name is None:
            raise UserError(
                "+resume=auto needs checkpoint.dir=DIR: the run to continue, or to start there "
                "when DIR holds no checkpoint (under Slurm the job id names it by default)"
            )
        path = Path(cfg.paths.root) / name
    if job_subdir is not None:
        path = path / job_subdir
    return path.expanduser().absolute()


def plan_sweep_job(
    cfg: DictConfig,
    job_subdir: str | None,
    overrides: list[str],
    report: Callable[[str], None] = print,
) -> SweepJob:
    """Point a job of a resumed sweep, or a run with ``+resume=auto``, at its own run
    directory; see the module docstring.

    ``job_subdir``: :func:`current_job_subdir`; ``overrides``: the job's
    command-line overrides. A finished job's overrides are checked against its
    checkpoint as a resume would (``plan_start``), so a changed sweep command is
    refused rather than answered with another configuration's result. Outside a
    sweep resume (no ``resume``, or ``resume`` naming a run or a checkpoint)
    the config comes back unchanged; ``resume`` naming a sweep outside a
    multirun is refused with the two commands that make sense.
    """
    resume = cfg.get("resume")
    if resume is None:
        return SweepJob(cfg)
    if resume == AUTO:
        if cfg.trainer.fine_tune:
            raise UserError(
                "trainer.fine_tune=true needs +resume=CHECKPOINT (the weights to start from), "
                "not +resume=auto"
            )
        run_dir = auto_run_dir(cfg, job_subdir)

        if not list_checkpoints(run_dir):  # rules 4a-4d still hold for a run started here
            refuse_new_run_in(run_dir, "checkpoint.dir", leftovers_ok=True)
        who = "+resume=auto" if job_subdir is None else f"Sweep job {job_subdir} (+resume=auto)"
        return _own_run(cfg, run_dir, overrides, report, who, resumes_itself=True)
    if job_subdir is None:
        if is_sweep_dir(resume):
            raise UserError(
                f"resume path {str(resume)!r} is a sweep (one run per job): resume one job with "
                f"+resume={resume}/<job>, or the whole sweep with -m, its sweep overrides and "
                f"+resume={resume}"
            )
        return SweepJob(cfg)
    run_dir = job_resume_path(resume, job_subdir)
    if run_dir is None:
        return SweepJob(cfg)
    return _own_run(cfg, run_dir, overrides, report, f"Sweep job {job_subdir}")


def _own_run(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    report: Callable[[str], None],
    who: str,
    resumes_itself: bool = False,
) -> SweepJob:
    """Rules 1-3 of the module docstring for the run in ``run_dir``."""

    cfg = copy.deepcopy(cfg)
    shown = location(run_dir)
    if not list_checkpoints(run_dir):  # rule 3: never started, or died before its first checkpoint
        with open_dict(cfg):
            cfg.resume = None
            cfg.checkpoint.dir = str(run_dir)
        report(f"{who}: no checkpoint in {shown}; starting it there")
        return SweepJob(cfg, run_dir=run_dir, resumes_itself=resumes_itself)
    with open_dict(cfg):  # rules 1 and 2: the job's own run, continued in place
        cfg.resume = str(run_dir)
        cfg.checkpoint.dir = str(run_dir)  # not the sweep's (checkpoint.dir with +resume=auto)
    summary = read_job_summary(run_dir)
    if summary is None or not reached_length(summary, cfg.trainer.epochs, cfg.trainer.max_steps):
        report(f"{who}: resuming its run {shown}")
        return SweepJob(cfg, run_dir=run_dir, resumes_itself=resumes_itself)
    plan_start(cfg, overrides, report=lambda _: None)  # refuses overrides the job did not run with
    best = finished_job_metric(run_dir)
    report(
        f"{who}: finished before ({shown}/{SUMMARY}): "
        f"{summary.get('monitor', 'best')} {best}; not training it again"
    )
    return SweepJob(cfg, run_dir=run_dir, finished=True, best=best, resumes_itself=resumes_itself)
