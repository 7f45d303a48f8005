"""Search attributes, without I/O: checking names and values, their encoded form, and
the attributes a run's history gives it.

A value is kept encoded as a string that says its type (``s:ada``, ``i:42``, ``b:1``,
``t:2026-01-02T03:04:05.000000+00:00``), in history as in the store's index: equal
values encode equally (a datetime in UTC), and decoding gives back the same type.
Each current attribute remembers the event that set it (its ``at``: run id and event
id), which names its index entry: no two settings ever share an entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from durable._errors import SearchAttributeError

if TYPE_CHECKING:
    from ._events import HistoryEvent

__all__ = [
    "MAX_ATTRIBUTES",
    "Indexed",
    "SearchValue",
    "check_search",
    "check_upsert",
    "decode_value",
    "decode_values",
    "encode_value",
    "fold",
    "parse_where",
    "search_of",
]

SearchValue = str | int | bool | datetime

MAX_ATTRIBUTES = 32  # attributes an instance may hold at once
_MAX_STR = 160  # UTF-8 bytes of a str value (its encoded form is one object key segment)
_INT_RANGE = range(-(2**63), 2**63)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class Indexed(msgspec.Struct, frozen=True, array_like=True):
    """A current attribute: its encoded ``value``, and ``at`` (``{run_id}-{event_id}``),
    the event that set it, which names its index entry."""

    value: str
    at: str


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SearchAttributeError(
            f"search attribute name {name!r}: expected a str of 1 to 64 letters, digits, "
            "'_', '.' or '-', not starting with a digit, '.' or '-'"
        )
    return name


def encode_value(name: str, value: object) -> str:
    """The encoded form of ``value``; ``SearchAttributeError`` naming the attribute if it
    is not a str, int, bool or timezone-aware datetime within bounds."""
    if isinstance(value, bool):  # (before int: a bool is an int)
        return "b:1" if value else "b:0"
    if isinstance(value, int):
        if value not in _INT_RANGE:
            raise SearchAttributeError(f"search attribute {name!r}: {value} is out of int64")
        return f"i:{value}"
    if isinstance(value, str):
        if len(value.encode()) > _MAX_STR:
            raise SearchAttributeError(
                f"search attribute {name!r}: a str value holds at most {_MAX_STR} UTF-8 bytes"
            )
        return f"s:{value}"
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise SearchAttributeError(
                f"search attribute {name!r}: a datetime value must be timezone-aware"
            )
        return "t:" + value.astimezone(UTC).isoformat(timespec="microseconds")
    raise SearchAttributeError(
        f"search attribute {name!r}: expected str, int, bool or datetime, "
        f"got {type(value).__name__}"
    )


def decode_value(encoded: str) -> SearchValue:
    """The value an encoded form stands for (an unknown form reads as the str it is)."""
    kind, _, text = encoded.partition(":")
    try:
        if kind == "s":
            return text
        if kind == "i":
            return int(text)
        if kind == "b":
            return text == "1"
        if kind == "t":
            return datetime.fromisoformat(text)
    except ValueError:
        pass
    return encoded


def decode_values(search: Mapping[str, Indexed]) -> dict[str, SearchValue]:
    """The values of current attributes, decoded, by name."""
    return {name: decode_value(indexed.value) for name, indexed in sorted(search.items())}


def _mapping(attributes: object, what: str) -> Mapping[Any, Any]:
    if not isinstance(attributes, Mapping):
        raise SearchAttributeError(
            f"{what}: expected a mapping of names to values, got {type(attributes).__name__}"
        )
    if len(attributes) > MAX_ATTRIBUTES:
        raise SearchAttributeError(f"{what}: at most {MAX_ATTRIBUTES} attributes")
    return attributes


def check_search(attributes: object) -> dict[str, str]:
    """Attributes given at a start, or as a listing's filter: checked, encoded."""
    given = _mapping(attributes, "search attributes")
    return {_check_name(name): encode_value(name, value) for name, value in given.items()}


def check_upsert(attributes: object) -> dict[str, str | None]:
    """An upsert's attributes: checked, encoded (``None`` removes an attribute)."""
    given = _mapping(attributes, "upsert_search_attributes")
    return {
        _check_name(name): None if value is None else encode_value(name, value)
        for name, value in given.items()
    }


def fold(search: dict[str, Indexed], events: Iterable[HistoryEvent], run_id: str) -> bool:
    """Apply what ``events`` of run ``run_id`` set to ``search`` (in place): a run's start
    sets its attributes anew (and its run id holds for the events after it), an upsert
    changes some; a value set again keeps its entry. Returns whether anything changed."""
    from ._events import SearchAttributesUpserted, WorkflowStarted

    changed = False
    for event in events:
        if type(event) is WorkflowStarted:
            run_id = event.run_id
            at = f"{run_id}-{event.event_id}"
            fresh = {name: Indexed(value, at) for name, value in event.search_attributes.items()}
            if fresh != search:
                search.clear()
                search.update(fresh)
                changed = True
        elif type(event) is SearchAttributesUpserted:
            at = f"{run_id}-{event.event_id}"
            for name, value in event.attributes.items():
                old = search.get(name)
                if value is None:
                    if old is not None:
                        del search[name]
                        changed = True
                elif old is None or old.value != value:
                    search[name] = Indexed(value, at)
                    changed = True
    return changed


def search_of(history: Iterable[HistoryEvent]) -> dict[str, Indexed]:
    """The attributes a run's history (its start first) leaves it with."""
    search: dict[str, Indexed] = {}
    fold(search, history, "")
    return search


def parse_where(terms: Iterable[str]) -> dict[str, SearchValue]:
    """``key=value`` terms (a str; ``key:=value``: an int, ``true``, ``false`` or an ISO
    time with its offset) as attributes to search by (``durable list --where``, the
    console's filter); ``SearchAttributeError`` for a term that is neither."""
    found: dict[str, SearchValue] = {}
    for term in terms:
        key, typed, text = term.partition(":=")
        if not typed:
            key, eq, text = term.partition("=")
            if not eq:
                raise SearchAttributeError(f"{term!r}: expected key=value or key:=value")
            found[key.strip()] = text
            continue
        key = key.strip()
        if text in ("true", "false"):
            found[key] = text == "true"
        elif text.lstrip("-").isdigit():
            found[key] = int(text)
        else:
            try:
                found[key] = datetime.fromisoformat(text)
            except ValueError:
                raise SearchAttributeError(
                    f"{term!r}: after := an int, true, false or an ISO time"
                ) from None
    return found
