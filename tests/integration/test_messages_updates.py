"""Updates (``ctx.set_update_handler``, ``handle.update``) through the public API, on
memory://, file:// and s3://, on a MockClock: validator first (rejects without writing),
accepted updates in history, run once per update id even when the caller retries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import durable
from durable import Registry, WorkflowContext
from durable._core._events import UpdateCompleted, UpdateRequested
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

registry = Registry()
applied: list[int] = []


@registry.activity
async def reserve(ctx: durable.ActivityContext, n: int) -> int:
    applied.append(n)
    return n


@registry.workflow
async def account(ctx: WorkflowContext) -> int:
    """A balance that updates change (through an activity) until "close"."""
    balance = 0

    async def deposit(amount: int) -> int:
        nonlocal balance
        await ctx.call_activity(reserve, amount)
        await ctx.sleep(timedelta(seconds=1))
        balance += amount
        return balance

    def positive(amount: int) -> None:
        if amount <= 0:
            raise ValueError(f"a deposit must be positive, not {amount}")

    async def fail(_: Any) -> None:
        raise RuntimeError("declined")

    ctx.set_update_handler("deposit", deposit, validator=positive)
    ctx.set_update_handler("fail", fail)
    ctx.set_query_handler("balance", lambda: balance)
    await ctx.wait_for_event("close")
    return balance


def writes_to(store: ObjectStore) -> list[str]:
    """The keys every write to ``store`` names, from now on."""
    writes: list[str] = []
    for method in ("put", "put_if_absent", "put_if_match"):
        original = getattr(store, method)

        def wrapped(key: str, *rest: Any, original: Any = original) -> Any:
            writes.append(key)
            return original(key, *rest)

        setattr(store, method, wrapped)
    return writes


async def test_an_update_runs_its_handler_and_returns_its_result(
    runtime_factory: Callable[..., Any],
) -> None:
    """The handler runs in the workflow (an activity, a timer); its result comes back;
    the request and the outcome are in history."""
    async with runtime_factory(registry) as rt:
        handle = await rt.start(account, instance_id="a")
        assert await handle.update("deposit", 5) == 5
        assert await handle.update("deposit", 7, update_id="second") == 12
        assert await handle.query("balance") == 12
        history = await handle.history()
        assert [e.update_id for e in history if isinstance(e, UpdateCompleted)][-1] == "second"
        await handle.raise_event("close")
        assert await handle == 12


async def test_the_validator_rejects_without_writing(
    runtime_factory: Callable[..., Any], store: ObjectStore
) -> None:
    """A rejected update raises UpdateRejectedError and writes nothing at all."""
    async with runtime_factory(registry) as rt:
        handle = await rt.start(account, instance_id="a")
        await rt.wait_idle()
        writes = writes_to(store)
        with pytest.raises(durable.UpdateRejectedError, match="must be positive"):
            await handle.update("deposit", -1)
        assert writes == []
        with pytest.raises(durable.UnknownUpdateError):
            await handle.update("withdraw", 1)
        assert writes == []


async def test_a_handler_that_raises_fails_the_update_not_the_workflow(
    runtime_factory: Callable[..., Any],
) -> None:
    async with runtime_factory(registry) as rt:
        handle = await rt.start(account, instance_id="a")
        with pytest.raises(durable.UpdateFailedError, match="declined"):
            await handle.update("fail")
        assert await handle.update("deposit", 1) == 1
        await handle.raise_event("close")
        assert await handle == 1


async def test_a_retried_update_runs_once(
    runtime_factory: Callable[..., Any], store: ObjectStore
) -> None:
    """The caller retries with the same update id (as after an unclear failure): before
    and after the first one was applied, the handler ran once and both calls get its
    result."""
    applied.clear()
    async with runtime_factory(registry) as rt:
        handle = await rt.start(account, instance_id="a")
        first = await handle.start_update("deposit", 3, update_id="u1")
        again = await handle.start_update("deposit", 3, update_id="u1")  # before it ran
        assert first == again == "u1"
        assert await handle.update_result("u1") == 3
        assert await handle.update("deposit", 3, update_id="u1") == 3  # after it ran
        assert applied == [3]
        history = await handle.history()
        assert sum(isinstance(e, UpdateCompleted) for e in history) == 1
        assert sum(isinstance(e, UpdateRequested) for e in history) == 1


async def test_two_requests_with_one_id_in_history_run_the_handler_once(
    runtime_factory: Callable[..., Any],
) -> None:
    """Two inbox messages for one update id (two callers, the second before it saw the
    first): both are in history, the handler runs once."""
    applied.clear()
    async with runtime_factory(registry) as rt:
        handle = await rt.start(account, instance_id="a")
        await rt.wait_idle()
        client = rt.client
        raw = durable._core._codec.JsonCodec().encode(4)  # type: ignore[attr-defined]
        from msgspec import Raw

        for msg in ("u-x1", "u-x2"):
            event = UpdateRequested(update_id="x", name="deposit", input=Raw(raw))
            await client._send("a", event, msg_id=msg)
        assert await handle.update_result("x") == 4
        assert applied == [4]
