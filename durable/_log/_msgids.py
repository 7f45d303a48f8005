"""The ids of the messages instances send each other, and the watermarks they give.

A message one instance sends another is written under an id minted at the sender's
commit (:func:`message_id`): stable, so a post made again after a crash is the same
message, and, for one sender, sorted in the order sent. A receiver takes one sender's
messages in that order, so the last one it consumed (its *watermark* for that sender)
says it applied every one up to it: a message posted again is recognised by it, also in
a later run of the receiver (each new run, continue-as-new, reuse or rerun, is given
the watermarks of the run before in its consumed ids).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

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
