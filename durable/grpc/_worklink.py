"""durable's worker stream, the worker's end: completions out, acknowledgements in.

A :class:`~durable.grpc.RemoteWorker` talking to durable's sidecar opens
``/durable.grpc.ext.DurableWorker/WorkStream`` (``protos/durable/grpc/ext``) instead of
``GetWorkItems``: one bidirectional call that brings the work items and takes their
completions, each answered by an ``Ack`` once the sidecar has applied it. That spares
a unary call (HTTP/2 headers both ways, a stream opened and closed) per completion.
:func:`open_link` opens it: a sidecar without it (a Dapr sidecar, durabletask-go,
an older durable) answers UNIMPLEMENTED, and the worker falls back to the standard
calls.

What the stream keeps of the unary calls' guarantees: a completion goes out on the
stream its item came on, and the sidecar applies it only if that stream still holds
the item (by the token of that send). The worker does not wait for acks: when the
stream breaks, the sidecar places every item it held and had not resolved again (a new
send, a new token), so nothing is lost and nothing applies twice. An applied
completion is acknowledged by the ``handled`` count on the next item or health ping
the sidecar sends (no message of its own); a dropped (stale) or refused one by an Ack
at once (on a refusal the worker reconnects, as when a unary completion fails); one
unacknowledged for too long drops the stream.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import anyio
from grpclib import GRPCError, Status

from ._framing import RawMessage, parse_own
from ._proto import ext

if TYPE_CHECKING:
    from grpclib.client import Stream

    from durable._clock import Clock

__all__ = ["WORK_STREAM", "Completion", "Refused", "WorkLink", "open_link", "unsupported"]

log = logging.getLogger("durable.grpc.worker")

WORK_STREAM = "/durable.grpc.ext.DurableWorker/WorkStream"
"""The route of durable's worker stream (built by hand, as the standard ones are)."""

Completion = Literal["completeTurn", "completeActivity"]
"""Which completion a message carries (its field in ``WorkerMessage``)."""


Refused = Callable[[Exception], None]
"""Told why, when the sidecar refuses a completion (its ack says REFUSED)."""


@dataclass(frozen=True, slots=True)
class _Unacked:
    """A completion sent (at ``sent``) whose ack has not come yet."""

    sent: datetime
    refused: Refused


class WorkLink:
    """One open work stream: sends completions and matches the sidecar's acks."""

    def __init__(self, stream: Stream[Any, Any], clock: Clock) -> None:
        self._stream = stream
        self._clock = clock
        self._lock = anyio.Lock(fast_acquire=True)
        self._seq = itertools.count(1)
        self._unacked: dict[int, _Unacked] = {}
        self._closed = False

    async def complete(self, kind: Completion, data: bytes, refused: Refused) -> None:
        """Send a completion (ConnectionError when the stream is gone). Its ack comes
        later, on the stream: ``refused`` hears of a refusal; a completion the sidecar
        had not applied when the stream broke is placed again by the sidecar (a new
        send), so nothing waits for acks here, and an overdue one breaks the stream
        (see :meth:`oldest`)."""
        if self._closed:
            raise ConnectionError("the work stream is closed")
        seq = next(self._seq)
        self._unacked[seq] = _Unacked(self._clock.now(), refused)
        message = ext.WorkerMessage(seq=seq, **{kind: data}).SerializeToString()
        async with self._lock:  # a message goes out whole: one sender at a time
            await self._stream.send_message(RawMessage(message))

    def received(self, data: bytes) -> bytes | None:
        """A message from the sidecar: the work item it carries (health pings
        included), or None (an Ack); either may count completions as handled."""
        message = parse_own(ext.SidecarMessage, data)
        if message.handled:
            self._handled(message.handled)
        kind = message.WhichOneof("kind")
        if kind == "workItem":
            return message.workItem
        if kind == "ack":
            ack = message.ack
            unacked = self._unacked.pop(ack.seq, None)
            if unacked is None:
                return None
            if ack.outcome == ext.ACK_REFUSED:
                unacked.refused(GRPCError(_status(ack.code), ack.message))
            elif ack.outcome == ext.ACK_DROPPED:
                log.info("the sidecar dropped a completion (stale: its item went elsewhere)")
        return None

    def _handled(self, seq: int) -> None:
        """Every completion up to ``seq`` was applied (or answered by an Ack)."""
        unacked = self._unacked
        while unacked:
            first = next(iter(unacked))  # the dict's order is the order they were sent
            if first > seq:
                return
            del unacked[first]

    def oldest(self) -> datetime | None:
        """When the oldest completion still waiting for its ack was sent (None: none
        waits). The worker's watchdog drops a stream whose ack is overdue, as a unary
        call would time out: one clock check, not a timer per completion."""
        for unacked in self._unacked.values():  # in the order they were sent
            return unacked.sent
        return None

    def close(self) -> None:
        """The stream ended: no more completions go on it, and no acks will come."""
        self._closed = True
        self._unacked.clear()


async def open_link(stream: Stream[Any, Any], request: bytes, clock: Clock) -> WorkLink:
    """Open the work stream ``stream`` with the dialect's ``GetWorkItemsRequest``
    ``request`` (``clock`` stamps completions). A sidecar without a work stream answers
    UNIMPLEMENTED: see :func:`unsupported`."""
    await stream.send_message(RawMessage(ext.WorkerMessage(open=request).SerializeToString()))
    await stream.recv_initial_metadata()
    return WorkLink(stream, clock)


def unsupported(err: BaseException) -> bool:
    """Whether ``err``, raised while opening a work stream, says the sidecar has none
    (grpclib servers answer UNIMPLEMENTED; grpcio ones reset the stream too, and the
    status comes out as the call closes)."""
    return isinstance(err, GRPCError) and err.status is Status.UNIMPLEMENTED


def _status(code: int) -> Status:
    """The gRPC status ``code`` names (UNKNOWN for a number gRPC does not define)."""
    try:
        return Status(code)
    except ValueError:
        return Status.UNKNOWN
