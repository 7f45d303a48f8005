"""Durable futures and the deterministic scheduler that steps workflow coroutines.

Workflow code awaits only :class:`DurableFuture` objects. The scheduler drives the
coroutines by hand (``send``/``throw``), never through an event loop, so replay is a
pure function of the history: the same events resume the same tasks in the same order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from durable._errors import CancelledError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator

__all__ = ["DurableFuture", "Scheduler", "Task", "WorkflowControl"]

T = TypeVar("T")

_PENDING, _DONE, _FAILED = 0, 1, 2


class WorkflowControl(BaseException):
    """Internal unwinding (continue-as-new); ``except Exception`` cannot swallow it."""


class _Closing(BaseException):
    """Thrown into a coroutine that is being dropped (termination, eviction, end of run)."""


_CLOSE_ATTEMPTS = 100  # a coroutine that keeps awaiting while closed is abandoned after this


class DurableFuture(Generic[T]):
    """The result of a durable operation: an activity, a timer, an event, a sub-workflow.

    Await it inside a workflow. ``done()``, ``result()`` and ``exception()`` read it
    without waiting, e.g. on the winner that ``ctx.any`` returns. ``cancel()`` gives up
    on it.
    """

    __slots__ = ("_callbacks", "_canceller", "_state", "_value")

    def __init__(self, canceller: Callable[[], None] | None = None) -> None:
        self._state = _PENDING
        self._value: Any = None
        self._callbacks: list[Callable[[DurableFuture[T]], None]] | None = None
        self._canceller = canceller  # see on_cancel (given here: a call fewer every step)

    def cancel(self) -> bool:
        """Cancel the operation: awaiting it raises ``durable.CancelledError``. An
        activity's running attempt is cancelled, a timer disarmed, a sub-workflow asked
        to cancel; the cancellation is recorded in history, so a replay agrees. False
        if it had finished already."""
        if self._state != _PENDING:
            return False
        canceller, self._canceller = self._canceller, None
        if canceller is not None:
            canceller()
        self.set_exception(CancelledError("the operation was cancelled"))
        return True

    def on_cancel(self, canceller: Callable[[], None]) -> None:
        """What ``cancel()`` does besides failing the future (recording it, mostly)."""
        self._canceller = canceller

    def done(self) -> bool:
        """Whether the operation has finished, well or badly."""
        return self._state != _PENDING

    def result(self) -> T:
        """The value, or raise the failure; ``RuntimeError`` if not finished yet."""
        if self._state == _DONE:
            return self._value  # type: ignore[no-any-return]
        if self._state == _FAILED:
            raise self._value
        raise RuntimeError("durable future is not done yet")

    def exception(self) -> BaseException | None:
        """The failure, if it failed; ``None`` if it succeeded."""
        if self._state == _PENDING:
            raise RuntimeError("durable future is not done yet")
        return self._value if self._state == _FAILED else None

    def set_result(self, value: T) -> None:
        if self._state == _PENDING:
            self._state, self._value = _DONE, value
            self._fire()

    def set_exception(self, exc: BaseException) -> None:
        if self._state == _PENDING:
            self._state, self._value = _FAILED, exc
            self._fire()

    def add_done_callback(self, callback: Callable[[DurableFuture[T]], None]) -> None:
        if self._state != _PENDING:
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def _fire(self) -> None:
        callbacks, self._callbacks = self._callbacks, None
        if callbacks:
            for callback in callbacks:
                callback(self)

    def __await__(self) -> Generator[Any, None, T]:
        if self._state == _PENDING:
            yield self
        return self.result()


class Task(DurableFuture[T]):
    """A coroutine run by the scheduler; completes with the coroutine's return value."""

    __slots__ = ("_awaiting", "_coro", "_scheduler", "_throw")

    def __init__(self, coro: Coroutine[Any, Any, T], scheduler: Scheduler) -> None:
        super().__init__()
        self._coro = coro
        self._scheduler = scheduler
        self._awaiting: DurableFuture[Any] | None = None
        self._throw: BaseException | None = None  # raised at the coroutine's next step

    def cancel(self) -> bool:
        """Cancel what the coroutine awaits now: ``durable.CancelledError`` is raised
        there, and the coroutine may catch it and go on (to clean up)."""
        if self.done():
            return False
        awaiting = self._awaiting
        if awaiting is not None and not awaiting.done():
            awaiting.cancel()  # wakes this task, which then raises at its await
        else:  # not started or woken already (so in the ready queue): raise at its step
            self._throw = CancelledError("the operation was cancelled")
        return True

    def step(self) -> None:
        error: BaseException | None = self._throw
        self._throw = None
        self._awaiting = None
        while True:
            try:
                awaited = self._coro.send(None) if error is None else self._coro.throw(error)
            except StopIteration as stop:
                self._finish()
                self.set_result(stop.value)
                return
            except WorkflowControl:
                self._finish()
                self._coro.close()
                raise
            except BaseException as exc:  # the task's own failure, delivered to awaiters
                self._finish()
                self.set_exception(exc)
                return
            if isinstance(awaited, DurableFuture):
                self._awaiting = awaited
                awaited.add_done_callback(self._wake)
                return
            error = RuntimeError(
                f"workflow code awaited {awaited!r}, which durable cannot replay: "
                "await only ctx operations (activities, timers, events, sub-workflows) "
                "and do I/O inside activities"
            )

    def _finish(self) -> None:
        self._scheduler.tasks.discard(self)

    def _wake(self, _: DurableFuture[Any]) -> None:
        self._scheduler.ready.append(self)

    def close(self) -> None:
        """Unwind the coroutine, running its ``finally`` blocks, even ones that await
        (they get ``_Closing`` at each await). Never raises."""
        for _ in range(_CLOSE_ATTEMPTS):
            try:
                self._coro.throw(_Closing())
            except BaseException:  # finished: by _Closing, StopIteration or its own error
                return
        # It keeps swallowing the unwinding: let it go without resuming it again.
        self._coro = _finished()  # type: ignore[assignment]


async def _finished() -> None:
    """A stand-in for a coroutine that could not be unwound."""


class Scheduler:
    """Runs ready tasks in FIFO order until every task waits on a durable future."""

    __slots__ = ("ready", "tasks")

    def __init__(self) -> None:
        self.ready: deque[Task[Any]] = deque()
        self.tasks: set[Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> Task[T]:
        task = Task(coro, self)
        self.tasks.add(task)
        self.ready.append(task)
        return task

    def run(self) -> None:
        ready = self.ready
        while ready:
            task = ready.popleft()
            if not task.done():
                task.step()

    def close(self) -> None:
        """Close every unfinished coroutine (runs their ``finally`` blocks)."""
        for task in list(self.tasks):
            task.close()
        self.tasks.clear()
        self.ready.clear()
