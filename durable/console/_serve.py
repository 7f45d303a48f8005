"""Serving the console: open the store, bind the socket, run uvicorn until stopped."""

from __future__ import annotations

import contextlib
import signal
import socket
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn

from durable._client import Client
from durable._errors import DurableError

from ._app import create_app
from ._security import is_loopback

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = ["BindError", "ListenError", "parse_listen", "serve"]


class ListenError(DurableError, ValueError):
    """Raised when ``--listen`` is not HOST:PORT, or opens the console to the network
    without an API token."""


class BindError(DurableError):
    """Raised when the console cannot listen on its address (in use, not allowed)."""


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:8233`` or ``[::1]:8233`` -> (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ListenError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    except OSError as err:
        sock.close()
        raise BindError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn, leaving signals to its caller: it stops when told (``should_exit``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _run(server: _Server, sock: socket.socket) -> None:
    """Serve until ``should_exit``, then shut down gracefully even if cancelled."""
    with anyio.CancelScope(shield=True):
        await server.serve(sockets=[sock])


async def serve(
    store: str,
    *,
    listen: str = "127.0.0.1:8233",
    api_token: str | None = None,
    memo_prefix: str = "memo",
    storage_options: Mapping[str, Any] | None = None,
    ready: Callable[[str], None] | None = None,
    stop_on_signals: bool = False,
) -> None:
    """Serve the console over ``store`` until cancelled (or, with ``stop_on_signals``,
    until SIGINT/SIGTERM). A host other than loopback needs ``api_token``. ``ready``
    gets the URL once the socket listens."""
    host, port = parse_listen(listen)
    loopback = is_loopback(host)
    if not loopback and not api_token:
        raise ListenError(
            f"--listen {listen} opens the console beyond this machine: give --api-token too"
        )
    async with Client(store, storage_options=storage_options, memo_prefix=memo_prefix) as client:
        app = create_app(client, api_token=api_token, loopback_only=loopback)
        sock = _bind(host, port)
        try:
            bound = sock.getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            if ready is not None:
                ready(f"http://{shown}:{bound}/")
            config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
            server = _Server(config)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_run, server, sock)
                try:
                    await _until_stopped(stop_on_signals)
                finally:
                    server.should_exit = True
        finally:
            sock.close()


async def _until_stopped(on_signals: bool) -> None:
    if not on_signals:
        await anyio.sleep_forever()
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return
