"""``Sidecar``: durable's engine behind the Durable Task gRPC protocol.

A :class:`~durable.Runtime` whose executor is remote (turns and activities go to the
Durable Task workers connected to ``GetWorkItems``), a :class:`~durable.Client` for the
client RPCs, and a grpclib server on one address. ``durable sidecar`` runs one.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from grpclib.config import Configuration

from durable._client import Client
from durable._engine._base import supervised
from durable._registry import Registry
from durable._runtime import Runtime

from ._auth import check_token
from ._connections import (
    DEFAULT_IDLE_TIMEOUT,
    AcceptErrorFilter,
    ConnectionGuard,
    GuardedServer,
    default_max_connections,
)
from ._dispatch import Dispatcher
from ._limits import DEFAULT_MAX_MESSAGE, DEFAULT_MAX_WAITING
from ._remote import RawCodec, RemoteExecutor
from ._server import BytesCodec, SidecarService

if TYPE_CHECKING:
    from collections.abc import Mapping

    from durable._clock import Clock
    from durable._core._events import HistoryEvent
    from durable._fleet._leases import Fleet
    from durable.store import ObjectStore

    from ._workitems import SentTurn

__all__ = ["Sidecar"]

log = logging.getLogger("durable.grpc.sidecar")
_NO_TLS = ("listening on %s without TLS: tokens and payloads cross the network in clear; "
           "give tls_cert and tls_key (--tls-cert, --tls-key)")  # fmt: skip


class Sidecar:
    """Serves ``TaskHubSidecarService`` over a store, for Durable Task SDK workers and
    clients (Microsoft's ``durabletask``, Dapr Workflow, durabletask-js).

    Use it as an async context manager; ``port=0`` picks a free port (see
    :attr:`port`). It listens on loopback unless ``host`` says otherwise (and warns
    when it listens beyond loopback without TLS); give ``tls_cert`` and ``tls_key``
    (PEM files) for TLS, ``tls_client_ca`` too for mTLS (only clients whose
    certificate that CA signed may connect), and ``api_token`` to require that token
    in every call's ``dapr-api-token`` metadata (an empty token is refused; a peer
    that fails too often is refused for a while, see :mod:`durable.grpc._auth`).
    ``max_in_flight`` bounds the turns, and separately the activity attempts, handed to
    workers at once (each is an engine slot that mostly waits for a worker's answer;
    more wait in a queue).

    With ``fleet`` (a :class:`~durable.Fleet`) the sidecar is one process of several
    sharing the store (typically one ``s3://`` bucket): it runs only the partitions it
    holds by lease, so its workers get the turns and activities of those instances
    only; an instance started, signalled or steered through it that lies on another
    partition is handed to that partition's owner through the store, within
    ``poll_interval``. Every process of the fleet must be able to run every workflow
    it may be handed: a fleet of sidecars whose workers all serve the same workflows.

    Every ``keepalive`` seconds the sidecar pings each worker's connection (HTTP/2
    PING); a worker that does not answer within ``keepalive_timeout`` (a frozen
    process, a machine gone without closing its socket) is disconnected, and what it
    held goes to another worker. ``keepalive=None`` turns that off.

    ``max_message_size`` (4 MiB by default, gRPC's usual) bounds every message both
    ways: a bigger request is refused (RESOURCE_EXHAUSTED) before it is read, and a
    work item bigger than that fails its instance (or activity attempt) with a
    MessageTooLarge failure instead of being sent to a worker that would refuse it.

    A connection with no call open for ``idle_timeout`` seconds of the clock is
    closed (a worker's open ``GetWorkItems`` keeps its own), and at most
    ``max_connections`` are open at once (by default the file-descriptor limit less a
    headroom for the store): see :mod:`durable.grpc._connections`.

    Fairness: a turn a worker has not answered within ``turn_timeout`` seconds (an
    activity within ``activity_timeout``; None: no limit, the default, since
    activities may run long) goes to another worker, and the late answer is dropped;
    an MS worker's ``maxConcurrentOrchestrationWorkItems`` and
    ``maxConcurrentActivityWorkItems`` bound what it is handed at once; at most
    ``max_waiting`` callers wait in WaitForInstanceStart/Completion at once, each
    woken when the instance's status changes.
    """

    def __init__(
        self,
        store: str | ObjectStore = "file://./.durable",
        *,
        host: str = "127.0.0.1",
        port: int = 4001,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_client_ca: str | None = None,
        api_token: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        ping_interval: float = 30.0,
        poll_interval: float = 1.0,
        max_in_flight: int = 1000,
        fleet: Fleet | None = None,
        keepalive: float | None = 30.0,
        keepalive_timeout: float = 20.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connections: int | None = None,
        turn_timeout: float | None = 300.0,
        activity_timeout: float | None = None,
        max_waiting: int = DEFAULT_MAX_WAITING,
        telemetry: bool | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        if tls_client_ca is not None and tls_cert is None:
            raise ValueError("tls_client_ca (mTLS) needs tls_cert and tls_key")
        check_token(api_token)
        if (keepalive is not None and keepalive <= 0) or keepalive_timeout <= 0:
            raise ValueError("keepalive and keepalive_timeout must be positive seconds")
        self.host = host
        self.port = port
        """The port served (the one picked, once started with ``port=0``)."""
        self._tls = (tls_cert, tls_key) if tls_cert and tls_key else None
        self._client_ca = tls_client_ca
        self.dispatcher = Dispatcher()
        executor = RemoteExecutor(self.dispatcher, self._load_history)
        self.runtime = Runtime(
            Registry(), store=store, storage_options=storage_options, clock=clock,
            codec=RawCodec(), max_concurrent_workflows=max_in_flight,
            max_concurrent_activities=max_in_flight, poll_interval=poll_interval,
            fleet=fleet, telemetry=telemetry, tracer_provider=tracer_provider,
            meter_provider=meter_provider, _executor=executor,
        )  # fmt: skip
        self.client = Client(
            self.runtime.store, registry=None, clock=self.runtime.clock, codec=RawCodec(),
            memo_store=self.runtime.memo_store, ids=self.runtime.client.ids,
            _engine=self.runtime._engine,
        )  # fmt: skip
        self.service = SidecarService(
            self.dispatcher, self.client, self.runtime.clock,
            api_token=api_token, ping_interval=ping_interval, max_message_size=max_message_size,
            max_waiting=max_waiting,
        )  # fmt: skip
        self._keepalive, self._keepalive_timeout = keepalive, keepalive_timeout
        self.connections = ConnectionGuard(
            self.runtime.clock, idle_timeout=idle_timeout,
            max_connections=max_connections or default_max_connections(),
        )  # fmt: skip
        config = _server_config(keepalive, keepalive_timeout)
        self.server = GuardedServer(
            [self.service], codec=BytesCodec(), guard=self.connections, config=config
        )
        self._accept_errors = AcceptErrorFilter()
        self._turn_timeout = _seconds(turn_timeout)
        self._activity_timeout = _seconds(activity_timeout)
        self._tasks: anyio.abc.TaskGroup | None = None
        """The grpclib server (for instrumentation, e.g. ``grpclib.events.listen``)."""

    @property
    def owner(self) -> str:
        """This sidecar's name in the fleet's lease objects."""
        return self.runtime.owner

    @property
    def partitions(self) -> list[int]:
        """The partitions this sidecar runs now (every one unless in a fleet)."""
        return self.runtime.partitions

    @property
    def sent(self) -> list[SentTurn]:
        """What went out for recent turns: messages in pastEvents/newEvents, the
        stateful-history ``eventCount`` of a delta, and bytes."""
        return list(self.service.sent)

    async def _load_history(self, instance_id: str) -> list[HistoryEvent]:
        return await self.client.get_handle(instance_id).history()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._tls is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self._tls)
        if self._client_ca is not None:  # mTLS: only clients with a certificate it signed
            context.load_verify_locations(self._client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["h2"])
        return context

    async def __aenter__(self) -> Sidecar:
        if self._tls is None and not _loopback(self.host):
            log.warning(_NO_TLS, self.host)
        await self.runtime.__aenter__()
        try:
            await self.server.start_tcp(self.host, self.port, ssl=self._ssl_context())
        except BaseException:
            await self.runtime.__aexit__(None, None, None)
            raise
        logging.getLogger("asyncio").addFilter(self._accept_errors)
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(supervised, self._sweep)
        sockets = getattr(self.server._server, "sockets", None)  # no public accessor
        if sockets:
            self.port = sockets[0].getsockname()[1]
            if self._keepalive is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
                # A frozen worker that stopped reading keeps unsent data queued, and a
                # close after an unanswered PING waits for it forever; the kernel drops
                # the connection instead (accepted sockets inherit the option).
                wait = int((self._keepalive + self._keepalive_timeout) * 1000)
                for listening in sockets:
                    listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, wait)
        return self

    async def _sweep(self) -> None:
        """Every second of the clock: close idle connections, move unanswered items."""
        clock = self.runtime.clock
        while True:
            await clock.sleep_until(clock.now() + _SWEEP)
            self.connections.sweep()
            self.dispatcher.expire(clock.now(), self._turn_timeout, self._activity_timeout)

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._tasks is not None:
            self._tasks.cancel_scope.cancel()
            await self._tasks.__aexit__(None, None, None)
            self._tasks = None
        logging.getLogger("asyncio").removeFilter(self._accept_errors)
        self.server.close()
        try:
            await self.server.wait_closed()
        finally:
            await self.runtime.__aexit__(*exc_info)


_SWEEP = timedelta(seconds=1)


def _seconds(value: float | None) -> timedelta | None:
    if value is not None and value <= 0:
        raise ValueError("a work-item timeout must be positive seconds (or None: none)")
    return None if value is None else timedelta(seconds=value)


def _loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (nothing else can reach it)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server_config(keepalive: float | None, timeout: float) -> Configuration:
    """grpclib's server settings: PING every ``keepalive`` seconds while a call is open
    (as often as that, however many in a row without data), close the connection when
    a PING goes unanswered for ``timeout`` seconds."""
    if keepalive is None:
        return Configuration(_keepalive_time=None)
    return Configuration(
        _keepalive_time=keepalive,
        _keepalive_timeout=timeout,
        _http2_max_pings_without_data=0,
        _http2_min_sent_ping_interval_without_data=keepalive,
    )
