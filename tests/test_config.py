"""Config groups compose, the schema catches typos, validation gives one clear line.

These tests never import TensorFlow: composition and validation must not need it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from tests.conftest import REPO, SCHEDULE_NAMES
from trainer.config.schema import register_schemas, typed_section, validate
from trainer.errors import UserError
from trainer.help import config_groups

register_schemas()


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


GROUP_OPTIONS = [
    (group, option)
    for group, options in config_groups().items()
    for option in options
    if option != "custom" and group != "local"  # local: this machine's own file, if any
]


def test_config_groups_are_the_documented_ones():
    groups = config_groups()
    assert groups["dataset"] == ["cifar10", "digits", "fashion_mnist", "folder", "mnist", "tfds"]
    assert groups["optimizer"] == ["adam", "adamw", "rmsprop", "sgd"]
    assert set(groups["schedule"]) == {*SCHEDULE_NAMES, "custom"}
    assert groups["model"] == ["cnn", "custom", "keras_app", "resnet"]


# Groups that are not in the primary config's defaults; selected with `+group=option`.
ADDED_GROUPS = ("hparams_search", "experiment", "debug")
# Options with a value the user must give (validate refuses them without it).
REQUIRED = {"folder": ("dataset.path=images",), "tfds": ("dataset.tfds_name=mnist",)}


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_and_validates(group, option):
    if group in ADDED_GROUPS:
        validate(composed(f"+{group}={option}"))
        return
    cfg = composed(f"{group}={option}", *REQUIRED.get(option, ()))
    validate(cfg)
    section = cfg[group]
    if "name" in section:
        assert section.name == option
    # Each option extends its typed schema: an unknown key is refused.
    with pytest.raises((ConfigAttributeError, ConfigKeyError)):
        section.not_a_key = 1


def test_default_config_is_the_offline_digits_experiment():
    cfg = composed()
    assert cfg.dataset.name == "digits"
    assert cfg.model.name == "cnn"
    assert "resume" not in cfg


def test_typo_in_a_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="learning_rat"):
        composed("optimizer.learning_rat=0.1")


def test_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as error:
        composed("trainer.epochs=many")
    assert isinstance(error.value.__cause__, ValidationError)


def test_resume_can_be_added_as_written():
    cfg = composed("+resume=checkpoints/some/run")
    assert cfg.resume == "checkpoints/some/run"
    validate(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.learning_rate=0", "optimizer.learning_rate must be > 0, got 0.0"),
        ("optimizer.learning_rate=-1e-3", "optimizer.learning_rate must be > 0"),
        ("trainer.epochs=0", "trainer.epochs must be an integer >= 1, got 0"),
        ("trainer.max_steps=0", "trainer.max_steps must be null or an integer >= 1"),
        ("dataset.batch_size=0", "dataset.batch_size must be an integer >= 1"),
        ("dataset.validation_split=1.0", "dataset.validation_split must be in [0, 1)"),
        ("dataset.data_dir=''", "dataset.data_dir must be a directory path or null"),
        ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
        ("model.activation=nonexistent", "model.activation must be one of celu, elu, "),
        ("model.filters=[]", "model.filters must be a non-empty list"),
        ("optimizer.beta_1=1.0", "optimizer.beta_1 must be in [0, 1)"),
        ("checkpoint.monitor=lr", "checkpoint.monitor must be one of loss, accuracy, val_loss"),
        ("checkpoint.keep_last=0", "checkpoint.keep_last must be an integer >= 1"),
        ("checkpoint.every_n_steps=0", "checkpoint.every_n_steps must be null or an integer"),
        ("checkpoint.async=maybe", "checkpoint.async must be true or false"),
        ("+typo_key=1", "unknown top-level key(s) typo_key"),
        ("seed=-1", "seed must be an integer >= 0"),
        ("seed=99999999999", "seed must be an integer >= 0 and <= 4294967295 (2**32 - 1"),
        ("seed=4294967296", "got 4294967296"),
        ("trainer.verbose=3", "trainer.verbose must be auto (a progress bar on a terminal"),
    ],
)
def test_invalid_values_give_one_line(override, message):
    with pytest.raises(UserError) as error:
        validate(composed(override))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_largest_seed_is_accepted():
    validate(composed("seed=4294967295"))


def test_val_monitors_need_a_validation_split():
    validate(composed("dataset.validation_split=0", "checkpoint.monitor=loss"))
    with pytest.raises(UserError) as error:
        validate(composed("dataset.validation_split=0"))  # monitor: val_accuracy
    assert str(error.value) == (
        "checkpoint.monitor must be one of loss, accuracy (val_* needs "
        "dataset.validation_split > 0), got 'val_accuracy'"
    )


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("model.pooling=median", "[max, avg, none]"),
        ("checkpoint.mode=up", "[max, min]"),
        ("trainer.strategy=tpu", "[default, mirrored, multi_worker]"),
        ("trainer.precision=float16", "[float32, mixed_bfloat16, mixed_float16]"),
    ],
)
def test_closed_choices_fail_at_composition(override, allowed):
    with pytest.raises(ConfigCompositionException) as error:
        composed(override)
    assert f"expected one of {allowed}" in str(error.value.__cause__)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+trainer.precison=16"],
            "unknown key trainer.precison; known keys of trainer: epochs, max_steps, ",
        ),
        (["+model.x=1"], "unknown key model.x; known keys of model=cnn: name, filters, "),
        (["+checkpoint.x=1"], "unknown key checkpoint.x; known keys of checkpoint: dir, every_n"),
        (["+dataset.x=1"], "unknown key dataset.x; known keys of dataset: name, data_dir, "),
        (["+optimizer.x=1"], "unknown key optimizer.x; known keys of optimizer=adam: name, "),
        (
            ["schedule=step", "+schedule.every=3"],
            "unknown key schedule.every; known keys of schedule=step: name, warmup_steps, ",
        ),
        # A schedule without a schema is open in its own section only.
        (
            ["schedule=custom", "schedule.name=triangle", "+schedule.period=3", "+trainer.x=1"],
            "unknown key trainer.x; known keys of trainer: ",
        ),
    ],
)
def test_keys_the_schema_does_not_know_are_refused_after_composition(overrides, message):
    cfg = composed(*overrides)  # Hydra adds `+` keys even to a typed section
    with pytest.raises(UserError) as error:
        validate(cfg)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_an_option_without_a_schema_takes_keys_of_its_own():
    cfg = composed("schedule=custom", "schedule.name=triangle", "+schedule.period_steps=3")
    validate(cfg)
    assert cfg.schedule.period_steps == 3


def test_a_checkpoint_section_with_an_unknown_key_is_refused():
    with pytest.raises(UserError) as error:
        typed_section("trainer", {"epochs": 2, "precison": 16})
    assert str(error.value).startswith(
        "trainer config is not valid: unknown key trainer.precison; known keys of trainer: epochs"
    )


def test_a_checkpoint_config_reads_back_as_plain_strings(tmp_path):
    from checkpoints.manifest import Checkpoint
    from trainer.config.saved import read_checkpoint_config

    cfg = composed("model.pooling=avg", "checkpoint.mode=min", "checkpoint.monitor=loss")
    saved = OmegaConf.to_container(cfg, resolve=True)  # as trainer.training.checkpointer
    saved["resolved_schedule"] = {"name": "cosine", "decay_steps": 10}
    text = OmegaConf.to_yaml(OmegaConf.create(saved))
    assert "pooling: avg" in text and "mode: min" in text  # what a checkpoint writes
    (tmp_path / "config.yaml").write_text(text)

    raw = read_checkpoint_config(Checkpoint(tmp_path, manifest={"files": ["config.yaml"]}))
    for value in (raw["model"]["pooling"], raw["checkpoint"]["mode"], raw["trainer"]["strategy"]):
        assert type(value) is str
    assert (raw["model"]["pooling"], raw["checkpoint"]["mode"]) == ("avg", "min")
    assert raw["model"] == OmegaConf.to_container(cfg.model)  # a resume compares them equal


def test_checkpoint_sections_are_checked_against_the_schema():
    section = typed_section("optimizer", {"name": "sgd", "learning_rate": 0.1, "momentum": 0.5})
    assert section.nesterov is False  # filled from the schema
    with pytest.raises(UserError, match="optimizer config is not valid"):
        typed_section("optimizer", {"name": "sgd", "momentum": "fast"})
    with pytest.raises(UserError, match="schedule config is not valid"):
        typed_section("schedule", {"name": "cosine", "exec": "import os"})
    # A user's own schedule has no schema: its keys are checked when it is built.
    custom = typed_section("schedule", {"name": "triangle", "period_steps": 10})
    assert OmegaConf.to_container(custom) == {"name": "triangle", "period_steps": 10}


def _run(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import runpy, sys; sys.argv = ['train.py', *sys.argv[1:]]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED')\n"
        "sys.exit(code)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("flag", [["--help"], ["--cfg", "job"], ["schedule=step", "--help"]])
def test_help_and_cfg_do_not_import_tensorflow(flag):
    process = _run(*flag)
    assert process.returncode == 0, process.stderr
    assert "TF_NOT_IMPORTED" in process.stdout
    assert "optimizer:" in process.stdout  # the composed config is printed
    if flag[0] == "schedule=step":
        assert "every_epochs: 5" in process.stdout


def test_help_lists_groups_and_usage():
    process = _run("--help")
    assert "+resume=runs/<date>/<time>" in process.stdout
    assert "one_cycle" in process.stdout


def test_help_with_an_unknown_option_is_one_line():
    process = _run("schedule=nope", "--help")
    assert process.returncode == 2
    assert process.stderr.strip().startswith("error: ")
    assert "schedule/nope" in process.stderr
    assert "Traceback" not in process.stderr
