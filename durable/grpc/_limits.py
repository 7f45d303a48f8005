"""Message size limits at the sidecar's edge.

A gRPC message comes as a 5-byte prefix (a compression flag and the length) and then
its bytes. :func:`receive` reads the prefix alone and refuses a message over the limit
with RESOURCE_EXHAUSTED before any of its bytes are read, so HTTP/2 flow control holds
the sender back: a client cannot make the sidecar buffer what it will refuse.
:func:`too_big` is the failure of a work item that would exceed a worker's limit: its
instance fails, naming the size, instead of the item being sent again forever.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import h2.exceptions
from grpclib import GRPCError, Status

from durable._core._actions import FailWorkflow
from durable._core._events import ActivityErrored
from durable._core._failure import FailureDetails

from ._dispatch import ActivityWork
from ._framing import ProtocolError
from ._remote import TurnOutcome

if TYPE_CHECKING:
    from grpclib.server import Stream

    from ._dispatch import Item

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "DEFAULT_MAX_WAITING",
    "MessageTooLarge",
    "Waiting",
    "checked_reply",
    "receive",
    "receive_next",
    "too_big",
]

DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
"""4 MiB, gRPC's usual default both ways (grpcio workers refuse more unless told)."""


DEFAULT_MAX_WAITING = 10_000
"""Callers that may wait in WaitForInstanceStart/Completion at once."""


class Waiting:
    """Counts the callers waiting for an instance; one over ``limit`` is refused
    (RESOURCE_EXHAUSTED) rather than let waiters pile up without end."""

    def __init__(self, limit: int = DEFAULT_MAX_WAITING) -> None:
        if limit < 1:
            raise ValueError("the limit of waiting callers must be positive")
        self.limit = limit
        self.now = 0

    async def __aenter__(self) -> None:
        if self.now >= self.limit:
            busy = f"{self.now} callers wait for instances already: try again later"
            raise GRPCError(Status.RESOURCE_EXHAUSTED, busy)
        self.now += 1

    async def __aexit__(self, *exc_info: object) -> None:
        self.now -= 1


class MessageTooLarge(GRPCError):
    """A message over the sidecar's ``max_message_size``: RESOURCE_EXHAUSTED."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            Status.RESOURCE_EXHAUSTED,
            f"{what} of {size} bytes is over the limit of {limit} bytes (max_message_size)",
        )


async def receive(stream: Stream[Any, Any], limit: int) -> bytes:
    """The call's one request message, refused unread when over ``limit`` bytes."""
    data = await receive_next(stream, limit)
    if data is None:
        raise ProtocolError("the call sent no request message")
    return data


async def receive_next(stream: Stream[Any, Any], limit: int) -> bytes | None:
    """The call's next message (``None``: the client sent its last), refused unread
    when over ``limit`` bytes."""
    inner = stream._stream  # grpclib reads the whole message at once: read the prefix first
    prefix = await inner.recv_data(5)
    if not prefix:
        return None
    if len(prefix) < 5:
        raise ProtocolError("the call ended inside a message's length prefix")
    if prefix[0]:
        raise ProtocolError("compressed messages are not supported")
    size = int.from_bytes(prefix[1:], "big")
    if size > limit:
        refused = MessageTooLarge("a request", size, limit)
        # answer now, then reset the stream: the client stops sending what no one reads
        await stream.send_trailing_metadata(status=refused.status, status_message=refused.message)
        with contextlib.suppress(h2.exceptions.StreamClosedError):  # closed at its end too
            await stream.cancel()
        raise refused
    data = await inner.recv_data(size)
    if len(data) != size:
        raise ProtocolError(f"the call ended {size - len(data)} bytes before its message did")
    return data


def checked_reply(reply: bytes, limit: int) -> bytes:
    """``reply``, unless it is over ``limit`` bytes (the client would refuse it)."""
    if len(reply) > limit:
        raise MessageTooLarge("the reply", len(reply), limit)
    return reply


def too_big(item: Item, size: int, limit: int) -> TurnOutcome | ActivityErrored:
    """What an item a worker cannot receive resolves to: a failed turn (the instance
    fails) or a failed activity attempt, saying why and what to do."""
    failure = FailureDetails(
        "MessageTooLarge",
        f"the work item for {item.work.instance_id!r} is {size} bytes, over the "
        f"{limit}-byte message limit workers accept: keep big payloads in a blob store "
        "and pass references, or raise --max-message-size on the sidecar and its workers",
    )
    if isinstance(item.work, ActivityWork):
        return ActivityErrored(task_id=item.work.scheduled.task_id, failure=failure)
    return TurnOutcome([FailWorkflow(failure)])
