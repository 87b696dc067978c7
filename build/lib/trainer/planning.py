"""The first step of ``trainer.train.train``: plan the run before anything is written.

1. :func:`plan_job`: the composed config checked (``trainer.config.validate``,
   once: a resumed run's config, made of its checkpoint's, is checked by
   ``trainer.runs.resume.plan_start``, rule 3), the user's modules imported
   (``imports``), remote run directories replaced by local working copies
   (``trainer.runs.remote_run.localize``), and a job of a resumed sweep, or a run
   with ``+resume=auto``, pointed at its own run (``trainer.runs.sweep``);
2. :func:`plan_and_import_tensorflow`: how the run starts (fresh, resumed or
   fine-tuned: ``trainer.runs.resume.plan_start``, where the numbered resume rules
   are decided), its callbacks and image folder checked, its run directory chosen
   (``trainer.runs.run_dir``), and TensorFlow imported meanwhile.

Bad input is refused here, in one line, before TensorFlow starts and before the
run directory is created.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from checkpoints import verify_in_background
from trainer.config import validate
from trainer.data.folder import fingerprint as folder_fingerprint
from trainer.runs.remote_run import localize
from trainer.runs.resume import StartPlan, plan_start
from trainer.runs.run_dir import RunDirectory, run_directory
from trainer.runs.sweep import SweepJob, plan_sweep_job
from trainer.runs.sweep_dir import current_job_subdir
from trainer.startup import hydra_overrides, import_tensorflow, import_user_modules
from trainer.training.callbacks import check_callbacks


def plan_job(cfg: DictConfig) -> SweepJob:
    """Step 1 of the module docstring: the job to run, with the config to plan its start
    with (``SweepJob.cfg``); ``SweepJob.finished``: a resumed sweep's job that already
    ended, with its saved result."""
    validate(cfg)
    import_user_modules(cfg.get("imports") or [])
    cfg = localize(cfg)  # s3:// and gs:// runs train in a local working copy, uploaded
    return plan_sweep_job(cfg, current_job_subdir(), hydra_overrides())


def plan_and_import_tensorflow(
    cfg: DictConfig, own_dir: Path | None = None
) -> tuple[StartPlan, DictConfig, RunDirectory]:
    """The start plan, the config it trains with and the run directory; TensorFlow imported
    and (``trainer.deterministic``) deterministic. Nothing is seeded here: each random
    stream is seeded where it is drawn (``trainer.seeds``).

    The checkpoint to resume is picked on its manifest and file sizes; its sha256s
    are checked on a thread while TensorFlow imports (hidden behind the import, not
    added to it), and if one does not match, the start is planned again with
    hashes, which skips or refuses the damaged checkpoint and says so.
    """
    plan, run_cfg, target = plan_run(cfg, hashes=False, own_dir=own_dir)
    hash_check = None if plan.checkpoint is None else verify_in_background(plan.checkpoint.path)
    tf, _ = import_tensorflow()
    if run_cfg.trainer.deterministic:
        tf.config.experimental.enable_op_determinism()
    if hash_check is not None and not hash_check.result().valid:
        plan, run_cfg, target = plan_run(cfg, hashes=True, own_dir=own_dir)
    return plan, run_cfg, target


def plan_run(
    cfg: DictConfig, *, hashes: bool, own_dir: Path | None = None
) -> tuple[StartPlan, DictConfig, RunDirectory]:
    """The start plan (``trainer.runs.resume.plan_start``), its config, the run dir.

    ``cfg`` is checked already (:func:`plan_job`), and a resumed run's config by
    ``plan_start``. ``own_dir``: a sweep's job restarting in its own run directory
    (``trainer.runs.sweep.SweepJob.run_dir``), which it continues as a resume does.
    """
    plan = plan_start(cfg, hydra_overrides(), hashes=hashes)
    check_callbacks(plan.cfg.get("callbacks"))  # registered names taking those arguments
    # An image folder's layout is checked before the run directory is created and
    # TensorFlow starts (its images are decoded by load_data).
    folder_fingerprint(plan.cfg.dataset)
    chosen = plan.cfg.checkpoint.dir
    own = own_dir is not None and chosen and Path(chosen).expanduser().absolute() == own_dir
    in_place = plan.in_place or bool(own)
    return plan, plan.cfg, run_directory(plan.cfg, in_place=in_place)
