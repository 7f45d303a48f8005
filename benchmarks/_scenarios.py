"""The scenarios: sequential steps, concurrent workflows, store operations per step.

Workflows here use the default ``SystemClock`` and real stores; each measurement gets a
fresh store and a fresh event loop (``anyio.run``), and closes both.

(No ``from __future__ import annotations`` here: the registry reads the payload types
from the annotations, so they must resolve at runtime.)
"""

from datetime import timedelta
from time import perf_counter
from typing import Any

import anyio

from durable import ActivityContext, Registry, Runtime, TimeoutError, WorkflowContext
from durable.store import ObjectStore
from durable.testing import WorkflowEnvironment

from ._counting import METHODS, CountingStore
from ._figures import latency_figures, sequential_figures
from ._suite import ALL_STORES, Column, fresh_store, scenario
from .flush import create_fsync_seconds

__all__ = ["REGISTRY"]

REGISTRY = Registry()

# perf_counter() at the start of every call of ``bench_step`` in the current measurement.
_stamps: list[float] = []


@REGISTRY.activity
async def bench_step(ctx: ActivityContext, i: int) -> int:
    """A trivial async activity that records when it was called."""
    _stamps.append(perf_counter())
    return i


@REGISTRY.activity
async def bench_noop(ctx: ActivityContext, i: int) -> int:
    """A trivial async activity."""
    return i


@REGISTRY.workflow
async def bench_sequential(ctx: WorkflowContext, k: int) -> int:
    """``k`` activity steps, one after another."""
    for i in range(k):
        await ctx.call_activity(bench_step, i)
    return k


@REGISTRY.workflow
async def bench_steps(ctx: WorkflowContext, k: int) -> int:
    """``k`` activity steps that record nothing (for many concurrent instances)."""
    for i in range(k):
        await ctx.call_activity(bench_noop, i)
    return k


def warm_up() -> None:
    """Run a short workflow once on each store so first-call costs stay out of figures."""
    for kind in ("memory", "file"):
        with fresh_store(kind) as store:
            anyio.run(_sequential_once, store, 20)


# -- sequential ---------------------------------------------------------------------------


async def _sequential_once(
    store: ObjectStore, k: int, options: dict[str, Any] | None = None
) -> dict[str, float]:
    """One ``k``-step sequential run on ``store`` (a runtime built with ``options``)."""
    _stamps.clear()
    try:
        async with Runtime(REGISTRY, store=store, **(options or {})) as rt:
            started = perf_counter()
            handle = await rt.start(bench_sequential, k)
            result = await handle
            ended = perf_counter()
    finally:
        await store.close()
    stamps = list(_stamps)
    _stamps.clear()
    if result != k:
        raise RuntimeError(f"sequential run went wrong: result {result}")
    return sequential_figures(stamps, started, ended, k)


@scenario(
    "sequential",
    description="one workflow of K sequential trivial async activity steps",
    size_name="K",
    sizes=(100, 1_000, 10_000),
    quick_sizes=(100, 1_000),
    columns=(
        Column("total_s", "total s", ".3f"),
        Column("steps_per_s", "steps/s", ",.0f"),
        Column("first10_step_s", "first10% mean µs", ",.1f", 1e6),
        Column("last10_step_s", "last10% mean µs", ",.1f", 1e6),
        Column("last_over_first", "mean last/first", ".2f"),
        Column("first10_median_gap_s", "first10% p50 µs", ",.1f", 1e6),
        Column("last10_median_gap_s", "last10% p50 µs", ",.1f", 1e6),
        Column("last_over_first_median_gap", "p50 last/first", ".2f"),
        Column("disk_create_fsync_s", "disk fsync µs", ",.1f", 1e6),
        Column("step_over_disk", "p50/disk", ".2f"),
    ),
    notes=(
        "disk fsync = the disk's own time for one new file fsynced with its directory "
        "(median of 30, in the store's directory just before the run; file-fsync only); "
        "p50/disk = last10% p50 over it",
        "total = rt.start() to the awaited result; mean = mean gap between consecutive "
        "activity calls (perf_counter inside the activity) over the first/last 10% of steps; "
        "p50 = the median gap over the same steps (robust to preemption)",
        "every column, ratios included, is the median over runs of the per-run figure",
    ),
)
def sequential(store_kind: str, k: int) -> dict[str, float]:
    with fresh_store(store_kind) as store:
        root = getattr(store, "root", None)
        disk = create_fsync_seconds(root) if root and store_kind == "file-fsync" else None
        figures = anyio.run(_sequential_once, store, k)
    if disk is not None:
        figures["disk_create_fsync_s"] = disk
        figures["step_over_disk"] = figures["last10_median_gap_s"] / disk
    return figures


# -- concurrent ---------------------------------------------------------------------------

_CONCURRENT_STEPS = 10


async def _concurrent_once(store: ObjectStore, n: int) -> dict[str, float]:
    latencies: list[float] = []
    last_start = 0.0  # when the last rt.start() call returned

    try:
        async with Runtime(REGISTRY, store=store) as rt:

            async def one() -> None:
                nonlocal last_start
                t0 = perf_counter()
                handle = await rt.start(bench_steps, _CONCURRENT_STEPS)
                last_start = max(last_start, perf_counter())
                if await handle != _CONCURRENT_STEPS:
                    raise RuntimeError("concurrent run went wrong")
                latencies.append(perf_counter() - t0)

            started = perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one)
            ended = perf_counter()
    finally:
        await store.close()
    figures = latency_figures(latencies, ended - started, n, _CONCURRENT_STEPS)
    figures["all_started_s"] = last_start - started
    return figures


@scenario(
    "concurrent",
    description=f"N concurrent workflows of {_CONCURRENT_STEPS} trivial activity steps each",
    size_name="N",
    sizes=(1_000,),
    quick_sizes=(20, 200),
    columns=(
        Column("total_s", "total s", ".3f"),
        Column("workflows_per_s", "workflows/s", ",.0f"),
        Column("steps_per_s", "steps/s", ",.0f"),
        Column("p50_s", "p50 ms", ",.1f", 1e3),
        Column("p99_s", "p99 ms", ",.1f", 1e3),
        Column("all_started_s", "all started s", ",.2f"),
    ),
    notes=(
        "all N are started at once (a burst of tasks calling rt.start); latency = each "
        "task's rt.start() call to its awaited result; all started = when the last "
        "rt.start() call returned; default runtime limits (32 concurrent turns, 100 "
        "concurrent activities)",
    ),
)
def concurrent(store_kind: str, n: int) -> dict[str, float]:
    with fresh_store(store_kind) as store:
        return anyio.run(_concurrent_once, store, n)


# -- store-ops ----------------------------------------------------------------------------

_WRITES = ("put", "put_if_absent", "put_if_match")
_READS = ("get", "get_with_etag", "list")


async def _store_ops_once(store: ObjectStore, k: int) -> dict[str, float]:
    counting = CountingStore(store)
    _stamps.clear()
    try:
        async with Runtime(REGISTRY, store=counting) as rt:
            before = counting.snapshot()
            started = perf_counter()
            handle = await rt.start(bench_sequential, k)
            if await handle != k:
                raise RuntimeError("store-ops run went wrong")
            ended = perf_counter()
            window = counting.since(before)
            # Reading the result again shows what the client's result read costs alone.
            before_read = counting.snapshot()
            await handle
            result_read = counting.since(before_read)
    finally:
        await store.close()
        _stamps.clear()
    figures: dict[str, float] = {}
    for method in METHODS:
        figures[f"{method}_per_step"] = window[f"calls.{method}"] / k
    figures["ops_per_step"] = sum(window[f"calls.{m}"] for m in METHODS) / k
    figures["writes_per_step"] = sum(window[f"calls.{m}"] for m in _WRITES) / k
    figures["reads_per_step"] = sum(window[f"calls.{m}"] for m in _READS) / k
    figures["ops_total"] = sum(window[f"calls.{m}"] for m in METHODS)
    figures["failed_ops_total"] = sum(window[f"errors.{m}"] for m in METHODS)
    figures["result_read_ops"] = sum(result_read[f"calls.{m}"] for m in METHODS)
    figures["bytes_written_per_step"] = window["bytes_written"] / k
    figures["bytes_read_per_step"] = window["bytes_read"] / k
    store_seconds = sum(window[f"seconds.{m}"] for m in METHODS)
    figures["store_s_per_step"] = store_seconds / k
    figures["store_share"] = store_seconds / (ended - started)
    return figures


@scenario(
    "store-ops",
    description="store operations per workflow step (counting wrapper), K-step workflow",
    size_name="K",
    sizes=(100,),
    stores=ALL_STORES,
    columns=(
        Column("ops_per_step", "ops/step", ".2f"),
        Column("put_if_absent_per_step", "if_absent", ".2f"),
        Column("put_if_match_per_step", "if_match", ".2f"),
        Column("put_per_step", "put", ".2f"),
        Column("get_per_step", "get", ".2f"),
        Column("get_with_etag_per_step", "get+etag", ".2f"),
        Column("list_per_step", "list", ".2f"),
        Column("delete_per_step", "delete", ".2f"),
        Column("bytes_written_per_step", "B written/step", ",.0f"),
        Column("store_s_per_step", "store µs/step", ",.1f", 1e6),
        Column("store_share", "store share", ".0%"),
    ),
    notes=(
        "per-step columns = calls per step by ObjectStore method (put_if_absent, "
        "put_if_match, put, get, get_with_etag, list, delete)",
        "window = rt.start() to the awaited result (runtime start-up recovery excluded), so "
        "it includes the client's result read (result_read_ops in --json); store µs/step = "
        "time spent awaiting store calls; store share = that / wall time of the window",
        "op counts are deterministic; the timing columns are the median of --repeat runs",
        "s3 = S3Store against moto_server on loopback: each store call is one S3 request, "
        "so ops/step is S3 requests per step",
    ),
)
def store_ops(store_kind: str, k: int) -> dict[str, float]:
    with fresh_store(store_kind) as store:
        return anyio.run(_store_ops_once, store, k)


# -- virtual time -------------------------------------------------------------------------


@REGISTRY.workflow
async def bench_month_sleep(ctx: WorkflowContext, _: None) -> str:
    """Sleeps 30 days, then takes one step."""
    await ctx.sleep(timedelta(days=30))
    return str(await ctx.call_activity(bench_noop, 1))


@REGISTRY.workflow
async def bench_week_timeout(ctx: WorkflowContext, _: None) -> str:
    """Waits 7 days for an event that never comes."""
    try:
        await ctx.wait_for_event("never", timeout=timedelta(days=7))
    except TimeoutError:
        return "timed out"
    return "event"


async def _virtual_time_once(store: ObjectStore) -> dict[str, float]:
    figures: dict[str, float] = {}
    for key, workflow in (("sleep_30d_s", bench_month_sleep), ("timeout_7d_s", bench_week_timeout)):
        async with WorkflowEnvironment(REGISTRY, store=store) as env:
            t0 = perf_counter()
            await env.run(workflow, instance_id=key)
            figures[key] = perf_counter() - t0
    await store.close()
    return figures


@scenario(
    "virtual-time",
    description="wall time of a 30-day sleep and of a 7-day event timeout on a MockClock",
    size_name="n",
    sizes=(1,),
    columns=(
        Column("sleep_30d_s", "30-day sleep ms", ",.2f", 1e3),
        Column("timeout_7d_s", "7-day timeout ms", ",.2f", 1e3),
    ),
    notes=("durable.testing.WorkflowEnvironment: MockClock(auto_advance=True)",),
)
def virtual_time(store_kind: str, n: int) -> dict[str, float]:
    with fresh_store(store_kind) as store:
        return anyio.run(_virtual_time_once, store)
