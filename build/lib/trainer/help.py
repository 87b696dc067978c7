"""``python train.py --help``: usage, the config groups and the composed config.

Hydra's own ``--help`` deep-copies the whole config repository once per config
group (2.7 s here with our schemas, against a 1 s budget), so train.py answers
``--help`` itself: it composes the config once through Hydra's compose API,
with the overrides on the command line, and lists the config groups Hydra's
config loader sees: ``conf/`` and every ``hydra.searchpath`` entry (from
``conf/config.yaml`` or the command line), so a user's own presets are listed
with ours.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from trainer.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# Groups that are not the user's to choose from: Hydra's own settings and the schemas
# (trainer.config.closed.register_schemas) every option extends.
HIDDEN_GROUPS = ("hydra", "schema")

USAGE = """\
train.py: train a Keras model whose architecture, optimizer and learning-rate schedule
are composed by Hydra from conf/, with checkpoints that resume exactly.

Usage:
  python train.py [group=option ...] [+group=option ...] [key=value ...]
  python train.py schedule=cosine optimizer.learning_rate=3e-3
  python train.py +experiment=sgd_step_decay         # a worked example (conf/experiment/)
  python train.py +debug=fast                        # a few steps of everything
  python train.py +resume=runs/<date>/<time>         # newest valid checkpoint of a run
  python train.py +resume=runs/<date>/<time>/<ckpt>  # exactly that checkpoint
  python train.py -m schedule=cosine,exponential optimizer.learning_rate=1e-3,3e-3
  python train.py -m '+experiment=glob(*)'           # every experiment, one job each
  python train.py --cfg job                          # print the composed config
  python train.py --hydra-help                       # Hydra's own options
"""


@contextlib.contextmanager
def initialized_hydra() -> Iterator[None]:
    """Hydra's compose API initialised on ``conf/``, for the block."""
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def config_groups(overrides: Sequence[str] = ()) -> dict[str, list[str]]:
    """Each config group Hydra sees with its options, nested groups as ``a/b``: those of
    ``conf/`` and of every ``hydra.searchpath`` entry (``overrides`` may set it), except
    :data:`HIDDEN_GROUPS`. A group with no option (``conf/local/`` without its file) is
    not listed."""
    with initialized_hydra():
        return _listed_groups(list(overrides))


def _listed_groups(overrides: list[str]) -> dict[str, list[str]]:
    """The groups the config loader lists, nested ones as ``a/b`` (Hydra initialised)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    # The repository Hydra composes from: conf/, the ConfigStore and hydra.searchpath
    # (conf/config.yaml's or the command line's). Built once: the public
    # ConfigLoader.get_group_options rebuilds it on every call, deep-copying each
    # schema (0.2 s a call here, one call per group).
    loader = GlobalHydra.instance().config_loader()
    _, repository = loader._parse_overrides_and_create_caching_repo("config", overrides)

    def walk(parent: str) -> Iterator[tuple[str, list[str]]]:
        for name in sorted(repository.get_group_options(parent, ObjectType.GROUP)):
            group = f"{parent}/{name}" if parent else name
            if group in HIDDEN_GROUPS:
                continue
            options = sorted(repository.get_group_options(group, ObjectType.CONFIG))
            if options:
                yield group, options
            yield from walk(group)

    return dict(walk(""))


def help_text(overrides: list[str]) -> str:
    """The full help: usage, groups (group=option) and the config these overrides compose."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialized_hydra():
            cfg = compose(config_name="config", overrides=overrides)
            groups = _listed_groups(overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise UserError(str(error).splitlines()[0]) from None
    width = max(len(name) for name in groups) + 2
    listed = "\n".join(
        f"  {name + ':':<{width}} {', '.join(options)}" for name, options in groups.items()
    )
    return (
        f"{USAGE}\nConfig groups (group=option; +group=option for those the defaults do not "
        f"select):\n{listed}\n\n"
        f"Config (override any key with key=value):\n{OmegaConf.to_yaml(cfg)}"
        "Docs: README.md"
    )
