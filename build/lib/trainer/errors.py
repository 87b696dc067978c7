"""The errors of the trainer: the checkpoint manager's two, and a clean stop after a signal.

``UserError`` and ``StorageError`` are ``checkpoints``' own (one class each, so one
``except`` serves a checkpoint operation and a config check alike); the one-line
report and the exit status of each live in ``trainer.exits``.
"""

from __future__ import annotations

import signal

from checkpoints.errors import StorageError, UserError, storage_errors, storage_failure

__all__ = ["StopRequested", "StorageError", "UserError", "storage_errors", "storage_failure"]


class StopRequested(Exception):
    """A signal asked the run to stop; a checkpoint of ``run_dir`` has been saved.

    The exit status is the shell's for that signal: ``128 + signum``.
    ``previous_handler``: what handled the signal before the training loop took it
    (submitit's requeue handler, say); ``resumes_itself``: the run was started with
    ``+resume=auto``, so running its command again continues it. Both decide
    whether the job is requeued (``trainer.runs.cluster.requeue_after_preemption``).
    """

    def __init__(
        self, signum: int, run_dir: object = None, previous_handler: object = None
    ) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum
        self.run_dir = run_dir
        self.previous_handler = previous_handler
        self.resumes_itself = False
