"""``WorkflowContext``: everything a workflow may do, made replay-safe.

Each operation is recorded by the run (:mod:`durable._core._replay`) as an action with a task
id; awaiting it suspends the coroutine until history delivers the outcome.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar, overload

from msgspec import Raw

from durable._errors import (
    ActivityFailed,
    ActivityTimeoutError,
    InvalidArgumentError,
    TimeoutError,
    WorkflowFailed,
)

from ._actions import (
    ScheduleActivity,
    SendEvent,
    StartChildWorkflow,
    StartTimer,
    UpsertSearchAttributes,
)
from ._events import ActivityTimeouts
from ._failure import timeout_failure
from ._futures import DurableFuture
from ._search import check_upsert

if TYPE_CHECKING:
    import random

    from ._replay import WorkflowRun
    from ._retry import RetryPolicy

__all__ = ["PARENT_CLOSE_POLICIES", "ParentClosePolicy", "WorkflowContext"]

T = TypeVar("T")

ParentClosePolicy = Literal["terminate", "cancel", "abandon"]
PARENT_CLOSE_POLICIES: tuple[str, ...] = ("terminate", "cancel", "abandon")


def positive(value: timedelta | None, what: str) -> timedelta | None:
    """``value`` if it is None or a positive ``timedelta``; else ``InvalidArgumentError``."""
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise InvalidArgumentError(f"{what} must be a datetime.timedelta, not {value!r}")
    if value <= timedelta(0):
        raise InvalidArgumentError(f"{what} must be positive, not {value}")
    return value


def _timeouts(
    now: datetime,
    start_to_close: timedelta | None,
    schedule_to_close: timedelta | None,
    heartbeat: timedelta | None,
) -> ActivityTimeouts | None:
    """An activity call's time limits, checked; None when it has none."""
    if start_to_close is None and schedule_to_close is None and heartbeat is None:
        return None  # (the common call: nothing to check)
    start_to_close = positive(start_to_close, "start_to_close_timeout")
    schedule_to_close = positive(schedule_to_close, "schedule_to_close_timeout")
    heartbeat = positive(heartbeat, "heartbeat_timeout")
    if start_to_close is None and schedule_to_close is None and heartbeat is None:
        return None
    close_by = now + schedule_to_close if schedule_to_close is not None else None
    return ActivityTimeouts(start_to_close, heartbeat, schedule_to_close, close_by)


def _cancel_all(futures: list[DurableFuture[Any]]) -> None:
    """Cancel every one of ``futures`` not finished yet."""
    for future in futures:
        future.cancel()


class _ReplaySafeLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that stays silent while the workflow replays history."""

    def __init__(self, run: WorkflowRun) -> None:
        super().__init__(logging.getLogger("durable.workflow"), {"instance_id": run.instance_id})
        self._run = run

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self._run.replaying:
            super().log(level, msg, *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:
        return not self._run.replaying and super().isEnabledFor(level)


class WorkflowContext:
    """The handle a workflow gets as its first argument.

    Use it for everything that must survive a replay: activities, timers, events,
    sub-workflows, time, randomness and logging.
    """

    __slots__ = ("_logger", "_run")

    def __init__(self, run: WorkflowRun) -> None:
        self._run = run
        self._logger: _ReplaySafeLogger | None = None

    # -- identity and state -------------------------------------------------------

    @property
    def instance_id(self) -> str:
        """The id of this workflow instance."""
        return self._run.instance_id

    @property
    def workflow_name(self) -> str:
        """The registered name of this workflow."""
        return self._run.definition.name

    @property
    def is_replaying(self) -> bool:
        """True while the code re-executes history it already committed."""
        return self._run.replaying

    @property
    def logger(self) -> logging.LoggerAdapter:  # type: ignore[type-arg]
        """A logger that is silent during replay, so each line appears once."""
        if self._logger is None:
            self._logger = _ReplaySafeLogger(self._run)
        return self._logger

    def now(self) -> datetime:
        """The time of the current turn: the same on every replay."""
        return self._run.now

    def random(self) -> random.Random:
        """A ``random.Random`` seeded from the run, so replays draw the same numbers."""
        return self._run.rng()

    def uuid4(self) -> uuid.UUID:
        """A random UUID that replays identically."""
        return uuid.UUID(int=self._run.rng().getrandbits(128), version=4)

    def patched(self, patch_id: str) -> bool:
        """Branch on a code change without breaking runs already in flight.

        True when this run reaches the check for the first time under code that has the
        patch (the decision is recorded in history); False when replaying a history
        recorded before the patch existed. Put the new behaviour under ``if``.
        """
        return self._run.patched(patch_id)

    def deprecate_patch(self, patch_id: str) -> None:
        """Once no run from before ``patch_id`` remains: drop the ``if ctx.patched(...)``
        and call this instead, so histories that recorded the patch still replay."""
        self._run.deprecate_patch(patch_id)

    def set_custom_status(self, value: Any) -> None:
        """Publish a small value that ``describe()`` shows while the workflow runs."""
        self._run.not_in_query("set the custom status")
        self._run.custom_status = Raw(self._run.codec.encode(value))

    def upsert_search_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set search attributes of this instance (``None`` removes one): recorded in
        history with the turn, so a replay must upsert the same; ``Client.list_page(
        search=...)`` finds the instance by them once the turn commits. Values are str,
        int, bool or timezone-aware datetime; anything else raises
        ``SearchAttributeError`` here, before anything is recorded."""
        attributes = check_upsert(attributes)
        self._run.not_in_query("upsert search attributes")
        if attributes:
            self._run.record(UpsertSearchAttributes(attributes))

    def set_update_handler(
        self,
        name: str,
        handler: Callable[[Any], Awaitable[Any]],
        *,
        validator: Callable[[Any], Any] | None = None,
    ) -> None:
        """Run ``await handler(arg)`` for each ``await handle.update(name, arg)``.

        ``validator(arg)``, a plain function like a query handler, runs first where the
        caller asks, on the state of the last committed turn: if it raises, the update
        is rejected (``UpdateRejectedError``) and nothing is written. An accepted update
        is in history and runs once per update id, as a task of the workflow: it may
        await activities, timers, anything. Its result (or error) goes to the caller."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"an update name must be a non-empty str, not {name!r}")
        if not callable(handler) or (validator is not None and not callable(validator)):
            raise InvalidArgumentError(f"the update handler of {name!r} must be callable")
        from ._updates import UpdateHandler

        self._run.update_handlers[name] = UpdateHandler(handler, validator)

    def set_query_handler(self, name: str, handler: Callable[..., Any] | None) -> None:
        """Answer query ``name`` (``await handle.query(name, *args)``) with
        ``handler(*args)``: a plain function that reads the workflow's state. It runs on
        the state of the last committed turn and may change nothing: scheduling,
        drawing random values or setting the custom status fails the query (never the
        workflow). ``None`` removes the handler."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a query name must be a non-empty str, not {name!r}")
        if handler is None:
            self._run.query_handlers.pop(name, None)
        elif not callable(handler):
            raise InvalidArgumentError(f"the query handler of {name!r} must be callable")
        else:
            self._run.query_handlers[name] = handler

    # -- durable operations -------------------------------------------------------

    @overload
    def call_activity(
        self,
        activity: Callable[..., Coroutine[Any, Any, T]],
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
    ) -> DurableFuture[T]: ...
    @overload
    def call_activity(
        self,
        activity: Callable[..., T],
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
    ) -> DurableFuture[T]: ...
    @overload
    def call_activity(
        self,
        activity: str,
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
    ) -> DurableFuture[Any]: ...
    def call_activity(
        self,
        activity: Callable[..., Any] | str,
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
    ) -> DurableFuture[Any]:
        """Schedule an activity; await the result. Retries follow ``retry``.

        ``start_to_close_timeout`` bounds each attempt and ``heartbeat_timeout`` the time
        between its heartbeats (an attempt that outlives either fails, retryably, with
        ``ActivityTimeoutError``); ``schedule_to_close_timeout`` bounds every attempt and
        backoff together. Timeouts are durable timers on the runtime's Clock.
        """
        run = self._run
        name = run.registry.name_of(activity, "activity")
        definition = run.registry.activities.get(name)
        output_type = definition.output_type if definition is not None else Any
        timeouts = None  # (the common call has none: no call, and no clock read, for it)
        if (
            start_to_close_timeout is not None
            or schedule_to_close_timeout is not None
            or heartbeat_timeout is not None
        ):
            timeouts = _timeouts(
                run.now, start_to_close_timeout, schedule_to_close_timeout, heartbeat_timeout
            )
        raw = Raw(run.codec.encode(input))
        if retry is None:
            return self._schedule_activity(name, raw, 1, -1, output_type, timeouts)[1]
        return run.spawn(self._activity_with_retry(name, raw, retry, output_type, timeouts))

    def _schedule_activity(
        self,
        name: str,
        raw: Raw,
        attempt: int,
        step: int,
        output_type: Any,
        timeouts: ActivityTimeouts | None = None,
    ) -> tuple[int, DurableFuture[Any], int]:
        run = self._run
        task_id = run.next_task_id()
        future: DurableFuture[Any] = DurableFuture(partial(run.cancel_op, task_id))
        if step < 0:  # a first attempt: numbered above every earlier run's steps
            step = task_id + (run.started.step_base if run.started is not None else 0)
        action = ScheduleActivity(task_id, name, raw, attempt, step, timeouts=timeouts)
        run.schedule(action, future, name, output_type)
        return task_id, future, step

    async def _activity_with_retry(
        self,
        name: str,
        raw: Raw,
        retry: RetryPolicy,
        output_type: Any,
        timeouts: ActivityTimeouts | None,
    ) -> Any:
        attempt, step = 1, -1
        while True:
            task_id, future, step = self._schedule_activity(
                name, raw, attempt, step, output_type, timeouts
            )
            try:
                return await future
            except ActivityTimeoutError as failed:
                if failed.timeout == "schedule_to_close" or not retry.should_retry(
                    attempt, failed.failure
                ):
                    raise
            except ActivityFailed as failed:
                if not retry.should_retry(attempt, failed.failure):
                    raise
            wake = self._run.now + retry.delay(attempt)
            close_by = timeouts.close_by if timeouts is not None else None
            if close_by is not None and wake >= close_by:  # no time for another attempt
                assert timeouts is not None
                assert timeouts.schedule_to_close is not None
                failure = timeout_failure("schedule_to_close", timeouts.schedule_to_close)
                raise ActivityTimeoutError(name, task_id, failure)
            await self._timer(wake, "retry")
            attempt += 1

    @overload
    def call_workflow(
        self,
        workflow: Callable[..., Coroutine[Any, Any, T]],
        input: Any = None,
        *,
        instance_id: str | None = None,
        retry: RetryPolicy | None = None,
        on_parent_close: ParentClosePolicy = "terminate",
    ) -> DurableFuture[T]: ...
    @overload
    def call_workflow(
        self,
        workflow: str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        retry: RetryPolicy | None = None,
        on_parent_close: ParentClosePolicy = "terminate",
    ) -> DurableFuture[Any]: ...
    def call_workflow(
        self,
        workflow: Callable[..., Any] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        retry: RetryPolicy | None = None,
        on_parent_close: ParentClosePolicy = "terminate",
    ) -> DurableFuture[Any]:
        """Start a sub-workflow; await its result (``WorkflowFailed`` if it fails).

        ``on_parent_close`` says what happens to it if it still runs when this run ends
        (returns, fails, is terminated or cancelled): ``"terminate"`` it (the default),
        ``"cancel"`` it gracefully, or ``"abandon"`` it to run on.
        """
        from durable._ids import validate_instance_id

        if on_parent_close not in PARENT_CLOSE_POLICIES:
            raise InvalidArgumentError(
                f"on_parent_close must be one of {', '.join(PARENT_CLOSE_POLICIES)}, "
                f"not {on_parent_close!r}"
            )
        run = self._run
        name = run.registry.name_of(workflow, "workflow")
        definition = run.registry.workflows.get(name)
        output_type = definition.output_type if definition is not None else Any
        raw = Raw(run.codec.encode(input))
        if instance_id is not None:
            validate_instance_id(instance_id)
        start = partial(self._start_child, name, raw, instance_id, output_type, on_parent_close)
        if retry is None:
            return start()
        return run.spawn(self._child_with_retry(start, retry))

    def _start_child(
        self,
        name: str,
        raw: Raw,
        instance_id: str | None,
        output_type: Any,
        on_parent_close: str,
        attempt: int = 1,
    ) -> DurableFuture[Any]:
        from durable._ids import validate_instance_id

        run = self._run
        task_id = run.next_task_id()
        if instance_id is None:
            run_id = run.started.replay_seed[:8] if run.started is not None else "0"
            instance_id = f"{run.instance_id}-{run_id}-{task_id}"
        elif attempt > 1:
            instance_id = f"{instance_id}-{attempt}"
        validate_instance_id(instance_id)  # a generated id can outgrow the limit
        future: DurableFuture[Any] = DurableFuture(partial(run.cancel_op, task_id))
        run.schedule(
            StartChildWorkflow(task_id, name, instance_id, raw, on_parent_close),
            future,
            instance_id,
            output_type,
        )
        return future

    async def _child_with_retry(
        self, start: Callable[..., DurableFuture[Any]], retry: RetryPolicy
    ) -> Any:
        attempt = 1
        while True:
            try:
                return await start(attempt=attempt)
            except WorkflowFailed as failed:
                if not retry.should_retry(attempt, failed.failure):
                    raise
            await self._timer(self._run.now + retry.delay(attempt), "retry")
            attempt += 1

    def sleep(self, duration: timedelta) -> DurableFuture[None]:
        """A durable timer: await it to pause the workflow for ``duration``."""
        return self._timer(self._run.now + duration, "sleep")

    def sleep_until(self, when: datetime) -> DurableFuture[None]:
        """A durable timer that fires at ``when`` (timezone-aware)."""
        if when.tzinfo is None:
            raise ValueError("sleep_until needs a timezone-aware datetime")
        return self._timer(when, "sleep")

    def _timer(self, fire_at: datetime, purpose: str) -> DurableFuture[None]:
        run = self._run
        task_id = run.next_task_id()
        future: DurableFuture[None] = DurableFuture(partial(run.cancel_op, task_id))
        run.schedule(StartTimer(task_id, fire_at, purpose), future, purpose, None)
        return future

    def send_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Send event ``name`` (with ``data``) to another instance: one way, durable.

        It leaves once this turn commits and reaches the instance exactly once, in the
        order this instance sent its events to it; an instance that does not exist
        drops it (logged). An invalid id raises ``InvalidInstanceIdError`` here.
        """
        from durable._ids import validate_instance_id

        validate_instance_id(instance_id)
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"an event name must be a non-empty str, not {name!r}")
        run = self._run
        raw = Raw(run.codec.encode(data))
        run.emit(SendEvent(run.next_task_id(), instance_id, name, raw))

    @overload
    def wait_for_event(
        self, name: str, *, timeout: timedelta | None = None
    ) -> DurableFuture[Any]: ...
    @overload
    def wait_for_event(
        self, name: str, *, timeout: timedelta | None = None, type: type[T]
    ) -> DurableFuture[T]: ...
    def wait_for_event(
        self, name: str, *, timeout: timedelta | None = None, type: Any = Any
    ) -> DurableFuture[Any]:
        """Wait for an external event (events raised earlier are buffered).

        With ``timeout``, the wait raises ``durable.TimeoutError`` when it runs out.
        """
        run = self._run
        received = run.wait_event(name, type)
        if timeout is None or received.done():
            return received
        timer = self._timer(run.now + timeout, "event_timeout")

        def expire(fired: DurableFuture[None]) -> None:
            if not received.done() and fired.exception() is None:  # fired, not cancelled
                received.set_exception(TimeoutError(f"no event {name!r} arrived within {timeout}"))

        timer.add_done_callback(expire)
        received.on_cancel(partial(_cancel_all, [timer]))
        return received

    def all(self, tasks: Iterable[Awaitable[T]]) -> DurableFuture[list[T]]:
        """Wait for every task; results in order. Fails as soon as one fails."""
        futures = [self._as_future(task) for task in tasks]
        combined: DurableFuture[list[T]] = DurableFuture()
        remaining = len(futures)
        if not remaining:
            combined.set_result([])
            return combined

        def on_done(future: DurableFuture[Any]) -> None:
            nonlocal remaining
            if combined.done():
                return
            exc = future.exception()
            if exc is not None:
                combined.set_exception(exc)
                return
            remaining -= 1
            if remaining == 0:
                combined.set_result([f.result() for f in futures])

        for future in futures:
            future.add_done_callback(on_done)
        combined.on_cancel(partial(_cancel_all, futures))
        return combined

    def any(
        self, tasks: Iterable[Awaitable[T]], *, cancel_rest: bool = False
    ) -> DurableFuture[DurableFuture[T]]:
        """Wait for the first task to finish and return that task (not its result).

        The others go on running unless ``cancel_rest=True``: then they are cancelled
        as the first finishes (their results are never applied; awaiting one raises
        ``durable.CancelledError``).
        """
        futures = [self._as_future(task) for task in tasks]
        if not futures:
            raise ValueError("ctx.any needs at least one task")
        winner: DurableFuture[DurableFuture[T]] = DurableFuture()

        def on_done(future: DurableFuture[T]) -> None:
            if winner.done():
                return
            winner.set_result(future)
            if cancel_rest:
                _cancel_all(futures)

        for future in futures:
            future.add_done_callback(on_done)
        winner.on_cancel(partial(_cancel_all, futures))
        return winner

    def continue_as_new(self, input: Any = None) -> NoReturn:
        """End this run and start a fresh one with ``input`` and an empty history.

        Events this run received but did not wait for carry over to the new run, in the
        order they came; so does everything that arrives after this call in the same turn.
        """
        from ._replay import ContinueAsNewSignal

        self._run.request_continue_as_new(Raw(self._run.codec.encode(input)))
        raise ContinueAsNewSignal()

    def _as_future(self, task: Awaitable[T]) -> DurableFuture[T]:
        if isinstance(task, DurableFuture):
            return task
        if isinstance(task, Coroutine):
            return self._run.spawn(task)
        raise TypeError(
            f"ctx.all/ctx.any take durable tasks or coroutines, not {type(task).__name__}"
        )
