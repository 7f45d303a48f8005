"""Events between instances: posting what a committed turn sent, in order, once.

A turn's ``EventSent`` events are its outbox, with the orders it gives its
sub-workflows (cancel, terminate: its record's ``orders``, see
:func:`._children.child_orders`). After the turn commits, each is written
to the receiver's inbox under the message id minted at the commit, then announced
(handed over here, or the owner's bell rung). One sender's events are posted one after
the other, across turns: a post that fails holds the ones after it back until a retry
gets it through, so a receiver never sees them out of order.

The instance's ``meta`` is not written past a turn until that turn's events are
posted: a load from the store posts again those of the turns after the meta, under the
same message ids. A receiver applies each once: one in its run's consumed ids is
skipped, and so is one at or below its sender's *watermark*, the last message of that
sender it consumed (one per sender, carried into each new run: see
:mod:`durable._log._msgids`). An event for an instance that does not exist, or has
ended, is dropped and logged, as Durable Task does. An order is written whatever the
child's state: it names the parent's run, and a child that is not that run's applies
nothing of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from durable._core._events import EventRaised, EventSent
from durable._errors import InstanceNotFoundError, StoreError
from durable._log._instances import current_start, send_message
from durable._log._records import ChildOrder, posts_of

from ._base import _EngineBase, log
from ._instance import _for_good, _Instance

if TYPE_CHECKING:
    from durable._log._records import Post, TurnRecord

__all__: list[str] = []


def _what(post: Post) -> str:
    if isinstance(post, ChildOrder):
        return f"{type(post.event).__name__} to {post.instance_id!r}"
    return f"event {post.name!r}"


class _Messages(_EngineBase):
    """Post the events a committed turn sends to other instances."""

    async def _send_events(self, inst: _Instance, record: TurnRecord) -> bool:
        """Post the events a just-committed turn sent, and its orders; False while some
        wait for a retry (the meta then waits for them too)."""
        sends = posts_of(record)
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

    def _resend(self, inst: _Instance, sends: list[Post]) -> None:
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
            post = queue[0]
            try:
                if isinstance(post, ChildOrder):
                    await self._post_order(post)
                else:
                    await self._post_event(sender, post)
            except StoreError as err:
                if not _for_good(err):
                    raise
                log.error("%s from %r dropped: %s", _what(post), sender, err)
            queue.pop(0)
        del self._outbox[sender]

    async def _drain_then_write_meta(self, inst: _Instance) -> None:
        if inst.id in self._outbox:
            await self._drain(inst.id)
            await self._write_meta(inst)

    async def _post_event(self, sender: str, sent: EventSent) -> None:
        """Write one sent event to its receiver's inbox, for the start its current run
        belongs to, and announce it; drop it (logged) if the receiver does not exist or
        has ended, as a client's event is."""
        target = sent.instance_id
        local = self.running_here(target)
        seen: int | None = None
        if local is not None:  # the run in memory before the write: none consumed it then
            seen, to = local.run_start, local.started.origin_run
        else:
            try:
                to, ended = await current_start(self.store, target)
            except InstanceNotFoundError:
                self._drop(sender, sent, "no such instance")
                return
            if ended:
                self._drop(sender, sent, "it has ended")
                return
        event = EventRaised(name=sent.name, input=sent.input)
        message = await send_message(self.store, target, sent.message_id, event, to)
        await self.announce_message(target, message, seen)

    async def _post_order(self, order: ChildOrder) -> None:
        """Write an order to its sub-workflow's inbox and announce it."""
        target = order.instance_id
        local = self.running_here(target)
        seen = local.run_start if local is not None else None
        message = await send_message(self.store, target, order.message_id, order.event)
        await self.announce_message(target, message, seen)

    def _drop(self, sender: str, sent: EventSent, why: str) -> None:
        log.warning("event %r from %r to %r dropped: %s", sent.name, sender, sent.instance_id, why)
        if self._hooks is not None:
            self._hooks.dropped(sender, sent)
