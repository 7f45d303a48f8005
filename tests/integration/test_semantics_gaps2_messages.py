"""start_with_event racing the end of the run, every way (issue 15): its message reaches
a run that ends without applying it (in memory, or once ended), a run replaced by
another start meanwhile, or an instance purged meanwhile; and one its run applied is
never applied again by a later start. Races forced by wrappers that pause a call, on
a MockClock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import anyio
import pytest
from _semantics import runtime_fixture, store_fixture  # noqa: F401 (fixtures)

import durable
from durable import Registry, WorkflowContext, WorkflowStatus
from durable._core._events import EventRaised, WorkflowStarted
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio
T = TypeVar("T")

registry = Registry()


@registry.workflow
async def box(ctx: WorkflowContext) -> int:
    got: int = await ctx.wait_for_event("go")
    return got


def pause_write(client: durable.Client, data: bytes) -> tuple[anyio.Event, anyio.Event]:
    """The client's inbox write of an event with ``data`` waits (after its look at the
    instance) until the second event returned is set; the first is set when it waits."""
    write, reached, go = client._write_message, anyio.Event(), anyio.Event()

    async def paused(instance_id: str, msg_id: str, event: Any, *rest: Any) -> Any:
        if isinstance(event, EventRaised) and bytes(event.input) == data:
            reached.set()
            await go.wait()
        return await write(instance_id, msg_id, event, *rest)

    client._write_message = paused  # type: ignore[method-assign]
    return reached, go


async def racing_the_end(
    rt: durable.Runtime, handle: Any, meanwhile: Callable[[], Awaitable[T]]
) -> T:
    """``start_with_event(box, "b", go=2)``, its write held after its look at the running
    run until that run has ended (an event go=1) and ``meanwhile`` has returned."""
    reached, go = pause_write(rt.client, b"2")
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(rt.client.start_with_event, box, instance_id="b",
                              event="go", data=2))  # fmt: skip
        await reached.wait()
        await handle.raise_event("go", 1)
        assert await handle == 1
        done = await meanwhile()
        go.set()
    return done


async def starts(store: ObjectStore, instance_id: str) -> int:
    """How many runs of ``instance_id`` began with a start (not continue-as-new)."""
    found = 0
    for name in await store.list(f"instances/{instance_id}/log"):
        data = await store.get(f"instances/{instance_id}/log/{name}")
        found += b'"workflow_started"' in data
    return found


async def test_a_start_with_event_left_untaken_by_the_ending_run_starts_it_again(
    runtime: Any, store: ObjectStore
) -> None:
    """Bug: start_with_event's message was handed (in memory) to a run whose turn, under
    way, ended it: the ended run discarded the message, and deleted it. Forced: the
    commit of the turn that ends the run waits until the message is written."""
    written, first = anyio.Event(), "instances/b/log/000000000002"
    put_if_absent, put = store.put_if_absent, store.put

    async def held(key: str, data: bytes) -> str:
        if key == first:
            await written.wait()
        return await put_if_absent(key, data)

    async def noted(key: str, data: bytes) -> str:
        etag = await put(key, data)
        if key.startswith("instances/b/inbox/") and b'"input":2' in data:
            written.set()
        return etag

    store.put_if_absent, store.put = held, noted  # type: ignore[method-assign]
    async with runtime(registry) as rt:
        handle = await rt.start(box, instance_id="b")
        await rt.wait_idle()
        await handle.raise_event("go", 1)
        await rt.client.start_with_event(box, instance_id="b", event="go", data=2)
        await rt.wait_idle()
        assert (await handle.describe()).status is WorkflowStatus.COMPLETED
        assert await handle == 2  # a run started again with it
        assert await starts(store, "b") == 2


async def test_a_start_with_event_whose_run_was_replaced_reaches_the_new_start(
    runtime: Any, store: ObjectStore
) -> None:
    """Bug: start_with_event looked, found run A running, and wrote its event for A; A
    ended, and another start (reuse) began run C before the write landed. C took the
    message for one sent to an ended start and dropped it, though the caller asked for
    the instance to run with the event. C applies it now, and nothing starts again."""
    async with runtime(registry) as rt:
        handle = await rt.start(box, instance_id="b")
        await rt.wait_idle()
        again = await racing_the_end(rt, handle, partial(rt.start, box, instance_id="b",
                                                         reuse=True))  # fmt: skip
        await rt.wait_idle()
        assert (await again.describe()).status is WorkflowStatus.COMPLETED
        assert await again == 2
        assert await starts(store, "b") == 2


async def test_a_start_with_event_applied_is_not_applied_again_by_a_later_start(
    runtime: Any, store: ObjectStore
) -> None:
    """A start_with_event message its run applied, left in the inbox (its delete failed),
    is not applied again by a later start under the id, when a restart reads the inbox:
    a new run begins with the messages the run before consumed that are still in the
    inbox (a start_with_event's message is taken by whichever start reads it)."""
    delete = store.delete

    async def failing(key: str) -> None:
        if key.startswith("instances/b/inbox/"):
            raise durable.StoreError(f"{key}: unavailable", key=key, transient=True)
        await delete(key)

    async with runtime(registry) as rt:
        handle = await rt.start(box, instance_id="b")
        await rt.wait_idle()
        store.delete = failing  # type: ignore[method-assign]
        await rt.client.start_with_event(box, instance_id="b", event="go", data=2)
        assert await handle == 2
        assert await store.list("instances/b/inbox")  # left behind
        await rt.start(box, instance_id="b", reuse=True)
    async with runtime(registry) as rt:  # a restart: its load reads the inbox
        await rt.wait_idle()
        again = rt.client.get_handle("b")
        assert (await again.describe()).status is WorkflowStatus.RUNNING
        await again.raise_event("go", 3)
        assert await again == 3


async def test_a_start_with_event_racing_a_purge_starts_the_instance_anew(
    runtime: Any, store: ObjectStore
) -> None:
    """Bug: start_with_event found run A running; A ended and the instance was purged
    before its write landed: the event sat in the inbox of an instance that no longer
    existed, and the caller was told it was delivered. The message now starts the
    instance anew, with the event."""
    async with runtime(registry) as rt:
        handle = await rt.start(box, instance_id="b")
        await rt.wait_idle()
        await racing_the_end(rt, handle, partial(rt.client.purge, "b"))
        await rt.wait_idle()
        assert await handle == 2
        history = await handle.history()
        assert isinstance(history[0], WorkflowStarted)
        assert bytes(next(e for e in history if isinstance(e, EventRaised)).input) == b"2"


async def test_a_start_with_event_landing_during_a_purge_outlives_it(
    runtime: Any, store: ObjectStore
) -> None:
    """Bug: start_with_event found run A running; A ended, a purge began, and the write
    landed while the purge was under way, before it emptied the inbox: the purge deleted
    the event with the instance. A purge now leaves a start_with_event message that the
    purged run never applied, and it starts the instance anew once the purge is over.
    Forced: the purge waits after deleting the meta until the write has landed."""
    purging, resume = anyio.Event(), anyio.Event()
    delete_if_match = store.delete_if_match  # (a purge deletes the meta by its ETag)

    async def paused(key: str, etag: str) -> None:
        await delete_if_match(key, etag)
        if key == "instances/b/meta":
            purging.set()
            await resume.wait()

    async with runtime(registry) as rt:
        handle = await rt.start(box, instance_id="b")
        await rt.wait_idle()
        reached, go = pause_write(rt.client, b"2")
        sent = anyio.Event()

        async def start_with_event() -> None:
            await rt.client.start_with_event(box, instance_id="b", event="go", data=2)
            sent.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(start_with_event)
            await reached.wait()
            await handle.raise_event("go", 1)
            assert await handle == 1
            store.delete_if_match = paused  # type: ignore[method-assign]
            tg.start_soon(rt.client.purge, "b")
            await purging.wait()
            go.set()
            await sent.wait()
            resume.set()
        await rt.wait_idle()
        assert (await handle.describe()).status is WorkflowStatus.COMPLETED
        assert await handle == 2


before, after = Registry(), Registry()


@before.workflow(name="flip")
async def flip_before(ctx: WorkflowContext) -> int:
    await ctx.sleep(timedelta(seconds=1))
    got: int = await ctx.wait_for_event("go")
    return got


@after.workflow(name="flip")
async def flip_after(ctx: WorkflowContext) -> int:  # changed without a patch
    got: int = await ctx.wait_for_event("go")
    return got


async def test_a_start_with_event_reaching_a_run_that_fails_to_replay_starts_it_again(
    runtime: Any, store: ObjectStore
) -> None:
    """Bug: start_with_event's message reached a run whose next turn failed it (its code
    changed without a patch: NonDeterminismError). The turn dropped what it had been
    handed, so the message stayed unread in the inbox of a FAILED instance, and the
    event was never applied. What a failing turn was handed is now discarded as any
    message reaching an ended run: the start_with_event's starts it again."""
    async with runtime(before) as rt:
        await rt.client.start("flip", instance_id="f")
        await rt.wait_idle()
    async with runtime(after) as rt:
        await rt.client.start_with_event("flip", instance_id="f", event="go", data=2)
        await rt.wait_idle()
        handle = rt.client.get_handle("f")
        assert (await handle.describe()).status is WorkflowStatus.COMPLETED
        assert await handle == 2
        assert await starts(store, "f") == 2
