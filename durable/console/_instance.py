"""What the instance page shows, gathered through the public ``Client`` and the store:
state, the open steps, the history (as rows and as a timeline) and the memo per step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    HistoryEvent,
    ParentRef,
    TimerCreated,
    TimerFired,
    WorkflowStarted,
)
from durable._core._state import WorkflowState
from durable._errors import ObjectNotFoundError
from durable._log._records import inbox_prefix

from ._timeline import RERUNNABLE, Timeline, build_timeline

if TYPE_CHECKING:
    from durable._client import Client

__all__ = ["EventRow", "InstanceView", "MemoStep", "load_instance", "pretty"]

MAX_PAYLOAD = 64 * 1024  # characters of one payload shown; the rest is cut
SUMMARY = 240  # characters of an event's fields in the table row
MAX_MEMO_STEPS = 100  # steps whose memo entries the page reads
MAX_MEMO_KEYS = 20  # entries read per step


def pretty(value: Any) -> str:
    """A payload as indented JSON (cut past ``MAX_PAYLOAD``); text if it is not JSON."""
    if isinstance(value, bytes | msgspec.Raw):
        data = bytes(value)
    else:
        try:
            data = msgspec.json.encode(value)
        except (TypeError, msgspec.EncodeError):
            return _cut(repr(value))
    try:
        text = msgspec.json.format(data, indent=2).decode()
    except (msgspec.DecodeError, UnicodeDecodeError):
        text = data.decode("utf-8", "replace")
    return _cut(text)


def _cut(text: str) -> str:
    if len(text) <= MAX_PAYLOAD:
        return text
    return f"{text[:MAX_PAYLOAD]}\n… ({len(text) - MAX_PAYLOAD} more characters)"


@dataclass(frozen=True, slots=True)
class EventRow:
    """One row of the history table."""

    event_id: int
    timestamp: str
    kind: str
    summary: str
    detail: str  # the full fields, when the summary is cut ("" otherwise)
    rerunnable: bool


@dataclass(frozen=True, slots=True)
class MemoStep:
    """The memo entries of one step, with the activity that owns the step."""

    step: int
    activity: str
    entries: list[tuple[str, str]]
    more: int  # entries not read (past ``MAX_MEMO_KEYS``)


@dataclass(slots=True)
class InstanceView:
    """Everything the instance page draws."""

    state: WorkflowState
    history: list[HistoryEvent]
    rows: list[EventRow]
    timeline: Timeline
    pending_activities: list[ActivityScheduled] = field(default_factory=list)
    pending_timers: list[TimerCreated] = field(default_factory=list)
    pending_children: list[ChildWorkflowScheduled] = field(default_factory=list)
    children: list[ChildWorkflowScheduled] = field(default_factory=list)
    parent: ParentRef | None = None
    memo: list[MemoStep] = field(default_factory=list)
    memo_more: int = 0  # steps with memo entries not shown
    inbox: int = 0  # messages accepted and not yet applied

    @property
    def ended(self) -> bool:
        return self.state.status.is_terminal


def _row(event: HistoryEvent) -> EventRow:
    fields = msgspec.structs.asdict(event)
    fields.pop("event_id", None)
    fields.pop("timestamp", None)
    text = msgspec.json.encode(fields).decode("utf-8", "replace")
    cut = len(text) > SUMMARY
    return EventRow(
        event_id=event.event_id,
        timestamp=event.timestamp.isoformat(),
        kind=type(event).__name__,
        summary=f"{text[:SUMMARY]}…" if cut else text,
        detail=pretty(msgspec.json.encode(fields)) if cut else "",
        rerunnable=isinstance(event, RERUNNABLE),
    )


def _open_steps(view: InstanceView) -> None:
    """Steps scheduled and not yet ended (activities by their latest attempt)."""
    activities: dict[int, ActivityScheduled] = {}
    timers: dict[int, TimerCreated] = {}
    children: dict[int, ChildWorkflowScheduled] = {}
    for event in view.history:
        match event:
            case WorkflowStarted():
                view.parent = event.parent
            case ActivityScheduled():
                activities[event.task_id] = event
            case ActivityCompleted() | ActivityErrored():
                activities.pop(event.task_id, None)
            case TimerCreated():
                timers[event.task_id] = event
            case TimerFired():
                timers.pop(event.task_id, None)
            case ChildWorkflowScheduled():
                children[event.task_id] = event
                view.children.append(event)
            case ChildWorkflowCompleted() | ChildWorkflowErrored():
                children.pop(event.task_id, None)
            case _:
                pass
    if not view.ended:
        view.pending_activities = list(activities.values())
        view.pending_timers = list(timers.values())
        view.pending_children = list(children.values())


async def _memo(client: Client, view: InstanceView) -> None:
    """The memo entries of the instance's steps (values as the codec stored them)."""
    memo = client.memo_store
    root = f"{memo.prefix}/{view.state.instance_id}"
    steps = sorted(int(s) for s in await memo.store.list(root) if s.isdigit())
    view.memo_more = max(len(steps) - MAX_MEMO_STEPS, 0)
    owners = {e.step: e.name for e in view.history if isinstance(e, ActivityScheduled)}
    found: dict[int, MemoStep] = {}

    async def read(step: int) -> None:
        keys = await memo.store.list(f"{root}/{step}")
        entries: list[tuple[str, str]] = []
        for key in keys[:MAX_MEMO_KEYS]:
            try:
                entries.append((key, pretty(await memo.store.get(f"{root}/{step}/{key}"))))
            except ObjectNotFoundError:
                continue  # deleted while we looked
        more = max(len(keys) - MAX_MEMO_KEYS, 0)
        found[step] = MemoStep(step, owners.get(step, ""), entries, more)

    async with anyio.create_task_group() as tg:
        for step in steps[:MAX_MEMO_STEPS]:
            tg.start_soon(read, step)
    view.memo = [found[s] for s in steps[:MAX_MEMO_STEPS] if found[s].entries]


async def load_instance(client: Client, instance_id: str) -> InstanceView:
    """Read the instance (``InstanceNotFoundError`` if there is none)."""
    handle = client.get_handle(instance_id)
    state = await handle.describe()
    history = await handle.history()
    until = None if state.status.is_terminal else client.clock.now()
    view = InstanceView(
        state=state, history=history, rows=[_row(e) for e in history],
        timeline=build_timeline(history, until),
    )  # fmt: skip
    _open_steps(view)
    view.inbox = len(await client.store.list(inbox_prefix(instance_id)))
    await _memo(client, view)
    return view
