"""FaultyStore: seeded transient errors before and after the inner call, latency on a Clock.

The last tests run the runtime over a faulty store: every turn must still commit exactly
once, with errors that hide a landed write among them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest

import durable
from durable.store import (
    FaultyStore,
    MemoryStore,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStore,
    PreconditionFailedError,
    StoreError,
)

pytestmark = pytest.mark.anyio


async def one_call(store: ObjectStore, n: int, etag: str) -> Any:
    """The ``n``-th call of a fixed mix over a few keys."""
    key = f"k/{n % 7}"
    match n % 8:
        case 0:
            return await store.put(key, b"v%d" % n)
        case 1:
            return await store.put_if_absent(key, b"a%d" % n)
        case 2:
            return await store.put_if_match(key, b"m%d" % n, etag)
        case 3:
            return await store.get(key)
        case 4:
            return await store.get_with_etag(key)
        case 5:
            return await store.list("k")
        case 6:
            return await store.delete(key)
        case _:
            return await store.delete_prefix("k")


async def workload(store: ObjectStore, calls: int = 120) -> list[str]:
    """Run the mix; return what each call answered (a value, or an error's type)."""
    outcomes: list[str] = []
    etag = "none"
    for n in range(calls):
        try:
            result = await one_call(store, n, etag)
        except StoreError as err:
            outcomes.append(f"{type(err).__name__} transient={err.transient}")
            continue
        if isinstance(result, tuple):
            etag = result[1]
        outcomes.append(repr(result))
    return outcomes


async def test_the_same_seed_gives_the_same_schedule() -> None:
    one, two = FaultyStore(MemoryStore(), 11, 0.3), FaultyStore(MemoryStore(), 11, 0.3)
    assert await workload(one) == await workload(two)
    assert one.faults == two.faults
    assert one.injected == len(one.faults) > 0
    assert one.calls == 120
    other = FaultyStore(MemoryStore(), 12, 0.3)
    await workload(other)
    assert other.faults != one.faults


async def test_error_rate_zero_is_transparent() -> None:
    faulty = FaultyStore(MemoryStore(), 5)
    assert await workload(faulty) == await workload(MemoryStore())
    assert faulty.injected == 0
    assert faulty.calls == 120
    assert faulty.url == "memory://"
    with pytest.raises(ObjectNotFoundError):  # the inner store's own errors pass through
        await faulty.get("missing")
    assert faulty.injected == 0


async def test_injected_errors_are_transient_and_name_the_call() -> None:
    store = FaultyStore(MemoryStore(), 0, error_rate=1.0)
    with pytest.raises(StoreError, match=r"injected fault #1 \(seed 0, call 0\)") as info:
        await store.get("inst/k")
    assert type(info.value) is StoreError
    assert info.value.transient
    assert info.value.key == "inst/k"
    assert store.faults[0].call == 0
    assert store.faults[0].operation == "get"


async def test_faults_come_before_and_after_writes_that_land() -> None:
    inner = MemoryStore()
    store = FaultyStore(inner, 3, error_rate=0.5)
    errors: list[StoreError] = []
    for n in range(60):
        try:
            await store.put_if_absent(f"log/{n}", b"turn %d" % n)
        except StoreError as err:
            errors.append(err)
    assert len(errors) == store.injected
    assert all(err.transient for err in errors)
    whens = {fault.when for fault in store.faults}
    assert whens == {"before", "after"}
    for fault in store.faults:
        n = int(fault.key.split("/")[1])
        if fault.when == "after":  # the caller saw an error, yet the write is there
            assert await inner.get(fault.key) == b"turn %d" % n
        else:
            with pytest.raises(ObjectNotFoundError):
                await inner.get(fault.key)
    # After an error the caller must read back: retrying blindly finds its own write.
    after = next(f for f in store.faults if f.when == "after")
    store.error_rate = 0.0
    with pytest.raises(ObjectExistsError):
        await store.put_if_absent(after.key, b"turn again")


async def test_a_failed_put_if_match_may_have_changed_the_etag() -> None:
    inner = MemoryStore()
    etag = await inner.put("meta", b"0")
    store = FaultyStore(inner, 0, error_rate=1.0)
    landed = 0
    for n in range(1, 21):
        try:
            await store.put_if_match("meta", b"%d" % n, etag)
        except PreconditionFailedError:
            continue  # an earlier "after" fault moved the ETag on
        except StoreError:
            data, current = await inner.get_with_etag("meta")
            if current != etag:
                assert data == b"%d" % n
                landed += 1
                etag = current
    assert landed == sum(f.when == "after" for f in store.faults) > 0


async def test_latency_waits_on_the_clock() -> None:
    clock = durable.MockClock()
    store = FaultyStore(MemoryStore(), 0, latency=timedelta(seconds=5), clock=clock)
    done: list[str] = []

    async def put() -> None:
        done.append(await store.put("k", b"v"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(put)
        await anyio.wait_all_tasks_blocked()
        assert not done  # waiting on the clock, not on real time
        clock.advance(timedelta(seconds=4))
        await anyio.wait_all_tasks_blocked()
        assert not done
        clock.advance(timedelta(seconds=1))
    assert done
    assert await store.inner.get("k") == b"v"


async def test_latency_in_seconds_and_bad_arguments() -> None:
    clock = durable.MockClock()
    store = FaultyStore(MemoryStore(), 0, latency=2.5, clock=clock)
    assert store.latency == timedelta(seconds=2.5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.list, "")
        await anyio.wait_all_tasks_blocked()
        clock.advance(timedelta(seconds=2.5))
    assert isinstance(FaultyStore(MemoryStore(), 0).clock, durable.SystemClock)
    with pytest.raises(ValueError, match="error_rate"):
        FaultyStore(MemoryStore(), 0, error_rate=1.5)
    with pytest.raises(ValueError, match="latency"):
        FaultyStore(MemoryStore(), 0, latency=-1)


async def test_close_is_passed_through_without_faults() -> None:
    closed: list[bool] = []

    class Inner(MemoryStore):
        async def close(self) -> None:
            closed.append(True)

    store = FaultyStore(Inner(), 0, error_rate=1.0)
    await store.close()
    assert closed == [True]
    assert store.calls == 0


# -- the runtime over a faulty store ------------------------------------------------------


def registry() -> durable.Registry:
    reg = durable.Registry()

    @reg.activity
    async def square(ctx: durable.ActivityContext, x: int) -> int:
        return x * x

    @reg.workflow
    async def squares(ctx: durable.WorkflowContext, n: int) -> int:
        total = 0
        for x in range(n):
            total += await ctx.call_activity(square, x)
        await ctx.sleep(timedelta(minutes=5))
        parts = await ctx.all([ctx.call_activity(square, x) for x in range(n)])
        return total + sum(parts)

    return reg


async def until_done(handle: durable.WorkflowHandle[Any]) -> Any:
    """Await a result; the handle's own reads may hit an injected error too."""
    while True:
        try:
            return await handle
        except StoreError as err:
            if not err.transient:
                raise


@pytest.mark.parametrize(
    ("backend", "seed"), [("memory", 1), ("memory", 2), ("memory", 3), ("memory", 4), ("s3", 2)]
)
async def test_every_turn_commits_once_over_a_faulty_store(
    request: pytest.FixtureRequest, backend: str, seed: int
) -> None:
    inner: ObjectStore = (
        MemoryStore() if backend == "memory" else request.getfixturevalue("moto_server").store()
    )
    store = FaultyStore(inner, seed)  # faults off while starting: start() is the caller's
    clock = durable.MockClock(auto_advance=True)
    try:
        async with durable.Runtime(registry(), store=store, clock=clock) as rt:
            handles = [await rt.start("squares", 4, instance_id=f"i{n}") for n in range(3)]
            store.error_rate = 0.15
            results = [await until_done(handle) for handle in handles]
            store.error_rate = 0.0
        assert results == [28, 28, 28]  # 2 * (0 + 1 + 4 + 9)
        writes = [f for f in store.faults if f.operation.startswith("put")]
        assert any(f.when == "after" for f in writes)  # some writes landed, unseen
        for n in range(3):
            seqs = await inner.list(f"instances/i{n}/log")
            assert seqs == [f"{s:012d}" for s in range(len(seqs))]  # gapless, one per seq
    finally:
        await inner.close()
