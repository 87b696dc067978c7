"""The resume rules of ``plan_start``, one by one, in-process (no TensorFlow, no train.py).

Each test writes real checkpoint directories (``commit_checkpoint``) whose
``config.yaml`` is the config ``train.py`` composes, then asks ``plan_start``
how a run with a given command line starts. The end-to-end versions of these
rules (a real run interrupted and resumed) are in ``test_resume.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from checkpoints import checkpoint_name, commit_checkpoint, staging_dir
from trainer.errors import UserError
from trainer.runs.resume import plan_start
from trainer.startup import compose_config

RESOLVED = {"name": "cosine", "warmup_steps": 0, "decay_steps": 100}


def write_checkpoint(run_dir: Path, step: int, overrides: tuple[str, ...] = ()) -> Path:
    """A checkpoint at ``step`` whose config is ``train.py OVERRIDES``'s, schedule resolved."""
    cfg = OmegaConf.to_container(compose_config(list(overrides)), resolve=True)
    cfg["resolved_schedule"] = dict(RESOLVED)
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(run_dir, step)
    (staging / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    (staging / "trainer_state.json").write_text("{}")
    final = run_dir / checkpoint_name(step)
    commit_checkpoint(staging, final, {"global_step": step, "epoch": 0, "metrics": {}})
    return final


def plan(overrides: list[str], report=None):
    """``plan_start`` for ``python train.py OVERRIDES``; reported lines go to ``report``."""
    return plan_start(compose_config(overrides), overrides, report or (lambda line: None))


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    for step in (10, 20):
        write_checkpoint(run, step, ("optimizer.learning_rate=0.003",))
    return run


def test_rule_1_without_resume_the_run_is_fresh_with_the_composed_config():
    start = plan(["optimizer.learning_rate=0.01"])
    assert start.checkpoint is None and not start.in_place and not start.fine_tune
    assert start.cfg.optimizer.learning_rate == 0.01


def test_rule_2_a_run_dir_resumes_its_newest_checkpoint_that_verifies(run_dir):
    (run_dir / "step-00000020" / "config.yaml").write_text("broken: [")  # size differs now
    lines: list[str] = []
    start = plan([f"+resume={run_dir}"], lines.append)
    assert start.checkpoint.path.name == "step-00000010"
    assert len(lines) == 1 and "step-00000020 does not verify" in lines[0]


def test_rule_2_a_checkpoint_path_is_used_exactly_and_only_if_it_verifies(run_dir):
    newest = run_dir / "step-00000020"
    assert plan([f"+resume={newest}"]).checkpoint.path == newest
    (newest / "trainer_state.json").write_text("{} ")
    with pytest.raises(UserError, match="does not verify"):
        plan([f"+resume={newest}"])


def test_rule_3_the_checkpoints_config_is_what_the_run_trains_with(run_dir):
    start = plan([f"+resume={run_dir}"])
    assert start.cfg.optimizer.learning_rate == 0.003  # from the checkpoint, not conf/
    assert start.cfg.resume == str(run_dir / "step-00000020")


@pytest.mark.parametrize(
    ("override", "refused"),
    [
        ("optimizer.learning_rate=0.1", "optimizer.learning_rate"),
        ("schedule=one_cycle", "schedule"),
        ("model.dropout=0.5", "model.dropout"),
        ("seed=7", "seed"),
        ("dataset.batch_size=64", "dataset.batch_size"),
    ],
)
def test_rule_4_overrides_that_change_what_is_trained_are_refused(run_dir, override, refused):
    with pytest.raises(UserError, match=f"cannot override {refused} when resuming"):
        plan([f"+resume={run_dir}", override])


def test_rule_4_the_run_length_and_an_unchanged_value_are_allowed(run_dir):
    start = plan([f"+resume={run_dir}", "trainer.epochs=30", "optimizer.learning_rate=0.003"])
    assert start.cfg.trainer.epochs == 30 and start.cfg.optimizer.learning_rate == 0.003


def test_rule_4_fine_tuning_takes_optimizer_and_schedule_and_starts_a_new_directory(
    run_dir, tmp_path
):
    new_dir = tmp_path / "tuned"
    start = plan(
        [
            f"+resume={run_dir}",
            "trainer.fine_tune=true",
            "optimizer=sgd",
            "schedule=constant",
            f"checkpoint.dir={new_dir}",
        ]
    )
    assert start.fine_tune and not start.in_place and start.resolved_schedule is None
    assert start.cfg.optimizer.name == "sgd" and start.cfg.schedule.name == "constant"
    assert start.cfg.checkpoint.dir == str(new_dir)
    with pytest.raises(UserError, match=r"cannot override model\.dropout"):
        plan([f"+resume={run_dir}", "trainer.fine_tune=true", "model.dropout=0.5"])


def test_rule_5_the_saved_schedule_is_kept_unless_restretched(run_dir):
    assert plan([f"+resume={run_dir}", "trainer.epochs=30"]).resolved_schedule == RESOLVED
    restretched = plan([f"+resume={run_dir}", "trainer.restretch_schedule=true"])
    assert restretched.resolved_schedule is None  # resolved again for the new length


def test_rule_6_a_resumed_run_continues_in_its_own_directory_unless_branched(run_dir, tmp_path):
    start = plan([f"+resume={run_dir}"])
    assert start.in_place and start.cfg.checkpoint.dir == str(run_dir.resolve())
    branch = tmp_path / "branch"
    branched = plan([f"+resume={run_dir}", f"checkpoint.dir={branch}"])
    assert not branched.in_place and branched.cfg.checkpoint.dir == str(branch.resolve())


def test_rule_6_resuming_an_older_checkpoint_in_place_is_refused(run_dir, tmp_path):
    with pytest.raises(UserError, match="step-00000020 is"):
        plan([f"+resume={run_dir / 'step-00000010'}"])
    branched = plan([f"+resume={run_dir / 'step-00000010'}", f"checkpoint.dir={tmp_path / 'b'}"])
    assert branched.checkpoint.path.name == "step-00000010"
