"""Where the engine's turns and activities run: in this process, or on a remote worker.

The engine owns ordering, commits and dispatch; an :class:`Executor` owns running the
code. :class:`LocalExecutor` replays workflows from a :class:`~durable.Registry` in
this process. The gRPC sidecar supplies one that hands turns and activities to
connected Durable Task workers and waits for their answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import anyio

from durable._activity import execute_activity
from durable._core._replay import WorkflowRun

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from msgspec import Raw

    from durable._activity import Attempt
    from durable._core._actions import Action
    from durable._core._codec import PayloadCodec
    from durable._core._events import (
        ActivityCompleted,
        ActivityErrored,
        ActivityScheduled,
        Event,
        HistoryEvent,
    )
    from durable._log._memo import MemoStore
    from durable._registry import Registry

    from ._eviction import EvictionPolicy

__all__ = ["Executor", "LocalExecutor", "TurnRunner"]


class TurnRunner(Protocol):
    """One run of an instance, holding what it needs to take the next turn."""

    @property
    def suspended(self) -> bool:
        """Whether the run is suspended (new events wait until it resumes)."""
        ...

    @property
    def terminated(self) -> bool:
        """Whether a termination ended the run."""
        ...

    @property
    def custom_status(self) -> Raw:
        """The status the workflow last set for outside readers."""
        ...

    @property
    def task_count(self) -> int:
        """The next task id the run would use: where a continued run starts numbering."""
        ...

    @property
    def untaken(self) -> Sequence[Event]:
        """The events of the last turn that the run did not take: it ended before them
        (returned, failed or continued as new), so they belong to the next run."""
        ...

    @property
    def took_turn(self) -> bool:
        """Whether the run's code has taken a turn, replayed or live. Before the run's
        first turn, only a rerun's has: its history ends inside the turn it cut, which
        the first turn continues."""
        ...

    async def turn(self, events: list[HistoryEvent], *, first_turn: bool) -> list[Action]:
        """Feed one turn's new events (``TurnStarted`` first, unless the turn continues
        the one a rerun cut); return its actions.

        Raises :class:`~durable.NonDeterminismError` when the code no longer matches
        the history. ``first_turn`` is true for the turn that begins a run.
        """
        ...

    def committed(self, events: list[HistoryEvent]) -> None:
        """The turn committed with these events: its input, then what its actions recorded."""
        ...

    def close(self) -> None:
        """Drop the run (eviction, a lost commit, the end of the run)."""
        ...


class Executor(Protocol):
    """Runs workflow turns and activity attempts for the engine."""

    def new_run(self, instance_id: str, history: list[HistoryEvent]) -> TurnRunner:
        """A runner positioned after ``history`` (the current run's committed events,
        ``WorkflowStarted`` first). Raises :class:`~durable.UnknownWorkflowError` when
        nothing here can run the workflow: the instance then waits."""
        ...

    async def run_activity(
        self,
        instance_id: str,
        workflow_name: str,
        scheduled: ActivityScheduled,
        *,
        control: Callable[[], Attempt] | None = None,
    ) -> ActivityCompleted | ActivityErrored:
        """Run one attempt of an activity; its outcome as an event. ``control`` makes
        the attempt's cancel signal and heartbeats when the activity first asks for them."""
        ...

    def newest_version(self, name: str) -> str:
        """The version a new run of workflow ``name`` takes ('' if unversioned/unknown)."""
        ...

    def eviction_policy(self, name: str) -> EvictionPolicy | None:
        """The eviction policy workflow ``name`` declares, if any."""
        ...


class LocalExecutor:
    """Runs a registry's workflows and activities in this process."""

    def __init__(
        self,
        registry: Registry,
        codec: PayloadCodec,
        memo_store: MemoStore | None = None,
        *,
        max_concurrent_activities: int = 100,
    ) -> None:
        self.registry = registry
        self.codec = codec
        self.memo_store = memo_store
        # sync activities' own threads: blocking ones cannot take the store's, nor anyio's
        self._threads = anyio.CapacityLimiter(max_concurrent_activities)

    def new_run(self, instance_id: str, history: list[HistoryEvent]) -> WorkflowRun:
        started = history[0]
        name, version = started.name, started.version  # type: ignore[union-attr]
        definition = self.registry.get_workflow(name, version)
        run = WorkflowRun(instance_id, definition, self.registry, self.codec)
        run.apply(history, replaying=True)
        return run

    def run_activity(
        self,
        instance_id: str,
        workflow_name: str,
        scheduled: ActivityScheduled,
        *,
        control: Callable[[], Attempt] | None = None,
    ) -> Coroutine[Any, Any, ActivityCompleted | ActivityErrored]:
        # (the attempt's own coroutine, not one awaiting it: one layer fewer every step)
        return execute_activity(
            self.registry, self.codec, self.memo_store, instance_id, workflow_name, scheduled,
            self._threads, control,
        )  # fmt: skip

    def newest_version(self, name: str) -> str:
        definition = self.registry.workflows.get(name)
        return definition.version if definition is not None else ""

    def eviction_policy(self, name: str) -> EvictionPolicy | None:
        definition = self.registry.workflows.get(name)
        return definition.eviction if definition is not None else None
