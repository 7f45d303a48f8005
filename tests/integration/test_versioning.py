"""Long-lived workflows: patches, named versions, eviction from memory and restore."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable
from durable import (
    ActivityContext,
    EvictionPolicy,
    MockClock,
    Registry,
    WorkflowContext,
    WorkflowStatus,
)
from durable.store import MemoryStore, ObjectStore
from durable.testing import Replayer

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def add_steps(registry: Registry) -> None:
    @registry.activity
    async def reserve(ctx: ActivityContext, item: str) -> str:
        return f"reserved {item}"

    @registry.activity
    async def reserve_fast(ctx: ActivityContext, item: str) -> str:
        return f"fast-reserved {item}"

    @registry.activity
    async def gift_wrap(ctx: ActivityContext, item: str) -> str:
        return f"wrapped {item}"

    @registry.activity
    async def ship(ctx: ActivityContext, item: str) -> str:
        return f"shipped {item}"


def code_v1() -> Registry:
    """What production ran first."""
    registry = Registry()
    add_steps(registry)

    @registry.workflow(name="checkout", version="1")
    async def checkout(ctx: WorkflowContext, item: str) -> list[str]:
        done = [await ctx.call_activity("reserve", item)]
        await ctx.wait_for_event("paid")
        done.append(await ctx.call_activity("ship", item))
        return done

    return registry


def code_v2(*, patch: str = "check") -> Registry:
    """The deploy: version 1 gains a patch, and a version 2 arrives."""
    registry = Registry()
    add_steps(registry)

    @registry.workflow(name="checkout", version="1")
    async def checkout_v1(ctx: WorkflowContext, item: str) -> list[str]:
        if patch == "check":
            fast = ctx.patched("fast-reserve")
        else:
            if patch == "deprecate":
                ctx.deprecate_patch("fast-reserve")
            fast = True
        step = "reserve_fast" if fast else "reserve"
        done = [await ctx.call_activity(step, item)]
        await ctx.wait_for_event("paid")
        done.append(await ctx.call_activity("ship", item))
        return done

    @registry.workflow(name="checkout", version="2")
    async def checkout_v2(ctx: WorkflowContext, item: str) -> list[str]:
        done = [await ctx.call_activity("reserve_fast", item)]
        await ctx.wait_for_event("paid")
        done.append(await ctx.call_activity("gift_wrap", item))
        done.append(await ctx.call_activity("ship", item))
        return done

    return registry


async def pay_all(rt: durable.Runtime, ids: list[str]) -> dict[str, Any]:
    handles = [rt.client.get_handle(i) for i in ids]
    for handle in handles:
        await handle.raise_event("paid")
    return {h.instance_id: await h for h in handles}


async def test_a_deploy_keeps_old_runs_on_the_old_path(store: ObjectStore) -> None:
    clock = MockClock(T0, auto_advance=True)
    old_ids = [f"old-{i}" for i in range(20)]
    async with durable.Runtime(code_v1(), store=store, clock=clock) as rt:
        for instance_id in old_ids:
            await rt.start("checkout", instance_id, instance_id=instance_id)
        await rt.wait_idle()  # every run waits for payment: stop mid-flight
    new = code_v2()
    async with durable.Runtime(new, store=store, clock=clock) as rt:
        fresh = await rt.start("checkout", "desk", instance_id="new-v2")
        patched = await rt.start("checkout", "lamp", instance_id="new-v1", version="1")
        assert (await fresh.describe()).version == "2"
        assert (await patched.describe()).version == "1"
        results = await pay_all(rt, [*old_ids, "new-v2", "new-v1"])
        histories = {i: await rt.client.get_handle(i).history() for i in results}
    for instance_id in old_ids:
        assert results[instance_id] == [f"reserved {instance_id}", f"shipped {instance_id}"]
    assert results["new-v2"] == ["fast-reserved desk", "wrapped desk", "shipped desk"]
    assert results["new-v1"] == ["fast-reserved lamp", "shipped lamp"]
    replayer = Replayer(new)
    for history in histories.values():
        replayer.check(history)  # old, patched and version-2 histories all replay
    kinds = [type(e).__name__ for e in histories["new-v1"]]
    assert "PatchApplied" in kinds
    assert "PatchApplied" not in [type(e).__name__ for e in histories["old-0"]]


async def test_removing_a_needed_patch_check_names_the_patch() -> None:
    store, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    async with durable.Runtime(code_v2(), store=store, clock=clock) as rt:
        await rt.start("checkout", "vase", instance_id="patched", version="1")
        await rt.wait_idle()
        history = await rt.client.get_handle("patched").history()
    with pytest.raises(durable.NonDeterminismError, match="patch 'fast-reserve'"):
        Replayer(code_v2(patch="removed")).check(history)
    Replayer(code_v2(patch="deprecate")).check(history)  # the way to clean up
    async with durable.Runtime(code_v2(patch="removed"), store=store, clock=clock) as rt:
        handle = rt.client.get_handle("patched")
        await handle.raise_event("paid")
        with pytest.raises(durable.WorkflowFailed, match="fast-reserve"):
            await handle


async def test_an_unregistered_version_waits_for_a_worker_that_has_it() -> None:
    store, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    async with durable.Runtime(code_v2(), store=store, clock=clock) as rt:
        await rt.start("checkout", "rug", instance_id="on-v2")
        await rt.wait_idle()
    async with durable.Runtime(code_v1(), store=store, clock=clock) as rt:
        handle = rt.client.get_handle("on-v2")
        await handle.raise_event("paid")
        await rt.wait_idle()
        state = await handle.describe()
        assert state.status is WorkflowStatus.RUNNING
        assert state.version == "2"
        assert "version '2' is not registered" in state.reason
    async with durable.Runtime(code_v2(), store=store, clock=clock) as rt:
        handle = rt.client.get_handle("on-v2")
        assert await handle == ["fast-reserved rug", "wrapped rug", "shipped rug"]
        assert (await handle.describe()).reason == ""


def waiting_registry(
    eviction: EvictionPolicy | None = None, go_eviction: EvictionPolicy | None = None
) -> tuple[Registry, list[str]]:
    registry = Registry()
    calls: list[str] = []

    @registry.activity
    async def note(ctx: ActivityContext, what: str) -> str:
        calls.append(what)
        return what

    @registry.workflow(eviction=eviction)
    async def nap(ctx: WorkflowContext, seconds: int) -> list[str]:
        first = await ctx.call_activity(note, "before")
        await ctx.sleep(timedelta(seconds=seconds))
        return [first, await ctx.call_activity(note, "after")]

    @registry.workflow(eviction=go_eviction or eviction)
    async def await_go(ctx: WorkflowContext, _: None) -> str:
        await ctx.call_activity(note, "waiting")
        return await ctx.wait_for_event("go")

    return registry, calls


async def test_ttl_eviction_and_restore_by_replay() -> None:
    registry, calls = waiting_registry(EvictionPolicy(ttl=timedelta(minutes=15)))
    clock = MockClock(T0)
    async with durable.Runtime(registry, store=MemoryStore(), clock=clock) as rt:
        handle = await rt.start("await_go", instance_id="idle")
        short = await rt.start("nap", 5, instance_id="short")  # a 5 s wait: never by TTL
        await rt.wait_idle()
        assert (await handle.describe()).is_resident is True
        clock.advance(timedelta(minutes=14))
        await rt.wait_idle()
        assert (await handle.describe()).is_resident is True
        clock.advance(timedelta(minutes=2))
        await rt.wait_idle()
        assert (await handle.describe()).is_resident is False
        assert (await short.describe()).status is WorkflowStatus.COMPLETED
        await handle.raise_event("go", "woken")
        assert await handle == "woken"
    assert calls.count("waiting") == 1  # restored by replay: the activity did not rerun


async def test_short_waits_are_never_evicted_by_ttl() -> None:
    registry, _ = waiting_registry(EvictionPolicy(ttl=timedelta(seconds=1)))
    clock = MockClock(T0)
    async with durable.Runtime(registry, store=MemoryStore(), clock=clock) as rt:
        handle = await rt.start("nap", 9, instance_id="nine-seconds")
        await rt.wait_idle()
        clock.advance(timedelta(seconds=8))
        await rt.wait_idle()
        assert (await handle.describe()).is_resident is True
        clock.advance(timedelta(seconds=1))
        assert await handle == ["before", "after"]


async def test_capacity_evicts_by_priority_then_longest_wait() -> None:
    registry, _ = waiting_registry(
        eviction=EvictionPolicy(ttl=None, priority=5),  # nap: keep longer
        go_eviction=EvictionPolicy(ttl=None, priority=0),  # await_go: evict first
    )
    clock = MockClock(T0)
    async with durable.Runtime(
        registry, store=MemoryStore(), clock=clock, max_resident_workflows=2
    ) as rt:
        for i in range(2):  # waiting first, but with the lowest priority
            await rt.start("await_go", instance_id=f"low-{i}")
            clock.advance(timedelta(seconds=1))
            await rt.wait_idle()
        for i in range(3):
            await rt.start("nap", 3600, instance_id=f"keep-{i}")
            clock.advance(timedelta(seconds=1))
            await rt.wait_idle()
        resident = {s.instance_id: s.is_resident async for s in rt.client.list()}
        assert sum(resident.values()) == 2
        assert resident["low-0"] is False  # lowest priority goes first...
        assert resident["low-1"] is False
        assert resident["keep-0"] is False  # ...then the longest waiting
        assert resident["keep-1"]
        assert resident["keep-2"]
        clock.advance(timedelta(hours=2))
        for i in range(3):
            assert await rt.client.get_handle(f"keep-{i}") == ["before", "after"]
        for i in range(2):
            await rt.client.get_handle(f"low-{i}").raise_event("go", f"go {i}")
            assert await rt.client.get_handle(f"low-{i}") == f"go {i}"


async def test_many_sleepers_stay_under_the_resident_cap() -> None:
    registry = Registry()

    @registry.workflow
    async def sleeper(ctx: WorkflowContext, n: int) -> int:
        await ctx.sleep(timedelta(days=1))
        return n * 2

    clock = MockClock(T0)
    count, cap = 2_000, 100
    async with durable.Runtime(
        registry, store=MemoryStore(), clock=clock, max_resident_workflows=cap
    ) as rt:
        engine = rt._engine
        peak = 0
        for n in range(count):
            await rt.start(sleeper, n, instance_id=f"s{n:05d}")
            if n % 50 == 0:
                await rt.wait_idle()
                peak = max(peak, len(engine._instances))
        await rt.wait_idle()
        peak = max(peak, len(engine._instances))
        assert peak <= cap + 50  # starts between checks may briefly exceed the cap
        assert len(engine._instances) <= cap
        clock.advance(timedelta(days=1))
        results = [await rt.client.get_handle(f"s{n:05d}") for n in range(count)]
    assert results == [n * 2 for n in range(count)]


class _PeakDict(dict[str, Any]):
    """The engine's map of resident instances, remembering the most it ever held."""

    peak = 0

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.peak = max(self.peak, len(self))


class _SuspendingStore(MemoryStore):
    """A memory store whose reads suspend, as a file or S3 store's do: loads that
    start together are in flight together."""

    never_suspends = False

    async def get(self, key: str) -> bytes:
        await anyio.lowlevel.checkpoint()
        return await super().get(key)

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        await anyio.lowlevel.checkpoint()
        return await super().get_with_etag(key)

    async def list(self, prefix: str) -> list[str]:
        await anyio.lowlevel.checkpoint()
        return await super().list(prefix)


def _watch_turns(engine: Any) -> list[str]:
    """Ids of the turns that run on an instance object the engine no longer holds
    (filled as the engine runs)."""
    elsewhere: list[str] = []
    run_turn = engine._run_turn

    async def checked_turn(inst: Any) -> None:
        if engine._instances.get(inst.id) is not inst:
            elsewhere.append(inst.id)
        await run_turn(inst)

    engine._run_turn = checked_turn
    return elsewhere


@pytest.mark.parametrize("store", [MemoryStore, _SuspendingStore])
async def test_a_mass_wake_up_loads_in_turn_under_the_cap(store: type[MemoryStore]) -> None:
    """Every sleeper wakes at the same instant: they come back a few at a time as turns
    make room, instead of all being loaded at once (found by the timers benchmark), and
    each turn runs on the instance the engine holds."""
    registry = Registry()

    @registry.workflow
    async def twice(ctx: WorkflowContext, n: int) -> int:
        await ctx.sleep(timedelta(hours=1))
        await ctx.sleep(timedelta(hours=1))
        return n * 3

    clock = MockClock(T0)
    count, cap = 1_000, 50
    async with durable.Runtime(
        registry, store=store(), clock=clock, max_resident_workflows=cap
    ) as rt:
        engine = rt._engine
        turned_elsewhere = _watch_turns(engine)
        resident = _PeakDict(engine._instances)
        engine._instances = engine._residency._instances = resident
        for n in range(count):
            await rt.start(twice, n, instance_id=f"t{n:05d}")
        await rt.wait_idle()
        assert len(resident) <= cap
        resident.peak = len(resident)
        clock.advance(timedelta(hours=1))  # all wake, each to sleep again
        await rt.wait_idle()
        assert resident.peak <= cap + 1
        assert len(resident) <= cap
        clock.advance(timedelta(hours=1))
        results = [await rt.client.get_handle(f"t{n:05d}") for n in range(count)]
        assert resident.peak <= cap + 1
    assert results == [n * 3 for n in range(count)]
    assert turned_elsewhere == []


@pytest.mark.parametrize(("count", "cap"), [(20, 5), (100, 1)])
async def test_an_instance_back_in_memory_is_not_evicted_by_an_earlier_stay(
    count: int, cap: int
) -> None:
    """Found in review: an instance evicted by its TTL kept its capacity entry, which
    matched it again once reloaded at the same seq, so it was evicted while it loaded
    and its turn ran on a copy the engine no longer held."""
    registry = Registry()

    @registry.workflow
    async def twice(ctx: WorkflowContext, n: int) -> int:
        early = n >= count - cap  # the last ones stay resident, then leave by TTL
        await ctx.sleep(timedelta(minutes=30) if early else timedelta(hours=1))
        await ctx.sleep(timedelta(hours=1))
        return n * 3

    clock = MockClock(T0)
    async with durable.Runtime(
        registry, store=_SuspendingStore(), clock=clock, max_resident_workflows=cap,
        eviction=EvictionPolicy(ttl=timedelta(minutes=1)),
    ) as rt:  # fmt: skip
        engine = rt._engine
        turned_elsewhere = _watch_turns(engine)
        for n in range(count):
            await rt.start(twice, n, instance_id=f"t{n:05d}")
        await rt.wait_idle()
        clock.advance(timedelta(minutes=2))  # the resident ones leave by TTL
        await rt.wait_idle()
        for _ in range(3):
            clock.advance(timedelta(minutes=30))
            await rt.wait_idle()
        clock.advance(timedelta(hours=1))
        with anyio.fail_after(30):
            results = [await rt.client.get_handle(f"t{n:05d}") for n in range(count)]
    assert turned_elsewhere == []
    assert results == [n * 3 for n in range(count)]


async def test_reloading_an_evicted_instance_does_not_set_its_timers_again() -> None:
    """An evicted instance's timers stay queued in its process; each reload used to
    queue them once more, so an instance woken often kept piling up copies."""
    registry = Registry()

    @registry.workflow
    async def patient(ctx: WorkflowContext, pokes: int) -> int:
        later = ctx.sleep(timedelta(days=30))
        for _ in range(pokes):
            await ctx.wait_for_event("poke")
        await later
        return pokes

    clock = MockClock(T0)
    async with durable.Runtime(
        registry, store=MemoryStore(), clock=clock, max_resident_workflows=1
    ) as rt:
        for name in ("a", "b"):
            await rt.start(patient, 20, instance_id=name)
            await rt.wait_idle()
        for _ in range(20):  # each poke reloads one and evicts the other
            for name in ("a", "b"):
                await rt.client.get_handle(name).raise_event("poke")
                await rt.wait_idle()
        assert len(rt._engine._timers) == 2  # one 30-day timer each
        clock.advance(timedelta(days=30))
        assert [await rt.client.get_handle(n) for n in ("a", "b")] == [20, 20]


# -- a property: capacity pressure never evicts a turn in progress or an activity wait --


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(["start", "release", "advance", "event"]), st.integers(0, 7)),
        max_size=40,
    ),
    cap=st.integers(0, 3),
)
def test_eviction_never_drops_a_busy_workflow(plan: list[tuple[str, int]], cap: int) -> None:
    anyio.run(_check_eviction, plan, cap)


async def _check_eviction(plan: list[tuple[str, int]], cap: int) -> None:
    registry = Registry()
    gates: dict[str, anyio.Event] = {}
    started: set[str] = set()

    @registry.activity
    async def blocking(ctx: ActivityContext, key: str) -> str:
        gate = gates.setdefault(key, anyio.Event())
        await gate.wait()
        return key

    @registry.workflow
    async def mixed(ctx: WorkflowContext, n: int) -> list[str]:
        out = [await ctx.call_activity(blocking, f"{ctx.instance_id}/a")]
        await ctx.sleep(timedelta(minutes=n + 1))
        out.append(await ctx.wait_for_event("go"))
        out.append(await ctx.call_activity(blocking, f"{ctx.instance_id}/b"))
        return out

    clock = MockClock(T0)
    async with durable.Runtime(
        registry, store=MemoryStore(), clock=clock, max_resident_workflows=cap
    ) as rt:
        engine = rt._engine

        def check() -> None:
            for key, gate in gates.items():
                instance_id = key.split("/")[0]
                if not gate.is_set():  # an activity is running: it must stay resident
                    assert engine.is_resident(instance_id), f"{instance_id} evicted mid-activity"

        for op, n in plan:
            instance_id = f"w{n}"
            if op == "start" and instance_id not in started:
                started.add(instance_id)
                await rt.start(mixed, n, instance_id=instance_id)
            elif op == "release":
                for gate in gates.values():
                    gate.set()
            elif op == "advance":
                clock.advance(timedelta(minutes=n + 1))
            elif op == "event" and instance_id in started:
                await rt.client.get_handle(instance_id).raise_event("go", instance_id)
            await anyio.wait_all_tasks_blocked()
            check()
        # finish everything: every run completes with the right result
        for instance_id in started:
            await rt.client.get_handle(instance_id).raise_event("go", instance_id)
        for _ in range(6):
            for gate in gates.values():
                gate.set()
            clock.advance(timedelta(hours=1))
            await anyio.wait_all_tasks_blocked()
        for instance_id in sorted(started):
            result = await rt.client.get_handle(instance_id)
            assert result == [f"{instance_id}/a", instance_id, f"{instance_id}/b"]
