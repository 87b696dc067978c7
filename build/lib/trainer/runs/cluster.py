"""Running under a scheduler: Slurm's job names, and what a preempted run does after saving.

1. Under Slurm (``SLURM_JOB_ID`` set) a run's default directory is named after its
   job: ``<paths.root>/slurm-<job id>``, or ``slurm-<array job id>_<task id>``
   for a task of an array (Slurm's own ``%A_%a``), plus ``/<job number>`` in a
   multirun. A requeued job keeps its ids, so with ``+resume=auto`` it finds its
   own run again without any argument (``trainer.runs.sweep.auto_run_dir``).
2. A preemption signal (:data:`PREEMPTION_SIGNALS`: ``SIGUSR1``, what Slurm sends
   with ``--signal=USR1@90``, and ``SIGUSR2``, submitit's timeout warning) makes
   the training loop save a checkpoint at the next step boundary and stop, as
   SIGTERM does. Then, the checkpoint committed and the run's files closed,
   :func:`requeue_after_preemption` asks for the job to run again:

   a. a Python handler that was installed for that signal before the run
      (submitit's, under ``hydra/launcher=slurm`` or ``submitit_local``) gets the
      signal: submitit's checkpoint protocol resubmits the same job (its
      ``max_num_timeout`` allowing) and exits;
   b. else, under Slurm, when the run resumes itself (``+resume=auto``):
      ``scontrol requeue <job>``; the requeued job runs the same command and
      continues from the checkpoint just saved;
   c. else the job is not requeued, and the run says why.

   The process then exits with ``128 + signum`` (138 for SIGUSR1), as for any
   signal that stopped a run (``trainer.errors.StopRequested``).

No TensorFlow here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Mapping

from trainer.errors import StopRequested, UserError

# Signals that ask a run to save and make way, to be requeued.
PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)

_SLURM_ID = re.compile(r"[0-9]{1,20}")


def slurm_job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The id ``scontrol`` knows this job by (``<array job>_<task>`` for an array task), or
    None outside Slurm. An id that is not a number is refused in one line: it names a
    directory.

    >>> slurm_job_id({"SLURM_JOB_ID": "4242"})
    '4242'
    >>> slurm_job_id({"SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4242",
    ...               "SLURM_ARRAY_TASK_ID": "1"})
    '4242_1'
    >>> slurm_job_id({}) is None
    True
    """
    environ = os.environ if environ is None else environ
    job = environ.get("SLURM_JOB_ID")
    if not job:
        return None
    array_job, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    ids = {"SLURM_JOB_ID": job}
    if array_job and task:
        ids = {"SLURM_ARRAY_JOB_ID": array_job, "SLURM_ARRAY_TASK_ID": task}
    for name, value in ids.items():
        if not _SLURM_ID.fullmatch(value):
            raise UserError(f"{name} must be a number (a Slurm job id), got {value!r}")
    return "_".join(ids.values())


def slurm_run_name(environ: Mapping[str, str] | None = None) -> str | None:
    """``slurm-<job id>`` (rule 1 of the module docstring), or None outside Slurm."""
    job = slurm_job_id(environ)
    return None if job is None else f"slurm-{job}"


def requeue_after_preemption(
    stop: StopRequested,
    *,
    environ: Mapping[str, str] | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    report: Callable[[str], None] = print,
) -> None:
    """Ask for the job to run again after ``stop`` (rule 2 of the module docstring); does
    nothing for a signal that is not a preemption signal (SIGTERM, SIGINT)."""
    if stop.signum not in PREEMPTION_SIGNALS:
        return
    environ = os.environ if environ is None else environ
    if environ.get("SLURM_PROCID", "0") != "0":
        return  # one task of a multi-task job: the first one requeues the job (as submitit does)
    handler = stop.previous_handler
    if callable(handler):  # 2a: submitit's handler requeues the job (or says why not) and exits
        handler(stop.signum, None)
        return
    job = slurm_job_id(environ)
    if job is None:
        report("Not requeued: not a Slurm job (SLURM_JOB_ID is not set)")
        return
    if not stop.resumes_itself:
        report(
            f"Not requeued: Slurm job {job} runs without +resume=auto, so a requeued copy "
            "could not continue this run; add +resume=auto to the job's command"
        )
        return
    try:  # 2b
        done = run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        report(f"Could not requeue Slurm job {job}: {error}")
        return
    if done.returncode != 0:
        reason = (done.stderr or done.stdout or "").strip().splitlines()
        report(f"Could not requeue Slurm job {job}: scontrol said {' '.join(reason[:1])!r}")
        return
    report(f"Requeued Slurm job {job}: it continues from the checkpoint just saved")
