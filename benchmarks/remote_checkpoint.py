"""Checkpoints on object storage: our upload and download of a 100 MiB checkpoint against a
plain ``s3fs`` put/get of the same bytes, on a local S3 endpoint (moto, 127.0.0.1).

    python -m benchmarks.remote_checkpoint              # 100 MiB, 5 rounds
    python -m benchmarks.remote_checkpoint --quick      # 1 MiB, 1 round: the harness only

The checkpoint is a committed checkpoint directory of our format (a 100 MiB
``model.weights.h5`` of float32 written by h5py, ``trainer_state.json``,
``config.yaml``, ``manifest.json`` with every sha256); no TensorFlow is
involved, so the figures are what object storage adds to a save and a restore.
Each round, in alternating order:

- ``save``: ``RemoteStore.upload_checkpoint`` (files, then the manifest as the
  commit marker, a manifest already there deleted first) against
  ``plain_put``: ``s3fs.put`` of the same files to another prefix;
- ``restore``: ``RemoteStore.download_checkpoint`` (manifest read and
  checked, sizes checked before fetching, every file fetched, then ``verify``
  with sha256 and HDF5 checks, renamed into place) against ``plain_get``:
  ``s3fs.get`` of the same prefix into a fresh folder.

Ratios are per round (ours / plain, measured back to back); medians, min, max.
Targets: save <= 1.25 x plain put; restore <= 1.5 x plain get (ours also reads
every byte again to hash it, which a plain get does not).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

SAVE_TARGET = 1.25
RESTORE_TARGET = 1.5


def write_checkpoint(run: Path, megabytes: float) -> Path:
    """A committed checkpoint of ``megabytes`` of float32 weights in ``run``."""
    import h5py

    from checkpoints import commit_checkpoint

    staging = run / ".staging"
    staging.mkdir(parents=True)
    values = np.random.default_rng(0).standard_normal(int(megabytes * 2**20 / 4), np.float32)
    with h5py.File(staging / "model.weights.h5", "w") as handle:
        handle.create_dataset("layers/dense/vars/0", data=values)
    (staging / "trainer_state.json").write_text('{"loop": {}}\n')
    (staging / "config.yaml").write_text("seed: 0\n")
    final = run / "step-00000100"
    commit_checkpoint(staging, final, {"global_step": 100})
    return final


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(checkpoint: Path, server: Any, work: Path, repeats: int) -> dict[str, list[float]]:
    from checkpoints.remote import RemoteStore

    store = RemoteStore(f"s3://{server.bucket}/ours")
    plain = f"{server.bucket}/plain/{checkpoint.name}"
    files = sorted(str(p) for p in checkpoint.iterdir())
    times: dict[str, list[float]] = {"save": [], "plain_put": [], "restore": [], "plain_get": []}
    store.fs.ls(server.bucket)  # the session (client, credentials) is set up before any timing
    for index in range(repeats):
        actions = {
            "save": lambda: store.upload_checkpoint(checkpoint),
            "plain_put": lambda: store.fs.put(files, plain + "/"),
        }
        for name in common.alternate(index, "save", "plain_put"):
            times[name].append(timed(actions[name]))
        down = work / f"down-{index}"
        plain_down = work / f"plain-{index}"
        down.mkdir()
        actions = {
            "restore": lambda into=down: _restore(store, checkpoint.name, into),
            "plain_get": lambda into=plain_down: store.fs.get(
                plain + "/", str(into) + "/", recursive=True
            ),
        }
        for name in common.alternate(index, "restore", "plain_get"):
            times[name].append(timed(actions[name]))
        shutil.rmtree(down)
        shutil.rmtree(plain_down)
    return times


def _restore(store: Any, name: str, into: Path) -> None:
    if not store.download_checkpoint(name, into).valid:
        raise RuntimeError(f"the uploaded checkpoint {name} does not verify")


def main(argv: list[str] | None = None) -> common.Report:
    parser = common.argument_parser(__doc__.split("\n\n")[0], repeats=5)
    options = parser.parse_args(argv)
    megabytes = 1 if options.quick else 100
    repeats = 1 if options.quick else options.repeats
    from devtools.local_s3 import environment, local_s3

    report = common.Report(
        "remote_checkpoint",
        f"python -m benchmarks.remote_checkpoint{' --quick' * options.quick}",
        repeats,
    )
    with common.workdir(options.workdir) as work, local_s3() as server, environment(server.env()):
        checkpoint = write_checkpoint(work / "run", megabytes)
        size = sum(p.stat().st_size for p in checkpoint.iterdir())
        times = measure(checkpoint, server, work, repeats)
    for ours, plain, target in (
        ("save", "plain_put", SAVE_TARGET),
        ("restore", "plain_get", RESTORE_TARGET),
    ):
        ratios = common.paired_ratios(times[ours], times[plain])
        report.cases.append(
            {
                "case": ours,
                "megabytes": megabytes,
                "ours_s": common.summary(times[ours]),
                "plain_s": common.summary(times[plain]),
                "ratio": common.summary(ratios),
                "target": target,
                "met": common.median(ratios) <= target,
            }
        )
    report.notes.append(f"checkpoint of {size / 2**20:.1f} MiB, moto server on 127.0.0.1")
    report.print(
        [
            ("case", "case"),
            ("megabytes", "MiB"),
            ("ours_s.median", "ours s"),
            ("plain_s.median", "s3fs s"),
            ("ratio.median", "ratio"),
            ("ratio.min", "min"),
            ("ratio.max", "max"),
            ("target", "target"),
            ("met", "met"),
        ]
    )
    report.save(options.json)
    return report


if __name__ == "__main__":
    main()
