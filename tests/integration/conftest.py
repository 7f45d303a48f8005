"""Fixtures for integration tests: a store per backend, and runtimes on a mock clock.

The ``s3`` backend talks to a real S3 protocol server: ``moto_server`` on loopback,
started once per session on first use, with a fresh bucket per test.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import botocore.session
import pytest

import durable
from durable.store import LocalStore, MemoryStore, ObjectStore, S3Store


class MotoServer:
    """A running ``moto_server``: its endpoint, and fresh buckets on demand."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self.storage_options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"region_name": "us-east-1"},
        }
        self.client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self._numbers = itertools.count()

    def new_bucket(self) -> str:
        """Create an empty bucket (through the S3 API: moto refuses s3fs's mkdir)."""
        name = f"durable-test-{next(self._numbers)}"
        self.client.create_bucket(Bucket=name)
        return name

    def store(self, prefix: str = "root", bucket: str | None = None) -> S3Store:
        """An S3Store on a fresh bucket (or ``bucket``), under ``prefix``."""
        url = f"s3://{bucket or self.new_bucket()}/{prefix}"
        return S3Store(url, storage_options=self.storage_options)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """Run ``moto_server`` on a free loopback port for the whole session."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                try:  # paces the polling (a refused connect returns at once) and sees a crash
                    proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    continue
                pytest.fail(f"moto_server exited with {proc.returncode}: {log.read_text()}")
        else:
            pytest.fail(f"moto_server did not answer on port {port}: {log.read_text()}")
        server = MotoServer(f"http://127.0.0.1:{port}")
        yield server
        server.client.close()
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(params=["memory", "file", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[ObjectStore]:
    """A fresh empty store of each backend; runtimes given this object share it."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "file":
        yield LocalStore(tmp_path / "store", url=f"file://{tmp_path / 'store'}")
    else:
        s3 = request.getfixturevalue("moto_server").store()
        yield s3
        await s3.close()


@pytest.fixture
def runtime_factory(
    store: ObjectStore,
) -> Callable[..., Any]:
    """``async with runtime_factory(registry) as rt`` on the shared store and a MockClock."""

    @asynccontextmanager
    async def make(
        registry: durable.Registry, clock: durable.MockClock | None = None, **options: Any
    ) -> AsyncIterator[durable.Runtime]:
        clock = clock or durable.MockClock(auto_advance=True)
        async with durable.Runtime(registry, store=store, clock=clock, **options) as rt:
            yield rt

    return make
