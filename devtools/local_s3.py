"""A local S3-compatible server (moto's server mode on the loopback address) for the tests,
``python -m devtools.fault_injection --s3`` and the object-storage benchmark.

::

    with local_s3() as server:
        subprocess.run([..., "checkpoint.dir=s3://" + server.bucket + "/run"], env=server.env())

moto (``moto[server]``, a dev dependency) answers the S3 API in a thread of this
process, as s3fs's own test suite does; every request goes through real HTTP,
botocore and s3fs. Credentials are throw-away values (moto accepts any), given to
child processes through the environment, which is where the trainer reads them.

No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class LocalS3:
    """A running server: its endpoint, a bucket created on it, the credentials to use."""

    endpoint: str
    bucket: str
    access_key: str = "local-access-key"
    secret_key: str = "local-secret-key-never-logged"

    def env(self, **extra: str) -> dict[str, str]:
        """``os.environ`` plus what points botocore at this server (``AWS_ENDPOINT_URL``...)."""
        return {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            **extra,
        }


@contextlib.contextmanager
def local_s3(bucket: str = "checkpoints") -> Iterator[LocalS3]:
    """Start moto's threaded server on 127.0.0.1 (a free port), create ``bucket``, stop it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        running = LocalS3(f"http://{host}:{port}", bucket)
        # moto keeps its buckets in the process, shared by every server it starts: reset
        # them (moto's documented /moto-api/reset), so each server starts empty.
        reset = urllib.request.Request(f"{running.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(reset, timeout=10).close()
        import s3fs

        with environment(running.env()):
            s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        yield running
    finally:
        server.stop()


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


useenvironment = environment  # for in-process clients (tests, benchmarks)
