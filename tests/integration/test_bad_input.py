"""Bad input gets a clear, typed error and loses nothing; changed code is caught."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import durable
from durable import ActivityContext, MockClock, Registry, WorkflowContext, WorkflowStatus
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def registry_v1() -> Registry:
    registry = Registry()

    @registry.activity
    async def reserve(ctx: ActivityContext, item: str) -> str:
        return f"reserved {item}"

    @registry.activity
    async def ship(ctx: ActivityContext, item: str) -> str:
        return f"shipped {item}"

    @registry.workflow
    async def order(ctx: WorkflowContext, item: str) -> list[str]:
        done = [await ctx.call_activity(reserve, item)]
        await ctx.wait_for_event("paid")
        done.append(await ctx.call_activity(ship, item))
        return done

    return registry


def registry_v2() -> Registry:
    """The same workflow name, but the first step changed: old runs cannot replay."""
    registry = Registry()

    @registry.activity
    async def check_stock(ctx: ActivityContext, item: str) -> str:
        return f"checked {item}"

    @registry.activity
    async def ship(ctx: ActivityContext, item: str) -> str:
        return f"shipped {item}"

    @registry.workflow
    async def order(ctx: WorkflowContext, item: str) -> list[str]:
        done = [await ctx.call_activity(check_stock, item)]
        await ctx.wait_for_event("paid")
        done.append(await ctx.call_activity(ship, item))
        return done

    return registry


async def test_changed_code_fails_the_instance_naming_the_event(runtime_factory: Any) -> None:
    clock = MockClock(T0)
    async with runtime_factory(registry_v1(), clock) as rt:
        await rt.start("order", "lamp", instance_id="old-run")
        await rt.wait_idle()
    async with runtime_factory(registry_v2(), clock, max_resident_workflows=0) as rt:
        handle = rt.client.get_handle("old-run")
        await handle.raise_event("paid")
        with pytest.raises(durable.WorkflowFailed) as caught:
            await handle
        new = await rt.start("order", "desk")  # new runs of the new code are fine
        await new.raise_event("paid")
        assert await new == ["checked desk", "shipped desk"]
    failure = caught.value.failure
    assert failure.type == "durable.NonDeterminismError"
    assert "history event 2 is activity 'reserve' (task 0)" in failure.message
    assert "activity 'check_stock' (task 0)" in failure.message


@pytest.mark.parametrize(
    "bad_id",
    ["", "a/b", "../etc", "..", "x" * 257, "tab\there", "new\nline", ".hidden", "a\\b", "st*r"],
)
async def test_bad_instance_ids_are_refused(
    runtime_factory: Any, store: ObjectStore, bad_id: str
) -> None:
    async with runtime_factory(registry_v1()) as rt:
        with pytest.raises(durable.InvalidInstanceIdError):
            await rt.start("order", "x", instance_id=bad_id)
        with pytest.raises(durable.InvalidInstanceIdError):
            rt.client.get_handle(bad_id)
    assert await store.list("instances") == []


async def test_unknown_workflow_name_is_refused(runtime_factory: Any, store: ObjectStore) -> None:
    async with runtime_factory(registry_v1()) as rt:
        with pytest.raises(durable.UnknownWorkflowError, match="no workflow named 'nope'"):
            await rt.start("nope")

        async def stray(ctx: WorkflowContext) -> None:
            pass

        with pytest.raises(durable.UnknownWorkflowError, match="not registered"):
            await rt.start(stray)
    assert await store.list("instances") == []


async def test_unknown_activity_fails_without_retries(runtime_factory: Any) -> None:
    registry = Registry()

    @registry.workflow
    async def calls_ghost(ctx: WorkflowContext, _: None) -> None:
        await ctx.call_activity("ghost", retry=durable.RetryPolicy(max_attempts=5))

    async with runtime_factory(registry) as rt:
        handle = await rt.start(calls_ghost)
        with pytest.raises(durable.WorkflowFailed) as caught:
            await handle
        history = await handle.history()
    assert caught.value.failure.type == "durable.UnknownWorkflowError"
    assert "no activity named 'ghost'" in caught.value.failure.message
    assert sum(type(e).__name__ == "ActivityScheduled" for e in history) == 1


async def test_unserializable_input_writes_nothing(
    runtime_factory: Any, store: ObjectStore
) -> None:
    async with runtime_factory(registry_v1()) as rt:
        with pytest.raises(durable.SerializationError, match="cannot encode"):
            await rt.start("order", object(), instance_id="never")
        handle = await rt.start("order", "ok", instance_id="fine")
        await rt.wait_idle()
        with pytest.raises(durable.SerializationError):
            await handle.raise_event("paid", {1, 2, 3j})
    assert await store.list("instances") == ["fine"]
    assert await store.list("instances/fine/inbox") == []


async def test_unserializable_activity_result_fails_the_step(runtime_factory: Any) -> None:
    registry = Registry()

    @registry.activity
    async def leaky(ctx: ActivityContext, _: None) -> object:
        return object()

    @registry.workflow
    async def uses_leaky(ctx: WorkflowContext, _: None) -> object:
        return await ctx.call_activity(leaky)

    async with runtime_factory(registry) as rt:
        with pytest.raises(durable.WorkflowFailed) as caught:
            await (await rt.start(uses_leaky))
    assert caught.value.failure.type == "durable.SerializationError"


async def test_messages_to_missing_instances_are_refused(runtime_factory: Any) -> None:
    async with runtime_factory(registry_v1()) as rt:
        handle = rt.client.get_handle("ghost")
        with pytest.raises(durable.InstanceNotFoundError):
            await handle.raise_event("paid")
        with pytest.raises(durable.InstanceNotFoundError):
            await handle.describe()
        with pytest.raises(durable.InstanceNotFoundError):
            await handle.history()


async def test_a_corrupt_log_object_fails_only_its_instance(
    runtime_factory: Any, store: ObjectStore
) -> None:
    clock = MockClock(T0)
    async with runtime_factory(registry_v1(), clock) as rt:
        await rt.start("order", "vase", instance_id="broken")
        await rt.start("order", "bowl", instance_id="healthy")
        await rt.wait_idle()
    key = "instances/broken/log/000000000001"
    await store.put(key, b'{"seq": 1, "events": [{"kind": "no such ev')
    async with runtime_factory(registry_v1(), clock) as rt:
        broken = rt.client.get_handle("broken")
        with pytest.raises(durable.WorkflowFailed) as caught:
            await broken
        assert caught.value.failure.type == "durable.StoreError"
        assert key in caught.value.failure.message
        healthy = rt.client.get_handle("healthy")
        await healthy.raise_event("paid")
        assert await healthy == ["reserved bowl", "shipped bowl"]
        assert (await broken.describe()).status is WorkflowStatus.FAILED
