"""Queries (``ctx.set_query_handler``, ``handle.query``) through the public API, on
memory://, file:// and s3://, on a MockClock: answered by the holding process, or by a
replay where none holds it; writing nothing; a handler that tries to change the
workflow fails the query, not the workflow."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import durable
from durable import Registry, WorkflowContext
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

registry = Registry()


@registry.workflow
async def cart(ctx: WorkflowContext) -> list[str]:
    """A cart that collects "add" events until "checkout"; queries read it."""
    items: list[str] = []
    ctx.set_query_handler("items", lambda: list(items))
    ctx.set_query_handler("has", lambda item: item in items)
    ctx.set_query_handler("fails", lambda: 1 / 0)
    ctx.set_query_handler("schedules", lambda: ctx.sleep(timedelta(seconds=1)))
    ctx.set_query_handler("draws", lambda: ctx.random().random())
    ctx.set_query_handler("sends", lambda: ctx.send_event("other", "n"))
    while (item := await ctx.wait_for_event("add")) != "checkout":
        items.append(item)
    return items


def count_writes(store: ObjectStore) -> list[str]:
    """The keys every write to ``store`` names, from now on."""
    writes: list[str] = []
    for method in ("put", "put_if_absent", "put_if_match", "delete"):
        original = getattr(store, method)

        def wrapped(key: str, *rest: Any, original: Any = original) -> Any:
            writes.append(key)
            return original(key, *rest)

        setattr(store, method, wrapped)
    return writes


async def test_a_query_reads_the_state_of_the_running_workflow_and_writes_nothing(
    runtime_factory: Callable[..., Any], store: ObjectStore
) -> None:
    """The holding process answers from its run; the store sees no write."""
    async with runtime_factory(registry) as rt:
        handle = await rt.start(cart, instance_id="c")
        await handle.raise_event("add", "apple")
        await handle.raise_event("add", "pear")
        await rt.wait_idle()
        writes = count_writes(store)
        assert await handle.query("items") == ["apple", "pear"]
        assert await handle.query("has", "pear") is True
        assert writes == []
        await handle.raise_event("add", "checkout")
        assert await handle == ["apple", "pear"]


async def test_a_query_is_answered_by_a_replay_where_no_process_holds_it(
    runtime_factory: Callable[..., Any], store: ObjectStore
) -> None:
    """A client with the code and no runtime replays the log to answer; an ended
    instance is answered too; a client without the code gets a typed error."""
    async with runtime_factory(registry) as rt:
        handle = await rt.start(cart, instance_id="c")
        await handle.raise_event("add", "apple")
        await rt.wait_idle()
    client = durable.Client(store=store, registry=registry, clock=durable.MockClock())
    writes = count_writes(store)
    assert await client.get_handle("c").query("items") == ["apple"]
    assert writes == []
    without_code = durable.Client(store=store, clock=durable.MockClock())
    with pytest.raises(durable.UnknownWorkflowError):
        await without_code.get_handle("c").query("items")


@pytest.mark.parametrize("name", ["fails", "schedules", "draws", "sends"])
async def test_a_handler_that_raises_or_changes_the_workflow_fails_the_query_only(
    runtime_factory: Callable[..., Any], name: str
) -> None:
    """A handler that raises, schedules a timer, draws a random value or sends an event
    fails the query with QueryFailedError; the workflow goes on as if never asked."""
    async with runtime_factory(registry) as rt:
        handle = await rt.start(cart, instance_id="c")
        await handle.raise_event("add", "apple")
        await rt.wait_idle()
        with pytest.raises(durable.QueryFailedError):
            await handle.query(name)
        await handle.raise_event("add", "checkout")
        assert await handle == ["apple"]
        state = await handle.describe()
        assert state.status is durable.WorkflowStatus.COMPLETED


async def test_an_unknown_query_name_is_a_typed_error(
    runtime_factory: Callable[..., Any],
) -> None:
    """A name the workflow set no handler for raises UnknownQueryError, naming those it has."""
    async with runtime_factory(registry) as rt:
        handle = await rt.start(cart, instance_id="c")
        await rt.wait_idle()
        with pytest.raises(durable.UnknownQueryError, match="'items'"):
            await handle.query("nope")
