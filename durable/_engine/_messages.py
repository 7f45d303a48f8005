"""Events between instances: posting what a committed turn sent, in order, once.

A turn's ``EventSent`` events are its outbox. After the turn commits, each is written
to the receiver's inbox under the message id minted at the commit, then announced
(handed over here, or the owner's bell rung). One sender's events are posted one after
the other, across turns: a post that fails holds the ones after it back until a retry
gets it through, so a receiver never sees them out of order.

The instance's ``meta`` is not written past a turn until that turn's events are
posted: a load from the store posts again those of the turns after the meta, under the
same message ids. A receiver applies each once: one in its run's consumed ids is
skipped, and so is one at or below its sender's *watermark*, the last message of that
sender it consumed (one per sender, carried into each new run of a continue-as-new):
a sender's messages are applied in the order sent, so everything up to the watermark
was. An event for an instance that does not exist is dropped and logged, as Durable
Task does.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from durable._core._events import EventRaised, EventSent, HistoryEvent
from durable._errors import StoreError
from durable._log._instances import send_message
from durable._log._reader import read_record

from ._base import _EngineBase, log
from ._instance import _for_good, _Instance

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

__all__ = ["applied_before", "message_id", "sender_of", "watermarks"]


def message_id(sender: str, created_at: datetime, seq: int, event_id: int) -> str:
    """The inbox id of the event a turn sends, minted once at its commit: for one
    sender (its id, and when it was created: one purged and started again is another),
    sorted in the order sent (``seq`` grows across its runs). What comes before the
    first ``-`` names the sender: see :func:`sender_of`."""
    digest = hashlib.blake2b(sender.encode(), digest_size=8).hexdigest()
    created = int(created_at.timestamp() * 1e6)
    return f"m{digest}{created:x}-{seq:012d}-{event_id:06d}"


def sender_of(msg_id: str) -> str | None:
    """Who sent an inbox message, for :func:`message_id`'s ids; None for a client's."""
    return msg_id.partition("-")[0] if msg_id.startswith("m") else None


def watermarks(msg_ids: Iterable[str]) -> dict[str, str]:
    """The last message of each sender among ``msg_ids`` (consumed ones): a receiver
    has applied every message a sender sent it up to that one, as it takes them in
    the order sent."""
    marks: dict[str, str] = {}
    for msg_id in msg_ids:
        sender = sender_of(msg_id)
        if sender is not None and msg_id > marks.get(sender, ""):
            marks[sender] = msg_id
    return marks


def applied_before(marks: dict[str, str], msg_id: str) -> bool:
    """Whether a sender's message is one the receiver applied already (posted again
    after a crash, once the run that applied it had moved on)."""
    sender = sender_of(msg_id)
    return sender is not None and msg_id <= marks.get(sender, "")


class _Messages(_EngineBase):
    """Post the events a committed turn sends to other instances."""

    async def _send_events(self, inst: _Instance, events: list[HistoryEvent]) -> bool:
        """Post the events a just-committed turn sent; False while some wait for a
        retry (the meta then waits for them too)."""
        sends = [event for event in events if type(event) is EventSent]
        queue = self._outbox.get(inst.id)
        if queue is not None:  # earlier sends still wait: these go after them
            queue.extend(sends)
            return False
        if not sends:
            return True
        self._outbox[inst.id] = sends
        try:
            await self._drain(inst.id)
        except StoreError as err:
            log.warning("events sent by %r not posted yet: %s", inst.id, err)
            self._spawn_guarded(self._drain_then_write_meta, inst)
            return False
        return True

    def _resend(self, inst: _Instance, sends: list[EventSent]) -> None:
        """A load found turns after the meta: post their events (again) in order."""
        queue = self._outbox.get(inst.id)
        if queue is not None:  # under way here already
            known = {sent.message_id for sent in queue}
            queue.extend(sent for sent in sends if sent.message_id not in known)
            return
        if sends:
            self._outbox[inst.id] = list(sends)
            self._spawn_guarded(self._drain_then_write_meta, inst)

    async def _drain(self, sender: str) -> None:
        """Post the sender's waiting events, oldest first; raises on a store error."""
        queue = self._outbox[sender]
        while queue:
            try:
                await self._post_event(sender, queue[0])
            except StoreError as err:
                if not _for_good(err):
                    raise
                log.error("event %r from %r dropped: %s", queue[0].name, sender, err)
            queue.pop(0)
        del self._outbox[sender]

    async def _drain_then_write_meta(self, inst: _Instance) -> None:
        if inst.id in self._outbox:
            await self._drain(inst.id)
            await self._write_meta(inst)

    async def _post_event(self, sender: str, sent: EventSent) -> None:
        """Write one sent event to its receiver's inbox and announce it; drop it (logged)
        if the receiver does not exist."""
        target = sent.instance_id
        if self._live(target) is None:
            first = await read_record(self.store, target, 0)
            if first is None or first.purging:
                log.warning(
                    "event %r from %r to %r dropped: no such instance", sent.name, sender, target
                )
                return
        event = EventRaised(name=sent.name, input=sent.input)
        message = await send_message(self.store, target, sent.message_id, event)
        await self.announce_message(target, message)
