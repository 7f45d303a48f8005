"""An S3 store for benchmarks: moto's S3 protocol server on loopback, started once per
benchmark process (a real HTTP server, so every store call is a real S3 request)."""

from __future__ import annotations

import atexit
import itertools
import socket
import subprocess
import sys

from durable.store import S3Store

__all__ = ["moto_s3_store"]

_server: tuple[subprocess.Popen[bytes], str] | None = None
_buckets = itertools.count()


def _endpoint() -> str:
    global _server
    if _server is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        atexit.register(proc.kill)
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                try:  # paces the polling, and sees the server die
                    proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    continue
                raise RuntimeError(f"moto_server exited with {proc.returncode}") from None
        else:
            raise RuntimeError("moto_server did not answer")
        _server = (proc, f"http://127.0.0.1:{port}")
    return _server[1]


def moto_s3_store() -> S3Store:
    """A store on a fresh bucket of the benchmark's moto_server."""
    import botocore.session

    endpoint = _endpoint()
    options = {
        "endpoint_url": endpoint,
        "key": "bench",
        "secret": "bench",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    bucket = f"durable-bench-{next(_buckets)}"
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench",
    )  # fmt: skip
    client.create_bucket(Bucket=bucket)
    client.close()
    return S3Store(f"s3://{bucket}/bench", storage_options=options)
