"""The scenarios of many at once: fan-out over N activities, N workflows asleep on timers.

``fan-out`` runs in this process like the others. ``timers`` runs each measurement in a
child process (``python -m benchmarks._child timers STORE N``), so the RSS it reports
is that of a process which did nothing else before.

(No ``from __future__ import annotations`` here: the registry reads the payload types
from the annotations, so they must resolve at runtime.)
"""

import gc
import math
import resource
from datetime import timedelta
from time import perf_counter
from typing import Any

import anyio

from durable import ActivityContext, MockClock, Runtime, WorkflowContext
from durable.store import ObjectStore

from ._figures import rss_bytes
from ._scenarios import REGISTRY
from ._suite import Column, fresh_store, run_child, scenario

__all__ = ["timers_in_this_process"]

# perf_counter() at the start of every call of ``bench_fan`` in the current measurement.
_fan_stamps: list[float] = []
# the instances that reached their timer (a set: a replayed turn would add one again)
_sleeping: set[str] = set()


@REGISTRY.activity
async def bench_fan(ctx: ActivityContext, i: int) -> int:
    """A trivial async activity that records when it was called."""
    _fan_stamps.append(perf_counter())
    return i


@REGISTRY.workflow
async def bench_fanout(ctx: WorkflowContext, n: int) -> int:
    """``n`` activities at once, joined with ``ctx.all``."""
    results = await ctx.all([ctx.call_activity(bench_fan, i) for i in range(n)])
    return len(results)


@REGISTRY.workflow
async def bench_timer(ctx: WorkflowContext, hours: int) -> int:
    """Sleeps ``hours`` on the runtime's clock, then ends."""
    _sleeping.add(ctx.instance_id)
    await ctx.sleep(timedelta(hours=hours))
    return hours


# -- fan-out ------------------------------------------------------------------------------


async def _fanout_once(store: ObjectStore, n: int) -> dict[str, float]:
    _fan_stamps.clear()
    try:
        async with Runtime(REGISTRY, store=store) as rt:
            started = perf_counter()
            handle = await rt.start(bench_fanout, n)
            result = await handle
            ended = perf_counter()
    finally:
        await store.close()
    stamps = sorted(_fan_stamps)
    _fan_stamps.clear()
    if result != n or len(stamps) != n:
        raise RuntimeError(f"fan-out run went wrong: result {result}, {len(stamps)} calls")
    total = ended - started
    return {
        "total_s": total,
        "activities_per_s": n / total,
        "start_to_first_call_s": stamps[0] - started,
        "start_to_last_call_s": stamps[-1] - started,
        "last_call_to_result_s": ended - stamps[-1],
    }


@scenario(
    "fan-out",
    description="one workflow that runs N trivial activities at once with ctx.all",
    size_name="N",
    sizes=(1_000,),
    columns=(
        Column("total_s", "total s", ".3f"),
        Column("activities_per_s", "activities/s", ",.0f"),
        Column("start_to_first_call_s", "first call ms", ",.1f", 1e3),
        Column("start_to_last_call_s", "last call ms", ",.1f", 1e3),
        Column("last_call_to_result_s", "last call→result ms", ",.1f", 1e3),
    ),
    notes=(
        "total = rt.start() to the awaited result; first/last call = rt.start() to the "
        "first/last activity call (perf_counter inside the activity); default runtime "
        "limits (100 concurrent activities)",
    ),
)
def fanout(store_kind: str, n: int) -> dict[str, float]:
    with fresh_store(store_kind) as store:
        return anyio.run(_fanout_once, store, n)


# -- timers -------------------------------------------------------------------------------

_WARM_UP_TIMERS = 20

TIMERS_MAX_RESIDENT: int | None = None
"""``Runtime(max_resident_workflows=...)`` for the ``timers`` scenario (``--max-resident``)."""


def _instance_id(i: int) -> str:
    return f"timer-{i:06d}"


def _resident(rt: Runtime) -> int:
    """How many instances the runtime holds in memory (a private count: benchmarks only)."""
    return len(rt._engine._instances)


async def _timers_once(store: ObjectStore, n: int, cap: int | None) -> dict[str, float]:
    clock = MockClock()
    _sleeping.clear()
    max_resident = 0
    rss_at_cap = math.nan
    try:
        async with Runtime(REGISTRY, store=store, clock=clock, max_resident_workflows=cap) as rt:
            # warm up every code path (start, suspend, wake, result) before the baseline
            warm = [await rt.start(bench_timer, 1) for _ in range(_WARM_UP_TIMERS)]
            await rt.wait_idle()
            clock.advance(timedelta(hours=2))
            for handle in warm:
                await handle
            del warm, handle
            _sleeping.clear()

            # The instance ids are made, not kept, so the baseline-to-suspended window
            # holds no per-workflow objects of the benchmark's own.
            gc.collect()
            rss_before = rss_bytes()
            started = perf_counter()
            for i in range(n):
                await rt.start(bench_timer, 1, instance_id=_instance_id(i))
                max_resident = max(max_resident, _resident(rt))
                if cap is not None and i + 1 == cap:  # the first `cap` are in: RSS from here
                    await rt.wait_idle()
                    gc.collect()
                    rss_at_cap = rss_bytes()
            await rt.wait_idle()
            suspended = perf_counter()
            if len(_sleeping) != n:
                raise RuntimeError(f"timers: {len(_sleeping)} of {n} reached their timer")
            resident_asleep = _resident(rt)
            max_resident = max(max_resident, resident_asleep)
            gc.collect()
            rss_after = rss_bytes()

            woke = perf_counter()
            clock.advance(timedelta(hours=2))  # past every deadline (1 hour from its start)
            max_resident_waking = 0
            for i in range(n):
                if await rt.client.get_handle(_instance_id(i)) != 1:
                    raise RuntimeError("timers: a workflow returned the wrong result")
                max_resident_waking = max(max_resident_waking, _resident(rt))
            done = perf_counter()
    finally:
        await store.close()
        _sleeping.clear()
    # ru_maxrss is in KiB on Linux
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    after_cap = n - cap if cap is not None and n > cap else 0
    return {
        "max_resident_workflows": float(cap) if cap is not None else math.nan,
        "rss_per_workflow_bytes": (rss_after - rss_before) / n,
        "rss_per_workflow_after_cap_bytes": (
            (rss_after - rss_at_cap) / after_cap if after_cap else math.nan
        ),
        "resident_max_asleep": float(max_resident),
        "resident_asleep": float(resident_asleep),
        "resident_max_waking": float(max_resident_waking),
        "rss_before_bytes": float(rss_before),
        "rss_at_cap_bytes": float(rss_at_cap),
        "rss_suspended_bytes": float(rss_after),
        "rss_peak_bytes": float(peak),
        "start_and_suspend_s": suspended - started,
        "suspends_per_s": n / (suspended - started),
        "wake_all_s": done - woke,
        "wakes_per_s": n / (done - woke),
    }


def timers_in_this_process(store_kind: str, n: int, cap: int | None = None) -> dict[str, float]:
    """One ``timers`` measurement in this process (the child's side)."""
    with fresh_store(store_kind) as store:
        return anyio.run(_timers_once, store, n, cap)


@scenario(
    "timers",
    description="N workflows asleep on durable timers (MockClock): RSS per suspended "
    "workflow, time to wake them all",
    size_name="N",
    sizes=(10_000,),
    quick_sizes=(200,),
    columns=(
        Column("rss_per_workflow_bytes", "RSS KB/workflow", ",.2f", 1e-3),
        Column("max_resident_workflows", "cap", ",.0f"),
        Column("rss_per_workflow_after_cap_bytes", "KB/wf after cap", ",.2f", 1e-3),
        Column("resident_max_asleep", "max resident", ",.0f"),
        Column("resident_max_waking", "max resident waking", ",.0f"),
        Column("rss_before_bytes", "RSS before MB", ",.1f", 1e-6),
        Column("rss_suspended_bytes", "RSS asleep MB", ",.1f", 1e-6),
        Column("start_and_suspend_s", "start+suspend s", ",.2f"),
        Column("wake_all_s", "wake all s", ",.3f"),
        Column("wakes_per_s", "wakes/s", ",.0f"),
    ),
    notes=(
        "each run in a fresh child process: runtime up and 20 warm-up timers woken, "
        "gc.collect(), RSS (/proc/self/statm) = before; start N workflows that each sleep "
        "1 hour, wait until the runtime is idle with all N asleep, gc.collect(), RSS = "
        "asleep; KB/workflow = (asleep - before) / N, 1 KB = 1,000 bytes",
        "the RSS includes everything the store keeps in the process: on memory:// that is "
        "every instance's history and index records, on file:// only the runtime's state",
        "wake all = MockClock.advance(2 hours) to the N-th awaited result (handles awaited "
        "in order); default runtime limits (no max_resident_workflows) unless "
        "--max-resident N (cap) is given",
        "with a cap: KB/wf after cap = (asleep - RSS once the first `cap` are asleep) / "
        "(N - cap), i.e. whether RSS stays flat past the cap; max resident = the most "
        "instances held in memory while starting (sampled after each start) and while "
        "waking (after each result); every run checks that all N finish with the right result",
        "--profile does not see these runs (they are child processes)",
    ),
)
def timers(store_kind: str, n: int) -> dict[str, float]:
    args = ["timers", store_kind, str(n)]
    if TIMERS_MAX_RESIDENT is not None:
        args.append(str(TIMERS_MAX_RESIDENT))
    figures: Any = run_child(args, timeout=1800)
    return {str(key): float(value) for key, value in figures.items()}
