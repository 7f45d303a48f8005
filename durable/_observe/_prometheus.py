"""``--metrics HOST:PORT``: the runtime's metrics served for Prometheus to scrape.

The OpenTelemetry SDK's Prometheus reader turns the instruments into Prometheus
families; a small anyio listener answers ``GET /metrics`` with them (no thread).
Needs the ``durable[prometheus]`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from durable._errors import DurableError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MetricsEndpoint"]

_MAX_REQUEST = 16 * 1024


class MetricsEndpoint:
    """A meter provider whose metrics ``serve`` answers on ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from opentelemetry.sdk.metrics import MeterProvider
            from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        except ImportError as err:
            raise DurableError(
                f"--metrics needs the prometheus extra (pip install 'durable[prometheus]'): {err}"
            ) from None
        self.host, self.port = host, port
        self._registry = CollectorRegistry()  # this endpoint's own, not the process default
        reader = PrometheusMetricReader(registry=self._registry)
        self.meter_provider: Any = MeterProvider(metric_readers=[reader])
        self._render: Callable[[], bytes] = lambda: generate_latest(self._registry)
        self._content_type = CONTENT_TYPE_LATEST

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer scrapes until cancelled; reports the port bound once listening."""
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        async with listener:
            socket = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_address)
            self.port = int(socket[1])
            task_status.started(self.port)
            await listener.serve(self._answer)

    async def _answer(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            request = b""
            try:
                while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                    request += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            method, _, rest = request.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method != b"GET" or path not in (b"/metrics", b"/"):
                await _reply(stream, b"404 Not Found", b"text/plain", b"not found\n")
                return
            await _reply(stream, b"200 OK", self._content_type.encode(), self._render())


async def _reply(stream: anyio.abc.SocketStream, status: bytes, kind: bytes, body: bytes) -> None:
    head = (b"HTTP/1.0 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
    try:
        await stream.send(head + body)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
