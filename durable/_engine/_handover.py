"""Handovers: an inbox read of one instance, and the events that wait behind it.

An event reaches a run in one of two ways: handed over at once, in memory, by the
process that delivers it, or read from the instance's inbox (when the instance is
loaded, or a wakeup is answered). The messages one sender sends must reach the run in
the order sent, so the two ways must never overtake each other. The rule, for every
sender alike: while a read of an instance's inbox is under way (its *handover* is
open), nothing is handed to the instance at once. What is delivered meanwhile waits in
the handover and follows what the read found:

- an inbox message is never handed from memory then: a read that begins after it was
  sent finds it (or finds it consumed), in the order its sender sent it, so the
  handover reads again until a read has begun after every message delivered to it;
- an event with no inbox copy (a timer that fired, an activity's outcome) is handed
  after what the read found, in the order delivered.

One task at a time runs an instance's handover; a load or a wakeup that comes while
one is open asks it to read once more instead of reading beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._instance import Pending

__all__ = ["Handover"]


class Handover:
    """What waits for an instance's inbox read under way."""

    __slots__ = ("events", "messages", "reread")

    def __init__(self) -> None:
        self.events: list[Pending] = []  # delivered events with no inbox copy, in order
        self.messages: set[str] = set()  # inbox messages delivered since the read began
        self.reread = False  # someone rang for the instance since the read began

    def add(self, item: Pending) -> None:
        """An event delivered while the read is under way."""
        msg_id = item[0]
        if msg_id is None:
            self.events.append(item)
        else:
            self.messages.add(msg_id)

    def begin_read(self) -> None:
        """A read of the inbox begins: it covers every message delivered so far."""
        self.messages.clear()
        self.reread = False

    def found(self, items: list[Pending]) -> None:
        """A read found ``items``: the messages among them need no other read."""
        self.messages.difference_update(msg_id for msg_id, _, _ in items)

    def take_events(self) -> list[Pending]:
        """The events that waited behind the read, in the order delivered."""
        events, self.events = self.events, []
        return events

    @property
    def settled(self) -> bool:
        """Whether no message delivered, nor wakeup rung, since the last read began
        still needs a read."""
        return not (self.messages or self.reread)
