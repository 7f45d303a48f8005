"""What the store holds for an instance, and where: keys, turn records, meta, messages.

``log/{seq}`` records are immutable and written once (put-if-absent): the commit.
``meta`` is an index that can always be rebuilt by rolling the log forward.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import msgspec
from msgspec import Raw

from durable._core._events import NULL, EventSent, HistoryEvent, ParentRef
from durable._core._failure import FailureDetails
from durable._core._search import Indexed
from durable._core._state import WorkflowStatus
from durable._errors import ObjectExistsError, StoreError

if TYPE_CHECKING:
    from durable.store import ObjectStore

__all__ = [
    "ChildOrder",
    "WAKEUPS",
    "InboxMessage",
    "InstanceMeta",
    "Post",
    "StartRequest",
    "TurnRecord",
    "decode_message",
    "decode_meta",
    "decode_record",
    "encode",
    "entry_key",
    "inbox_key",
    "inbox_prefix",
    "instance_of_key",
    "instance_prefix",
    "log_key",
    "meta_key",
    "posts_of",
    "unreadable_key",
    "wakeup_key",
    "wakeup_prefix",
]

INSTANCES = "instances"
WAKEUPS = "wakeups"
SEP = "^"  # between an id and the rest of a flat index entry's name: no id holds it
_NAME_BYTES = 255  # the longest path component a file system takes


def entry_key(prefix: str, instance_id: str, name: str) -> str:
    """The key of an index entry of an instance (``name`` says which): one object beside
    the other instances' under ``prefix`` (``{id}^{name}``), so that on a file system
    an entry costs no directory of its own, unless that passes a file name's 255
    bytes (an id near the longest): then ``{id}/{name}``, as every entry was once."""
    flat = f"{instance_id}{SEP}{name}"
    if len(flat) > _NAME_BYTES // 4 and len(flat.encode()) > _NAME_BYTES:
        return f"{prefix}/{instance_id}/{name}"
    return f"{prefix}/{flat}"


def instance_prefix(instance_id: str) -> str:
    return f"{INSTANCES}/{instance_id}"


def instance_of_key(key: str | None) -> str | None:
    """The instance whose directory holds ``key``; None for any other key."""
    if key is None:
        return None
    root, _, rest = key.partition("/")
    instance_id = rest.partition("/")[0]
    return instance_id if root == INSTANCES and instance_id else None


def log_key(instance_id: str, seq: int) -> str:
    return f"{INSTANCES}/{instance_id}/log/{seq:012d}"


def meta_key(instance_id: str) -> str:
    return f"{INSTANCES}/{instance_id}/meta"


def inbox_prefix(instance_id: str) -> str:
    return f"{INSTANCES}/{instance_id}/inbox"


def inbox_key(instance_id: str, msg_id: str) -> str:
    return f"{INSTANCES}/{instance_id}/inbox/{msg_id}"


def unreadable_key(instance_id: str, msg_id: str) -> str:
    """Where an inbox message that can never be decoded is set aside, for a look."""
    return f"{INSTANCES}/{instance_id}/unreadable/{msg_id}"


def wakeup_prefix(partition: int) -> str:
    return f"{WAKEUPS}/{partition:04d}"


def wakeup_key(instance_id: str, partition: int) -> str:
    """A doorbell for the owner of ``partition``: written after a new run or an inbox
    message by a process that does not run the instance itself."""
    return f"{WAKEUPS}/{partition:04d}/{instance_id}"


class ChildOrder(msgspec.Struct, frozen=True):
    """What a committed turn tells one of its sub-workflows: cancel
    (``WorkflowCancelRequested``) or terminate (``WorkflowTerminated``), naming the
    parent's run. Posted after the commit through the sender's outbox, under
    ``message_id`` (minted at the commit, in the order of the sender's sent events), so
    a post made again after a crash is the same message, applied once."""

    instance_id: str
    message_id: str
    event: HistoryEvent


class TurnRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """One committed turn: ``log/{seq}``.

    ``events`` extend the current run's history; ``next_run``, when present, starts a
    fresh run (a new instance, continue-as-new, a reuse or a rerun) after them.
    ``consumed`` names the inbox messages the turn applied; ``status`` and
    ``custom_status`` are the instance's state after the turn. A ``purging`` record is
    no turn: a purge wrote it (after the last record, then over ``log/0``) so that no
    start lands in a log being deleted; the instance reads as absent. ``purged_at`` is
    the Clock time the purge wrote it (None before purges recorded it). ``orders``:
    what the turn tells its sub-workflows (see :class:`ChildOrder`).
    """

    seq: int
    status: str
    events: list[HistoryEvent] = []
    next_run: list[HistoryEvent] = []
    consumed: list[str] = []
    custom_status: Raw = NULL
    format: int = 1
    purging: bool = False
    purged_at: datetime | None = None
    orders: list[ChildOrder] = []


Post = EventSent | ChildOrder
"""One message a committed turn posts to another instance, after its commit."""


def posts_of(record: TurnRecord) -> list[Post]:
    """What a committed turn posts to other instances, in the order it sent them (its
    message ids sort so)."""
    sends: list[Post] = [event for event in record.events if type(event) is EventSent]
    if record.orders:
        sends = sorted([*sends, *record.orders], key=_message_id)
    return sends


def _message_id(post: Post) -> str:
    return post.message_id


class InstanceMeta(msgspec.Struct, omit_defaults=True):
    """The index record ``meta``: enough to list and describe without reading the log."""

    instance_id: str
    name: str
    status: str
    seq: int
    run_start: int
    created_at: datetime
    updated_at: datetime
    input: Raw = NULL
    output: Raw = NULL
    failure: FailureDetails | None = None
    custom_status: Raw = NULL
    parent: ParentRef | None = None
    version: str = ""
    reason: str = ""  # why a running instance is not making progress (e.g. no worker)
    format: int = 1
    unposted: int = -1
    """The first seq, before ``run_start``, whose sent events may not have been posted
    (a reuse or rerun began before they were; -1: none): a load posts them."""
    origin: str = ""  # the current run's ``WorkflowStarted.origin_run`` (empty: not recorded)
    search: dict[str, Indexed] = {}
    """The current run's search attributes (each with the event that set it: its entry in
    the search index, see :mod:`._search`)."""
    search_drop: list[str] = []
    """Search index entries of attributes replaced, still to delete."""
    purging: datetime | None = None
    """When a purge that claimed the log marked this meta (None: no purge): the
    instance reads as absent, listings skip it, and no writer replaces it."""


class StartRequest(msgspec.Struct, frozen=True):
    """What a ``start_with_event`` message starts if it finds the instance not running:
    the workflow, its input and version (empty: the newest)."""

    name: str
    input: Raw = NULL
    version: str = ""


class InboxMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """An accepted, not yet applied message for an instance: one history event.

    ``to`` is the start (``WorkflowStarted.origin_run``) it was sent to: only that start's
    runs apply it; once they have ended it is dropped, never taken by a later start
    under the same id. Empty: for whichever run is current (an answer between
    instances, which names the run it is for in its event). ``start``: a message of
    ``start_with_event``, which starts the instance if it is not running and delivers
    its event atomically: the first run that reads it while running applies it, of
    whichever start; one that reaches the instance once it has ended (or is gone)
    starts it again with its event, in one write (see :mod:`durable._engine._inbox`)."""

    id: str
    event: HistoryEvent
    to: str = ""
    start: StartRequest | None = None


_STATUSES = frozenset(WorkflowStatus)
_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(TurnRecord)
_meta_decoder = msgspec.json.Decoder(InstanceMeta)
_message_decoder = msgspec.json.Decoder(InboxMessage)


def encode(obj: TurnRecord | InstanceMeta | InboxMessage) -> bytes:
    return _encoder.encode(obj)


def _decode(decoder: msgspec.json.Decoder, data: bytes, key: str, what: str):  # type: ignore[no-untyped-def,type-arg]
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise StoreError(f"corrupt {what} at {key!r}: {err}", key=key, transient=False) from err


def _status_checked(obj: TurnRecord | InstanceMeta, key: str, what: str) -> None:
    """A status no version of durable writes makes the record corrupt (not a crash of
    whoever reads it later)."""
    if obj.status not in _STATUSES:
        raise StoreError(f"corrupt {what} at {key!r}: unknown status {obj.status!r}",
                         key=key, transient=False)  # fmt: skip


def decode_record(data: bytes, key: str) -> TurnRecord:
    record: TurnRecord = _decode(_record_decoder, data, key, "turn record")
    _status_checked(record, key, "turn record")
    return record


def decode_meta(data: bytes, key: str) -> InstanceMeta:
    meta: InstanceMeta = _decode(_meta_decoder, data, key, "instance meta")
    _status_checked(meta, key, "instance meta")
    return meta


def decode_message(data: bytes, key: str) -> InboxMessage:
    message: InboxMessage = _decode(_message_decoder, data, key, "inbox message")
    return message


async def put_once(store: ObjectStore, key: str, data: bytes) -> None:
    """Put-if-absent that reads back after an error: a write that landed counts."""
    try:
        await store.put_if_absent(key, data)
    except ObjectExistsError:
        raise
    except StoreError:
        try:
            landed = await store.get(key) == data
        except StoreError:
            landed = False
        if not landed:
            raise
