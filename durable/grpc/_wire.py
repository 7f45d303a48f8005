"""Connections to a Durable Task sidecar, shared by the remote worker and client.

One grpclib ``Channel`` per worker or client (it reconnects by itself when a call
finds the connection gone), the ``dapr-api-token`` header when a token is set, and
unary calls made through the channel directly: the generated Dapr stub warns on
every ``CompleteOrchestratorTask`` call (deprecated in Dapr's proto, yet the one
every SDK uses), and a warning is an error under pytest's strict settings.
"""

from __future__ import annotations

import ssl as _ssl
from typing import TYPE_CHECKING, Literal, TypeVar

import grpclib.const
from google.protobuf.message import Message
from grpclib.client import Channel

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Dialect", "check_dialect", "metadata_for", "open_channel", "parse_target", "unary"]

Dialect = Literal["dapr", "ms"]
Reply = TypeVar("Reply", bound=Message)

_SERVICE = "/TaskHubSidecarService/"


def check_dialect(dialect: str) -> Dialect:
    """``dialect`` if it names one of the two wire dialects, else ValueError."""
    if dialect not in ("dapr", "ms"):
        raise ValueError(f"dialect must be 'dapr' or 'ms', not {dialect!r}")
    return dialect  # type: ignore[return-value]


def parse_target(target: str) -> tuple[str, int, bool]:
    """``host``, ``port`` and whether TLS is asked for, from ``host:port`` with an
    optional ``grpc://``/``http://`` (plain) or ``grpcs://``/``https://`` (TLS) prefix;
    IPv6 hosts go in brackets (``[::1]:4001``)."""
    tls = False
    for scheme, secure in (("grpcs://", True), ("https://", True), ("grpc://", False),
                           ("http://", False)):  # fmt: skip
        if target.startswith(scheme):
            target, tls = target[len(scheme) :].rstrip("/"), secure
            break
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target must be host:port, not {target!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port), tls


def open_channel(target: str, ssl: _ssl.SSLContext | bool | None) -> Channel:
    """A channel to ``target``; TLS when ``ssl`` is a context or True, or the target
    has a secure scheme. A context given is set to offer HTTP/2 by ALPN."""
    host, port, tls = parse_target(target)
    if isinstance(ssl, _ssl.SSLContext):
        ssl.set_alpn_protocols(["h2"])  # gRPC runs on HTTP/2: the server requires it
    return Channel(host, port, ssl=ssl if ssl is not None else (True if tls else None))


def metadata_for(api_token: str | None) -> Mapping[str, str] | None:
    """Request metadata: the ``dapr-api-token`` header when a token is set."""
    return {"dapr-api-token": api_token} if api_token else None


async def unary(
    channel: Channel,
    method: str,
    request: Message,
    reply_type: type[Reply],
    *,
    metadata: Mapping[str, str] | None,
    seconds: float | None,
) -> Reply:
    """Call ``/TaskHubSidecarService/{method}`` with one request, one reply."""
    async with channel.request(
        _SERVICE + method,
        grpclib.const.Cardinality.UNARY_UNARY,
        type(request),
        reply_type,
        timeout=seconds,
        metadata=metadata,
    ) as stream:
        await stream.send_message(request, end=True)
        reply = await stream.recv_message()
    if reply is None:
        raise ConnectionError(f"{method}: the sidecar sent no reply")
    return reply
