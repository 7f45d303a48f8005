"""Hands work items to connected worker streams and matches their completions.

The sidecar's :class:`Dispatcher` knows nothing of protobuf: a work item is a
:class:`TurnWork` or :class:`ActivityWork` (durable's own events), a connected
``GetWorkItems`` call is a :class:`WorkerStream`, and the answer a worker sends back
is whatever the server decoded it into. What it owns:

- placement: a turn goes to the stream that holds the instance's history warm if there
  is one, anything else round-robin; with no stream connected, items wait in a queue
  (a workflow whose worker is not connected waits, it does not fail);
- correlation: every send of an item gets a completion token of its own (128 random
  bits), so only the stream it was sent to can answer or abandon it, and only for that
  send; a worker that sends no token (durabletask-js) is matched by instance (and task
  id, for activities), among the items held by streams of its own connection only;
- at-least-once: the items a stream held when it went away, that its worker
  abandoned, or that it did not answer in time (:meth:`Dispatcher.expire`), are
  placed again; a completion for an item already resolved (a stale or
  duplicate answer) is dropped, so nothing is applied twice.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from durable._core._events import ActivityScheduled, HistoryEvent

__all__ = ["ActivityWork", "Dialect", "Dispatcher", "Item", "TurnWork", "Warm", "WorkerStream"]

log = logging.getLogger("durable.grpc.dispatch")

Dialect = Literal["ms", "dapr", "minimal"]
"""How a stream speaks: Microsoft's dialect, Dapr 1.19's, or the minimal subset for an
empty ``GetWorkItemsRequest`` (Dapr 1.18.3, durabletask-js): no pings, no deltas."""

WARM_CAP = 1_000_000
"""Instances a stream remembers as warm at most (the oldest are forgotten first)."""


@dataclass(frozen=True, eq=False)
class TurnWork:
    """One workflow turn for a worker: ``past`` is the run's committed history and
    ``new`` the turn's events, both in the order a Durable Task worker expects.
    ``next_task`` is the first task id the turn's actions may use (every smaller one
    was used by an earlier turn)."""

    instance_id: str
    run_id: str
    past: list[HistoryEvent]
    new: list[HistoryEvent]
    task_base: int
    recorded_patches: frozenset[str] = frozenset()
    next_task: int = 0
    name: str = ""
    """The workflow's name and version (what work-item filters match)."""
    version: str = ""


@dataclass(frozen=True, eq=False)
class ActivityWork:
    """One activity attempt for a worker; ``wire_task_id`` is the id the worker sees,
    ``trace_parent`` the W3C context of the attempt's span (empty: not traced)."""

    instance_id: str
    run_id: str
    scheduled: ActivityScheduled
    wire_task_id: int
    trace_parent: str = ""
    version: str = ""
    """The version of the workflow that scheduled it (what work-item filters match)."""


@dataclass(frozen=True)
class Warm:
    """What a stateful-history worker caches of a run: ``messages`` history messages
    (the ``cachedHistory.eventCount`` to send), which are durable's first ``events``
    events of the run ``run_id``, the last of them ``last``."""

    run_id: str
    messages: int
    events: int
    last: HistoryEvent


@dataclass(eq=False)
class Item:
    """A work item in flight: placed on a stream or waiting for one. ``token`` names it
    inside the sidecar; ``wire_token`` is the completion token of its current send."""

    token: str
    work: TurnWork | ActivityWork
    wire_token: str = ""
    stream: WorkerStream | None = None
    dialect: Dialect = "dapr"
    """The dialect of the stream it was last sent to (how its completion is read)."""
    result: Any = None
    resolved: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)
    sends: int = 0
    """How many times it was placed on a stream."""
    waiting: bool = False
    """In the queue of items that wait for a stream."""
    sent_at: datetime | None = None
    """When it was placed on its stream (on the clock :meth:`Dispatcher.expire` gets)."""

    def __repr__(self) -> str:  # short: the work holds a whole history
        kind = type(self.work).__name__
        return f"Item({self.token!r}, {kind} of {self.work.instance_id!r}, sends={self.sends})"


@dataclass(eq=False)
class WorkerStream:
    """One connected ``GetWorkItems`` call and what the server sends on it.

    ``outbox`` yields items to send, and ``None`` for a health ping. ``accepts`` says
    which work the worker takes (its work-item filters; None: all). ``warm`` maps an
    instance to what its worker caches (kept only for streams that advertised stateful
    history): see :class:`Warm`. ``origin`` names the connection it came on (a
    tokenless completion is matched only among the items of streams of its connection).
    """

    number: int
    dialect: Dialect
    stateful: bool
    pings: bool
    outbox: MemoryObjectReceiveStream[Item | None]
    inbox: MemoryObjectSendStream[Item | None]
    held: dict[str, Item] = field(default_factory=dict)
    warm: dict[str, Warm] = field(default_factory=dict)
    origin: Hashable = None
    max_turns: int = 0
    """Turns the worker takes at once (its maxConcurrentOrchestrationWorkItems; 0: any)."""
    max_activities: int = 0
    """Activities the worker takes at once (maxConcurrentActivityWorkItems; 0: any)."""
    accepts: Callable[[TurnWork | ActivityWork], bool] | None = None

    def has_room(self, work: TurnWork | ActivityWork) -> bool:
        """Whether the worker takes one more item of ``work`` now (its filters take it,
        and it holds fewer than its limit of that kind)."""
        if self.accepts is not None and not self.accepts(work):
            return False
        limit = self.max_turns if isinstance(work, TurnWork) else self.max_activities
        if limit <= 0:
            return True
        kind = type(work)
        return sum(type(item.work) is kind for item in self.held.values()) < limit

    def holds(self, item: Item) -> bool:
        """Whether ``item`` is still this stream's to send (not resolved or moved)."""
        return not item.resolved and item.stream is self

    def remember(self, instance_id: str, warm: Warm) -> None:
        """Note what the worker now caches of the instance's history."""
        if not self.stateful:
            return
        self.warm.pop(instance_id, None)  # re-insert: the dict's order is the age
        if len(self.warm) >= WARM_CAP:
            del self.warm[next(iter(self.warm))]
        self.warm[instance_id] = warm

    def cached(self, work: TurnWork) -> int:
        """How many history messages of ``work``'s run the worker caches (0: unknown,
        send the whole history). The worker's cache must still begin the history: same
        run, and the same event where it ends (a rerun keeps the run id but cuts the
        history and grows it anew)."""
        warm = self.warm.get(work.instance_id)
        if warm is None or warm.run_id != work.run_id:
            return 0
        if not 0 < warm.events <= len(work.past) or work.past[warm.events - 1] != warm.last:
            return 0
        return warm.messages

    def ping(self) -> None:
        """Queue a health ping."""
        self.inbox.send_nowait(None)


class Dispatcher:
    """Work items, the streams that take them, and their completions."""

    def __init__(self, tokens: Callable[[], str] | None = None) -> None:
        self._new_token = tokens or _random_token
        self._sent: dict[str, Item] = {}  # wire token of each item's current send
        self._tokens = itertools.count(1)
        self._numbers = itertools.count(1)
        self._streams: list[WorkerStream] = []
        self._queue: deque[Item] = deque()
        self._items: dict[str, Item] = {}
        self._next = 0  # round-robin position
        self.changed = anyio.Event()
        """Set (and replaced) whenever a stream connects or disconnects (for tests)."""

    @property
    def streams(self) -> list[WorkerStream]:
        """The connected streams."""
        return list(self._streams)

    @property
    def waiting(self) -> int:
        """Items that wait for a stream to connect."""
        return len(self._queue)

    # -- streams --------------------------------------------------------------------

    def connect(
        self, dialect: Dialect, *, stateful: bool, pings: bool, origin: Hashable = None,
        max_turns: int = 0, max_activities: int = 0,
        accepts: Callable[[TurnWork | ActivityWork], bool] | None = None,
    ) -> WorkerStream:  # fmt: skip
        """A new stream (on the connection ``origin``, taking at most ``max_turns`` and
        ``max_activities`` items at once, and only the work ``accepts`` takes; None:
        all); the items that waited for one go to it."""
        inbox, outbox = anyio.create_memory_object_stream[Item | None](math.inf)
        stream = WorkerStream(next(self._numbers), dialect, stateful, pings, outbox, inbox,
                              origin=origin, max_turns=max_turns,
                              max_activities=max_activities, accepts=accepts)  # fmt: skip
        self._streams.append(stream)
        self._place_waiting()
        self._changed()
        log.info("worker stream %d connected (%s%s)", stream.number, dialect,
                 ", stateful history" if stateful else "")  # fmt: skip
        return stream

    def disconnect(self, stream: WorkerStream) -> None:
        """The stream went away: what it held goes to another stream (at-least-once)."""
        if stream not in self._streams:
            stream.inbox.close()
            stream.outbox.close()
            return
        self._streams.remove(stream)
        stream.inbox.close()
        stream.outbox.close()
        held = list(stream.held.values())
        stream.held.clear()
        stream.warm.clear()
        for item in held:
            item.stream = None
            self._place(item)
        self._changed()
        log.info("worker stream %d disconnected; %d item(s) placed again", stream.number,
                 len(held))  # fmt: skip

    def _changed(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    # -- items ----------------------------------------------------------------------

    async def submit(self, work: TurnWork | ActivityWork) -> Any:
        """Send ``work`` to a worker and wait for its decoded completion, however long
        that takes (no worker connected means waiting). Cancelling withdraws it."""
        item = Item(f"item-{next(self._tokens)}", work)
        self._items[item.token] = item
        self._place(item)
        try:
            await item.done.wait()
        finally:
            if not item.resolved:
                self._withdraw(item)
        return item.result

    def _place_waiting(self) -> None:
        """Place the items that wait, in order, where there is room now."""
        waiting, self._queue = self._queue, deque()
        for item in waiting:
            item.waiting = False
            self._place(item)

    def _place(self, item: Item, avoid: WorkerStream | None = None) -> None:
        stream = self._pick(item.work, avoid)
        if stream is None:
            if not item.waiting:
                item.waiting = True
                self._queue.append(item)
            return
        item.stream = stream
        item.dialect = stream.dialect
        item.sends += 1
        self._sent.pop(item.wire_token, None)  # an earlier send answers no more
        item.wire_token = self._new_token()
        item.sent_at = None  # stamped by the next expiry sweep
        self._sent[item.wire_token] = item
        stream.held[item.token] = item
        stream.inbox.send_nowait(item)

    def _pick(
        self, work: TurnWork | ActivityWork, avoid: WorkerStream | None
    ) -> WorkerStream | None:
        roomy = [s for s in self._streams if s.has_room(work)]
        streams = [s for s in roomy if s is not avoid] or roomy
        if not streams:
            return None
        if isinstance(work, TurnWork):
            for stream in streams:  # keep an instance where its history is warm
                if stream.cached(work):
                    return stream
        self._next = (self._next + 1) % len(streams)
        return streams[self._next]

    def _withdraw(self, item: Item) -> None:
        item.resolved = True
        self._items.pop(item.token, None)
        self._sent.pop(item.wire_token, None)
        if item.waiting:
            item.waiting = False
            self._queue.remove(item)
        if item.stream is not None:
            item.stream.held.pop(item.token, None)
            item.stream = None
            if self._queue:
                self._place_waiting()  # the stream has room for one more

    def find(
        self, token: str, instance_id: str, task_id: int | None = None, origin: Hashable = None,
        holder: WorkerStream | None = None,
    ) -> Item | None:  # fmt: skip
        """The unresolved item a completion answers: by the token of its current send,
        or, when the worker sent none, by instance (and wire task id for an activity,
        ``task_id``; ``None`` for a turn) among the items held by streams of the
        completion's connection ``origin``. A completion that came on a stream
        (``holder``) answers only an item that stream holds, and only by token.
        ``None`` when the answer is stale, unknown, or not the sender's to give."""
        if token:
            item = self._sent.get(token)
            if item is None or item.work.instance_id != instance_id:
                return None
            if holder is not None and item.stream is not holder:
                return None
            return item
        if holder is not None:
            return None
        for item in self._items.values():
            if item.stream is None or item.stream.origin != origin:
                continue  # waiting, or held on another connection
            work = item.work
            if work.instance_id != instance_id:
                continue
            if task_id is None and isinstance(work, TurnWork):
                return item
            if isinstance(work, ActivityWork) and work.wire_task_id == task_id:
                return item
        return None

    def resolve(self, item: Item, result: Any) -> bool:
        """Complete ``item`` with ``result``; False (and nothing changes) if it was
        already resolved: a duplicate or stale completion."""
        if item.resolved:
            return False
        self._withdraw(item)
        item.result = result
        item.done.set()
        return True

    def expire(
        self, now: datetime, turns: timedelta | None, activities: timedelta | None
    ) -> list[Item]:
        """Move the items a stream has held longer than their kind's timeout (None:
        no timeout) to another stream: their late answers are dropped (each send has
        its own token). Call it every so often; an item's time starts at the first
        call that sees it placed. The items moved."""
        moved: list[Item] = []
        for stream in list(self._streams):
            for item in list(stream.held.values()):
                limit = turns if isinstance(item.work, TurnWork) else activities
                if item.sent_at is None:
                    item.sent_at = now
                elif limit is not None and now - item.sent_at >= limit:
                    log.warning("worker stream %d did not answer %r in %s: sent elsewhere",
                                stream.number, item, limit)  # fmt: skip
                    stream.held.pop(item.token, None)
                    item.stream = None
                    self._place(item, avoid=stream)
                    moved.append(item)
        return moved

    def abandon(self, token: str) -> bool:
        """The worker gave the item back (by the token of its current send): place it
        again, on another stream if any."""
        item = self._sent.get(token) if token else None
        if item is None or item.resolved or item.stream is None:
            return False  # unknown, an earlier send, answered, or waiting already
        previous = item.stream
        if previous is not None:
            previous.held.pop(item.token, None)
        item.stream = None
        self._place(item, avoid=previous)
        return True


def _random_token() -> str:
    """A completion token no one can guess: 128 random bits."""
    return secrets.token_hex(16)
