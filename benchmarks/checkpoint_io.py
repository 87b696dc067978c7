"""Checkpoint I/O at the disk's limit: save and restore of 100 MiB and 1.3 GiB checkpoints.

    python -m benchmarks.checkpoint_io                  # both sizes, 3 rounds each
    python -m benchmarks.checkpoint_io --sizes small    # the 115 MiB one only
    python -m benchmarks.checkpoint_io --cases restores # two saves each, then the restores
    python -m benchmarks.checkpoint_io --quick          # a tiny model, 1 round: the harness only

One process per invocation; per size one model (``benchmarks.checkpoint_cost.build``:
MNIST-shaped input, conv [32, 64], Adam; dense [3200]: 10.1 M parameters,
115 MiB per checkpoint, or dense [16384, 4096]: 118.5 M parameters, 1.32 GiB),
trained a step between saves so every save writes fresh values. Each round,
in rotating order:

- ``disk_limit``: write and fsync as many bytes as our checkpoint holds, in
  8 MiB writes, into the same directory: what the disk allows;
- ``ours_sync``: ``CheckpointManager`` (synchronous) writing ``write_state``,
  as ``RunCheckpointer`` wires it (state files, hashes, manifest, rename,
  pointers, pruning), until ``save`` returns;
- ``ours_async``: the same, asynchronous: ``blocked`` until ``save`` returns,
  ``total`` until ``wait()`` returns; and what a save adds to the process'
  peak memory (``VmHWM`` after resetting it) while a training step runs
  beside its commit, against the state's size (see ``async_peak_memory``);
- ``tf_checkpoint_manager``: ``tf.train.CheckpointManager.save``;
- ``orbax``: ``orbax.checkpoint.StandardCheckpointer`` saving the variables as
  NumPy arrays (their ``.numpy()`` copies timed too), until it is finished;
  skipped, with a line saying so, when orbax-checkpoint is not installed.

Restore, each round: ``read_bytes`` (read every file of our checkpoint into
memory), ``ours_restore`` (``verify``: manifest, sizes, HDF5 structure and every
sha256, the large files side by side; then ``restore_state`` into the model and
optimizer, which reads each verified file straight into the variables: what a
resume and the tools do), ``ours_unverified_restore`` (``verify`` without the
hashes, then ``restore_state``, which reads each file into new tensors and
checks its sha256 on the way: one pass) and ``tf_restore``
(``tf.train.Checkpoint.restore``, which hashes nothing). The files were just written,
so these read from the page cache. Then the same from the disk: ``*_cold``, each
after ``posix_fadvise(DONTNEED)`` has dropped every file of both checkpoints from
the page cache (fsynced first: only clean pages can be dropped). Reading from the
disk is the limit a restore meets after a restart or on another machine, as
writing and fsyncing is a save's; reading from the page cache is the faster
reference, against which hashing every byte (sha256) is most of the cost.

Ratios are per round, to ``disk_limit`` (saves), ``read_bytes`` or
``read_bytes_cold`` (restores), in the same round; medians, min and max over rounds.
Targets: ours_sync total <= 1.25 x disk_limit; ours_async blocked <= 2% of
ours_sync; ours_restore <= 1.25 x read_bytes (and ours_restore_cold x
read_bytes_cold); async peak memory <= one copy of the state.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks import checkpoint_cost, common

SIZES = {
    "small": checkpoint_cost.MODEL,  # 10.1 M parameters, 115 MiB
    "large": {**checkpoint_cost.MODEL, "dense_units": [16384, 4096]},  # 118.5 M, 1.32 GiB
}
QUICK_SIZES = {"quick": checkpoint_cost.QUICK_MODEL}
SAVE_TARGET = 1.25
BLOCKED_TARGET = 0.02
RESTORE_TARGET = 1.25
CHUNK = 8 << 20


def peak_memory_reset() -> int:
    """Reset the process' peak resident size (Linux ``clear_refs``); its current size."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def peak_memory() -> int:
    return _status_bytes("VmHWM")


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def disk_limit(directory: Path, size: int, buffer: memoryview) -> float:
    """Seconds to write and fsync ``size`` bytes into ``directory`` (8 MiB writes)."""
    path = directory / "disk-limit.bin"
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = size
        while left:
            left -= os.write(fd, buffer[: min(left, CHUNK)])
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - started
    path.unlink()
    return seconds


def drop_from_page_cache(*directories: Path) -> None:
    """Make the next read of every file under ``directories`` come from the disk: fsync it
    (only clean pages can be dropped), then ``posix_fadvise(POSIX_FADV_DONTNEED)``."""
    for directory in directories:
        for path in directory.rglob("*"):
            if path.is_file() and not path.is_symlink():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def read_bytes(checkpoint: Path) -> float:
    """Seconds to read every file of ``checkpoint`` into memory (8 MiB reads)."""
    started = time.perf_counter()
    buffer = bytearray(CHUNK)
    for path in sorted(p for p in checkpoint.iterdir() if p.is_file()):
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass
    return time.perf_counter() - started


def orbax_saver(model, optimizer, root: Path):
    """``save(step)`` with Orbax on NumPy copies of the variables, or None (not installed)."""
    try:
        import orbax.checkpoint as ocp
    except ImportError:
        return None
    checkpointer = ocp.StandardCheckpointer()
    (root / "orbax").mkdir()

    def save(step: int) -> None:
        state = {f"w{i}": v.numpy() for i, v in enumerate(model.weights)}
        state.update({f"o{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
        checkpointer.save((root / "orbax" / f"step-{step}").absolute(), state)
        checkpointer.wait_until_finished()
        for old in sorted((root / "orbax").glob("step-*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)

    return save


def measure_size(
    name: str, model_cfg: dict[str, Any], repeats: int, root: Path, cases: set[str]
) -> list[dict]:
    """The cases of one model size: every saver, then the restores, ``repeats`` rounds
    each; ``cases`` says which (``saves``, ``restores``): without ``saves``, each saver
    saves twice, untimed, for the restores to read."""
    from checkpoints.listing import list_checkpoints

    model, optimizer, train_step = checkpoint_cost.build(model_cfg)
    for _ in range(2):
        train_step()
    savers = checkpoint_cost.make_savers(model, optimizer, root, model_cfg, keras=False)
    orbax = orbax_saver(model, optimizer, root)
    if orbax is not None:
        savers["orbax"] = orbax

    def step() -> int:
        """Train one step; the new step number (manifests name the optimizer's own)."""
        train_step()
        return int(optimizer.iterations.numpy())

    for save in savers.values():  # warm-up: first-save costs (imports, traces)
        checkpoint_cost.total_save_time(save, step())
    state_bytes = sum(p.stat().st_size for p in list_checkpoints(root / "sync")[-1].iterdir())
    found = []
    if "saves" in cases:
        timings = time_saves(savers, step, repeats, root, state_bytes)
        found = save_cases(name, model.count_params(), state_bytes, timings)
    else:
        for save in savers.values():
            checkpoint_cost.total_save_time(save, step())
    if "restores" in cases:
        restore = time_restores(model, optimizer, repeats, root)
        found += restore_cases(name, model.count_params(), state_bytes, restore)
    if orbax is None:
        found.append({"size": name, "case": "orbax", "skipped": "orbax-checkpoint not installed"})
    return found


def restore_cases(name: str, parameters: int, state_bytes: int, restore: dict) -> list[dict]:
    cases = []
    for reader, values in restore.items():
        reference = "read_bytes_cold" if reader.endswith("_cold") else "read_bytes"
        ratios = common.paired_ratios(values, restore[reference])
        case = {
            "size": name,
            "case": reader,
            "parameters": parameters,
            "checkpoint_mib": round(state_bytes / 2**20, 1),
            "total_s": common.summary(values),
            "total_ratio_to_read_bytes": common.summary(ratios),
        }
        if reader in ("ours_restore", "ours_restore_cold"):
            case["target"] = f"<= {RESTORE_TARGET} x {reference}"
            case["met"] = common.median(ratios) <= RESTORE_TARGET
        cases.append(case)
    return cases


def time_saves(savers, step, repeats: int, root: Path, state_bytes: int) -> dict[str, list]:
    """saver -> total seconds per round; also ``blocked`` and ``peak`` of ours_async."""
    import numpy as np

    buffer = memoryview(np.random.default_rng(0).bytes(CHUNK))
    names = ["disk_limit", *savers]
    found: dict[str, list[float]] = {n: [] for n in [*names, "blocked", "peak"]}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for saver in names[shift:] + names[:shift]:
            number = step()
            if saver == "disk_limit":
                found[saver].append(disk_limit(root / "sync", state_bytes, buffer))
            elif saver == "ours_async":
                save = savers[saver]
                save.wait()
                started = time.perf_counter()
                save(number)
                found["blocked"].append(time.perf_counter() - started)
                save.wait()
                found[saver].append(time.perf_counter() - started)
                found["peak"].append(async_peak_memory(save, step) / state_bytes)
            else:
                found[saver].append(checkpoint_cost.total_save_time(savers[saver], number))
    return found


def async_peak_memory(save, step) -> int:
    """Bytes an asynchronous save adds to the process' peak while training goes on.

    The peak of a training step during the commit (the step's update makes
    TensorFlow copy each variable the snapshot still holds) minus the peak of
    the same step without a save: gradients and activations are not the save's.
    """
    save.wait()
    before = peak_memory_reset()
    step()
    alone = peak_memory() - before
    before = peak_memory_reset()
    save(step())
    step()
    save.wait()
    return max(0, peak_memory() - before - alone)


def time_restores(model, optimizer, repeats: int, root: Path) -> dict[str, list[float]]:
    """reader -> seconds per round: the latest checkpoints of ours_sync and of TensorFlow."""
    import tensorflow as tf

    from checkpoints.listing import list_checkpoints
    from checkpoints.manifest import forget_verified, verify
    from checkpoints.restore import restore_state

    latest = list_checkpoints(root / "sync")[-1]
    tf_latest = tf.train.latest_checkpoint(str(root / "tf"))
    tf_checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    readers = ["read_bytes", "ours_restore", "ours_unverified_restore", "tf_restore"]
    readers += [f"{reader}_cold" for reader in readers]
    found: dict[str, list[float]] = {reader: [] for reader in readers}
    for round_index in range(repeats):
        shift = round_index % len(readers)
        for reader in readers[shift:] + readers[:shift]:
            if reader.endswith("_cold"):
                drop_from_page_cache(latest, Path(tf_latest).parent)
            else:  # after a _cold one: every file back in the page cache, untimed
                read_bytes(latest)
                read_bytes(Path(tf_latest).parent)
            forget_verified()  # ours_restore hashes as it reads, whatever ran before
            started = time.perf_counter()
            kind = reader.removesuffix("_cold")
            if kind == "read_bytes":
                read_bytes(latest)
            elif kind in ("ours_restore", "ours_unverified_restore"):
                # ours_restore: verify hashes every file, then restore_state reads them
                # into the variables (what a resume and the tools do); unverified: verify
                # without hashes, then restore_state hashes each file as it reads it.
                checkpoint = verify(latest, hashes=kind == "ours_restore")
                if not checkpoint.valid:
                    raise RuntimeError(f"{latest}: {checkpoint.problems}")
                restore_state(checkpoint, model, optimizer)
            else:
                tf_checkpoint.restore(tf_latest).expect_partial()
            found[reader].append(time.perf_counter() - started)
    return found


def save_cases(name: str, parameters: int, state_bytes: int, found: dict) -> list[dict]:
    cases = []
    limit = found["disk_limit"]
    for saver, values in found.items():
        if saver in ("blocked", "peak"):
            continue
        ratios = common.paired_ratios(values, limit)
        case = {
            "size": name,
            "case": saver,
            "parameters": parameters,
            "checkpoint_mib": round(state_bytes / 2**20, 1),
            "total_s": common.summary(values),
            "total_ratio_to_disk_limit": common.summary(ratios),
        }
        if saver == "ours_sync":
            case["target"] = f"<= {SAVE_TARGET} x disk_limit"
            case["met"] = common.median(ratios) <= SAVE_TARGET
        if saver == "ours_async":
            blocked = common.paired_ratios(found["blocked"], found["ours_sync"])
            case["blocked_s"] = common.summary(found["blocked"])
            case["blocked_ratio_to_ours_sync"] = common.summary(blocked)
            case["peak_memory_in_states"] = common.summary(found["peak"])
            case["target"] = f"blocked <= {BLOCKED_TARGET} x ours_sync, peak <= 1 state"
            case["met"] = common.median(blocked) <= BLOCKED_TARGET and max(found["peak"]) <= 1
        cases.append(case)
    return cases


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.argument_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument(
        "--sizes", default="small,large", help="comma-separated: small (115 MiB), large (1.3 GiB)"
    )
    parser.add_argument(
        "--cases", default="saves,restores", help="comma-separated: saves, restores"
    )
    args = parser.parse_args(argv)
    cases = set(args.cases.split(","))
    sizes = QUICK_SIZES if args.quick else {k: SIZES[k] for k in args.sizes.split(",")}
    if args.quick:
        args.repeats = 1
    report = common.Report("checkpoint_io", "python -m benchmarks.checkpoint_io", args.repeats)
    for name, model_cfg in sizes.items():
        with common.workdir(args.workdir and args.workdir / name) as root:
            report.cases.extend(measure_size(name, model_cfg, args.repeats, root, cases))
    if any(case.get("skipped") for case in report.cases):
        print("orbax: skipped (orbax-checkpoint is not installed: pip install -e '.[bench]')")
    report.notes.append(
        "saves: total ratio = time / disk_limit (write + fsync of the same bytes, same "
        "directory, same round); restore: time / read_bytes (the same files, page cache), "
        "*_cold: time / read_bytes_cold (the same, from the disk: dropped from the cache)"
    )
    report.print(
        [
            ("size", "size"),
            ("case", "case"),
            ("checkpoint_mib", "MiB"),
            ("total_s.median", "total s"),
            ("total_ratio_to_disk_limit.median", "/disk"),
            ("total_ratio_to_disk_limit.min", "min"),
            ("total_ratio_to_disk_limit.max", "max"),
            ("total_ratio_to_read_bytes.median", "/read"),
            ("blocked_ratio_to_ours_sync.median", "blocked/sync"),
            ("peak_memory_in_states.max", "peak/state"),
            ("met", "met"),
        ]
    )
    report.save(args.json)
    return report.to_dict()


if __name__ == "__main__":
    main()
