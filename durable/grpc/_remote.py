"""The sidecar's executor: the engine's turns and activities, run by remote workers.

:class:`RemoteExecutor` implements the engine's :class:`~durable._engine._executor.Executor`
seam. A turn becomes a :class:`~durable.grpc._dispatch.TurnWork` (the run's committed
history as ``past``, the turn's events as ``new``) and an activity attempt an
:class:`~durable.grpc._dispatch.ActivityWork`; the :class:`Dispatcher` hands them to a
connected worker and returns the decoded answer. Nothing here speaks protobuf.

What a Durable Task worker expects, and durable's log orders differently: a run's
first turn starts with the turn start, *then* ``executionStarted`` (the worker reads
the turn's time before the workflow starts). :func:`wire_order` moves the first
``TurnStarted`` of a run to the front; it only touches the start of the history, so
the order of a longer history begins with the order of a shorter one (stateful-history
counts stay valid).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import msgspec
from msgspec import Raw

from durable._core._actions import Action, ContinueAsNew, RecordPatch, ScheduleActivity
from durable._core._codec import NULL
from durable._core._events import (
    ActivityScheduled,
    ChildWorkflowScheduled,
    EventSent,
    PatchApplied,
    TimerCreated,
    TurnStarted,
    WorkflowResumed,
    WorkflowStarted,
    WorkflowSuspended,
    WorkflowTerminated,
)
from durable._observe import current_trace_context

from ._dispatch import ActivityWork, TurnWork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from durable._activity import Attempt
    from durable._core._events import ActivityCompleted, ActivityErrored, HistoryEvent
    from durable._engine._eviction import EvictionPolicy

    from ._dispatch import Dispatcher

__all__ = ["RawCodec", "RemoteExecutor", "RemoteRun", "TurnOutcome", "wire_order"]

_SCHEDULING = (ActivityScheduled, TimerCreated, ChildWorkflowScheduled, EventSent)


class RawCodec:
    """Payloads as they are: the sidecar never decodes what workers and clients send
    (JSON text both sides); ``encode`` takes ``Raw`` (or ``None``), ``decode`` gives
    ``Raw`` back."""

    def encode(self, value: object) -> bytes:
        if value is None:
            return bytes(NULL)
        if isinstance(value, Raw):
            return bytes(value)
        raise TypeError(f"the sidecar passes payloads through as Raw, got {type(value).__name__}")

    def decode(self, data: bytes, type: object = None) -> Raw:
        return Raw(data)


class TurnOutcome(NamedTuple):
    """A worker's answer to a turn, in durable's terms."""

    actions: list[Action]
    custom_status: Raw = NULL


def _above(action: Action, step_base: int) -> Action:
    """A worker's action with its step moved above the steps of the instance's earlier
    runs (a reused or rerun instance's ``step_base``)."""
    if isinstance(action, ScheduleActivity):
        return msgspec.structs.replace(action, step=action.step + step_base)
    return action


def wire_order(history: list[HistoryEvent]) -> list[HistoryEvent]:
    """``history`` with its run's first ``TurnStarted`` moved before ``WorkflowStarted``
    (and the events carried into the run), as Durable Task workers replay it."""
    if not history or not isinstance(history[0], WorkflowStarted):
        return history
    for index, event in enumerate(history):
        if isinstance(event, TurnStarted):
            if index == 0:
                return history
            return [event, *history[:index], *history[index + 1 :]]
    return history


class RemoteRun:
    """One run of an instance whose code runs on a remote worker.

    It holds the run's committed history (what a worker replays) and follows
    suspension and termination itself: turns that only add events to a suspended run,
    and a termination, need no worker.
    """

    def __init__(self, executor: RemoteExecutor, instance_id: str, history: list[HistoryEvent]):
        started = history[0]
        assert isinstance(started, WorkflowStarted), "a run's history starts with WorkflowStarted"
        self._executor = executor
        self.instance_id = instance_id
        self.run_id = started.run_id
        self.task_base = started.first_task_id
        self.name, self.version = started.name, started.version
        self.step_base = started.step_base  # workers number steps from the task ids
        self.history = list(history)
        self.terminated = False
        self.custom_status: Raw = NULL
        self._suspended = False
        self._task_count = started.first_task_id
        self._patches: set[str] = set()
        self._follow(history)

    @property
    def suspended(self) -> bool:
        return self._suspended

    @property
    def task_count(self) -> int:
        return self._task_count

    @property
    def took_turn(self) -> bool:
        """Whether the history holds a turn (before the first turn: a rerun's)."""
        return any(isinstance(e, TurnStarted) for e in self.history)

    @property
    def untaken(self) -> tuple[()]:
        """None: the worker gets the whole turn, and carries over what its run left."""
        return ()

    def _follow(self, events: list[HistoryEvent]) -> bool:
        """Track suspension, termination, task ids and patches through ``events``;
        whether a worker must see them (anything but events held by a suspension)."""
        needs_worker = False
        for event in events:
            match event:
                case WorkflowSuspended():
                    self._suspended = True
                case WorkflowResumed():
                    needs_worker = needs_worker or self._suspended
                    self._suspended = False
                case WorkflowTerminated():
                    self.terminated = True
                case PatchApplied():
                    self._patches.add(event.patch_id)
                case TurnStarted():
                    pass
                case _:
                    if isinstance(event, _SCHEDULING):
                        self._task_count = max(self._task_count, event.task_id + 1)
                    needs_worker = needs_worker or not self._suspended
        return needs_worker

    async def turn(self, events: list[HistoryEvent], *, first_turn: bool) -> list[Action]:
        """Send the turn to a worker (waiting for one if none is connected); its actions."""
        needs_worker = self._follow(events) or first_turn
        if self.terminated or not needs_worker:
            return []  # a terminated run takes no more steps; a suspended one waits
        if first_turn and not self.took_turn:
            past, new = [], wire_order(self.history + events)
        else:
            past, new = wire_order(self.history), events
        if not new:  # a rerun's first turn with no new events: Durable Task workers
            # take no turn without one, so the wire alone opens one (it is not recorded)
            new = [TurnStarted(event_id=len(past), timestamp=self._last_turn_time())]
        work = TurnWork(self.instance_id, self.run_id, past, new, self.task_base,
                        frozenset(self._patches), self._task_count, self.name,
                        self.version)  # fmt: skip
        outcome: TurnOutcome = await self._executor.dispatcher.submit(work)
        self.custom_status = outcome.custom_status
        actions = outcome.actions
        if self.step_base:
            actions = [_above(action, self.step_base) for action in actions]
        for action in actions:
            task_id = getattr(action, "task_id", None)
            if task_id is not None:
                self._task_count = max(self._task_count, task_id + 1)
            if isinstance(action, RecordPatch):
                self._patches.add(action.patch_id)
            if isinstance(action, ContinueAsNew):
                break
        return actions

    def _last_turn_time(self) -> datetime:
        """The time of the history's last turn (the time the worker's code still sees)."""
        turns = [e.timestamp for e in self.history if isinstance(e, TurnStarted)]
        return turns[-1] if turns else self.history[0].timestamp

    def committed(self, events: list[HistoryEvent]) -> None:
        self.history.extend(events)

    def close(self) -> None:
        self._executor.forget(self)


class RemoteExecutor:
    """The engine's executor in the sidecar: everything runs on connected workers.

    ``load_history`` reads an instance's current run from the store; it gives the task
    base of an activity whose run is not resident (after a restart).
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        load_history: Callable[[str], Awaitable[list[HistoryEvent]]],
    ) -> None:
        self.dispatcher = dispatcher
        self._load_history = load_history
        self._runs: dict[str, RemoteRun] = {}

    def new_run(self, instance_id: str, history: list[HistoryEvent]) -> RemoteRun:
        run = RemoteRun(self, instance_id, history)
        self._runs[instance_id] = run
        return run

    def forget(self, run: RemoteRun) -> None:
        """A run was dropped by the engine."""
        if self._runs.get(run.instance_id) is run:
            del self._runs[run.instance_id]

    async def run_activity(
        self,
        instance_id: str,
        workflow_name: str,
        scheduled: ActivityScheduled,
        *,
        control: Callable[[], Attempt] | None = None,
    ) -> ActivityCompleted | ActivityErrored:
        run = self._runs.get(instance_id)
        if run is not None:
            base, run_id, version = run.task_base, run.run_id, run.version
        else:
            started = (await self._load_history(instance_id))[0]
            assert isinstance(started, WorkflowStarted)
            base, run_id, version = started.first_task_id, started.run_id, started.version
        trace_parent = current_trace_context()[0]  # the attempt's span, if traced
        work = ActivityWork(instance_id, run_id, scheduled, scheduled.task_id - base, trace_parent,
                            version)  # fmt: skip
        outcome: ActivityCompleted | ActivityErrored = await self.dispatcher.submit(work)
        return outcome

    def newest_version(self, name: str) -> str:
        return ""  # workers own their versions; new runs carry none

    def eviction_policy(self, name: str) -> EvictionPolicy | None:
        return None
