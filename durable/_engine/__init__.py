"""The engine: runs turns, commits each exactly once, and carries out what they ask.

A turn takes an instance's pending events, feeds them to its cached run (a
:class:`~durable._engine._executor.TurnRunner` from the executor: a local
:class:`~durable._core._replay.WorkflowRun`, replayed from the log on a miss, or a remote
worker's), and commits the
result as ``log/{seq}`` with put-if-absent. Only after the commit does anything
happen: activities start, timers arm, sub-workflows begin, waiters wake. A writer
that loses the put drops its turn and reloads from the log. Recovery rebuilds every
unfinished instance from the log and re-dispatches what its history left open.

One module per concern; :class:`Engine` puts the concerns together over one shared state:

- ``_instance``: the in-memory record of an instance, and pure helpers over it;
- ``_base``: the shared state, background work, idleness, the replay cache;
- ``_turns``: queueing instances and running a turn;
- ``_commit``: the commit of a turn and what follows it (a new run, the end, the meta);
- ``_activities``: dispatching activities, timers and sub-workflows, activity attempts;
- ``_children``: sub-workflows, telling parents;
- ``_messages``: events between instances (a turn's outbox, posted in order);
- ``_queries``: queries answered from a run held here;
- ``_inbox``: inboxes, wakeups and polling; ``_handover``: one sender's events in order
  (nothing is handed to an instance at once while its inbox is read);
- ``_recovery``: loading from the log, reloads, partitions taken and dropped;
- ``_residency`` and ``_eviction``: which waiting instances stay in memory;
- ``_timers``: the durable timer queue; ``_executor``: where workflow and activity code runs.
"""

from __future__ import annotations

import contextlib
import math

import anyio
import anyio.abc
import anyio.lowlevel

from durable._clock import MockClock
from durable._errors import StoreError

from ._activities import _Activities
from ._base import EngineHooks, log, supervised
from ._children import _Children
from ._commit import _Commits
from ._inbox import _Inbox
from ._instance import _ActivityWork, _Instance
from ._messages import _Messages
from ._queries import _Queries
from ._recovery import _Recovery
from ._turns import _Turns

__all__ = ["Engine", "EngineHooks"]


class Engine(_Turns, _Commits, _Activities, _Children, _Messages, _Queries, _Inbox, _Recovery):
    """Turns, commits, dispatch and recovery for one runtime process."""

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Recover, then serve until cancelled."""
        send, receive = anyio.create_memory_object_stream[_Instance](math.inf)
        send_activity, receive_activity = anyio.create_memory_object_stream[_ActivityWork](math.inf)
        try:
            async with (
                send,
                receive,
                send_activity,
                receive_activity,
                anyio.create_task_group() as tg,
            ):
                self._send, self._send_activity, self._tg = send, send_activity, tg
                for _ in range(self._max_turns):
                    tg.start_soon(supervised, self._serve, receive, self._turn_from_queue)
                for _ in range(self._max_activities):
                    tg.start_soon(supervised, self._serve, receive_activity, self._run_activity)
                if self._leases is None:
                    try:
                        await self.recover_all()
                    except StoreError as err:
                        if not err.transient:
                            raise
                        log.warning("recovery at start failed, retrying: %s", err)
                        self._spawn_guarded(self.recover_all)
                else:  # each partition is recovered as its lease is taken
                    await tg.start(supervised, self._leases.run)
                tg.start_soon(supervised, self._timers.run)
                tg.start_soon(supervised, self._poll_loop)
                if isinstance(self.clock, MockClock) and self.clock.auto_advance:
                    tg.start_soon(supervised, self._auto_advance, self.clock)
                task_status.started()
        finally:
            self._send = self._send_activity = self._tg = None  # stopped: see `running`
            for inst in self._instances.values():  # unwind suspended coroutines now
                self._drop_run(inst)
            await self._flush_stale_meta()

    async def _flush_stale_meta(self) -> None:
        """On the way out: one more try at the meta of ended instances whose last write
        failed, so listings do not show them running until the next start."""
        with anyio.CancelScope(shield=True):  # one try each; the store's own timeouts bound it
            for inst in list(self._stale_meta.values()):
                with contextlib.suppress(StoreError):
                    await self._write_meta_or_raise(inst)
