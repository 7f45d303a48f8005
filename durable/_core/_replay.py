"""The replay engine: a workflow coroutine over history and new events, actions out.

Pure and synchronous: no anyio, no store, no clock. :class:`WorkflowRun` keeps the
suspended coroutine between turns, so a turn costs its new events, not its history.
Replayed events must meet the actions the code takes again; anything else is a
:class:`~durable.NonDeterminismError` naming the history event.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from typing import TYPE_CHECKING, Any

from msgspec import Raw

from durable._errors import (
    ActivityFailed,
    ActivityTimeoutError,
    NonDeterminismError,
    QueryFailedError,
    SerializationError,
    TimeoutError,
    WorkflowFailed,
)

from . import _updates
from ._actions import (
    Action,
    CancelTask,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordPatch,
    SendEvent,
    UpsertSearchAttributes,
)
from ._context import WorkflowContext
from ._events import (
    EPOCH,
    NULL,
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    ContinuedAsNew,
    Event,
    EventRaised,
    EventSent,
    ExecutionTimedOut,
    HistoryEvent,
    PatchApplied,
    SearchAttributesUpserted,
    TaskCancelled,
    TimerCreated,
    TimerFired,
    TurnStarted,
    UpdateCompleted,
    UpdateRequested,
    WorkflowCancelRequested,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowResumed,
    WorkflowRewound,
    WorkflowStarted,
    WorkflowSuspended,
    WorkflowTerminated,
)
from ._failure import FailureDetails, failure_from_exception, is_timeout
from ._futures import DurableFuture, Scheduler, Task, WorkflowControl
from ._pairs import FINAL_ACTIONS, SCHEDULING_ACTIONS, describe

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from durable._registry import Registry, WorkflowDefinition

    from ._codec import PayloadCodec
    from ._updates import UpdateHandler

__all__ = ["ContinueAsNewSignal", "WorkflowRun", "describe", "timed_out"]

Final = CompleteWorkflow | FailWorkflow | ContinueAsNew


class ContinueAsNewSignal(WorkflowControl):
    """Unwinds the workflow coroutine after ``ctx.continue_as_new``."""


class _Open:
    """A durable operation the workflow waits on, by task id; ``name`` is what its
    failure names (the activity, or the child's instance id)."""

    __slots__ = ("future", "name", "output_type")

    def __init__(self, future: DurableFuture[Any], name: str, output_type: Any) -> None:
        self.future = future
        self.name = name
        self.output_type = output_type


def timed_out(instance_id: str, event: ExecutionTimedOut) -> FailureDetails:
    """The failure a run ends with when its start's execution timeout passes (the same
    whether its code ran the turn, or its instance was parked without the code)."""
    error = TimeoutError(
        f"workflow {instance_id!r} did not end within its execution_timeout "
        f"(deadline {event.deadline.isoformat()})"
    )
    return failure_from_exception(error)


# what a suspended run still takes: what ends the suspension, another suspend (which
# changes nothing: held, the resume would release it and suspend the run again), and, in
# replay, what its code decided in the turn a suspend arrived in (recorded after it)
_NOT_HELD = frozenset(
    {WorkflowResumed, WorkflowSuspended, WorkflowTerminated, ExecutionTimedOut, TurnStarted,
     PatchApplied, SearchAttributesUpserted, TaskCancelled, UpdateCompleted, WorkflowRewound,
     *SCHEDULING_ACTIONS,
     *FINAL_ACTIONS}
)  # fmt: skip


class WorkflowRun:
    """One run of a workflow coroutine, fed event by event.

    ``apply(events, replaying=True)`` re-executes committed history and checks the
    code against it; ``apply(events, replaying=False)`` feeds a new turn's events and
    returns the actions the turn takes.
    """

    # In slots: each event of each turn reads them, and CPython keeps at most 29
    # attributes of an instance inline (beyond that, each read is a dict lookup).
    __slots__ = (
        "__dict__", "_buffered", "_checked_patches", "_final_matched", "_held",
        "_history_patches", "_main", "_main_started", "_next_task_id", "_open", "_patch_keys",
        "_pending", "_random", "_recorded_patches", "_released", "_scheduler", "_suspended",
        "_turn_event_id", "_waiters", "cancel_requested", "codec", "ctx", "custom_status",
        "definition", "final", "instance_id", "now", "query_handlers", "querying",
        "registry", "replaying", "started", "terminated", "untaken", "update_handlers",
        "update_ids", "update_outcomes",
    )  # fmt: skip

    def __init__(
        self,
        instance_id: str,
        definition: WorkflowDefinition,
        registry: Registry,
        codec: PayloadCodec,
    ) -> None:
        self.instance_id = instance_id
        self.definition = definition
        self.registry = registry
        self.codec = codec
        self.ctx = WorkflowContext(self)
        self.now = EPOCH
        self.replaying = True
        self.final: Final | None = None
        self.terminated = False
        self.custom_status: Raw = NULL
        self.started: WorkflowStarted | None = None
        self._final_matched = False
        self._main_started = False
        self._main: Task[Any] | None = None
        self.cancel_requested = False  # a cancel of the workflow arrived
        self._scheduler = Scheduler()
        self._pending: dict[int, Action] = {}
        self._open: dict[int, _Open] = {}
        self._next_task_id = 0
        self._waiters: dict[str, deque[tuple[DurableFuture[Any], Any]]] = {}
        self._buffered: dict[str, deque[EventRaised]] = {}
        self._suspended = False
        self._held: list[Event] = []
        self._released: list[Event] = []  # held events a resume is releasing now
        self._turn_event_id = 0  # the event id of the turn under way
        self.untaken: list[Event] = []  # of the last live turn: the run ended before them
        self._random: random.Random | None = None
        self._history_patches: set[str] = set()  # patches recorded by the turns replayed
        self._checked_patches: set[str] = set()  # patches the code checked or deprecated
        self._recorded_patches: set[str] = set()  # patches this run takes
        self._patch_keys = itertools.count(-1, -1)  # keys of RecordPatch, CancelTask in _pending
        self.query_handlers: dict[str, Callable[..., Any]] = {}  # set by the code, by name
        self.querying: str | None = None  # the query whose handler runs now (see _queries)
        self.update_handlers: dict[str, UpdateHandler] = {}  # set by the code (see _updates)
        self.update_ids: set[str] = set()  # the updates this run has taken
        self.update_outcomes: dict[str, UpdateCompleted] = {}  # theirs, once completed

    # -- feeding events -------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the run has ended (returned, failed, continued-as-new or terminated)."""
        return self.final is not None or self.terminated

    def apply(self, events: Sequence[Event], *, replaying: bool) -> list[Action]:
        """Feed events in order; return the new actions (none while replaying).

        Live, a run that ends (returns, fails or continues as new) takes no event after
        the one that ended it: those are left in :attr:`untaken`, for the next run.
        """
        self.replaying = replaying
        if self.untaken:
            self.untaken = []
        turn_patches = _patches_by_turn(events) if replaying else _NO_PATCHES
        if turn_patches:
            self._history_patches.update(turn_patches.pop(-1, ()))
        handlers = _HANDLERS
        if replaying:
            for index, event in enumerate(events):
                if turn_patches and index in turn_patches:  # before the turn's code runs
                    self._history_patches.update(turn_patches[index])
                if self._suspended and type(event) not in _NOT_HELD:
                    self._held.append(event)
                    continue
                handlers[type(event)](self, event)
                self._run_tasks()
            return []
        # live: a loop of its own, with no patches to look up (it runs for every event of
        # every turn)
        for event in events:
            # (self._ended_live(), inlined)
            if self.final is not None and type(event) is not TurnStarted:
                self.untaken.append(event)
                continue
            if self._suspended and type(event) not in _NOT_HELD:
                self._held.append(event)
                continue
            handlers[type(event)](self, event)
            self._run_tasks()
        actions = list(self._pending.values())
        self._pending.clear()
        if self.final is not None and not self._final_matched:
            self._final_matched = True
            actions.append(self.final)
        return actions

    @property
    def suspended(self) -> bool:
        """Whether the run is suspended (events wait until it resumes)."""
        return self._suspended

    @property
    def took_turn(self) -> bool:
        """Whether the code has taken a turn, replayed or live (the executor's
        :class:`~durable._engine._executor.TurnRunner`)."""
        return self._main_started

    def _ended_live(self) -> bool:
        """Whether a live turn has ended the run: what comes next is not the run's to take
        (in replay the history says what the run took, its end event included)."""
        return self.final is not None and not self.replaying

    async def turn(self, events: list[HistoryEvent], *, first_turn: bool) -> list[Action]:
        """Take one new turn (the engine's :class:`~durable._engine._executor.TurnRunner`)."""
        if first_turn:
            actions = self.take_pending()
            actions += self.apply(events, replaying=False)
            return actions
        return self.apply(events, replaying=False)

    def committed(self, events: list[HistoryEvent]) -> None:
        """Nothing to do: the run already holds what its turn decided."""

    def take_pending(self) -> list[Action]:
        """Hand over actions that replay produced beyond history: those of the turn a
        rerun cut, which its first turn records in that same turn (no ``TurnStarted``
        comes before them), so that a replay meets them where the code asks for them."""
        actions = list(self._pending.values())
        self._pending.clear()
        return actions

    def check_complete(self) -> None:
        """After replaying a whole history: the code must have nothing left unrecorded."""
        self._check_nothing_pending(None)

    def close(self) -> None:
        """Drop the coroutine (eviction, termination, end of run)."""
        self.terminated = self.terminated or self.final is None
        self._unwind()

    def _unwind(self) -> None:
        """Close every task; what their ``finally`` blocks ask for is not recorded and
        their logging stays silent."""
        self.replaying = True
        self._scheduler.close()
        self._pending.clear()

    def _run_tasks(self) -> None:
        if self.final is not None or self.terminated:  # (self.finished, inlined: hot)
            return
        try:
            self._scheduler.run()
        except ContinueAsNewSignal:
            if self.final is None:
                raise RuntimeError("continue-as-new unwound without a request") from None
            self._scheduler.close()

    # -- history handlers -----------------------------------------------------------

    def _on_started(self, event: WorkflowStarted) -> None:
        self.started = event
        self.now = event.timestamp
        self._next_task_id = event.first_task_id
        if event.updates:
            _updates.take_carried(self, event.updates)

    def _on_turn_started(self, event: TurnStarted) -> None:
        self._turn_event_id = event.event_id
        if self._pending or self.final is not None:
            self._check_nothing_pending(event.event_id)
        self.now = event.timestamp
        if self.started is not None and not self._main_started and not self.finished:
            self._main_started = True
            self._start_main(self.started)

    def _start_main(self, started: WorkflowStarted) -> None:
        definition = self.definition
        try:
            value = self.codec.decode(started.input, definition.input_type)
        except SerializationError as err:
            self.final = FailWorkflow(failure_from_exception(err))
            return
        coro = definition.fn(self.ctx, value) if definition.takes_input else definition.fn(self.ctx)
        main = self._main = self._scheduler.spawn(coro)
        main.add_done_callback(self._on_main_done)
        if self.cancel_requested:  # asked before the code began: it raises at once
            main.cancel()

    def _on_main_done(self, main: DurableFuture[Any]) -> None:
        if self.final is not None:
            return
        exc = main.exception()
        if exc is not None:
            self.final = FailWorkflow(failure_from_exception(exc))
            return
        try:
            self.final = CompleteWorkflow(Raw(self.codec.encode(main.result())))
        except SerializationError as err:
            self.final = FailWorkflow(failure_from_exception(err))

    def _on_scheduled(
        self, event: ActivityScheduled | TimerCreated | ChildWorkflowScheduled | EventSent
    ) -> None:
        action = self._pending.pop(event.task_id, None)
        if action is None:
            raise NonDeterminismError(
                f"workflow {self.instance_id!r}: history event {event.event_id} is "
                f"{describe(event)}, but the workflow code did not schedule it",
                event_id=event.event_id,
            )
        if type(action) is not SCHEDULING_ACTIONS[type(event)] or getattr(
            action, "name", None
        ) != getattr(event, "name", None):
            raise NonDeterminismError(
                f"workflow {self.instance_id!r}: history event {event.event_id} is "
                f"{describe(event)}, but the workflow code asked for {describe(action)}",
                event_id=event.event_id,
            )

    def _on_final(self, event: WorkflowCompleted | WorkflowErrored | ContinuedAsNew) -> None:
        if self.final is None or type(self.final) is not FINAL_ACTIONS[type(event)]:
            did = (
                f"ended with the {describe(self.final)}"
                if self.final is not None
                else "is still waiting"
            )
            raise NonDeterminismError(
                f"workflow {self.instance_id!r}: history event {event.event_id} is the "
                f"{describe(event)}, but the workflow code {did}",
                event_id=event.event_id,
            )
        self._final_matched = True

    def _check_nothing_pending(self, event_id: int | None) -> None:
        """Raise if the code asked for something that history does not record before
        event ``event_id`` (a new turn), or before the end of history (``None``)."""
        where = (
            "the end of history" if event_id is None else f"history event {event_id}, a new turn"
        )
        if self._pending:
            action = next(iter(self._pending.values()))
            raise NonDeterminismError(
                f"workflow {self.instance_id!r}: the workflow code asked for "
                f"{describe(action)}, which history does not hold before {where}",
                event_id=event_id,
            )
        if self.final is not None and not self._final_matched and self.replaying:
            raise NonDeterminismError(
                f"workflow {self.instance_id!r}: the workflow code ended "
                f"({describe(self.final)}), which history does not hold before {where}",
                event_id=event_id,
            )

    def _take_open(self, task_id: int) -> _Open | None:
        return self._open.pop(task_id, None)

    def _on_activity_completed(self, event: ActivityCompleted) -> None:
        if (op := self._take_open(event.task_id)) is not None:
            self._resolve(op, event.result)

    def _on_child_completed(self, event: ChildWorkflowCompleted) -> None:
        if (op := self._take_open(event.task_id)) is not None:
            self._resolve(op, event.result)

    def _resolve(self, op: _Open, raw: Raw) -> None:
        try:
            value = self.codec.decode(raw, op.output_type)
        except SerializationError as err:
            op.future.set_exception(err)
            return
        op.future.set_result(value)

    def _on_activity_errored(self, event: ActivityErrored) -> None:
        if (op := self._take_open(event.task_id)) is not None:
            cls = ActivityTimeoutError if is_timeout(event.failure) else ActivityFailed
            op.future.set_exception(cls(op.name, event.task_id, event.failure))

    def _on_child_errored(self, event: ChildWorkflowErrored) -> None:
        if (op := self._take_open(event.task_id)) is not None:
            op.future.set_exception(WorkflowFailed(op.name, event.failure))

    def _on_timer_fired(self, event: TimerFired) -> None:
        if (op := self._take_open(event.task_id)) is not None:
            op.future.set_result(None)

    def _on_event_raised(self, event: EventRaised) -> None:
        waiters = self._waiters.get(event.name)
        while waiters:
            future, output_type = waiters.popleft()
            if not future.done():
                self._deliver(future, event.input, output_type)
                return
        self._buffered.setdefault(event.name, deque()).append(event)

    def _deliver(self, future: DurableFuture[Any], raw: Raw, output_type: Any) -> None:
        try:
            future.set_result(self.codec.decode(raw, output_type))
        except SerializationError as err:
            future.set_exception(err)

    def _on_patch_applied(self, event: PatchApplied) -> None:
        if event.patch_id not in self._checked_patches:
            raise NonDeterminismError(
                f"workflow {self.instance_id!r}: history event {event.event_id} records patch "
                f"{event.patch_id!r}, but the workflow code no longer checks it; keep "
                f"ctx.patched({event.patch_id!r}) or ctx.deprecate_patch({event.patch_id!r}) "
                "while runs that recorded it remain",
                event_id=event.event_id,
            )
        self._recorded_patches.add(event.patch_id)

    def _on_search_upserted(self, event: SearchAttributesUpserted) -> None:
        """History holds an upsert: the code must have asked for the same one."""
        for key, action in self._pending.items():
            if type(action) is UpsertSearchAttributes:
                del self._pending[key]
                if action.attributes != event.attributes:
                    raise NonDeterminismError(
                        f"workflow {self.instance_id!r}: history event {event.event_id} is "
                        f"{describe(event)}, but the workflow code asked for {describe(action)}",
                        event_id=event.event_id,
                    )
                return
        raise NonDeterminismError(
            f"workflow {self.instance_id!r}: history event {event.event_id} is "
            f"{describe(event)}, but the workflow code did not upsert them",
            event_id=event.event_id,
        )

    def _on_suspended(self, event: WorkflowSuspended) -> None:
        self._suspended = True

    def _on_resumed(self, event: WorkflowResumed) -> None:
        self._suspended = False
        self._released, self._held = self._held, []
        while self._released:
            held_event = self._released.pop(0)
            if self._ended_live():
                self.untaken.append(held_event)
                continue
            _HANDLERS[type(held_event)](self, held_event)
            self._run_tasks()

    def _on_rewound(self, event: WorkflowRewound) -> None:
        """Nothing to do: the history before it is already the rewound one."""

    def _on_cancel_requested(self, event: WorkflowCancelRequested) -> None:
        if self.cancel_requested:
            return  # one cancel is enough: the workflow may be cleaning up
        self.cancel_requested = True
        if self._main is not None:
            self._main.cancel()

    def _on_task_cancelled(self, event: TaskCancelled) -> None:
        for key, action in self._pending.items():
            if type(action) is CancelTask and action.task_id == event.task_id:
                del self._pending[key]
                return
        raise NonDeterminismError(
            f"workflow {self.instance_id!r}: history event {event.event_id} is "
            f"{describe(event)}, but the workflow code did not cancel it",
            event_id=event.event_id,
        )

    def _on_timed_out(self, event: ExecutionTimedOut) -> None:
        """The execution timeout passed: the run fails now; nothing its code asked for in
        this turn is recorded (as for a termination)."""
        if self.final is not None:
            return
        replaying = self.replaying
        self._unwind()
        self.replaying = replaying
        self.final = FailWorkflow(timed_out(self.instance_id, event))

    def _on_terminated(self, event: WorkflowTerminated) -> None:
        self.terminated = True
        replaying = self.replaying
        self._unwind()  # nothing scheduled in this turn runs: the instance is terminated
        self.replaying = replaying
        if isinstance(self.final, ContinueAsNew):  # terminate wins over continue-as-new
            self.final = None

    # -- operations for WorkflowContext ---------------------------------------------

    @property
    def task_count(self) -> int:
        """The next task id this run would use (where a continued run starts)."""
        return self._next_task_id

    def next_task_id(self) -> int:
        if self.querying is not None:
            self.not_in_query("schedule an operation")
        task_id = self._next_task_id
        self._next_task_id += 1
        return task_id

    def schedule(
        self, action: Action, future: DurableFuture[Any], name: str, output_type: Any
    ) -> None:
        """Record a new durable operation; it is matched against history or emitted."""
        task_id: int = action.task_id  # type: ignore[union-attr]
        self._pending[task_id] = action
        self._open[task_id] = _Open(future, name, output_type)

    def emit(self, action: SendEvent) -> None:
        """Record a one-way operation: matched against history or emitted; nothing
        waits for an outcome."""
        self._pending[action.task_id] = action

    def not_in_query(self, what: str) -> None:
        """Refuse what would change the run while a query handler reads it."""
        if self.querying is not None:
            raise QueryFailedError(self.instance_id, self.querying, f"its handler tried to {what}")

    def record(self, action: Action) -> None:
        """Record an action that names what it is about itself (no task id)."""
        self._pending[next(self._patch_keys)] = action

    def take_recorded(self, matches: Callable[[Action], bool]) -> bool:
        """Take the first recorded action that ``matches``; whether there was one."""
        for key, action in self._pending.items():
            if matches(action):
                del self._pending[key]
                return True
        return False

    def cancel_op(self, task_id: int) -> None:
        """The code cancelled operation ``task_id``: no outcome of it is applied any more,
        and the cancellation is recorded (an operation scheduled in this same turn is
        simply not recorded at all)."""
        if self._open.pop(task_id, None) is None:
            return
        if self._pending.pop(task_id, None) is None:
            self._pending[next(self._patch_keys)] = CancelTask(task_id)

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the patched path (recording it the first time live)."""
        self._checked_patches.add(patch_id)
        if patch_id in self._recorded_patches:
            return True
        if self.replaying:
            if patch_id in self._history_patches:
                self._recorded_patches.add(patch_id)
                return True
            return False
        self.not_in_query("record a patch")
        self._recorded_patches.add(patch_id)
        self._pending[next(self._patch_keys)] = RecordPatch(patch_id)
        return True

    def deprecate_patch(self, patch_id: str) -> None:
        """Accept ``patch_id`` in history without branching on it any more."""
        self._checked_patches.add(patch_id)

    def wait_event(self, name: str, output_type: Any) -> DurableFuture[Any]:
        future: DurableFuture[Any] = DurableFuture()
        buffered = self._buffered.get(name)
        if buffered:
            self._deliver(future, buffered.popleft().input, output_type)
        else:
            self._waiters.setdefault(name, deque()).append((future, output_type))
        return future

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> DurableFuture[Any]:
        if self.querying is not None:
            coro.close()
            self.not_in_query("start a task")
        return self._scheduler.spawn(coro)

    def request_continue_as_new(self, raw_input: Raw) -> None:
        self.not_in_query("continue as new")
        # events received but not waited for: those buffered, and those held while the
        # run was suspended and not released yet that earlier turns took (this turn's
        # are left for the new run to take)
        held = (
            e for e in self._released
            if type(e) is EventRaised and e.event_id < self._turn_event_id
        )  # fmt: skip
        carry = sorted(
            (*(event for queue in self._buffered.values() for event in queue), *held),
            key=lambda event: event.event_id,
        )
        carryover = tuple(EventRaised(name=e.name, input=e.input) for e in carry)
        self.final = ContinueAsNew(raw_input, carryover, _updates.carried(self))
        self._buffered.clear()

    def rng(self) -> random.Random:
        self.not_in_query("draw a random value")
        if self._random is None:
            # The seed (the run id, or for a rerun the id of the run whose history it
            # keeps) is random, and history holds it, so a replay anywhere (even
            # without the instance id) draws the same numbers.
            seed = self.started.replay_seed if self.started is not None else ""
            self._random = random.Random(seed or self.instance_id)
        return self._random


# Which method applies each event type: one table for every run (a run stays small).


_NO_PATCHES: dict[int, list[str]] = {}  # a live turn's (never changed: apply reads it only)


def _patches_by_turn(events: Sequence[Event]) -> dict[int, list[str]]:
    """The patches each replayed turn recorded, by the index of its TurnStarted (-1: a
    turn begun before ``events``). A patch counts from the turn that recorded it on, as
    it did live: a run in flight when a patch was deployed took the old path before."""
    found: dict[int, list[str]] = {}
    turn = -1
    for index, event in enumerate(events):
        if type(event) is TurnStarted:
            turn = index
        elif type(event) is PatchApplied:
            found.setdefault(turn, []).append(event.patch_id)
    return found


_HANDLERS: dict[type, Callable[[WorkflowRun, Any], None]] = {
    WorkflowStarted: WorkflowRun._on_started,
    TurnStarted: WorkflowRun._on_turn_started,
    ActivityScheduled: WorkflowRun._on_scheduled,
    TimerCreated: WorkflowRun._on_scheduled,
    ChildWorkflowScheduled: WorkflowRun._on_scheduled,
    EventSent: WorkflowRun._on_scheduled,
    ActivityCompleted: WorkflowRun._on_activity_completed,
    ActivityErrored: WorkflowRun._on_activity_errored,
    TimerFired: WorkflowRun._on_timer_fired,
    ChildWorkflowCompleted: WorkflowRun._on_child_completed,
    ChildWorkflowErrored: WorkflowRun._on_child_errored,
    EventRaised: WorkflowRun._on_event_raised,
    PatchApplied: WorkflowRun._on_patch_applied,
    SearchAttributesUpserted: WorkflowRun._on_search_upserted,
    TaskCancelled: WorkflowRun._on_task_cancelled,
    UpdateRequested: _updates.requested,
    UpdateCompleted: _updates.completed,
    WorkflowCancelRequested: WorkflowRun._on_cancel_requested,
    ExecutionTimedOut: WorkflowRun._on_timed_out,
    WorkflowSuspended: WorkflowRun._on_suspended,
    WorkflowResumed: WorkflowRun._on_resumed,
    WorkflowRewound: WorkflowRun._on_rewound,
    WorkflowTerminated: WorkflowRun._on_terminated,
    WorkflowCompleted: WorkflowRun._on_final,
    WorkflowErrored: WorkflowRun._on_final,
    ContinuedAsNew: WorkflowRun._on_final,
}
