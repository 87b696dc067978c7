"""Training beyond one device: the ``tf.distribute`` strategy ``trainer.strategy`` names.

- ``default``: no strategy (TensorFlow's default one). The training loop keeps
  its single-device code path, so its numerics, and bitwise-exact resume, are
  those of a run without this module.
- ``mirrored``: ``tf.distribute.MirroredStrategy``, synchronous data
  parallelism over the devices of one machine: every local GPU, or without
  GPUs the CPU; ``trainer.cpu_devices=N`` splits the CPU into N logical devices
  instead (to run the distributed code path on a laptop or in tests).
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy``, the same
  over several processes, usually one per machine. The cluster and this
  process' place in it come from ``TF_CONFIG``; under Slurm (``SLURM_JOB_ID``
  set and ``TF_CONFIG`` not) from ``SlurmClusterResolver``, one task per node.

Signals are per process, and the workers agree on them: a stop signal
(SIGTERM, SIGINT, SIGUSR1, SIGUSR2) that any worker has when a step starts is
all-reduced within that step (``trainer.training.loop``), so every worker saves the
same step and stops after it, however many of them got the signal and when.

``dataset.batch_size`` is the *global* batch: each batch of the pipeline is
split across the replicas, so step k trains on the same examples whatever
the number of replicas, and a checkpoint's data position (epoch, batches
done) means the same thing on one device or many. With
``trainer.scale_lr_with_replicas=true`` the base learning rate is multiplied
by the number of replicas (the linear scaling rule).

Who writes files follows TensorFlow's rules for multi-worker training. Every
worker must run the same program, saving included: "reading a tf.Variable
with tf.VariableSynchronization.ON_READ all-reduces the value", a collective
that all workers must join (``tf.distribute.MultiWorkerMirroredStrategy``'s
API docs). Only the chief writes to the real location; the other workers
write to a temporary one that they delete ("Multi-worker training with Keras",
section "Model saving and loading", tensorflow.org). So every worker runs the
whole loop, reads every variable and writes a checkpoint at the same steps; a
worker that is not the chief writes everything (checkpoints, ``config.yaml``,
``metrics.csv``, TensorBoard, ``summary.json``) under a scratch directory,
removed when the process exits, and writes no file into the run directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from trainer.config import Strategy
from trainer.errors import UserError

STRATEGIES = tuple(Strategy)
_CLASS_NAMES = {"mirrored": "MirroredStrategy", "multi_worker": "MultiWorkerMirroredStrategy"}


@dataclass
class Distribution:
    """The strategy of this run, how many replicas it has, and whether this process writes."""

    strategy: tf.distribute.Strategy | None  # None: the default strategy, single-device path
    num_replicas: int = 1
    is_chief: bool = True  # writes the run's real files (TF: strategy.extended.should_checkpoint)
    _scratch: Path | None = field(default=None, repr=False)

    def scope(self) -> AbstractContextManager:
        """Where the model, optimizer and every other variable must be created."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def learning_rate(self, base: float, scale_with_replicas: bool) -> float:
        """``base``, times the number of replicas under the linear scaling rule."""
        return base * self.num_replicas if scale_with_replicas else base

    def describe_resume(self, manifest: Mapping[str, Any], scale_lr_with_replicas: bool) -> None:
        """Say so when a checkpoint written on another number of replicas is resumed.

        Variables are saved once, by position, so any count restores; the data
        position counts global batches, so the run continues on the same batches.
        """
        saved = int(manifest.get("num_replicas", 1))
        if saved == self.num_replicas:
            return
        lr = (
            f"; the learning rate is now scaled by {self.num_replicas}, not {saved} "
            "(trainer.scale_lr_with_replicas)"
            if scale_lr_with_replicas
            else ""
        )
        print(
            f"Checkpoint written on {saved} replica(s), resumed on {self.num_replicas}: "
            f"same global batch (dataset.batch_size){lr}",
            flush=True,
        )

    def files_dir(self, run_dir: Path) -> Path:
        """Where this process writes the run's files: ``run_dir`` on the chief, else a
        scratch directory that is removed when the process exits."""
        if self.is_chief:
            return run_dir
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="trainer-worker-"))
            atexit.register(shutil.rmtree, self._scratch, ignore_errors=True)
        return self._scratch


def start_distribution(trainer_cfg: Mapping[str, Any]) -> Distribution:
    """Create the strategy ``trainer.strategy`` names and say what it runs on.

    Call it right after importing TensorFlow, before anything else uses it:
    logical CPU devices and a multi-worker cluster can only be set up before
    TensorFlow initialises its devices.
    """
    name = trainer_cfg["strategy"]
    if name == "default":
        return Distribution(strategy=None)
    if name == "mirrored":
        strategy = _mirrored(trainer_cfg.get("cpu_devices"))
        where = ", ".join(strategy.extended.worker_devices)
    elif name == "multi_worker":
        strategy = _multi_worker()
        resolver = strategy.cluster_resolver
        cluster = resolver.cluster_spec().as_dict()
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", [])) or 1
        where = f"{resolver.task_type or 'worker'} {resolver.task_id or 0} of {workers} workers"
    else:  # validate() refuses it first; kept for callers that skip it
        raise UserError(f"trainer.strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    distribution = Distribution(
        strategy=strategy,
        num_replicas=strategy.num_replicas_in_sync,
        is_chief=bool(strategy.extended.should_checkpoint),
    )
    role = "" if distribution.is_chief else "; not the chief: writes to a scratch directory"
    print(
        f"Strategy: {_CLASS_NAMES[name]}, {distribution.num_replicas} replica(s) ({where}){role}",
        flush=True,
    )
    return distribution


def distribute_dataset(
    strategy: tf.distribute.Strategy, dataset: tf.data.Dataset
) -> tf.distribute.DistributedDataset:
    """``dataset``'s batches (global batches) split across the replicas of ``strategy``.

    Sharding is by data, not by file: every worker reads the whole pipeline and
    keeps its replicas' parts of each global batch, so a global batch holds the
    same examples as on one device (the shuffle order is a function of the
    seed and the epoch alone), at the cost of every worker reading all of it.
    A short last batch is split as evenly as it goes; a replica may get none.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def split_cpu(count: int) -> None:
    """Expose the (first) CPU as ``count`` logical devices; only before TF starts its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or [None]) == count:
        return  # already so (no configuration: one device)
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:  # "Virtual devices cannot be modified after being initialized"
        raise UserError(
            f"trainer.cpu_devices={count}: TensorFlow has already started its devices in this "
            "process; run train.py in a fresh process"
        ) from None


def _mirrored(cpu_devices: int | None) -> tf.distribute.Strategy:
    if not cpu_devices:
        return tf.distribute.MirroredStrategy()  # every local GPU, or the CPU without one
    split_cpu(cpu_devices)
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def _multi_worker() -> tf.distribute.Strategy:
    resolver = None
    if "TF_CONFIG" not in os.environ and "SLURM_JOB_ID" in os.environ:
        resolver = slurm_cluster_resolver()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except ValueError as error:  # a malformed TF_CONFIG, a task outside its cluster
        first_line = (str(error).strip().splitlines() or [""])[0]
        source = "TF_CONFIG" if resolver is None else "the Slurm job step"
        raise UserError(
            f"trainer.strategy=multi_worker: the cluster in {source} is not usable: {first_line}"
        ) from None


def slurm_cluster_resolver() -> tf.distribute.cluster_resolver.ClusterResolver:
    """The cluster of this Slurm job step: one worker per task, task 0 the chief.

    ``SlurmClusterResolver`` reads the step's nodes and tasks (``SLURM_PROCID``,
    ``SLURM_STEP_NODELIST``, ``SLURM_STEP_TASKS_PER_NODE``); workers listen on
    port 8888 of their node (8889, ... for further tasks on one node). Its GPU
    bookkeeping is bypassed: it counts GPUs with ``nvidia-smi`` (absent on CPU
    nodes), places tasks by stepping through a node's GPUs (so on a CPU node it
    finds room for none) and hands them out through ``CUDA_VISIBLE_DEVICES``,
    too late once TensorFlow has started CUDA. Each task uses the GPUs Slurm
    makes visible to it instead: one task per node gets all of the node's.
    """
    try:
        slurm = tf.distribute.cluster_resolver.SlurmClusterResolver(
            gpus_per_node=_SLURM_TASK_SLOTS, gpus_per_task=1, auto_set_gpu=False
        )
        cluster = slurm.cluster_spec()
    except (RuntimeError, KeyError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise UserError(
            "trainer.strategy=multi_worker under Slurm (SLURM_JOB_ID is set, TF_CONFIG is "
            f"not): cannot read the job step's layout: {first_line}; launch train.py with srun"
        ) from None
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        cluster,
        task_type=slurm.task_type,
        task_id=slurm.task_id,
        num_accelerators={"GPU": len(tf.config.list_physical_devices("GPU"))},
        rpc_layer="grpc",
    )


# Task places per node for SlurmClusterResolver's layout: one "GPU" per task, and more
# places than any node has tasks (its GPU allocation itself is not used).
_SLURM_TASK_SLOTS = 4096
