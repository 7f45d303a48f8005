"""``Client.start_with_event`` through the public API, on memory://, file:// and s3://,
on a MockClock: start the instance if it is not running and deliver the event, in one
write; a running instance just gets the event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import durable
from durable import Registry, WorkflowContext
from durable._core._events import EventRaised, WorkflowStarted
from durable._log._reader import read_record
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

registry = Registry()


@registry.workflow
async def counter(ctx: WorkflowContext, start: int) -> list[int]:
    """Adds up the "add" events until one says 0."""
    seen = [start]
    while (n := await ctx.wait_for_event("add")) != 0:
        seen.append(n)
    return seen


async def test_an_absent_instance_starts_with_the_event_in_its_first_record(
    runtime_factory: Callable[..., Any], store: ObjectStore
) -> None:
    """The start and the event are one record (log/0): no one sees one without the other."""
    async with runtime_factory(registry) as rt:
        handle = await rt.client.start_with_event(counter, 10, instance_id="c", event="add", data=5)
        first = await read_record(store, "c", 0)
        assert first is not None
        assert [type(e) for e in first.next_run] == [WorkflowStarted, EventRaised]
        assert not await store.list("instances/c/inbox")
        await handle.raise_event("add", 0)
        assert await handle == [10, 5]


async def test_a_running_instance_just_gets_the_event(
    runtime_factory: Callable[..., Any],
) -> None:
    """A running instance is not started again: the event reaches its run."""
    async with runtime_factory(registry) as rt:
        handle = await rt.start(counter, 1, instance_id="c")
        again = await rt.client.start_with_event(counter, 99, instance_id="c", event="add", data=2)
        assert again.instance_id == "c"
        await handle.raise_event("add", 0)
        assert await handle == [1, 2]
        history = await handle.history()
        assert sum(isinstance(e, WorkflowStarted) for e in history) == 1


async def test_an_ended_instance_is_started_again_with_the_event(
    runtime_factory: Callable[..., Any],
) -> None:
    """An instance that has ended is started again (a reuse), the event with it."""
    async with runtime_factory(registry) as rt:
        handle = await rt.start(counter, 1, instance_id="c")
        await handle.raise_event("add", 0)
        assert await handle == [1]
        await rt.client.start_with_event(counter, 7, instance_id="c", event="add", data=3)
        await handle.raise_event("add", 0)
        assert await handle == [7, 3]


async def test_start_with_event_refuses_an_invalid_id(runtime_factory: Callable[..., Any]) -> None:
    """An id that cannot be an object key is a typed error, before anything is written."""
    async with runtime_factory(registry) as rt:
        with pytest.raises(durable.InvalidInstanceIdError):
            await rt.client.start_with_event(counter, 1, instance_id="a/b", event="add")
