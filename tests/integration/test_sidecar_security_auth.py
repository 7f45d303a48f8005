"""Authentication (issue 19): an empty token is refused, the token can come from a file
or the environment, failed attempts are logged and limited per peer, a warning when
listening beyond loopback without TLS, mTLS, and one-line errors for settings that
cannot work. Real sockets; the ``durable sidecar`` command as a subprocess."""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError
from test_sidecar_protocol import ROOT, call, self_signed

from durable import MockClock
from durable.grpc import Sidecar
from durable.grpc._auth import MAX_FAILURES, WINDOW
from durable.grpc._server import BytesCodec

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

TOKEN = {"dapr-api-token": "t0ken"}


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if k != "DURABLE_API_TOKEN"}
    full.update(env or {})
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "durable", "sidecar", "--store", f"file://{tmp_path}",
               "--listen", "127.0.0.1:0", *args]  # fmt: skip
    return subprocess.Popen(command, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


@contextmanager
def serving(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """``durable sidecar`` with ``args`` running; its port."""
    with cli(tmp_path, *args, env=env) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("durable sidecar listening on 127.0.0.1:"), line
            yield int(line.rsplit(":", 1)[1])
        finally:
            process.terminate()
            process.wait(timeout=20)


async def hello(port: int, metadata: dict[str, str] | None = None) -> Status:
    ch = Channel("127.0.0.1", port, codec=BytesCodec())
    try:
        await call(ch, "Hello", b"", metadata=metadata)
    except GRPCError as err:
        return err.status
    finally:
        ch.close()
    return Status.OK


def test_an_empty_token_is_refused_at_start(tmp_path: Path) -> None:
    """Issue 19: ``--api-token ""`` (an unset shell variable) turned authentication off
    without a word. It is refused, in one line, as is an empty token file or
    variable, and ``--tls-cert`` without ``--tls-key``."""
    with pytest.raises(ValueError, match="empty"):
        Sidecar("memory://", api_token="")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "cert.pem").write_text("x")
    for args, env in [
        (["--api-token", ""], None),
        (["--api-token-file", str(tmp_path / "empty")], None),
        ([], {"DURABLE_API_TOKEN": ""}),
        (["--tls-cert", str(tmp_path / "cert.pem")], None),
    ]:
        with cli(tmp_path / "store", *args, env=env) as process:
            out, err = process.communicate(timeout=60)
        assert process.returncode != 0, (args, out)
        assert "listening" not in out
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("durable sidecar: "), err


@pytest.mark.parametrize("source", ["file", "environment"])
def test_the_token_from_a_file_or_the_environment(tmp_path: Path, source: str) -> None:
    """Issue 19: the token was only accepted on the command line, where
    ``/proc/PID/cmdline`` shows it to every user of the machine."""
    (tmp_path / "token").write_text("t0ken\n")
    args = ["--api-token-file", str(tmp_path / "token")] if source == "file" else []
    env = {"DURABLE_API_TOKEN": "t0ken"} if source == "environment" else None
    with serving(tmp_path / "store", *args, env=env) as port:
        assert anyio.run(hello, port) is Status.UNAUTHENTICATED
        assert anyio.run(hello, port, TOKEN) is Status.OK


async def test_failed_attempts_are_logged_once_and_limited_per_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 19: failed attempts were neither logged nor rate-limited. A peer that
    fails too often is refused, even with the right token, until the window passes;
    the log says so in two lines, not one per attempt."""
    caplog.set_level(logging.INFO, logger="durable.grpc.auth")
    clock = MockClock()
    async with Sidecar("memory://", port=0, api_token="t0ken", clock=clock) as sidecar:
        assert await hello(sidecar.port, TOKEN) is Status.OK
        for _ in range(MAX_FAILURES + 5):
            assert await hello(sidecar.port, {"dapr-api-token": "guess"}) is Status.UNAUTHENTICATED
        assert await hello(sidecar.port, TOKEN) is Status.UNAUTHENTICATED  # locked out
        clock.advance(WINDOW + timedelta(seconds=1))
        assert await hello(sidecar.port, TOKEN) is Status.OK
    lines = [r.getMessage() for r in caplog.records if r.name == "durable.grpc.auth"]
    assert len(lines) == 2, lines
    assert "127.0.0.1" in lines[0]
    assert "refused until the window passes" in lines[1]


async def test_a_warning_when_listening_beyond_loopback_without_tls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 19: nothing warned when a token was used without TLS on a non-loopback
    address."""
    caplog.set_level(logging.WARNING, logger="durable.grpc.sidecar")
    async with Sidecar("memory://", port=0):
        pass
    assert not caplog.records
    async with Sidecar("memory://", host="0.0.0.0", port=0, api_token="t0ken"):
        pass
    (warning,) = caplog.records
    assert "without TLS" in warning.getMessage()


async def test_mtls_admits_only_clients_with_a_certificate_the_ca_signed(tmp_path: Path) -> None:
    """Issue 19: there was no mTLS. With ``tls_client_ca``, a client without a
    certificate, or with one another CA signed, cannot connect."""
    (tmp_path / "server").mkdir()
    (tmp_path / "client").mkdir()
    (tmp_path / "stranger").mkdir()
    cert, key = self_signed(tmp_path / "server")
    client_cert, client_key = self_signed(tmp_path / "client")
    stranger_cert, stranger_key = self_signed(tmp_path / "stranger")

    def context(chain: tuple[Path, Path] | None) -> ssl.SSLContext:
        made = ssl.create_default_context(cafile=str(cert))
        if chain is not None:
            made.load_cert_chain(*chain)
        made.set_alpn_protocols(["h2"])
        return made

    async def hello_over(port: int, chain: tuple[Path, Path] | None) -> bool:
        ch = Channel("127.0.0.1", port, ssl=context(chain), codec=BytesCodec())
        try:
            await call(ch, "Hello", b"")
        except (OSError, GRPCError, StreamTerminatedError):
            return False
        finally:
            ch.close()
        return True

    async with Sidecar("memory://", port=0, tls_cert=str(cert), tls_key=str(key),
                       tls_client_ca=str(client_cert)) as sidecar:  # fmt: skip
        assert await hello_over(sidecar.port, (client_cert, client_key))
        for chain in (None, (stranger_cert, stranger_key)):
            # in a loop of its own: grpclib's client cancels the calling task when the
            # connection drops, which would leak into this test's task
            admitted = await anyio.to_thread.run_sync(anyio.run, hello_over, sidecar.port, chain)
            assert not admitted
