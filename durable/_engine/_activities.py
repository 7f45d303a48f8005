"""Dispatch of what a committed turn starts: activity attempts, timers, sub-workflows."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from durable._activity import Attempt
from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowScheduled,
    ExecutionTimedOut,
    HistoryEvent,
    TimerCreated,
    TimerFired,
    WorkflowCancelRequested,
)

from ._attempts import RunningAttempt
from ._base import _CLAIM, _FAIR_STREAK, _EngineBase
from ._instance import Pending, _ActivityWork, _child_of, _Instance
from ._lifecycle import (
    can_take_inline_turn,
)

if TYPE_CHECKING:
    from datetime import datetime

_DEADLINE = -1  # the task id under which a run's execution deadline is armed


class _Activities(_EngineBase):
    """Start scheduled work once, and run activity attempts in the activity workers."""

    def _dispatch(self, inst: _Instance, event: HistoryEvent) -> None:
        if isinstance(event, ActivityScheduled):
            key = (inst.id, inst.run_start, event.task_id)
            if key not in self._inflight:
                self._inflight.add(key)
                self._busy += 1
                work = (inst.id, inst.started, inst.run_start, event)
                claim = _CLAIM.get()
                if claim is not None and not claim:
                    claim.append(work)  # the activity worker running this turn takes it next
                else:
                    assert self._send_activity is not None, "the engine is not running"
                    self._send_activity.send_nowait(work)
        elif isinstance(event, TimerCreated):
            if self._arm(inst.id, inst.run_start, event.task_id):
                payload = (inst.id, inst.run_start, event.task_id, event.fire_at)
                self._timers.add(event.fire_at, payload)
        elif isinstance(event, ChildWorkflowScheduled) and self._arm(
            inst.id, inst.run_start, event.task_id
        ):
            self._spawn_guarded(self._start_child, _child_of(inst, event), event)

    def _arm_deadline(self, inst: _Instance) -> None:
        """Bound the run by its start's ``execution_timeout``: at the deadline the run
        (or the continue-as-new successor then current) gets ``ExecutionTimedOut``."""
        deadline = inst.started.deadline
        if deadline is None or inst.status.is_terminal:
            return
        if self._arm(inst.id, inst.run_start, _DEADLINE):
            due = (self._deadline_due, inst.id, inst.run_start, deadline)
            self._timers.add(deadline, due)

    def _deadline_due(self, instance_id: str, run_start: int, deadline: datetime) -> None:
        armed = self._armed.get(instance_id)
        if armed is None or (run_start, _DEADLINE) not in armed:
            return  # the run ended, or left this process: whoever runs it now armed it
        armed.discard((run_start, _DEADLINE))
        self.deliver(instance_id, ExecutionTimedOut(deadline=deadline), run_start)

    def _on_timer(self, payload: tuple[Any, ...]) -> None:
        if callable(payload[0]):  # work deferred after a store error
            payload[0](*payload[1:])
            return
        instance_id, run_start, task_id, fire_at = payload
        if (run_start, task_id) not in self._armed.get(instance_id, ()):
            return  # disarmed since (the run ended, or the instance left this process)
        self.deliver(instance_id, TimerFired(task_id=task_id, fire_at=fire_at), run_start)

    def _arm(self, instance_id: str, run_start: int, task_id: int) -> bool:
        """Note a timer or sub-workflow as under way here; False if it already is."""
        armed = self._armed.setdefault(instance_id, set())
        if (run_start, task_id) in armed:
            return False
        armed.add((run_start, task_id))
        return True

    def _disarm(self, instance_id: str, run_start: int, task_id: int) -> None:
        """Note a sub-workflow as no longer under way here (it has answered)."""
        armed = self._armed.get(instance_id)
        if armed:
            armed.discard((run_start, task_id))

    def _disarm_fired(self, instance_id: str, items: list[Pending]) -> None:
        armed = self._armed.get(instance_id)
        if armed:
            for _, run_start, event in items:
                if type(event) is TimerFired:
                    armed.discard((run_start, event.task_id))

    async def _run_activity(self, work: _ActivityWork) -> None:
        """Run activity attempts in this worker: each attempt, then (if the instance is
        idle and a turn slot is free) its next turn, then the first activity that turn
        scheduled. A sequential workflow then runs step after step with no hand-off."""
        claim: list[_ActivityWork] = []
        token = _CLAIM.set(claim)
        task = asyncio.current_task()  # every attempt here runs in it
        try:
            streak = 0
            while True:
                await self._run_attempt(work, task)
                if not claim:
                    return
                work = claim.pop()
                streak += 1
                if streak >= _FAIR_STREAK:
                    streak = 0
                    await anyio.lowlevel.checkpoint()
        finally:
            _CLAIM.reset(token)
            if claim and self._send_activity is not None:  # not run yet: back to the pool
                with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                    self._send_activity.send_nowait(claim.pop())

    async def _run_attempt(self, work: _ActivityWork, task: asyncio.Task[Any] | None) -> None:
        instance_id, started, run_start, scheduled = work
        key = (instance_id, run_start, scheduled.task_id)  # (made once: the attempt's too)
        try:
            if self._observe is None:
                outcome = await self._attempt(key, started.name, scheduled, task)
            else:
                with self._observe.attempt(instance_id, started, scheduled) as attempt:
                    outcome = await self._attempt(key, started.name, scheduled, task)
                    if outcome is not None:
                        attempt.seen(outcome)
            if outcome is None:
                return  # cancelled: its operation waits for nothing
            copies = 1
            if self._hooks is not None:
                await self._hooks.before_delivery(instance_id, outcome)
                copies = self._hooks.deliveries(instance_id, outcome)
            self._inflight.discard(key)
            inst = self._instances.get(instance_id)
            if inst is None or not can_take_inline_turn(inst.state):
                for _ in range(copies):
                    self.deliver(instance_id, outcome, run_start)
            else:
                inst.pending.extend([(None, run_start, outcome)] * copies)
                if self._turns < self._max_turns:
                    await self._run_turn(inst)
                else:
                    self._enqueue(inst)
        finally:
            self._inflight.discard(key)
            self.busy_exit()

    async def _attempt(
        self,
        key: tuple[str, int, int],
        workflow_name: str,
        scheduled: ActivityScheduled,
        task: asyncio.Task[Any] | None,
    ) -> ActivityCompleted | ActivityErrored | None:
        """Run one attempt (``key``: instance, run start, task id) in ``task`` (the
        worker's, cancelled to stop the attempt), bounded by its timeouts; None if its
        operation was cancelled (or the run ended) meanwhile."""
        instance_id, run_start, task_id = key
        running = RunningAttempt(instance_id, scheduled, self._new_control)
        inst = self._instances.get(instance_id)
        if inst is not None and inst.run_start == run_start and task_id not in inst.outstanding:
            running.cancel()  # cancelled (or the run ended) before it began
        timeouts = scheduled.timeouts
        if timeouts is not None:
            running.arm(self._timers, timeouts, self.clock.now())
        self._attempts[key] = running
        outcome = None
        try:
            if not running.halted:
                running.task = task
                try:
                    outcome = await self.executor.run_activity(
                        instance_id, workflow_name, scheduled, control=running.control
                    )
                except asyncio.CancelledError:
                    if not running.halted or task is None or task.uncancel() > 0:
                        raise  # not this attempt's stop: the worker is cancelled
        finally:
            running.task = None
            if timeouts is not None:
                running.disarm(self._timers)
            if self._attempts.get(key) is running:
                del self._attempts[key]
        if running.halted:  # cancelled or timed out: see what that makes of its outcome
            outcome = running.outcome(outcome)
        if running.unwritten:
            await running.finish(failed=type(outcome) is not ActivityCompleted)
        return outcome

    def _new_control(self, instance_id: str, scheduled: ActivityScheduled) -> Attempt:
        """The control of an attempt that needs one: its cancel signal, its heartbeats."""
        timeouts = scheduled.timeouts
        return Attempt(
            self.clock, heartbeat_timeout=timeouts.heartbeat if timeouts else None,
            memo_store=self.memo_store, instance_id=instance_id, step=scheduled.step,
            spawn=self._spawn, on_wait=self._attempt_waits,
        )  # fmt: skip

    def _cancel_op(self, inst: _Instance, scheduled: HistoryEvent, reason: str) -> None:
        """The run gave up on an operation (cancelled it, or ended): stop its activity
        attempt running here, disarm its timer, or ask its sub-workflow to cancel."""
        task_id: int = scheduled.task_id  # type: ignore[union-attr]
        if isinstance(scheduled, ActivityScheduled):
            running = self._attempts.get((inst.id, inst.run_start, task_id))
            if running is not None:
                running.cancel()
        elif isinstance(scheduled, TimerCreated):
            armed = self._armed.get(inst.id)
            if armed is not None:
                armed.discard((inst.run_start, task_id))
        elif isinstance(scheduled, ChildWorkflowScheduled):
            cancel = WorkflowCancelRequested(reason=reason, parent=_child_of(inst, scheduled))
            self._spawn_guarded(self._tell, scheduled.instance_id, cancel)

    def _attempt_waits(self, waiting: bool) -> None:
        """An attempt waits on its cancel signal (the runtime may count as idle, and a
        mock clock skip to its timeouts), or stops waiting."""
        if waiting:
            self.busy_exit()
        else:
            self.busy_enter()
