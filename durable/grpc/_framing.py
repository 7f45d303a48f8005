"""Protobuf framing by hand, so a long history is encoded once and parsed once.

A turn's ``pastEvents`` is most of what a work item carries, and from one turn to the
next it only grows at its end. The sidecar keeps each past event encoded as its field
chunk (:func:`field_chunk`) and joins the chunks into the request instead of encoding
the whole history again; a worker splits a received request (:func:`split_turn`) and
parses only the events it asks for (:class:`LazyEvents`). Both dialects put the turn
request in ``WorkItem`` field 1 and its ``pastEvents`` in field 3, so the framing is
the same for both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar, overload

import betterproto

from ._convert import ProtocolError

__all__ = [
    "PAST_EVENTS",
    "TURN_REQUEST",
    "LazyEvents",
    "RawMessage",
    "field_chunk",
    "parse",
    "split_field",
    "split_turn",
]

TURN_REQUEST = 1
"""``WorkItem.orchestratorRequest`` (MS) / ``WorkItem.workflowRequest`` (Dapr)."""
PAST_EVENTS = 3
"""``OrchestratorRequest.pastEvents`` / ``WorkflowRequest.pastEvents``."""

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5

E = TypeVar("E", bound=betterproto.Message)


def parse(cls: type[E], data: bytes) -> E:
    """``data`` parsed as ``cls``; any decoding failure is a :class:`ProtocolError`."""
    try:
        return cls().parse(data)
    except Exception as err:  # betterproto raises whatever its decoders hit
        raise ProtocolError(f"cannot parse {cls.__name__}: {err}") from err


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = len(data)
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise ProtocolError(f"bad varint ending at byte {pos}")


def field_chunk(number: int, payload: bytes) -> bytes:
    """A length-delimited field ``number`` holding ``payload``, as it sits in a message."""
    return _varint_bytes(number << 3 | _LENGTH_DELIMITED) + _varint_bytes(len(payload)) + payload


def split_field(data: bytes, number: int) -> tuple[list[bytes], bytes]:
    """The payloads of every length-delimited field ``number`` of the message ``data``,
    in order, and the message's other fields as they came (a message of their own)."""
    payloads: list[bytes] = []
    rest = bytearray()
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtocolError(f"field number 0 at byte {start}")
        if wire == _LENGTH_DELIMITED:
            length, pos = _read_varint(data, pos)
            if pos + length > end:
                raise ProtocolError(f"field {field} runs past the end of the message")
            if field == number:
                payloads.append(data[pos : pos + length])
                pos += length
                continue
            pos += length
        elif wire == _VARINT:
            _, pos = _read_varint(data, pos)
        elif wire == _FIXED64:
            pos += 8
        elif wire == _FIXED32:
            pos += 4
        else:
            raise ProtocolError(f"unsupported wire type {wire} for field {field}")
        if pos > end:
            raise ProtocolError(f"field {field} runs past the end of the message")
        rest += data[start:pos]
    return payloads, bytes(rest)


def split_turn(data: bytes) -> tuple[bytes, bytes, list[bytes]] | None:
    """A ``WorkItem`` holding a turn request, split: (the ``WorkItem`` without its
    request, the request without ``pastEvents``, each past event encoded). ``None``
    when the item holds no turn request."""
    requests, item = split_field(data, TURN_REQUEST)
    if not requests:
        return None
    if len(requests) > 1:  # protobuf merges repeated occurrences of a message field
        requests = [b"".join(requests)]
    past, request = split_field(requests[0], PAST_EVENTS)
    return item, request, past


class LazyEvents(Sequence[E], Generic[E]):
    """History events kept encoded, each parsed the first time it is read.

    A worker that holds a run's history needs only the events after those it has
    seen; the prefix it already has is compared by :meth:`digest`, never parsed.
    """

    __slots__ = ("_chunks", "_cls", "_parsed")

    def __init__(self, chunks: list[bytes], cls: type[E]) -> None:
        self._chunks = chunks
        self._cls = cls
        self._parsed: dict[int, E] = {}

    def __len__(self) -> int:
        return len(self._chunks)

    @overload
    def __getitem__(self, index: int) -> E: ...

    @overload
    def __getitem__(self, index: slice) -> list[E]: ...

    def __getitem__(self, index: int | slice) -> E | list[E]:
        if isinstance(index, slice):
            return [self._get(i) for i in range(*index.indices(len(self._chunks)))]
        if index < 0:
            index += len(self._chunks)
        if not 0 <= index < len(self._chunks):
            raise IndexError(index)
        return self._get(index)

    def __iter__(self) -> Iterator[E]:
        for i in range(len(self._chunks)):
            yield self._get(i)

    def _get(self, i: int) -> E:
        event = self._parsed.get(i)
        if event is None:
            event = self._parsed[i] = parse(self._cls, self._chunks[i])
        return event

    def digest(self, count: int) -> bytes:
        """A digest of the first ``count`` events as encoded: equal digests, same events
        (ids, names, payloads and timestamps alike)."""
        return hashlib.blake2b(b"".join(self._chunks[:count]), digest_size=16).digest()


class RawMessage:
    """A message type for grpclib that keeps the encoded bytes as they came, for a
    caller that frames or parses them itself."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def FromString(cls, data: bytes) -> RawMessage:
        return cls(data)

    def SerializeToString(self) -> bytes:
        return self.data
