"""The sweep summary: one table of every job's overrides and results, best job first.

When a multirun ends, the Hydra callback :class:`SweepSummary` (enabled in
``conf/hydra/callbacks/sweep_summary.yaml``) writes ``summary.csv`` and
``summary.json`` into the Hydra sweep directory (``hydra.sweep.dir``) and into
the directory holding the jobs' runs (``trainer.runs.sweep.sweep_runs_dir``: the
Hydra sweep directory itself, the ``+resume`` sweep directory, or
``checkpoint.dir`` with ``+resume=auto``). Each job's results come from the
``summary.json`` its run wrote; a job that has none (it failed, or the sweep was
interrupted) is listed as ``unfinished``. Jobs are ranked by the best value of
``checkpoint.monitor``, highest first for ``checkpoint.mode=max``.

The same table can be written for any sweep directory from Python with
:func:`write_sweep_summary`. This module never imports TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from checkpoints import write_text_atomically
from checkpoints.layout import SUMMARY
from checkpoints.reading import read_data
from trainer.runs.sweep import read_job_summary, sweep_runs_dir

SUMMARY_CSV = "summary.csv"
MAX_OVERRIDES_BYTES = 1 << 20
METRIC_COLUMNS = (
    "test_accuracy",
    "test_loss",
    "global_step",
    "epochs_completed",
    "stopped_early",
    "resumed_from",
    "wall_seconds",
)


class SweepSummary(Callback):
    """Hydra callback: write the sweep summary when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        hydra_sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        runs_dir = sweep_runs_dir(config)
        summary = write_sweep_summary(
            hydra_sweep_dir,
            runs_dir,
            monitor=str(config.checkpoint.monitor),
            mode=str(config.checkpoint.mode),
        )
        print(describe(summary), flush=True)


def hydra_jobs(hydra_sweep_dir: Path) -> list[tuple[str, list[str]]]:
    """``(job subdir, overrides)`` for each job Hydra launched into ``hydra_sweep_dir``.

    A job directory is recognised by the ``.hydra/overrides.yaml`` Hydra saves in it.
    """
    jobs = []
    for overrides_file in sorted(Path(hydra_sweep_dir).glob("**/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        try:
            overrides = read_data(overrides_file, MAX_OVERRIDES_BYTES) or []
        except ValueError:
            overrides = []
        if not isinstance(overrides, list):
            overrides = []
        jobs.append((job_dir.relative_to(hydra_sweep_dir).as_posix(), [str(o) for o in overrides]))
    return sorted(jobs, key=lambda job: _job_order(job[0]))


def _job_order(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def varying_params(overrides_per_job: Sequence[Sequence[str]]) -> list[str]:
    """The override keys whose value is not the same in every job: what the sweep varied."""
    per_job = [dict(_split(o) for o in overrides) for overrides in overrides_per_job]
    keys = dict.fromkeys(key for job in per_job for key in job)
    return [key for key in keys if len({job.get(key) for job in per_job}) > 1]


def rank_jobs(jobs: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Jobs with a numeric ``best`` first, best to worst by ``mode``; the others after, by job."""

    def key(job: dict[str, Any]) -> tuple[int, float, tuple]:
        best = job.get("best")
        if not isinstance(best, (int, float)) or math.isnan(best):
            return (1, 0.0, _job_order(job["job"]))
        return (0, -best if mode == "max" else best, _job_order(job["job"]))

    ranked = sorted(jobs, key=key)
    for rank, job in enumerate(ranked, start=1):
        job["rank"] = rank
    return ranked


def collect_jobs(
    hydra_sweep_dir: Path, runs_dir: Path, mode: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every job with its overrides and its run's summary, ranked; and the keys the sweep varied.

    Jobs are those Hydra launched into ``hydra_sweep_dir`` (a resumed sweep
    launches every job again); without Hydra's ``.hydra`` records
    (``hydra.output_subdir=null``) they are the run directories in ``runs_dir``.
    """
    launched = hydra_jobs(hydra_sweep_dir)
    if not launched and Path(runs_dir).is_dir():
        launched = [(child.name, []) for child in Path(runs_dir).iterdir() if child.is_dir()]
    keys = varying_params([overrides for _, overrides in launched])
    jobs = []
    for name, overrides in sorted(launched, key=lambda job: _job_order(job[0])):
        run_dir = Path(runs_dir) / name
        summary = read_job_summary(run_dir)
        jobs.append(
            {
                "rank": None,  # set by rank_jobs
                "job": name,
                "status": "finished" if summary is not None else "unfinished",
                "best": summary.get("best") if summary else None,
                "params": {k: v for k, v in map(_split, overrides) if k in keys},
                "overrides": list(overrides),
                "run_dir": str(run_dir),
                "summary": summary,
            }
        )
    return rank_jobs(jobs, mode), keys


def summary_csv(jobs: Sequence[Mapping[str, Any]], monitor: str, param_keys: Sequence[str]) -> str:
    """One row per job, best first: rank, job, status, best monitor value, test metrics, params."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["rank", "job", "status", f"best_{monitor}", *METRIC_COLUMNS, *param_keys, "run_dir"]
    )
    for job in jobs:
        summary = job["summary"] or {}
        writer.writerow(
            [
                job["rank"],
                job["job"],
                job["status"],
                _cell(job["best"]),
                *(_cell(summary.get(column)) for column in METRIC_COLUMNS),
                *(job["params"].get(key, "") for key in param_keys),
                job["run_dir"],
            ]
        )
    return out.getvalue()


def _cell(value: Any) -> Any:
    return "" if value is None else value


def write_sweep_summary(
    hydra_sweep_dir: str | Path, runs_dir: str | Path, monitor: str, mode: str
) -> dict[str, Any]:
    """Write ``summary.csv`` and ``summary.json`` into both directories; return the summary.

    ``hydra_sweep_dir``: Hydra's ``hydra.sweep.dir`` (job overrides);
    ``runs_dir``: the sweep's checkpoint directory (one run directory per job).
    """
    hydra_sweep_dir, runs_dir = Path(hydra_sweep_dir), Path(runs_dir)
    jobs, keys = collect_jobs(hydra_sweep_dir, runs_dir, mode)
    finished = [job for job in jobs if isinstance(job["best"], (int, float))]
    summary = {
        "monitor": monitor,
        "mode": mode,
        "best_job": finished[0]["job"] if finished else None,
        "best": finished[0]["best"] if finished else None,
        "jobs_finished": sum(job["status"] == "finished" for job in jobs),
        "jobs": jobs,
        "params": keys,
        "hydra_sweep_dir": str(hydra_sweep_dir),
        "checkpoint_sweep_dir": str(runs_dir),
    }
    text_json = json.dumps(summary, indent=2) + "\n"
    text_csv = summary_csv(jobs, monitor, keys)
    for directory in dict.fromkeys((hydra_sweep_dir, runs_dir)):
        if directory.is_dir():
            write_text_atomically(
                directory / SUMMARY, text_json
            )  # a run's name, the sweep's results
            write_text_atomically(directory / SUMMARY_CSV, text_csv)
    return summary


def describe(summary: Mapping[str, Any]) -> str:
    """A few lines for the console: the best job and where the tables are."""
    jobs = summary["jobs"]
    lines = [
        f"Sweep summary: {summary['jobs_finished']} of {len(jobs)} jobs finished, "
        f"ranked by {summary['monitor']} ({summary['mode']})"
    ]
    for job in jobs[:5]:
        params = " ".join(f"{k}={v}" for k, v in job["params"].items())
        best = "-" if job["best"] is None else f"{job['best']:.4g}"
        lines.append(f"  {job['rank']}. job {job['job']}: {best}  {params}".rstrip())
    if len(jobs) > 5:
        lines.append(f"  ... {len(jobs) - 5} more")
    lines.append(f"Tables: {Path(summary['checkpoint_sweep_dir']) / SUMMARY_CSV} (and .json)")
    return "\n".join(lines)
