"""Converted histories of recent runs, so a turn converts only what the last one added.

A run's committed history only grows, a turn at a time, and every committed turn
starts with ``TurnStarted``: so the protobuf form of a longer history is the form of a
shorter one plus the conversion of the turns committed since (the module docstring of
``_convert`` says why a history cut at a turn start converts to a prefix of the
whole). :class:`PastCache` keeps, per (dialect, instance, run), how many of durable's
events it converted, the last of them (to check the history still begins the same
way), and the messages encoded as ``pastEvents`` field chunks, ready to be joined into
a request (:mod:`durable.grpc._framing`); anything unexpected converts the whole
history. Without it, every turn would convert and encode the whole history even when a
stateful-history stream then sends only its tail.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Literal

from durable._core._events import TurnStarted, WorkflowStarted

from . import _convert as cv
from ._framing import PAST_EVENTS, field_chunk

if TYPE_CHECKING:
    from durable._core._events import HistoryEvent

    from ._dispatch import TurnWork
    from ._proto import dapr, ms

__all__ = ["PastCache"]

Wire = Literal["ms", "dapr"]


class PastCache:
    """The encoded ``pastEvents`` of the ``limit`` most recently sent runs."""

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        # (dialect, instance, run) -> (events converted, the last of them, chunks)
        self._runs: OrderedDict[tuple[Wire, str, str], tuple[int, HistoryEvent, list[bytes]]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._runs)

    def ms(self, work: TurnWork) -> list[bytes]:
        """``work.past`` in the MS dialect, each event a ``pastEvents`` field chunk."""
        start, done = self._lookup("ms", work)
        tail = cv.events_to_ms(work.past[start:], instance_id=work.instance_id,
                               task_base=work.task_base)  # fmt: skip
        done.extend(_chunks(tail))  # in place: the cache gave it up (see _lookup)
        return self._store("ms", work, done)

    def dapr(self, work: TurnWork) -> list[bytes]:
        """``work.past`` in the Dapr dialect, each event a ``pastEvents`` field chunk."""
        start, done = self._lookup("dapr", work)
        if start == 0:
            tail = cv.events_to_dapr(work.past, instance_id=work.instance_id,
                                     task_base=work.task_base)  # fmt: skip
        else:  # the run's WorkflowStarted first, for the version every turn start names
            started = next(e for e in work.past[:2] if isinstance(e, WorkflowStarted))
            tail = cv.events_to_dapr([started, *work.past[start:]], instance_id=work.instance_id,
                                     task_base=work.task_base)[1:]  # fmt: skip
        done.extend(_chunks(tail))  # in place: the cache gave it up (see _lookup)
        return self._store("dapr", work, done)

    def _lookup(self, wire: Wire, work: TurnWork) -> tuple[int, list[bytes]]:
        """(events already converted, their messages): (0, []) unless the cached prefix
        still begins ``work.past`` and what follows it starts at a turn start. The list
        leaves the cache (the caller extends it and stores it again): a turn's copy of
        the whole history would make a run's turns cost the square of its length."""
        hit = self._runs.pop((wire, work.instance_id, work.run_id), None)
        if hit is None:
            return 0, []
        count, last, converted = hit
        past = work.past
        if not 0 < count <= len(past) or past[count - 1] != last:
            return 0, []
        if count < len(past) and not isinstance(past[count], TurnStarted):
            return 0, []
        if not any(isinstance(e, WorkflowStarted) for e in past[:2]):
            return 0, []
        return count, converted

    def _store(self, wire: Wire, work: TurnWork, converted: list[bytes]) -> list[bytes]:
        if work.past:
            self._runs[(wire, work.instance_id, work.run_id)] = (
                len(work.past), work.past[-1], converted,
            )  # fmt: skip
            while len(self._runs) > self._limit:
                self._runs.popitem(last=False)
        return converted


def _chunks(messages: list[ms.HistoryEvent] | list[dapr.HistoryEvent]) -> list[bytes]:
    return [field_chunk(PAST_EVENTS, m.SerializeToString()) for m in messages]
