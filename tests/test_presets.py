"""Presets and paths: conf/experiment, conf/debug, conf/local, conf/paths and --help's groups.

The end-to-end tests run ``train.py`` as the README shows it, in a temp dir
(``paths.root`` there), with only the overrides that make it small and offline.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO, run_train
from trainer.config import register_schemas, typed_section, validate, validate_dataset
from trainer.errors import UserError
from trainer.help import config_groups, help_text
from trainer.runs.run_dir import default_run_dir, refuse_new_run_in
from trainer.runs.sweep_dir import is_sweep_dir

register_schemas()

EXPERIMENTS = ("adamw_cosine_warmup", "one_cycle_batchnorm", "sgd_step_decay")


def composed(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def only_run(root: Path) -> Path:
    """The one run folder ``runs/<date>/<time>`` under ``root`` that holds checkpoints."""
    runs = [p for p in root.glob("*/*") if list(p.glob("step-*"))]
    assert len(runs) == 1, sorted(root.rglob("*"))
    return runs[0]


# --------------------------------------------------------------------------- --help's groups


def listed(help_output: str, group: str) -> list[str]:
    """The options --help lists on the line of ``group``."""
    (line,) = [line for line in help_output.splitlines() if line.startswith(f"  {group}:")]
    return [option.strip() for option in line.split(":", 1)[1].split(",")]


def test_help_lists_the_new_groups_and_a_users_searchpath_groups(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 7\n")
    (tmp_path / "lab" / "cluster").mkdir(parents=True)
    (tmp_path / "lab" / "cluster" / "a100.yaml").write_text("{}\n")
    text = help_text([f"hydra.searchpath=[file://{tmp_path}]"])
    assert listed(text, "experiment") == sorted((*EXPERIMENTS, "mine"))
    assert listed(text, "debug") == ["fast", "overfit"]
    assert listed(text, "lab/cluster") == ["a100"]
    assert not [line for line in text.splitlines() if line.startswith(("  schema", "  hydra:"))]
    # Without the searchpath, the user's options are gone and ours stay.
    groups = config_groups()
    assert groups["experiment"] == list(EXPERIMENTS) and "lab/cluster" not in groups
    assert groups["debug"] == ["fast", "overfit"] and groups["paths"] == ["default"]


def test_every_experiment_composes_and_validates_with_what_it_shows():
    for name in EXPERIMENTS:
        validate(composed(f"+experiment={name}"))
    assert composed("+experiment=adamw_cosine_warmup").optimizer.name == "adamw"
    assert composed("+experiment=sgd_step_decay").schedule.name == "step"
    one_cycle = composed("+experiment=one_cycle_batchnorm")
    assert (one_cycle.schedule.name, one_cycle.model.batch_norm) == ("one_cycle", True)


def test_debug_presets_compose_to_what_their_comments_promise():
    fast = composed("+debug=fast")
    validate(fast)
    assert fast.dataset.limit_train_examples // fast.dataset.batch_size * 2 == 8  # 8 steps
    overfit = composed("+debug=overfit")
    validate(overfit)
    assert overfit.model.dropout == 0 and overfit.optimizer.weight_decay is None
    assert overfit.schedule.name == "constant" and overfit.dataset.validation_split == 0
    for model in config_groups()["model"]:  # fast leaves the model alone; overfit sets dropout
        if model != "custom":
            validate(composed("+debug=fast", f"model={model}"))
            assert composed("+debug=overfit", f"model={model}").model.dropout == 0
    # A preset's choice still yields to the command line.
    assert composed("+debug=fast", "trainer.epochs=5").trainer.epochs == 5


# --------------------------------------------------------------------------- conf/local


def test_a_local_file_is_merged_at_the_top_level_and_the_command_line_wins(tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(
        "dataset:\n  data_dir: /scratch/tfds\ntrainer:\n  verbose: '2'\n"
    )
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    cfg = composed(searchpath)
    assert (cfg.dataset.data_dir, cfg.trainer.verbose) == ("/scratch/tfds", "2")
    assert "local" not in cfg  # merged at the top level, no section of its own
    assert composed(searchpath, "dataset.data_dir=/elsewhere").dataset.data_dir == "/elsewhere"


def test_without_a_local_file_the_config_composes_unchanged():
    cfg = composed()
    validate(cfg)
    assert "local" not in cfg


def test_conf_local_is_git_ignored_but_its_readme():
    def ignored(path: str) -> bool:
        check = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        return check.returncode == 0

    assert ignored("conf/local/default.yaml") and ignored("conf/local/cluster.yaml")
    assert not ignored("conf/local/README.md")


# --------------------------------------------------------------------------- paths


def test_hydra_writes_into_the_run_folder_under_paths_root():
    cfg = composed("paths.root=/data/runs", hydra=True)
    assert cfg.hydra.run.dir == cfg.paths.run_dir
    assert cfg.hydra.run.dir.startswith("/data/runs/") and cfg.hydra.sweep.dir.startswith(
        "/data/runs/"
    )
    assert cfg.checkpoint.dir is None  # so the run writes into Hydra's folder
    assert default_run_dir(OmegaConf.create({"paths": {"run_dir": "runs/a/b"}})) == Path("runs/a/b")


def test_hydras_own_files_do_not_make_a_folder_used(tmp_path):
    run = tmp_path / "runs" / "day" / "time"
    (run / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run / ".hydra" / name).write_text("{}\n")
    (run / "train.log").write_text("")
    refuse_new_run_in(run, "checkpoint.dir")  # a fresh run may write beside them
    assert not is_sweep_dir(run)  # .hydra/config.yaml is no run inside it


def test_a_checkpoint_written_with_checkpoint_root_still_reads_back():
    section = typed_section("checkpoint", {"dir": "/r", "root": "checkpoints", "keep_last": 2})
    assert "root" not in section and section.keep_last == 2


# --------------------------------------------------------------------------- limit_train_examples


def test_limit_train_examples_is_a_fixed_prefix_of_the_train_split(digits_dir):
    from trainer.data.pipeline import load_data

    base = {"name": "digits", "data_dir": str(digits_dir), "batch_size": 32}
    full = load_data({**base, "validation_split": 0.1}, seed=0)
    some = load_data({**base, "validation_split": 0.1, "limit_train_examples": 64}, seed=0)
    assert (some.info.train_examples, some.info.steps_per_epoch) == (64, 2)
    assert some.info.validation_examples == full.info.validation_examples  # held out first
    epochs = [
        sorted(y for _, labels in some.train_epoch(e) for y in labels.numpy()) for e in (0, 1)
    ]
    assert epochs[0] == epochs[1]  # the same 64 examples every epoch, reshuffled
    with pytest.raises(UserError, match=r"dataset\.limit_train_examples must be null"):
        validate_dataset({**base, "limit_train_examples": 0})


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_every_experiment_runs_in_one_multirun(digits_dir, tmp_path):
    process = run_train(
        "-m",
        "+experiment=glob(*)",
        "+debug=fast",  # after the experiment: its run length and tiny model win
        f"dataset.data_dir={digits_dir}",
        f"paths.root={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    sweep = next((tmp_path / "runs").glob("*/*"))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    ran = {}
    for job in jobs:
        (override,) = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())[:1]
        name = override.removeprefix("+experiment=")
        config = yaml.safe_load((job / "config.yaml").read_text())  # the run's own, one folder
        expected = composed(f"+experiment={name}")
        for section in ("optimizer", "schedule"):
            assert config[section] == OmegaConf.to_container(expected[section]), (name, section)
        assert read_json(job / "summary.json")["global_step"] == 8
        ran[name] = job.name
    assert sorted(ran) == list(EXPERIMENTS), process.stdout
    assert read_json(sweep / "summary.json")["jobs_finished"] == len(EXPERIMENTS)


@pytest.mark.slow
def test_debug_fast_runs_everything_in_one_folder_and_its_resume_continues(digits_dir, tmp_path):
    args = ("+debug=fast", f"dataset.data_dir={digits_dir}", f"paths.root={tmp_path / 'runs'}")
    run_train(*args, cwd=tmp_path)
    run = only_run(tmp_path / "runs")
    assert sorted(p.name for p in run.glob("step-*")) == ["step-00000004", "step-00000008"]
    rows = metrics(run)
    assert len(rows) == 2 and all(row["val_loss"] not in ("", "NA") for row in rows)
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert read_json(run / "summary.json")["global_step"] == 8
    # Hydra's own record of the command sits in the same folder as the checkpoints.
    assert yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())[0] == "+debug=fast"
    assert (run / "train.log").is_file()

    resumed = run_train(*args, f"+resume={run}", "trainer.epochs=3", cwd=tmp_path)
    assert f"Resuming from {run / 'step-00000008'}: step 8" in resumed.stdout
    summary = read_json(run / "summary.json")
    assert summary["global_step"] == 12 and summary["resumed_from"].endswith("step-00000008")
    assert len(metrics(run)) == 3  # the same run continued: one more epoch row


@pytest.mark.slow
def test_debug_overfit_drives_the_training_loss_to_zero(digits_dir, tmp_path):
    run_train(
        "+debug=overfit",
        f"dataset.data_dir={digits_dir}",
        f"paths.root={tmp_path / 'runs'}",
        "trainer.verbose=0",
        cwd=tmp_path,
        timeout=600,
    )
    last = metrics(only_run(tmp_path / "runs"))[-1]
    assert float(last["loss"]) < 0.05 and float(last["accuracy"]) == 1.0, last
