"""The turn loop: queueing instances, running a turn, building its events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from durable._core._actions import (
    Action,
    CancelTask,
    CompleteUpdate,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordPatch,
    ScheduleActivity,
    SendEvent,
    StartChildWorkflow,
    StartTimer,
    UpsertSearchAttributes,
)
from durable._core._events import (
    ActivityScheduled,
    ChildWorkflowScheduled,
    ContinuedAsNew,
    Event,
    EventSent,
    ExecutionTimedOut,
    HistoryEvent,
    PatchApplied,
    SearchAttributesUpserted,
    TaskCancelled,
    TimerCreated,
    TurnStarted,
    UpdateCompleted,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowStarted,
    WorkflowSuspended,
    WorkflowTerminated,
)
from durable._core._replay import timed_out
from durable._core._search import Indexed, fold
from durable._core._state import WorkflowStatus, ended_by
from durable._errors import (
    NonDeterminismError,
    StoreError,
    UnknownWorkflowError,
)
from durable._log._msgids import applied_before, message_id, watermarks
from durable._log._reader import load_run
from durable._log._records import (
    TurnRecord,
    inbox_prefix,
    instance_of_key,
)

from ._base import _EngineBase, _NotLeased, log
from ._handover import Handover
from ._instance import (
    _ANSWERS,
    _ANY_RUN,
    _NAMES_A_RUN,
    Pending,
    _addressed_elsewhere,
    _for_good,
    _Instance,
    _numbered,
)
from ._lifecycle import (
    PARKED_APPLIES,
    InstanceState,
    LifecycleEvent,
    can_enqueue,
    end_of_turn,
    fire,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._executor import TurnRunner

# Bound once, for the turn loop (see _lifecycle: an enum class's attribute read is slow).
_QUEUE, _START_TURN = LifecycleEvent.QUEUE, LifecycleEvent.START_TURN
_DROPPED = InstanceState.DROPPED
_PENDING, _RUNNING, _SUSPENDED = (
    WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.SUSPENDED
)  # fmt: skip


def _take(
    untaken: Sequence[Event],
    events: list[HistoryEvent],
    sources: list[Pending],
    consumed: list[str],
) -> tuple[list[HistoryEvent], list[str], list[Pending]]:
    """Split a turn's events (its ``TurnStarted``, if any, then one per source) into
    those the run took (renumbered, with the messages they consume) and the pending
    items of those it left, for the next run."""
    left_ids = {event.event_id for event in untaken}
    head = len(events) - len(sources)
    taken, left = events[:head], []
    for event, source in zip(events[head:], sources, strict=True):
        if event.event_id in left_ids:
            left.append(source)
        else:
            taken.append(event)
    left_msgs = {msg_id for msg_id, _, _ in left}
    taken = _numbered(taken, events[0].event_id)
    return taken, [msg_id for msg_id in consumed if msg_id not in left_msgs], left


class _Turns(_EngineBase):
    """Queue instances for turns and run them: pending events in, a record to commit out."""

    def _enqueue(self, inst: _Instance) -> None:
        if can_enqueue(inst.state, inst.pending):
            fire(inst, _QUEUE)
            self._queued += 1
            assert self._send is not None, "the engine is not running"
            self._send.send_nowait(inst)

    def deliver(
        self, instance_id: str, event: Event, run_start: int = _ANY_RUN, msg_id: str | None = None
    ) -> None:
        """Hand an event to an instance for its next turn: at once if it is in memory and
        no read of its inbox is under way, else behind that read (loading it if needed:
        the load is a read of its own). See :mod:`._handover`."""
        item = (msg_id, run_start, event)
        if (handover := self._handovers.get(instance_id)) is not None:
            handover.add(item)
            return
        inst = self._live(instance_id)
        if inst is None:
            handover = self._handovers[instance_id] = Handover()
            handover.add(item)
            self._spawn_guarded(self._continue_handover, instance_id)
            return
        self._hand(inst, [item])

    def _live(self, instance_id: str) -> _Instance | None:
        """The instance in memory, unless that copy has ended: then it is not the
        instance any more (another process may have begun a new run under its id), and
        the store says what runs."""
        inst = self._instances.get(instance_id)
        return inst if inst is not None and not inst.status.is_terminal else None

    def _hand(self, inst: _Instance, items: list[Pending]) -> None:
        """Give events to a resident instance for its next turn. A fired timer is no
        longer armed here once its firing is in the instance's hands."""
        inst.pending.extend(items)
        self._disarm_fired(inst.id, items)
        if inst.pending:
            self._enqueue(inst)

    async def _turn_from_queue(self, inst: _Instance) -> None:
        self._queued -= 1
        if inst.state is not _DROPPED:
            await self._run_turn(inst)
        else:  # a copy let go of meanwhile takes no turn: loads that waited for it go on
            self._residency.evict_to_capacity()

    async def _run_turn(self, inst: _Instance) -> None:
        fire(inst, _START_TURN)
        self._busy += 1
        self._turns += 1
        pending, inst.pending = inst.pending, []
        try:
            try:
                await self._turn_with(inst, pending)
            except BaseException:
                # Nothing was committed: keep the events for the next attempt.
                if inst.seq_at_turn_start == inst.seq:
                    inst.pending = pending + inst.pending
                raise
        except StoreError as err:
            if not _for_good(err) or instance_of_key(err.key) != inst.id:
                log.warning("turn of %r failed on the store: %s; reloading", inst.id, err)
                self._retry_later(inst)
            else:
                await self._fail_for_good(f"turn of {inst.id!r}", err)
        except _NotLeased:
            log.info("turn of %r not committed: the partition's lease is not held", inst.id)
            self._retry_later(inst)
        except Exception:  # a bug must not take the whole runtime down with it
            log.exception("turn of %r failed; retrying after a backoff", inst.id)
            self._retry_later(inst)
        finally:
            fire(inst, end_of_turn(inst.status))
            self._turns -= 1
            needs_turn = inst.pending or inst.status is _PENDING
            if needs_turn and self._instances.get(inst.id) is inst:
                self._enqueue(inst)
            self._residency.evict_to_capacity()
            self.busy_exit()

    async def _turn_with(self, inst: _Instance, pending: list[Pending]) -> None:
        inst.seq_at_turn_start = inst.seq
        if inst.status.is_terminal:
            self._discard_messages(inst, pending)
            if self._instances.get(inst.id) is inst and not inst.pending:
                self._let_go(inst)
            return
        now = self.clock.now()
        new, sources, consumed = self._new_events(inst, pending, inst.next_event_id + 1, now)
        first_turn = inst.status is _PENDING
        if not new and not first_turn and not consumed:
            self._residency.note_waiting(inst)  # nothing new (a duplicate): still evictable
            return
        run = inst.run
        if run is None:
            try:
                run = await self._rebuild(inst)
            except NonDeterminismError as err:
                await self._commit_failure(inst, err)
                return
            except UnknownWorkflowError as err:
                log.warning(
                    "instance %r waits for a worker that has its workflow: %s", inst.id, err
                )
                fire(inst, LifecycleEvent.PARK)
                inst.reason = f"waiting for a worker that runs it: {err}"
                await self._parked_turn(inst, pending, reason_changed=True)
                return
            if run is None:  # the log moved on under us; reloaded
                inst.pending = pending + inst.pending
                return
        if first_turn and run.took_turn:
            # a rerun's first turn opens no turn: its history ends inside the turn it
            # cut, so what that turn still asks for is recorded in it, where a replay of
            # the run meets it
            events = _numbered(new, inst.next_event_id)
        else:  # TurnStarted, then the new events (in new's own list: no copy)
            new.insert(0, TurnStarted(event_id=inst.next_event_id, timestamp=now))
            events = new
        try:
            actions = await run.turn(events, first_turn=first_turn)
        except NonDeterminismError as err:
            self._drop_run(inst)
            await self._commit_failure(inst, err)
            return
        left: list[Pending] | None = None
        if run.untaken:  # the run ended before some of the events
            events, consumed, left = _take(run.untaken, events, sources, consumed)
        new_events, next_run, status = self._record_actions(
            inst, run, actions, inst.next_event_id + len(events), now
        )
        if next_run:
            # the new run skips the old run's messages that may still be in the inbox
            consumed += await self._undeleted(inst, consumed)
            # and each sender's watermark, so that the new run skips what this one applied
            marks = watermarks([*inst.received.values(), *consumed]).values()
            consumed += sorted(set(marks).difference(consumed))
        record = TurnRecord(
            seq=inst.seq + 1,
            status=status,
            events=events + new_events,
            next_run=next_run,
            consumed=consumed,
            custom_status=run.custom_status,
        )
        if not await self._commit(inst, record):
            inst.pending = pending + inst.pending
            self._drop_run(inst)
            await self._reload(inst)
            return
        if left:  # what the run did not take goes to the next
            if next_run:  # the messages the old run left are unconsumed in the new run's view
                left = [(m, record.seq if m is not None else r, e) for m, r, e in left]
            inst.pending = left + inst.pending
        run.committed(record.events)
        if self._hooks is not None:
            self._hooks.committed(inst.id, record)
        await self._after_commit(inst, record)

    def _new_events(
        self, inst: _Instance, pending: list[Pending], first_id: int, now: Any
    ) -> tuple[list[HistoryEvent], list[Pending], list[str]]:
        """The events of ``pending`` that a turn takes, numbered from ``first_id``, the
        pending item each came from, and the inbox messages they consume: each message
        once, and an outcome only if it is for the current run and answers an operation
        that still waits for it.

        A message read under an earlier run is not taken, nor any message after it: the
        current run's consumed ids name only the messages still in the inbox when it
        began, so one that an earlier run applied and deleted would look new. The inbox
        is read again instead (in its senders' order)."""
        events: list[HistoryEvent] = []
        sources: list[Pending] = []
        consumed: list[str] = []
        answered: set[int] = set()
        stale = False
        for item in pending:
            msg_id, run_start, event = item
            if msg_id is not None:
                if stale or run_start != inst.run_start:
                    stale = True
                    continue
                if msg_id in inst.consumed or msg_id in consumed:
                    continue
                consumed.append(msg_id)
                if applied_before(inst.received, msg_id):
                    continue  # posted again after its run moved on: consumed, not applied
            elif run_start != _ANY_RUN and run_start != inst.run_start:
                continue
            kind = type(event)
            if kind in _NAMES_A_RUN and _addressed_elsewhere(inst, event):
                self._take_freed_child_id(inst, event)
                continue
            answers = _ANSWERS.get(kind)
            if answers is not None:
                task_id: int = event.task_id  # type: ignore[attr-defined]
                scheduled = inst.outstanding.get(task_id)
                if type(scheduled) is not answers or task_id in answered:
                    continue
                # (a sub-workflow's answer alone names a child: a getattr with a default
                # cost every other answer a raised and caught AttributeError)
                if answers is ChildWorkflowScheduled:
                    child_id: str = event.instance_id  # type: ignore[attr-defined]
                    if child_id and scheduled.instance_id != child_id:  # type: ignore[union-attr]
                        continue
                    if child_id and not _answers_this_call(event, scheduled):
                        continue  # a late answer to a call since scheduled again (a retry)
                answered.add(task_id)
            event_id = first_id + len(events)
            events.append(msgspec.structs.replace(event, event_id=event_id, timestamp=now))  # type: ignore[arg-type]
            sources.append(item)
        if stale:
            self._read_again(inst)
        return events, sources, consumed

    def _read_again(self, inst: _Instance) -> None:
        """Messages in hand that were read under an earlier run: every message goes back
        to the inbox, to be read again through a handover (in its senders' order, and
        nothing handed at once meanwhile)."""
        inst.pending = [item for item in inst.pending if item[0] is None]
        if (handover := self._handovers.get(inst.id)) is not None:
            handover.reread = True
            return
        self._handovers[inst.id] = Handover()
        self._spawn_guarded(self._continue_handover, inst.id)

    async def _parked_turn(
        self, inst: _Instance, pending: list[Pending], *, reason_changed: bool = False
    ) -> None:
        """A turn of an instance whose workflow is not registered here: apply the
        control messages (suspend, resume, terminate) and the execution deadline (the run
        fails with ``durable.TimeoutError``), which need no workflow code, and keep every
        other event for a worker that has the code.

        The record holds the control events alone, with no ``TurnStarted`` (the code
        took no turn), so a worker that has the code replays them where they happened.
        A run whose code has not taken its first turn (a rerun's kept turns are not its
        own) stays PENDING once resumed: its first turn is still to come."""
        control = [item for item in pending if isinstance(item[2], PARKED_APPLIES)]
        rest = [item for item in pending if not isinstance(item[2], PARKED_APPLIES)]
        now = self.clock.now()
        events, _, consumed = self._new_events(inst, control, inst.next_event_id, now)
        if not events:
            inst.pending = rest + inst.pending
            if reason_changed:
                await self._write_meta(inst)
            return
        loaded = await load_run(self.store, inst.id, self._meta_hint(inst))
        if loaded is None or loaded.last_seq != inst.seq:
            inst.pending = pending + inst.pending
            await self._reload(inst)
            return
        status = inst.status
        for i, event in enumerate(events):
            if isinstance(event, WorkflowTerminated | ExecutionTimedOut):
                del events[i + 1 :]  # the run ends here: what follows is for nobody
                status = WorkflowStatus.TERMINATED
                if isinstance(event, ExecutionTimedOut):  # it fails as its code would
                    failure = timed_out(inst.id, event)
                    events.append(WorkflowErrored(event_id=event.event_id + 1, timestamp=now,
                                                  failure=failure))  # fmt: skip
                    status = WorkflowStatus.FAILED
                consumed += [msg_id for msg_id, _, _ in pending if msg_id is not None]
                rest = []
                break
            elif isinstance(event, WorkflowSuspended):
                status = WorkflowStatus.SUSPENDED
            elif status is WorkflowStatus.SUSPENDED:
                status = WorkflowStatus.RUNNING if loaded.turn_taken else WorkflowStatus.PENDING
        record = TurnRecord(
            seq=inst.seq + 1, status=status, events=events, consumed=sorted(set(consumed)),
            custom_status=inst.custom_status,
        )  # fmt: skip
        if not await self._commit(inst, record):
            inst.pending = pending + inst.pending
            await self._reload(inst)
            return
        inst.pending = rest + inst.pending
        if status.is_terminal:
            inst.reason = ""  # it waits for nothing any more
        if self._hooks is not None:
            self._hooks.committed(inst.id, record)
        await self._after_commit(inst, record)

    async def _undeleted(self, inst: _Instance, consumed: list[str]) -> list[str]:
        """The messages the run consumed before this turn that are still in the inbox (their
        delete failed or has not run yet). Only these can reach a new run again, so its
        first record names them, and not every message the instance ever consumed."""
        listed = await self.store.list(inbox_prefix(inst.id))
        return sorted(inst.consumed.intersection(listed).difference(consumed))

    def _record_actions(
        self, inst: _Instance, run: TurnRunner, actions: list[Action], event_id: int, now: Any
    ) -> tuple[list[HistoryEvent], list[HistoryEvent], WorkflowStatus]:
        """Turn the actions into history events; work out the status after the turn."""
        events: list[HistoryEvent] = []
        next_run: list[HistoryEvent] = []
        status = _SUSPENDED if run.suspended else _RUNNING
        for action in actions:
            event: HistoryEvent
            match action:
                case ScheduleActivity():
                    event = ActivityScheduled(
                        event_id=event_id, timestamp=now, task_id=action.task_id,
                        name=action.name, input=action.input, attempt=action.attempt,
                        step=action.step, execution_id=action.execution_id,
                        timeouts=action.timeouts,
                    )  # fmt: skip
                case StartTimer():
                    event = TimerCreated(
                        event_id=event_id, timestamp=now, task_id=action.task_id,
                        fire_at=action.fire_at, purpose=action.purpose,
                    )  # fmt: skip
                case StartChildWorkflow():
                    event = ChildWorkflowScheduled(
                        event_id=event_id, timestamp=now, task_id=action.task_id,
                        name=action.name, instance_id=action.instance_id, input=action.input,
                        on_parent_close=action.on_parent_close,
                        replace_ended=action.replace_ended, version=action.version,
                        trace_parent=""
                        if self._observe is None
                        else self._observe.child_trace_parent(inst.id, inst.started),
                    )  # fmt: skip
                case CompleteUpdate():
                    event = UpdateCompleted(
                        event_id=event_id, timestamp=now, update_id=action.update_id,
                        result=action.result, failure=action.failure,
                    )  # fmt: skip
                case SendEvent():
                    event = EventSent(
                        event_id=event_id, timestamp=now, task_id=action.task_id,
                        instance_id=action.instance_id, name=action.name, input=action.input,
                        message_id=message_id(inst.id, inst.created_at, inst.seq + 1, event_id),
                    )  # fmt: skip
                case RecordPatch():
                    event = PatchApplied(event_id=event_id, timestamp=now, patch_id=action.patch_id)
                case UpsertSearchAttributes():
                    event = SearchAttributesUpserted(
                        event_id=event_id, timestamp=now, attributes=action.attributes
                    )
                case CancelTask():
                    event = TaskCancelled(event_id=event_id, timestamp=now, task_id=action.task_id)
                case CompleteWorkflow():
                    event, status = (
                        WorkflowCompleted(event_id=event_id, timestamp=now, result=action.result),
                        WorkflowStatus.COMPLETED,
                    )
                case FailWorkflow():
                    event = WorkflowErrored(
                        event_id=event_id, timestamp=now, failure=action.failure
                    )
                    status = ended_by(action.failure)
                case ContinueAsNew():
                    event = ContinuedAsNew(
                        event_id=event_id, timestamp=now, input=action.input,
                        carryover=action.carryover,
                    )  # fmt: skip
                    status = WorkflowStatus.PENDING
                    started = WorkflowStarted(
                        event_id=0, timestamp=now, name=inst.name, input=action.input,
                        run_id=self.ids.run_id(), parent=inst.parent, first_task_id=run.task_count,
                        version=inst.started.version, step_base=inst.started.step_base,
                        origin=inst.started.origin_run,
                        deadline=inst.started.deadline,
                        trace_parent=inst.started.trace_parent,
                        trace_state=inst.started.trace_state,
                        search_attributes=_carried(inst.search, events),
                        updates=action.updates,
                    )  # fmt: skip
                    next_run = [started]
                    next_run.extend(
                        msgspec.structs.replace(e, event_id=i, timestamp=now)
                        for i, e in enumerate(action.carryover, start=1)
                    )
            events.append(event)
            event_id += 1
        if run.terminated and not status.is_terminal:
            status = WorkflowStatus.TERMINATED
        return events, next_run, status

    async def _rebuild(self, inst: _Instance) -> TurnRunner | None:
        """Replay the current run from the log (a cache miss); None if the log moved."""
        loaded = await load_run(
            self.store, inst.id, None if inst.run_start == 0 else self._meta_hint(inst)
        )
        if loaded is None or loaded.last_seq != inst.seq or loaded.run_start != inst.run_start:
            await self._reload(inst)
            return None
        run = self._new_run(inst, loaded.history)
        inst.run = run
        return run


def _answers_this_call(answer: Any, scheduled: Any) -> bool:
    """Whether a sub-workflow's answer is for the scheduling of its call that waits now
    (an answer or a scheduling that does not say is taken as such)."""
    made: int = answer.scheduled
    return made < 0 or scheduled.event_id < 0 or made == scheduled.event_id


def _carried(search: dict[str, Indexed], events: list[HistoryEvent]) -> dict[str, str]:
    """The search attributes a continue-as-new carries into the new run: the run's, with
    the upserts of the turn that continues it."""
    now = dict(search)
    fold(now, events, "")
    return {name: indexed.value for name, indexed in now.items()}
