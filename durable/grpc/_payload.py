"""Payloads between the wire and the store: opaque text in, the same text out.

A Durable Task payload (an input, a result, an event's data, a custom status) is a
``StringValue`` the SDKs fill with JSON text. The store keeps payloads as
``msgspec.Raw`` inside its JSON records, so text that is not exactly one JSON value
(``null,"status":"COMPLETED"``, a bare word, padding around a value) would be spliced
into the record and change its meaning or make it unreadable. :func:`payload_from_proto`
stores such text as data instead: a JSON string inside an object whose only key is
:data:`TEXT_KEY`. :func:`payload_to_proto` gives the text back, so whatever a client
sends it reads back as sent.

The mapping is one to one: a plain JSON value is stored as it is (readable, and what
existing stores hold), and a JSON value that happens to begin like the wrapper is
wrapped too, so nothing a client sends reads back as something else. Only an absent
StringValue is no payload (the store's ``null``, what the SDKs send for ``None``); the
empty text and the text ``null`` are texts like any other and read back as sent.
"""

from __future__ import annotations

import msgspec
from msgspec import Raw

from durable._core._events import NULL

__all__ = ["TEXT_KEY", "payload_from_proto", "payload_to_proto"]

TEXT_KEY = "$durable.text"
"""The key of the object that holds a payload's text as a JSON string."""

_WRAPPED = b'{"' + TEXT_KEY.encode() + b'":'
_BLANK = b" \t\r\n"


class _Text(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str = msgspec.field(name=TEXT_KEY)


_encode_text = msgspec.json.Encoder().encode
_decode_text = msgspec.json.Decoder(_Text).decode


def _plain(data: bytes) -> bool:
    """Whether ``data`` is exactly one JSON value (valid UTF-8, no padding) that cannot
    be taken for a wrapped text nor for no payload: stored as it is."""
    if not data or data == b"null" or data.startswith(_WRAPPED):
        return False
    if data[0] in _BLANK or data[-1] in _BLANK:
        return False
    try:
        msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def payload_from_proto(text: str | None) -> Raw:
    """What the store keeps for a StringValue's text: the JSON value itself, or the
    text wrapped as data when it is anything else (empty and ``null`` included); absent
    becomes the store's ``null``."""
    if text is None:
        return NULL
    data = text.encode()
    if _plain(data):
        return Raw(data)
    return Raw(_encode_text(_Text(text)))


def payload_to_proto(payload: Raw) -> str | None:
    """The text a StringValue carries for a stored payload (the text a client sent, for
    a wrapped one); ``null`` becomes absent."""
    data = bytes(payload)
    if data == b"null":
        return None
    if data.startswith(_WRAPPED):
        try:
            return _decode_text(data).text
        except msgspec.DecodeError:
            pass  # a JSON object of the caller's that only looks wrapped: as it is
    return data.decode()
