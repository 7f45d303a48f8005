"""Gaps of updates closed (issue 15, part B review): an update id runs once across
continue-as-new, an update still running when its run continues as new is answered, and
the validator holds where the update is applied too. On memory://, file:// and s3://."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

import durable
from durable import Registry, WorkflowContext
from durable._clock import within
from durable._core._events import UpdateRequested, WorkflowStarted

pytestmark = pytest.mark.anyio

registry = Registry()
applied: list[int] = []


@registry.activity
async def note(ctx: durable.ActivityContext, n: int) -> int:
    applied.append(n)
    return n


@registry.workflow
async def counter(ctx: WorkflowContext, total: int) -> int:
    """A total that updates raise; the event "roll" continues it as new, "stop" ends it."""

    async def add(n: int) -> int:
        nonlocal total
        await ctx.call_activity(note, n)
        total += n
        return total

    async def take(n: int) -> int:
        nonlocal total
        await ctx.call_activity(note, -n)
        total -= n
        return total

    def covered(n: int) -> None:
        if n > total:
            raise ValueError(f"cannot take {n} from {total}")

    async def stuck(_: Any) -> None:
        await ctx.wait_for_event("never")

    ctx.set_update_handler("add", add)
    ctx.set_update_handler("take", take, validator=covered)
    ctx.set_update_handler("stuck", stuck)
    ctx.set_query_handler("total", lambda: total)
    what = await ctx.wait_for_event("roll")
    if what == "stop":
        return total
    ctx.continue_as_new(total)


async def _rolled(rt: durable.Runtime, handle: durable.WorkflowHandle[Any]) -> str:
    """Continue the run as new; the new run's id once it has begun."""
    before = (await handle.history())[0]
    await handle.raise_event("roll", "again")
    await rt.wait_idle()
    started = (await handle.history())[0]
    assert isinstance(before, WorkflowStarted)
    assert isinstance(started, WorkflowStarted)
    assert started.run_id != before.run_id
    return started.run_id


async def test_a_retried_update_runs_once_across_continue_as_new(
    runtime_factory: Callable[..., Any],
) -> None:
    """Bug: the update ids a run applied were forgotten by its continue-as-new run, so a
    caller retrying an update after an unclear failure ran it a second time once the
    workflow had continued as new (its handler's activity ran twice, the total grew)."""
    applied.clear()
    async with runtime_factory(registry) as rt:
        handle = await rt.start(counter, 0, instance_id="c")
        assert await handle.update("add", 5, update_id="u1") == 5
        await _rolled(rt, handle)
        assert await handle.update("add", 5, update_id="u1") == 5  # the first outcome
        assert await handle.query("total") == 5
        await _rolled(rt, handle)  # and through a second continue-as-new
        assert await handle.update("add", 5, update_id="u1") == 5
        assert await handle.update("add", 1, update_id="u2") == 6
        assert applied == [5, 1]
        history = await handle.history()
        assert not any(isinstance(e, UpdateRequested) and e.update_id == "u1" for e in history)


async def test_an_update_cut_short_by_continue_as_new_is_answered(
    runtime_factory: Callable[..., Any],
) -> None:
    """Bug: an update whose handler still ran when its run continued as new never got an
    outcome: its caller waited forever (the new run knew nothing of it)."""
    async with runtime_factory(registry) as rt:
        handle = await rt.start(counter, 0, instance_id="c")
        update_id = await handle.start_update("stuck", None)
        await rt.wait_idle()
        await _rolled(rt, handle)

        err = await _error_of(rt, lambda: handle.update_result(update_id))
        assert isinstance(err, durable.UpdateFailedError)
        assert "continued as new" in str(err)
        # a retry with the same id gets the same answer, and runs nothing
        err = await _error_of(rt, lambda: handle.update("stuck", None, update_id=update_id))
        assert isinstance(err, durable.UpdateFailedError)


async def _error_of(rt: durable.Runtime, wait: Callable[[], Any]) -> Exception | None:
    """What ``wait()`` raises, waiting an hour at most on the runtime's clock (a wait
    that never ends raises ``durable.TimeoutError``)."""
    caught: list[Exception] = []

    async def run() -> None:
        try:
            await wait()
        except durable.DurableError as err:
            caught.append(err)

    await within(rt.clock, 3600, run, "the update")
    return caught[0] if caught else None


async def test_the_validator_holds_where_the_update_is_applied(
    runtime_factory: Callable[..., Any],
) -> None:
    """Bug: the validator ran only at the caller, on the state it saw then. An update
    checked there before another one was applied was applied after it, though it no
    longer passed: the total went below zero. Now the run checks each update again when
    it takes it, and one that no longer passes is rejected there (UpdateRejectedError,
    its handler never run). The race is forced: the second caller's send waits, once
    its check has passed, until the first update has been applied."""
    applied.clear()
    async with runtime_factory(registry) as rt:
        handle = await rt.start(counter, 0, instance_id="c")
        assert await handle.update("add", 5) == 5
        client = rt.client
        send, checked, go = client._send, anyio.Event(), anyio.Event()

        async def paused(instance_id: str, event: Any, **options: Any) -> bool:
            if isinstance(event, UpdateRequested) and event.update_id == "t2":
                checked.set()  # its validator passed on a total of 5
                await go.wait()
            return await send(instance_id, event, **options)

        client._send = paused  # type: ignore[method-assign]
        errors: list[Exception] = []

        async def second() -> None:
            try:
                await handle.update("take", 4, update_id="t2")
            except durable.UpdateRejectedError as err:
                errors.append(err)

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await checked.wait()
            assert await handle.update("take", 4, update_id="t1") == 1
            go.set()
        assert [str(err) for err in errors] == [
            "update 't2' of workflow 'c' was rejected: cannot take 4 from 1"
        ]
        assert await handle.query("total") == 1
        assert applied == [5, -4]
        await handle.raise_event("roll", "stop")
        assert await handle == 1
