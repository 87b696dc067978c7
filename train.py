"""Train a CNN from the Hydra config in conf/ (see README.md).

    python train.py                              # the default experiment, offline
    python train.py schedule=one_cycle trainer.epochs=30
    python train.py +resume=checkpoints/<run>    # continue a run exactly

This file stays thin: Hydra composes the config, ``trainer.train.train`` does the
rest and returns the monitored metric, which Hydra's sweepers optimise.
TensorFlow is imported only once training starts, so ``--help`` and
``--cfg job`` answer at once.
"""

import sys

from trainer.training.gc_policy import pause_collection, skip_collection_at_exit

if __name__ == "__main__":  # not for a module that imports this one
    pause_collection()  # until the training loop starts (trainer.training.gc_policy)

import hydra  # after the pause: importing Hydra is start-up too
from omegaconf import DictConfig

from trainer.config import check_retired_keys, register_schemas
from trainer.exits import exit_on_user_error

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        from trainer.train import train

        return train(cfg)


if __name__ == "__main__":
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        from trainer.help import help_text

        with exit_on_user_error():
            print(help_text([a for a in sys.argv[1:] if not a.startswith("-")]))
        sys.exit(0)
    with exit_on_user_error():  # Hydra would call a retired key unknown, not say its new name
        check_retired_keys(a for a in sys.argv[1:] if not a.startswith("-"))
    if any(arg.startswith(("+resume=", "resume=")) for arg in sys.argv[1:]):
        from trainer.startup import add_resumed_group_choices

        # `+resume=RUN dataset.path=NEW`: the run's dataset option, for Hydra to compose it.
        add_resumed_group_choices(sys.argv)
    try:
        main()
    finally:  # everything is written and closed by now (trainer.training.gc_policy)
        skip_collection_at_exit()
