"""Connection limits: no client can hold the sidecar's sockets or fill its log.

- A connection that has had no call open and sent nothing for ``idle_timeout`` (one
  that never sent a request, a handshake left half done, a client gone quiet) is
  closed; a worker's open ``GetWorkItems`` call keeps its connection. TLS handshakes
  get the same time.
- At most ``max_connections`` are open at once, by default the file-descriptor limit
  less a headroom kept for the store (:func:`default_max_connections`). A connection
  beyond that takes the place of the one idle longest, or is closed at once if every
  one has a call open.
- The event loop's "socket.accept() out of system resource" error, should the process
  run out of descriptors all the same, is logged at most once per minute.

Idle time is measured on the sidecar's clock, by its sweep every second of it.
"""

from __future__ import annotations

import logging
import resource
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from grpclib.protocol import H2Protocol
from grpclib.server import Server

if TYPE_CHECKING:
    import ssl
    from asyncio import BaseTransport, Transport

    from durable._clock import Clock

__all__ = ["AcceptErrorFilter", "ConnectionGuard", "GuardedServer", "default_max_connections"]

log = logging.getLogger("durable.grpc.connections")

DEFAULT_IDLE_TIMEOUT = 8.0
"""Seconds a connection may stay with no call open (closed within a second after)."""


def default_max_connections() -> int:
    """The soft file-descriptor limit less a headroom for the store and the process
    (a quarter of it, at least 64), and at least 16."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65_536
    return max(16, soft - max(64, soft // 4))


class _Guarded(H2Protocol):
    """grpclib's connection, known to the guard from connect to close."""

    guard: ConnectionGuard
    admitted = False
    idle_since: datetime

    def connection_made(self, transport: BaseTransport) -> None:
        self.transport = cast("Transport", transport)
        if not self.guard.admit(self):
            self.transport.abort()
            return
        self.admitted = True
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.idle_since = self.guard.clock.now()  # a client between calls is not idle
            super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.admitted:
            self.admitted = False
            self.guard.release(self)
            super().connection_lost(exc)

    def busy(self) -> bool:
        """Whether a call is open on the connection."""
        return bool(self.processor.streams)


class ConnectionGuard:
    """The open connections, their cap, and when each fell idle."""

    def __init__(self, clock: Clock, *, max_connections: int, idle_timeout: float) -> None:
        if max_connections < 1 or idle_timeout <= 0:
            raise ValueError("max_connections and idle_timeout must be positive")
        self.clock = clock
        self.max_connections = max_connections
        self.idle_timeout = timedelta(seconds=idle_timeout)
        self.open: set[_Guarded] = set()
        self.refused = 0
        """Connections closed at once: at the cap with every connection busy."""
        self.closed_idle = 0
        """Connections closed for having no call open for too long."""

    def admit(self, conn: _Guarded) -> bool:
        """Take a new connection, making room by closing the one idle longest if at
        the cap; False when every connection has a call open."""
        now = self.clock.now()
        if len(self.open) >= self.max_connections:
            idle = [c for c in self.open if not c.busy()]
            if not idle:
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning("refused %d connection(s): %d open, every one busy",
                                self.refused, len(self.open))  # fmt: skip
                return False
            oldest = min(idle, key=lambda c: c.idle_since)
            self._close(oldest)
        conn.idle_since = now
        self.open.add(conn)
        return True

    def release(self, conn: _Guarded) -> None:
        self.open.discard(conn)

    def _close(self, conn: _Guarded) -> None:
        self.open.discard(conn)
        conn.transport.close()

    def sweep(self) -> None:
        """Close every connection idle for ``idle_timeout``."""
        now = self.clock.now()
        for conn in list(self.open):
            if conn.busy():
                conn.idle_since = now
            elif now - conn.idle_since >= self.idle_timeout:
                self.closed_idle += 1
                self._close(conn)


class GuardedServer(Server):
    """grpclib's server, its connections watched by a :class:`ConnectionGuard`."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def _protocol_factory(self) -> H2Protocol:
        made = super()._protocol_factory()
        made.__class__ = _Guarded
        made.guard = self.guard  # type: ignore[attr-defined]
        return made

    async def start_tcp(self, host: str, port: int, ssl: ssl.SSLContext | None) -> None:
        """Listen on ``host:port``; a TLS handshake must end within the idle timeout."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        timeout = self.guard.idle_timeout.total_seconds() if ssl is not None else None
        self._server = await self._loop.create_server(
            self._protocol_factory, host, port, ssl=ssl, ssl_handshake_timeout=timeout
        )
        self._server_closed_fut = self._loop.create_future()


class AcceptErrorFilter(logging.Filter):
    """Lets the event loop's accept error through once per ``interval`` seconds."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self.dropped = 0
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.MESSAGE):
            return True
        at = record.created  # when logging stamped it
        if self._last is not None and at - self._last < self.interval:
            self.dropped += 1
            return False
        self._last = at
        if self.dropped:
            record.msg = f"{record.msg} ({self.dropped} more since the last report)"
            self.dropped = 0
        record.exc_info = None  # one line: the traceback says nothing new
        return True
