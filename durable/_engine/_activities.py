"""Dispatch of what a committed turn starts: activity attempts, timers, sub-workflows."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from durable._activity import Attempt, current_attempt
from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowScheduled,
    HistoryEvent,
    TimerCreated,
    TimerFired,
)

from ._attempts import RunningAttempt
from ._base import _CLAIM, _FAIR_STREAK, _EngineBase
from ._instance import Pending, _ActivityWork, _child_of, _Instance
from ._lifecycle import (
    can_take_inline_turn,
)


class _Activities(_EngineBase):
    """Start scheduled work once, and run activity attempts in the activity workers."""

    def _dispatch(self, inst: _Instance, event: HistoryEvent) -> None:
        if isinstance(event, ActivityScheduled):
            key = (inst.id, inst.run_start, event.task_id)
            if key not in self._inflight:
                self._inflight.add(key)
                self._busy += 1
                work = (inst.id, inst.name, inst.run_start, event)
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
        try:
            streak = 0
            while True:
                await self._run_attempt(work)
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

    async def _run_attempt(self, work: _ActivityWork) -> None:
        instance_id, workflow_name, run_start, scheduled = work
        try:
            outcome = await self._attempt(instance_id, workflow_name, run_start, scheduled)
            copies = 1
            if self._hooks is not None:
                await self._hooks.before_delivery(instance_id, outcome)
                copies = self._hooks.deliveries(instance_id, outcome)
            self._inflight.discard((instance_id, run_start, scheduled.task_id))
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
            self._inflight.discard((instance_id, run_start, scheduled.task_id))
            self.busy_exit()

    async def _attempt(
        self, instance_id: str, workflow_name: str, run_start: int, scheduled: ActivityScheduled
    ) -> ActivityCompleted | ActivityErrored:
        """Run one attempt in its cancel scope, bounded by its timeouts."""
        timeouts = scheduled.timeouts
        control = Attempt(
            self.clock, heartbeat_timeout=timeouts.heartbeat if timeouts else None,
            memo_store=self.memo_store, instance_id=instance_id, step=scheduled.step,
            spawn=self._spawn, on_wait=self._attempt_waits,
        )  # fmt: skip
        running = RunningAttempt(scheduled, control)
        running.arm(self._timers, timeouts)
        token = current_attempt.set(control)
        outcome: ActivityCompleted | ActivityErrored | None = None
        try:
            with running.scope:
                if running.stopped is None:
                    outcome = await self.executor.run_activity(
                        instance_id, workflow_name, scheduled
                    )
        finally:
            current_attempt.reset(token)
            running.disarm(self._timers)
        outcome = running.timed_out() or outcome
        assert outcome is not None, "an attempt ends with an outcome or stopped"
        await control.finish(failed=type(outcome) is ActivityErrored)
        return outcome

    def _attempt_waits(self, waiting: bool) -> None:
        """An attempt waits on its cancel signal (the runtime may count as idle, and a
        mock clock skip to its timeouts), or stops waiting."""
        if waiting:
            self.busy_exit()
        else:
            self.busy_enter()
