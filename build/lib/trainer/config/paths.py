"""``conf/paths/``: where a run writes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PathsConfig:
    """One folder per run: Hydra's output directory (``hydra.run.dir: ${paths.run_dir}``,
    ``hydra.sweep.dir: ${paths.sweep_dir}``) is where the run writes everything, its
    checkpoints included, unless ``checkpoint.dir`` is given."""

    # The values, interpolations of root and the time, are in conf/paths/default.yaml: a
    # schema node is also used on its own (check_known_keys), where ${paths.root} is not.
    root: str = "runs"
    run_dir: str | None = None  # runs/<date>/<time>
    sweep_dir: str | None = None  # runs/<date>/<time>, one <job number>/ per job
