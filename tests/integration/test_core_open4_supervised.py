"""Every long-lived loop of a runtime is supervised: a stray cancellation of one (a
``task.cancel()`` no scope asked for) fails the runtime with ``EngineFailedError``
instead of ending its task group without a word. Time flows through a MockClock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

import durable
from durable import Fleet, Registry
from durable._engine import Engine
from durable._errors import EngineFailedError
from durable._fleet._leases import Leases
from durable._runtime import Runtime
from durable.grpc import Sidecar
from durable.store import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio


def _capture(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[asyncio.Task[Any]]:
    """Wrap the loop ``cls.name`` so the test learns the task that runs it."""
    tasks: list[asyncio.Task[Any]] = []
    original: Callable[..., Awaitable[Any]] = getattr(cls, name)

    async def loop(self: object, *args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, loop)
    return tasks


_LOOPS: dict[str, tuple[type, str, dict[str, Any]]] = {
    "lease loop": (Leases, "run", {"fleet": Fleet(partitions=2, owner="a")}),
    "memo sweep loop": (Runtime, "_sweep_loop", {"memo_retention": timedelta(days=1)}),
    "history sweep loop": (Runtime, "_history_loop", {"history_retention": timedelta(days=1)}),
    "engine": (Engine, "run", {}),
    "clock auto-advance": (Engine, "_auto_advance", {}),
}


@pytest.mark.parametrize("loop", list(_LOOPS))
async def test_a_stray_cancel_of_a_long_lived_loop_fails_the_runtime(
    monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """Only the engine's workers, timers and polling were supervised: a stray cancel of
    the lease loop, the memo or history sweep loop, the engine's own task or the
    MockClock's auto-advance ended the task group it ran in without an error (a
    runtime with no leases, sweeps or engine went on as if well). Each now fails the
    runtime with ``EngineFailedError``."""
    cls, name, options = _LOOPS[loop]
    tasks = _capture(monkeypatch, cls, name)
    clock = durable.MockClock(auto_advance=name == "_auto_advance")
    with pytest.raises(BaseExceptionGroup) as caught:  # noqa: PT012
        async with durable.Runtime(Registry(), store=MemoryStore(), clock=clock, **options):
            await anyio.wait_all_tasks_blocked()
            (task,) = tasks
            task.cancel()  # the stray cancel: no scope asked for it
            while not task.done():  # the runtime's failure cancels this wait
                await anyio.lowlevel.checkpoint()
            await anyio.wait_all_tasks_blocked()
            raise AssertionError(f"the runtime went on without its {loop}")
    assert caught.group_contains(EngineFailedError), caught.value


async def test_a_stray_cancel_of_the_sidecars_sweep_fails_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sidecar's sweep (idle connections closed, unanswered work items moved on)
    was not supervised either: a stray cancel ended its task group silently, and work
    handed to a worker that died was never given to another. It now fails the sidecar
    with ``EngineFailedError``."""
    tasks = _capture(monkeypatch, Sidecar, "_sweep")
    with pytest.raises(BaseExceptionGroup) as caught:  # noqa: PT012
        async with Sidecar(MemoryStore(), port=0, clock=durable.MockClock()):
            await anyio.wait_all_tasks_blocked()
            (task,) = tasks
            task.cancel()
            while not task.done():
                await anyio.lowlevel.checkpoint()
            await anyio.wait_all_tasks_blocked()
            raise AssertionError("the sidecar went on without its sweep")
    assert caught.group_contains(EngineFailedError), caught.value
