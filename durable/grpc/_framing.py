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

import functools
import hashlib
import struct
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, overload

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from durable._errors import DurableError

if TYPE_CHECKING:
    from google._upb._message import Descriptor as UpbDescriptor
    from google.protobuf.descriptor import Descriptor

__all__ = [
    "FIXED32",
    "FIXED64",
    "LENGTH_DELIMITED",
    "PAST_EVENTS",
    "TURN_REQUEST",
    "VARINT",
    "ENTITIES_UNSUPPORTED",
    "LazyEvents",
    "NotSupportedError",
    "ProtocolError",
    "RawMessage",
    "UndecodableError",
    "check_wire_types",
    "field_chunk",
    "parse",
    "parse_own",
    "split_field",
    "split_turn",
    "string_fields",
    "varint_bytes",
    "wire_fields",
]


class ProtocolError(DurableError, ValueError):
    """Raised when a Durable Task message is malformed, or asks for something durable's
    model has no counterpart for (sending an event, terminating another instance...)."""


class NotSupportedError(ProtocolError):
    """A Durable Task feature durable's sidecar does not implement, refused by name
    (gRPC UNIMPLEMENTED) rather than as a malformed message."""


ENTITIES_UNSUPPORTED = (
    "Durable Entities (call_entity, signal_entity, lock_entities and the entity RPCs) "
    "are not supported by durable's sidecar"
)


class UndecodableError(ProtocolError):
    """Bytes that do not parse as the message they should be: damaged on the way, not
    a request durable understood and refused."""


TURN_REQUEST = 1
"""``WorkItem.orchestratorRequest`` (MS) / ``WorkItem.workflowRequest`` (Dapr)."""
PAST_EVENTS = 3
"""``OrchestratorRequest.pastEvents`` / ``WorkflowRequest.pastEvents``."""

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
"""Protobuf wire types."""

E = TypeVar("E", bound=Message)


def parse(cls: type[E], data: bytes) -> E:
    """``data`` parsed as ``cls``; any decoding failure, and any field of a wire type
    its declaration does not allow (protobuf keeps those as unknown fields, so the value
    would vanish silently), is an :class:`UndecodableError`."""
    try:
        check_wire_types(cls.DESCRIPTOR, data)
    except UndecodableError as err:
        raise UndecodableError(f"cannot parse {cls.__name__}: {err}") from None
    return _parse(cls, data)


def parse_own(cls: type[E], data: bytes) -> E:
    """``data`` from durable's own peer parsed as ``cls``, without the wire-type check:
    both ends build their messages from the same schema (the past events a worker
    caches, the items on durable's work stream). Decoding failures still raise
    :class:`UndecodableError`."""
    return _parse(cls, data)


def _parse(cls: type[E], data: bytes) -> E:
    try:
        return cls.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise UndecodableError(f"cannot parse {cls.__name__}: {err}") from err


_WIRE_OF = {
    **dict.fromkeys((FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64,
                     FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64,
                     FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
                     FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM), VARINT),
    **dict.fromkeys((FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
                     FieldDescriptor.TYPE_DOUBLE), FIXED64),
    **dict.fromkeys((FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32,
                     FieldDescriptor.TYPE_FLOAT), FIXED32),
}  # fmt: skip
"""The wire type of each scalar proto type; the rest (strings, bytes, messages, maps)
are length-delimited."""


def check_wire_types(descriptor: Descriptor | UpbDescriptor, data: bytes, path: str = "") -> None:
    """Raise :class:`UndecodableError` for a field of ``data`` (a message of
    ``descriptor``, and its sub-messages, map entries and wrappers included) sent with a
    wire type its proto type cannot have. Repeated scalars may come packed; unknown
    fields are skipped, as protobuf does."""
    try:
        _check(descriptor, data)
    except _WrongWireType as err:
        raise UndecodableError(f"{path or descriptor.name + '.'}{err}") from None


class _WrongWireType(UndecodableError):
    """A field sent with a wire type it cannot have; its message starts with the
    field's path below the message checked, prefixed on the way out (the path costs
    nothing unless a check fails)."""


def _check(descriptor: Descriptor | UpbDescriptor, data: bytes) -> None:
    rules = _rules(descriptor)
    pos, size = 0, len(data)
    while pos < size:  # _fields, inlined: this runs on every message the sidecar reads
        start = pos
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise UndecodableError(f"field number 0 at byte {start}")
        value = pos
        if wire == LENGTH_DELIMITED:
            length, value = _read_varint(data, pos)
            pos = value + length
        elif wire == VARINT:
            _, pos = _read_varint(data, pos)
        elif wire == FIXED64:
            pos += 8
        elif wire == FIXED32:
            pos += 4
        else:
            raise UndecodableError(f"unsupported wire type {wire} for field {number}")
        if pos > size:
            raise UndecodableError(f"field {number} runs past the end of the message")
        rule = rules.get(number)
        if rule is None:
            continue
        expected, repeated, sub, name = rule
        if wire != expected and not (wire == LENGTH_DELIMITED and repeated):
            raise _WrongWireType(
                f"{name} (field {number}) sent with wire type {wire}, expected {expected}"
            )
        if sub is not None:
            try:
                _check(sub, data[value:pos])
            except _WrongWireType as err:
                raise _WrongWireType(f"{name}.{err}") from None


_Rule = tuple[int, bool, "Descriptor | UpbDescriptor | None", str]


@functools.cache
def _rules(descriptor: Descriptor | UpbDescriptor) -> dict[int, _Rule]:
    """Per field number of ``descriptor``: its wire type, whether it is repeated, its
    message type, its name. A pure function of a descriptor (they live as long as the
    process): worked out once, as every message parsed asks again."""
    return {
        number: (
            _WIRE_OF.get(field.type, LENGTH_DELIMITED),
            field.is_repeated,
            field.message_type,
            field.name,
        )
        for number, field in descriptor.fields_by_number.items()
    }


def varint_bytes(value: int) -> bytes:
    """``value`` (not negative) as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    if pos < len(data) and data[pos] < 0x80:  # one byte: most keys and lengths
        return data[pos], pos + 1
    result = shift = 0
    end = len(data)
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise UndecodableError(f"bad varint ending at byte {pos}")


def field_chunk(number: int, payload: bytes) -> bytes:
    """A length-delimited field ``number`` holding ``payload``, as it sits in a message."""
    return varint_bytes(number << 3 | LENGTH_DELIMITED) + varint_bytes(len(payload)) + payload


def _fields(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """Each top-level field of the message ``data``: (number, wire type, where the
    field starts, where its value starts, where it ends)."""
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise UndecodableError(f"field number 0 at byte {start}")
        value = pos
        if wire == VARINT:
            _, pos = _read_varint(data, pos)
        elif wire == FIXED64:
            pos += 8
        elif wire == LENGTH_DELIMITED:
            length, value = _read_varint(data, pos)
            pos = value + length
        elif wire == FIXED32:
            pos += 4
        else:
            raise UndecodableError(f"unsupported wire type {wire} for field {number}")
        if pos > end:
            raise UndecodableError(f"field {number} runs past the end of the message")
        yield number, wire, start, value, pos


def wire_fields(data: bytes) -> list[tuple[int, int]]:
    """``(field number, wire type)`` of each top-level field of an encoded message.

    protobuf keeps a field of the wrong wire type as an unknown field: where the
    dialects give one field number two types, a message parsed with the wrong class
    loses the value silently (an MS ``CreateInstanceRequest.requestTime`` Timestamp is
    not Dapr's ``enforceUniqueInstanceId``). Look here first:
    CreateInstanceRequest 10 (MS Timestamp: LENGTH_DELIMITED | Dapr bool: VARINT),
    PurgeInstancesRequest 4 (MS message | Dapr bool) and 5 (MS bool | Dapr message);
    GetWorkItemsRequest's numbers tell the dialect (MS 1-3, 10-12 | Dapr 4).
    """
    return [(number, wire) for number, wire, _, _, _ in _fields(data)]


def string_fields(data: bytes, numbers: tuple[int, ...]) -> dict[int, str]:
    """The top-level string fields ``numbers`` of the message ``data`` (the last
    occurrence of each, as protobuf reads them); other fields are skipped."""
    found: dict[int, str] = {}
    for number, wire, _, value, end in _fields(data):
        if number not in numbers:
            continue
        if wire != LENGTH_DELIMITED:
            raise UndecodableError(f"field {number} sent with wire type {wire}, expected 2")
        try:
            found[number] = data[value:end].decode()
        except UnicodeDecodeError as err:
            raise UndecodableError(f"field {number} is not UTF-8: {err}") from None
    return found


def split_field(data: bytes, number: int) -> tuple[list[bytes], bytes]:
    """The payloads of every length-delimited field ``number`` of the message ``data``,
    in order, and the message's other fields as they came (a message of their own)."""
    payloads: list[bytes] = []
    rest = bytearray()
    for field, wire, start, value, end in _fields(data):
        if field == number and wire == LENGTH_DELIMITED:
            payloads.append(data[value:end])
        else:
            rest += data[start:end]
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
            event = self._parsed[i] = _parse(self._cls, self._chunks[i])  # from its own sidecar
        return event

    def digest(self, count: int) -> bytes:
        """A digest of the first ``count`` events as encoded, each with its length: equal
        digests, same events (ids, names, payloads and timestamps alike)."""
        chunks = self._chunks[:count]
        lengths = struct.pack(f"<{len(chunks)}I", *map(len, chunks))
        return hashlib.blake2b(lengths + b"".join(chunks), digest_size=16).digest()


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
