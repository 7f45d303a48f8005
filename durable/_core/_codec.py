"""Payload encoding: how inputs, outputs and event data become bytes in history.

msgspec JSON by default (readable, and what Durable Task peers expect); a custom
:class:`PayloadCodec` can replace it. Decoding follows the type hints of the function
that receives the value, so dataclasses, Structs, TypedDicts and datetimes round-trip.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Protocol, runtime_checkable

import msgspec

from durable._errors import SerializationError

if typing.TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["JsonCodec", "PayloadCodec", "hints_of"]

NULL = msgspec.Raw(b"null")


@runtime_checkable
class PayloadCodec(Protocol):
    """Turns payload values into bytes and back.

    The bytes must be one JSON value: history embeds them as they are, and Durable
    Task peers read them as JSON. (Compress or encrypt inside a JSON string.)
    """

    def encode(self, value: Any) -> bytes:
        """Encode ``value``; raise ``SerializationError`` when it cannot be."""
        ...

    def decode(self, data: bytes, type: Any = Any) -> Any:
        """Decode ``data`` as ``type``; raise ``SerializationError`` when it does not fit."""
        ...


class JsonCodec:
    """msgspec JSON, with one cached decoder per target type."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoders: dict[Any, msgspec.json.Decoder[Any]] = {}

    def encode(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError) as err:
            raise SerializationError(
                f"cannot encode a {type(value).__name__} payload: {err}"
            ) from err

    def decode(self, data: bytes, type: Any = Any) -> Any:
        decoder = self._decoders.get(type)
        if decoder is None:
            try:
                decoder = self._decoders[type] = msgspec.json.Decoder(type)
            except TypeError:
                decoder = self._decoders[type] = msgspec.json.Decoder()
        try:
            return decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise SerializationError(f"cannot decode payload as {type!r}: {err}") from err


def hints_of(fn: Callable[..., Any]) -> tuple[Any, Any]:
    """Return (input type, output type) of a ``(ctx, input) -> output`` function.

    Missing or unresolvable hints fall back to ``Any`` so plain JSON comes back.
    """
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    params = list(inspect.signature(fn).parameters.values())
    input_type: Any = Any
    if len(params) >= 2:
        input_type = hints.get(params[1].name, Any)
    output_type: Any = hints.get("return", Any)
    if output_type is type(None):
        output_type = Any
    return input_type, output_type
