"""``python train.py --help``: usage, the config groups and the composed config.

Hydra's own ``--help`` deep-copies the whole config repository once per config
group (2.7 s here with our schemas, against a 1 s budget), so train.py answers
``--help`` itself: it composes the config once through Hydra's compose API,
with the overrides on the command line, and lists the groups from ``conf/``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from trainer.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

USAGE = """\
train.py: train a Keras CNN whose model, optimizer and learning-rate schedule
are composed by Hydra from conf/, with checkpoints that resume exactly.

Usage:
  python train.py [group=option ...] [key=value ...]
  python train.py schedule=cosine optimizer.learning_rate=3e-3
  python train.py +resume=checkpoints/<run>          # newest valid checkpoint of a run
  python train.py +resume=checkpoints/<run>/<ckpt>   # exactly that checkpoint
  python train.py -m schedule=cosine,exponential optimizer.learning_rate=1e-3,3e-3
  python train.py --cfg job                           # print the composed config
  python train.py --hydra-help                        # Hydra's own options
"""


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Each config group under ``conf_dir`` with its options (the YAML file stems)."""
    groups = {}
    for folder in sorted(p for p in conf_dir.iterdir() if p.is_dir() and p.name != "hydra"):
        groups[folder.name] = sorted(f.stem for f in folder.glob("*.yaml"))
    return groups


def help_text(overrides: list[str]) -> str:
    """The full help: usage, groups (group=option) and the config these overrides compose."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise UserError(str(error).splitlines()[0]) from None
    groups = "\n".join(
        f"  {name + ':':<11} {', '.join(options)}" for name, options in config_groups().items()
    )
    return (
        f"{USAGE}\nConfig groups (group=option):\n{groups}\n\n"
        f"Config (override any key with key=value):\n{OmegaConf.to_yaml(cfg)}"
        "Docs: README.md"
    )
