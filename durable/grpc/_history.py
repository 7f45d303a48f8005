"""StreamInstanceHistory: an instance's history for an MS-dialect client, in chunks.

The SDKs' ``get_orchestration_history`` reads it. The events are those a worker
replays for the instance's current run (the same messages its work items carry), in
``HistoryChunk`` messages of at most :data:`CHUNK_BYTES` each (an event bigger than
that goes alone). An unknown instance is NOT_FOUND; ``executionId`` and
``forWorkItemProcessing`` are not read (the current run is the one kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from durable._core._events import WorkflowStarted

from . import _convert as cv
from ._framing import ProtocolError, parse
from ._proto import ms
from ._remote import wire_order

if TYPE_CHECKING:
    from durable._client import Client
    from durable._core._events import HistoryEvent

__all__ = ["CHUNK_BYTES", "history_chunks", "history_to_ms"]

CHUNK_BYTES = 256 * 1024
"""The most event bytes one HistoryChunk carries (unless one event is bigger)."""


def history_to_ms(instance_id: str, history: list[HistoryEvent]) -> list[ms.HistoryEvent]:
    """A run's whole committed history as an MS worker replays it."""
    started = history[0] if history else None
    base = started.first_task_id if isinstance(started, WorkflowStarted) else 0
    return cv.events_to_ms(wire_order(history), instance_id=instance_id, task_base=base)


def _field_one(body: bytes) -> bytes:
    """``body`` as one element of a HistoryChunk's ``events`` (field 1, length-delimited)."""
    size, head = len(body), bytearray(b"\x0a")
    while size > 0x7F:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head) + body


async def history_chunks(client: Client, data: bytes) -> list[bytes]:
    """The HistoryChunk messages answering a StreamInstanceHistoryRequest."""
    request = parse(ms.StreamInstanceHistoryRequest, data)
    if not request.instanceId:
        raise ProtocolError("instanceId is required")
    history = await client.get_handle(request.instanceId).history()
    chunks: list[bytes] = []
    chunk = bytearray()
    for event in history_to_ms(request.instanceId, history):
        part = _field_one(event.SerializeToString())
        if chunk and len(chunk) + len(part) > CHUNK_BYTES:
            chunks.append(bytes(chunk))
            chunk.clear()
        chunk += part
    if chunk or not chunks:
        chunks.append(bytes(chunk))
    return chunks
