"""Checkpoints on object storage, against a real S3 API: moto's server on 127.0.0.1.

Unit tests drive ``checkpoints.remote`` in process; the slow ones run
``train.py`` with ``checkpoint.dir=s3://...``, SIGKILL it while it uploads, and
resume it from the bucket alone (a fresh cache: another machine).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from checkpoints import KeepPolicy, checkpoint_arrays, commit_checkpoint
from checkpoints.remote import RemoteStore, filesystem, is_url, split_checkpoint_url
from devtools.local_s3 import environment, local_s3
from tests.conftest import REPO, run_train
from trainer.errors import UserError

SMALL = ("model.filters=[8]", "model.dense_units=[16]", "trainer.deterministic=true")
SAVING = ("checkpoint.every_n_steps=20", "checkpoint.keep_last=2", "trainer.epochs=2")


@pytest.fixture(scope="module")
def s3():
    """The server, with its credentials in this process's environment for the block."""
    with local_s3() as server, environment(server.env()):
        yield server


def make_checkpoint(run: Path, step: int, payload: bytes = b"weights") -> Path:
    """A small committed local checkpoint (no HDF5 files: the format needs none)."""
    staging = run / f".staging-{step}"
    staging.mkdir(parents=True)
    (staging / "blob.bin").write_bytes(payload)
    final = run / f"step-{step:08d}"
    commit_checkpoint(staging, final, {"global_step": step, "metrics": {"val_accuracy": step}})
    return final


def test_urls_are_told_from_paths_and_split_into_run_and_checkpoint():
    assert is_url("s3://b/p") and is_url("gs://b/p") and not is_url("/tmp/s3:/x")
    assert split_checkpoint_url("s3://b/r/step-00000008") == ("s3://b/r", "step-00000008")
    assert split_checkpoint_url("s3://b/r/") == ("s3://b/r", None)


def test_a_checkpoint_is_committed_only_once_its_manifest_is_uploaded(s3, tmp_path):
    store = RemoteStore(f"s3://{s3.bucket}/commit")
    local = make_checkpoint(tmp_path / "run", 4)
    # An upload cut before its marker: the files are there, the manifest is not.
    store.upload_file(local / "blob.bin", "step-00000008/blob.bin")
    store.upload_checkpoint(local)
    assert store.committed() == ["step-00000004"]
    assert store.checkpoint_prefixes()[1] == ["step-00000008"]
    assert store.remove_uncommitted(report=lambda _: None) == ["step-00000008"]
    assert not store.fs.exists(f"{store.root}/step-00000008/blob.bin")
    downloaded = store.download_checkpoint("step-00000004", tmp_path / "down")
    assert downloaded.valid and (downloaded.path / "blob.bin").read_bytes() == b"weights"


def test_a_download_whose_bytes_differ_from_the_manifest_is_never_used(s3, tmp_path):
    store = RemoteStore(f"s3://{s3.bucket}/corrupt")
    store.upload_checkpoint(make_checkpoint(tmp_path / "run", 4))
    store.fs.pipe(f"{store.root}/step-00000004/blob.bin", b"WEIGHTS")  # same size, other bytes
    checkpoint = store.download_checkpoint("step-00000004", tmp_path / "down")
    assert not checkpoint.valid
    assert any("sha256" in problem for problem in checkpoint.problems)
    assert not (tmp_path / "down" / "step-00000004").exists()


def test_pruning_deletes_the_marker_before_the_files(s3, tmp_path, monkeypatch):
    store = RemoteStore(f"s3://{s3.bucket}/prune")
    for step in (4, 8, 12):
        store.upload_checkpoint(make_checkpoint(tmp_path / "run", step))
    deleted = []
    real_rm_file, real_rm = store.fs.rm_file, store.fs.rm
    monkeypatch.setattr(store.fs, "rm_file", lambda p: (deleted.append(p), real_rm_file(p)))
    monkeypatch.setattr(store.fs, "rm", lambda p, **k: (deleted.append(p), real_rm(p, **k)))
    removed = store.prune(KeepPolicy(keep_last=1, keep_best=1), protected=[])
    assert removed == ["step-00000004", "step-00000008"]  # 12 is the newest and the best
    assert deleted[0].endswith("step-00000004/manifest.json")
    assert deleted[1].endswith("step-00000004")  # the rest only once it is uncommitted
    assert store.committed() == ["step-00000012"]


@pytest.mark.parametrize(
    ("env", "url", "message"),
    [
        ({}, "s3://no-such-bucket/run", "the bucket does not exist"),
        (
            {
                "AWS_ACCESS_KEY_ID": None,
                "AWS_SECRET_ACCESS_KEY": None,
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_CONFIG_FILE": "/nonexistent",
            },
            "s3://checkpoints/run",
            "no credentials found",
        ),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "s3://checkpoints/run", "cannot be reached"),
    ],
)
def test_bad_storage_is_one_line_and_fast(s3, monkeypatch, env, url, message):
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    with pytest.raises(UserError) as caught:
        RemoteStore(url).check_reachable()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_gs_without_gcsfs_says_what_to_install():
    try:  # gcsfs is not a dependency: without it, the line must name it
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"pip install gcsfs"):
            filesystem("gs://bucket/run")
    else:
        assert filesystem("gs://bucket/run")[1] == "bucket/run"


# --------------------------------------------------------------------------- train.py on S3


def train_args(digits_dir: Path, run: str, hydra_dir: Path, *extra: str) -> list[str]:
    return [
        f"dataset.data_dir={digits_dir}",
        f"checkpoint.dir={run}",
        f"hydra.run.dir={hydra_dir}",
        *SMALL,
        *SAVING,
        *extra,
    ]


class KillAtCommit:
    """SIGKILL a process the moment its upload of ``key``'s object reaches the server, which
    then does not store it: the kill lands between a checkpoint's files and its marker."""

    def __init__(self, key: str) -> None:
        self.key, self.process, self.killed = key, None, False

    def __enter__(self) -> KillAtCommit:
        from moto.s3.models import S3Backend

        self._original = original = S3Backend.put_object

        def put_object(backend, bucket_name, key_name, *args, **kwargs):
            if key_name == self.key and self.process is not None:
                os.kill(self.process.pid, signal.SIGKILL)
                self.killed = True
                raise ConnectionAbortedError("the writer was killed")
            return original(backend, bucket_name, key_name, *args, **kwargs)

        S3Backend.put_object = put_object
        return self

    def __exit__(self, *exc) -> None:
        from moto.s3.models import S3Backend

        S3Backend.put_object = self._original


@pytest.fixture(scope="module")
def killed_and_resumed(s3, digits_dir, tmp_path_factory):
    """A local reference run; the same run on S3 (async upload) killed while it uploads
    step 41's marker; then resumed from the bucket alone, with a fresh cache."""
    work = tmp_path_factory.mktemp("remote")
    url = f"s3://{s3.bucket}/killed"
    run_train(*train_args(digits_dir, str(work / "reference"), work / "h0"), cwd=work)
    killed_args = train_args(digits_dir, url, work / "h1", "checkpoint.async=true")
    with KillAtCommit("killed/step-00000041/manifest.json") as killer:
        killer.process = subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *killed_args],
            cwd=work,
            env=s3.env(XDG_CACHE_HOME=str(work / "cache-a"), HYDRA_FULL_ERROR="0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        killed_out, killed_err = killer.process.communicate(timeout=300)
    after_kill = RemoteStore(url).checkpoint_prefixes()
    resumed = run_train(
        *train_args(digits_dir, url, work / "h2", f"+resume={url}"),
        cwd=work,
        env=s3.env(XDG_CACHE_HOME=str(work / "cache-b")),
    )
    return {
        "work": work,
        "url": url,
        "killed": killer.killed,
        "killed_code": killer.process.returncode,
        "after_kill": after_kill,
        "logs": killed_out + killed_err + resumed.stdout + resumed.stderr,
        "resumed": resumed,
    }


@pytest.mark.slow
def test_sigkill_mid_upload_resumes_from_the_last_committed_checkpoint_bitwise(
    killed_and_resumed, tmp_path
):
    run = killed_and_resumed
    assert run["killed"] and run["killed_code"] == -signal.SIGKILL
    committed, uncommitted = run["after_kill"]
    assert committed[-1] == "step-00000040" and uncommitted == ["step-00000041"]
    out = run["resumed"].stdout
    assert f"Removing {run['url']}/step-00000041: its upload never finished" in out
    assert "Resuming from" in out and "step 40, epoch 1" in out
    store = RemoteStore(run["url"])
    newest = store.download_checkpoint(store.committed()[-1], tmp_path)
    assert newest.valid and newest.global_step == 82
    reference = run["work"] / "reference" / "step-00000082"
    left, right = checkpoint_arrays(reference), checkpoint_arrays(newest.path)
    assert left.keys() == right.keys()
    assert all(np.array_equal(left[k], right[k]) for k in left)
    assert len(store.committed()) <= 3  # keep_last=2 plus the best: pruned remotely too


@pytest.mark.slow
def test_credentials_never_reach_a_checkpoint_config_or_log(killed_and_resumed, s3):
    run = killed_and_resumed
    secrets = (s3.secret_key, s3.access_key)
    store = RemoteStore(run["url"])
    for key in store.fs.find(store.root):
        data = store.fs.cat_file(key)
        assert not any(secret.encode() in data for secret in secrets), key
    local = [p for p in run["work"].rglob("*") if p.is_file() and "tfds" not in p.parts]
    assert any(p.name == "config.yaml" for p in local)  # Hydra's and the runs' configs
    for path in local:
        data = path.read_bytes()
        assert not any(secret.encode() in data for secret in secrets), path
    assert not any(secret in run["logs"] for secret in secrets)


def remote_cfg(**values):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {"resume": None, "checkpoint": {"dir": None}, "trainer": {"fine_tune": False}, **values}
    )


def test_a_new_run_on_a_url_that_holds_a_run_is_refused_before_anything_is_written(
    s3, tmp_path, monkeypatch
):
    from trainer.runs.remote_run import localize

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3.bucket}/used"
    RemoteStore(url).upload_checkpoint(make_checkpoint(tmp_path / "run", 4))
    with pytest.raises(
        UserError, match=rf"already holds checkpoints; resume it with \+resume={url}"
    ):
        localize(remote_cfg(checkpoint={"dir": url}))
    assert not (tmp_path / "cache").exists()  # no working copy, no lock taken


def test_a_second_writer_of_a_url_is_refused_naming_the_first(s3, tmp_path, monkeypatch):
    from trainer.runs.remote_run import location, working_copy

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3.bucket}/locked"
    working = working_copy(url, report=lambda _: None)
    assert location(working) == url
    second = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from trainer.runs.remote_run import working_copy; working_copy({url!r})",
        ],
        cwd=REPO,
        env=s3.env(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert second.returncode != 0
    assert f"is being written by pid {os.getpid()}" in second.stderr


def trainer_tool(s3, *args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=REPO,
        env=s3.env(XDG_CACHE_HOME=str(cache), PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_tools_read_a_run_on_s3_as_a_local_one(killed_and_resumed, s3, tmp_path):
    url = killed_and_resumed["url"]
    newest = RemoteStore(url).committed()[-1]
    listed = trainer_tool(s3, "list", url, "--json", cache=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (run,) = json.loads(listed.stdout)["runs"]
    assert run["run"] == url and run["latest"] == newest
    assert [c["checkpoint"] for c in run["checkpoints"]] == RemoteStore(url).committed()
    verified = trainer_tool(s3, "verify", url, cache=tmp_path)
    assert verified.returncode == 0 and f"ok   {newest}" in verified.stdout
    inspected = trainer_tool(s3, "inspect", f"{url}/{newest}", "--json", cache=tmp_path)
    assert json.loads(inspected.stdout)["path"] == f"{url}/{newest}"
    compared = trainer_tool(s3, "compare", url, "--json", cache=tmp_path)
    assert compared.returncode == 0, compared.stderr
    plot = tmp_path / "lr.png"
    plotted = trainer_tool(
        s3, "plot-schedule", "--checkpoint", f"{url}/{newest}", "--out", str(plot), cache=tmp_path
    )
    assert plotted.returncode == 0 and plot.stat().st_size > 0, plotted.stderr
    exported = tmp_path / "model.keras"
    made = trainer_tool(s3, "export", url, str(exported), "--json", cache=tmp_path)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["checkpoint"] == f"{url}/{newest}"
    assert exported.stat().st_size > 0
    # A flipped byte in the bucket: verify says which file, exit status 1.
    store = RemoteStore(url)
    copy = f"{url}-corrupt"
    store.fs.copy(store.root, copy.removeprefix("s3://"), recursive=True)
    weights = f"{copy.removeprefix('s3://')}/{newest}/model.weights.h5"
    data = bytearray(store.fs.cat_file(weights))
    data[-1] ^= 0xFF
    store.fs.pipe(weights, bytes(data))
    broken = trainer_tool(s3, "verify", copy, cache=tmp_path)
    assert broken.returncode == 1
    assert f"BAD  {newest}: model.weights.h5: sha256 does not match" in broken.stdout
    assert not list((tmp_path / "keras-hydra-trainer" / "remote").glob("*/download-*"))


def test_a_remote_resume_falls_back_past_a_checkpoint_that_does_not_verify(
    s3, tmp_path, monkeypatch
):
    from trainer.runs.remote_run import localize, location

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3.bucket}/fallback"
    store = RemoteStore(url)
    for step in (4, 8):
        store.upload_checkpoint(make_checkpoint(tmp_path / "run", step))
    store.fs.pipe(f"{store.root}/step-00000008/blob.bin", b"WEIGHTS")
    said = []
    cfg = localize(remote_cfg(resume=url), report=said.append)
    local = Path(cfg.resume)
    assert sorted(p.name for p in local.glob("step-*")) == ["step-00000004"]
    assert said == [
        f"checkpoint {url}/step-00000008 does not verify "
        "(blob.bin: sha256 does not match the manifest); skipping it"
    ]
    assert location(local / "step-00000004") == f"{url}/step-00000004"
    assert cfg.checkpoint.dir is None  # plan_start continues the run in place: its working copy


@pytest.mark.slow
def test_resume_auto_starts_a_run_on_s3_then_continues_it(s3, digits_dir, tmp_path):
    url = f"s3://{s3.bucket}/auto"
    env = s3.env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    common = (f"dataset.data_dir={digits_dir}", f"checkpoint.dir={url}", *SMALL, "+resume=auto")
    first = run_train(
        *common, "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'h1'}", cwd=tmp_path, env=env
    )
    assert f"+resume=auto: no checkpoint in {url}; starting it there" in first.stdout
    second = run_train(
        *common, "trainer.epochs=2", f"hydra.run.dir={tmp_path / 'h2'}", cwd=tmp_path, env=env
    )
    assert f"+resume=auto: resuming its run {url}\n" in second.stdout  # named by its URL
    assert f"Resuming from {url}/step-00000041: step 41" in second.stdout
    assert RemoteStore(url).committed()[-1] == "step-00000082"


def test_continuing_an_older_remote_checkpoint_in_place_is_refused(s3, tmp_path, monkeypatch):
    from trainer.runs.remote_run import localize

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3.bucket}/older"
    for step in (4, 8):
        RemoteStore(url).upload_checkpoint(make_checkpoint(tmp_path / "run", step))
    with pytest.raises(UserError, match=r"step-00000008 is\); continuing it there would"):
        localize(remote_cfg(resume=f"{url}/step-00000004"))
    branch = localize(remote_cfg(resume=f"{url}/step-00000004", checkpoint={"dir": "elsewhere"}))
    assert Path(branch.resume).name == "step-00000004" and branch.checkpoint.dir == "elsewhere"
