"""Taking workflow turns for a remote worker: wire history in, actions out.

Sans-I/O: no stream, no RPC, no clock. :class:`TurnTaker` turns an orchestrator work
item's events (either dialect) into durable's events, runs them through a
:class:`~durable._core._replay.WorkflowRun`, and keeps the suspended run in the
:class:`~durable.grpc._cache.HistoryCache` for the next turn.

A cached run has already taken its last turn, so the events committed since it stood
on ``seen`` wire events are, in order, that turn's own new events and what its
actions recorded (sidecars may add bookkeeping events such as orchestratorCompleted,
which durable drops). A delta is trusted only if it starts with exactly those: the
rest of it (normally nothing) is replayed, then the new events run live. A request
that carries the whole history must also begin with the very bytes of the history the
run was fed (compared by digest, not parsed; a past event arrives as
:class:`~durable.grpc._framing.LazyEvents` and is parsed only if read). Anything else
is a miss, and a miss is always safe: replay the whole history from scratch.

Durable Task histories may put ``executionStarted`` after the first turn's
``orchestratorStarted`` (the ``durabletask`` backend does); durable's runs start
with ``WorkflowStarted``, so it is moved to the front before replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
from msgspec import Raw

from durable._core._actions import (
    Action,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordPatch,
    ScheduleActivity,
    SendEvent,
    StartChildWorkflow,
    StartTimer,
)
from durable._core._events import (
    NULL,
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    EventRaised,
    EventSent,
    HistoryEvent,
    PatchApplied,
    TimerCreated,
    TimerFired,
    TurnStarted,
    WorkflowStarted,
    WorkflowTerminated,
)
from durable._core._failure import FailureDetails, failure_from_exception
from durable._core._replay import WorkflowRun
from durable.grpc import _convert as cv
from durable.grpc._cache import CacheEntry
from durable.grpc._framing import LazyEvents, UndecodableError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from durable._core._codec import PayloadCodec
    from durable._registry import Registry
    from durable.grpc._cache import HistoryCache
    from durable.grpc._proto import dapr, ms

    WireEvent = ms.HistoryEvent | dapr.HistoryEvent

__all__ = ["TurnOutcome", "TurnTaker", "event_key"]

_SIZE = msgspec.json.Encoder()


@dataclass(slots=True)
class TurnOutcome:
    """What one turn decided, ready to be put on the wire.

    ``failure`` set: the turn could not be taken (unknown workflow, non-determinism,
    a malformed history); answer with a FAILED completion. ``terminated`` set: the run
    was terminated and nothing else ended it; answer with a TERMINATED completion.
    ``entry`` is the run to cache once the sidecar accepted the answer.
    """

    instance_id: str
    actions: list[Action] = field(default_factory=list)
    custom_status: Raw = field(default_factory=lambda: NULL)
    terminated: WorkflowTerminated | None = None
    failure: FailureDetails | None = None
    patches: list[str] = field(default_factory=list)
    version: str = ""
    entry: CacheEntry | None = None
    hit: bool = False
    replayed: int = 0
    """How many history events this turn replayed (0 on a cache hit with no surprises)."""


def event_key(event: HistoryEvent) -> tuple[object, ...]:
    """What must agree between an event the worker expects and the one committed:
    its kind and the ids and names it carries (not positions or timestamps, which the
    sidecar stamps)."""
    match event:
        case ActivityScheduled() | ChildWorkflowScheduled() | EventSent():
            return (type(event).__name__, event.task_id, event.name)
        case (
            TimerCreated()
            | TimerFired()
            | ActivityCompleted()
            | ActivityErrored()
            | ChildWorkflowCompleted()
            | ChildWorkflowErrored()
        ):
            return (type(event).__name__, event.task_id)
        case EventRaised() | WorkflowStarted():
            return (type(event).__name__, event.name)
    return (type(event).__name__,)


def _action_key(action: Action) -> tuple[object, ...] | None:
    """The key of the event a sidecar records for ``action`` (None: nothing keyed)."""
    match action:
        case ScheduleActivity():
            return ("ActivityScheduled", action.task_id, action.name)
        case StartTimer():
            return ("TimerCreated", action.task_id)
        case StartChildWorkflow():
            return ("ChildWorkflowScheduled", action.task_id, action.name)
        case SendEvent():
            return ("EventSent", action.task_id, action.name)
    return None


def _size(events: Sequence[HistoryEvent]) -> int:
    """Estimated bytes a run holds for having been fed ``events``."""
    return len(_SIZE.encode(events)) if events else 0


def _numbered(events: Sequence[HistoryEvent], first: int) -> list[HistoryEvent]:
    return [msgspec.structs.replace(e, event_id=first + i) for i, e in enumerate(events)]


def _run_id_of(events: Sequence[WireEvent]) -> str | None:
    """The execution id of the run whose history starts ``events`` (None: no start in
    its first events)."""
    for event in events[:4]:
        converted = cv.event_from_proto(event) if event.HasField("executionStarted") else None
        if isinstance(converted, WorkflowStarted):
            return converted.run_id
    return None


class TurnTaker:
    """Takes turns over wire histories, keeping suspended runs in ``cache``."""

    def __init__(self, registry: Registry, codec: PayloadCodec, cache: HistoryCache) -> None:
        self.registry = registry
        self.codec = codec
        self.cache = cache

    # -- entry points -----------------------------------------------------------------

    def take(
        self,
        instance_id: str,
        past: Sequence[WireEvent],
        new: Sequence[WireEvent],
        cached_count: int | None = None,
    ) -> TurnOutcome | None:
        """One turn of ``instance_id``. ``cached_count`` is the request's
        ``CachedHistory.eventCount`` (``past`` then holds only the events after it).

        Returns ``None`` when the request relies on history this worker does not hold:
        fetch the full committed history and call :meth:`replay`. Raises
        :class:`~durable.grpc._framing.UndecodableError` when a past event it needs does
        not parse (the item was damaged: have it sent again, do not fail the run).
        """
        entry = self.cache.take(instance_id)
        if entry is not None:
            outcome = self._from_cache(instance_id, entry, past, new, cached_count)
            if outcome is not None:
                self.cache.hits += 1
                return outcome
        self.cache.misses += 1
        if cached_count is not None:
            return None
        return self.replay(instance_id, past, new)

    def replay(
        self, instance_id: str, history: Sequence[WireEvent], new: Sequence[WireEvent]
    ) -> TurnOutcome:
        """One turn over the whole committed ``history``, with a fresh run."""
        try:
            pastEvents = cv.events_from_proto(history)
            new_events = cv.events_from_proto(new, first_event_id=len(pastEvents))
            expected = self._expected_of(new_events)
            pastEvents, new_events = _start_first(pastEvents, new_events)
            started = pastEvents[0]
            assert isinstance(started, WorkflowStarted)
            definition = self.registry.get_workflow(started.name, started.version or None)
            run = WorkflowRun(instance_id, definition, self.registry, self.codec)
        except UndecodableError:
            raise  # damaged bytes are not the workflow's failure: the caller asks again
        except Exception as exc:
            return TurnOutcome(instance_id, failure=failure_from_exception(exc))
        entry = CacheEntry(
            run=run,
            seen=len(history),
            expected=[],
            next_event_id=0,
            run_id=started.run_id,
            patches=[e.patch_id for e in pastEvents if isinstance(e, PatchApplied)],
            size=0,
            digest=_digest(history, len(history)),
        )
        outcome = self._run_turn(instance_id, entry, pastEvents, new_events, expected)
        outcome.replayed = len(pastEvents)
        return outcome

    def settle(self, outcome: TurnOutcome, *, generation: int) -> None:
        """Keep the turn's run for the next turn (``generation``: the cache's when the
        turn began; a cleared cache refuses it).

        Safe before the sidecar has accepted the answer: the next turn trusts the run
        only if the history it brings holds what this turn decided, so an answer that
        is dropped or lost costs a replay, never a wrong turn. Kept before sending, the
        run is there even when the next turn arrives before the completion's reply.
        """
        if outcome.entry is not None:
            self.cache.put(outcome.instance_id, outcome.entry, generation=generation)

    def discard(self, outcome: TurnOutcome) -> None:
        """The answer did not reach the sidecar: forget the turn's run."""
        if outcome.entry is not None:
            self.cache.discard(outcome.instance_id, outcome.entry)
            outcome.entry = None

    # -- internals --------------------------------------------------------------------

    def _from_cache(
        self,
        instance_id: str,
        entry: CacheEntry,
        past: Sequence[WireEvent],
        new: Sequence[WireEvent],
        cached_count: int | None,
    ) -> TurnOutcome | None:
        """The turn on the cached run, or None (the run closed) if the delta is not
        what it expects."""
        if cached_count is not None:
            if cached_count != entry.seen:
                entry.run.close()
                return None
            delta_wire, seen, digest = past, cached_count + len(past), None
        else:
            digest = _digest(past, entry.seen) if entry.digest is not None else None
            if len(past) < entry.seen or (
                entry.digest != digest  # the part the run saw changed
                if digest is not None
                else _run_id_of(past) not in (None, entry.run_id)
            ):
                entry.run.close()
                return None
            delta_wire, seen, digest = past[entry.seen :], len(past), _digest(past, len(past))
        try:
            delta = [
                e
                for e in cv.events_from_proto(delta_wire)
                if not (isinstance(e, PatchApplied) and e.patch_id in entry.patches)
            ]
            new_events = cv.events_from_proto(new)
        except Exception:
            entry.run.close()
            return None
        count = len(entry.expected)
        if _normal([event_key(e) for e in delta[:count]]) != _normal(entry.expected) or any(
            isinstance(e, WorkflowStarted) for e in (*delta[count:], *new_events)
        ):
            entry.run.close()
            return None
        rest = _numbered(delta[count:], entry.next_event_id)
        try:
            entry.run.apply(rest, replaying=True)  # normally nothing
        except Exception:
            entry.run.close()
            return None
        entry.next_event_id += len(rest)
        entry.seen = seen
        entry.digest = digest
        entry.size += _size(rest)
        entry.patches += [e.patch_id for e in rest if isinstance(e, PatchApplied)]
        new_events = _numbered(new_events, entry.next_event_id)
        outcome = self._run_turn(instance_id, entry, [], new_events, self._expected_of(new_events))
        outcome.hit = True
        outcome.replayed = len(rest)
        return outcome

    @staticmethod
    def _expected_of(new_events: Sequence[HistoryEvent]) -> list[tuple[object, ...]]:
        """Keys of the new events as the sidecar will commit them (wire order)."""
        return [event_key(e) for e in new_events if not isinstance(e, PatchApplied)]

    def _run_turn(
        self,
        instance_id: str,
        entry: CacheEntry,
        past: list[HistoryEvent],
        new: list[HistoryEvent],
        expected: list[tuple[object, ...]],
    ) -> TurnOutcome:
        """Replay ``past`` and run ``new`` live on ``entry.run``; fill in the outcome."""
        run = entry.run
        try:
            if past:
                past = _numbered(past, entry.next_event_id)
                run.apply(past, replaying=True)
            actions = run.take_pending()
            new = _numbered(new, entry.next_event_id + len(past))
            actions += run.apply(new, replaying=False)
        except Exception as exc:
            run.close()
            return TurnOutcome(instance_id, failure=failure_from_exception(exc))
        entry.next_event_id += len(past) + len(new)
        entry.size += _size(past) + _size(new)
        entry.patches += [e.patch_id for e in past if isinstance(e, PatchApplied)]
        entry.patches += [a.patch_id for a in actions if isinstance(a, RecordPatch)]
        outcome = TurnOutcome(
            instance_id,
            actions=actions,
            custom_status=run.custom_status,
            patches=list(dict.fromkeys(entry.patches)),
            version=run.definition.version,
        )
        ended = any(isinstance(a, CompleteWorkflow | FailWorkflow | ContinueAsNew) for a in actions)
        if run.terminated and not ended:
            outcome.terminated = next(
                (e for e in reversed(new) if isinstance(e, WorkflowTerminated)),
                WorkflowTerminated(),
            )
        if ended or run.finished:
            run.close()
            return outcome
        entry.expected = expected + [k for a in actions if (k := _action_key(a)) is not None]
        outcome.entry = entry
        return outcome


def _digest(events: Sequence[WireEvent], count: int) -> bytes | None:
    """The digest of the first ``count`` of ``events`` as received (None: not kept
    encoded, so nothing to compare)."""
    return events.digest(count) if isinstance(events, LazyEvents) else None


def _normal(keys: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """``keys`` with a run's start before its first turn start: sidecars commit the two
    in either order (durable's own log puts the start first)."""
    if len(keys) >= 2 and keys[0] == ("TurnStarted",) and keys[1][0] == "WorkflowStarted":
        return [keys[1], keys[0], *keys[2:]]
    return keys


def _start_first(
    past: list[HistoryEvent], new: list[HistoryEvent]
) -> tuple[list[HistoryEvent], list[HistoryEvent]]:
    """Move the run's WorkflowStarted to the front of the replayed part.

    Only turn starts may come before it; it may sit in ``new`` (a first turn), in
    which case it moves to ``past``, since durable replays it before the turn.
    """
    index = 0
    for index, event in enumerate([*past, *new]):  # noqa: B007 (used after the loop)
        if isinstance(event, WorkflowStarted):
            break
        if not isinstance(event, TurnStarted):
            raise cv.ProtocolError(
                f"history starts with {type(event).__name__} before its executionStarted"
            )
    else:
        raise cv.ProtocolError("the history has no executionStarted event")
    if index < len(past):
        started = past[index]
        return [started, *past[:index], *past[index + 1 :]], new
    at = index - len(past)
    return [event, *past], [*new[:at], *new[at + 1 :]]
