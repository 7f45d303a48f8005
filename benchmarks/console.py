"""The web console's figures: list and instance pages over a large store.

    python -m benchmarks.console [--instances 10000] [--events 1000] [--repeat 21]
                                 [--store memory,file]

Fills a store with ``--instances`` instances (one of them with a history of about
``--events`` events), then times pages through the ASGI test client (httpx), and prints
medians. The baselines, in the same run, are what a page would cost the naive way:
``Client.list`` (which reads every instance's meta) for the list, and the bare
``describe()`` + ``history()`` reads for the instance page. The goals (issue 17): the
list page <= 300 ms, an instance page with a 1,000-event history <= 500 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

import anyio
import httpx

import durable
from durable import ActivityContext, WorkflowContext
from durable.console import create_app
from durable.store import MemoryStore, ObjectStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

registry = durable.Registry()


@registry.activity
async def step(ctx: ActivityContext, i: int) -> int:
    return i


@registry.workflow
async def long_history(ctx: WorkflowContext, steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await ctx.call_activity(step, i)
    return total


async def fill(url: str | ObjectStore, instances: int, events: int) -> None:
    """``instances - 1`` pending instances, and one ended one with ~``events`` events."""
    async with durable.Runtime(
        registry, store=url, clock=durable.MockClock(auto_advance=True)
    ) as rt:
        handle = await rt.start(long_history, max(events // 3, 1), instance_id="long")
        await handle
    async with durable.Client(url) as client:
        limit = anyio.CapacityLimiter(64)

        async def start(i: int) -> None:
            async with limit:
                await client.start("other", i, instance_id=f"inst-{i:06d}")

        async with anyio.create_task_group() as tg:
            for i in range(instances - 1):
                tg.start_soon(start, i)


async def median_ms(fn: Callable[[], Awaitable[object]], repeat: int) -> float:
    await fn()  # warm-up
    times = []
    for _ in range(repeat):
        began = perf_counter()
        await fn()
        times.append((perf_counter() - began) * 1000)
    return statistics.median(times)


async def measure(url: str | ObjectStore, repeat: int) -> list[tuple[str, float]]:
    async with durable.Client(url) as client:
        app = create_app(client)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:

            def page(path: str, **params: str) -> Callable[[], Awaitable[object]]:
                async def get() -> None:
                    response = await http.get(path, params=params)
                    assert response.status_code == 200, response.status_code

                return get

            async def naive_list() -> None:
                async for _ in client.list():  # every meta, as a page without paging would
                    pass

            async def bare_reads() -> None:
                handle = client.get_handle("long")
                await handle.describe()
                await handle.history()

            history = await client.get_handle("long").history()
            rows = [
                ("list page (first 50)", await median_ms(page("/"), repeat)),
                ("list page (50 after inst-005000)",
                 await median_ms(page("/", after="inst-005000"), repeat)),
                ("list page (status=COMPLETED, 1 match)",
                 await median_ms(page("/", status="COMPLETED"), max(repeat // 4, 3))),
                ("baseline: Client.list() (every meta)", await median_ms(naive_list, 3)),
                (f"instance page ({len(history)} events)",
                 await median_ms(page("/instances/long"), repeat)),
                ("baseline: describe() + history()", await median_ms(bare_reads, repeat)),
            ]  # fmt: skip
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--store", default="memory,file")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"console figures: {args.instances} instances, cpus={os.cpu_count()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; medians in ms")  # fmt: skip
    for kind in args.store.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            url: str | ObjectStore = (
                f"file://{Path(tmp) / 'store'}" if kind == "file" else MemoryStore()
            )
            began = perf_counter()
            await fill(url, args.instances, args.events)
            print(f"\n{kind} store (filled in {perf_counter() - began:.1f} s)")
            rows = await measure(url, args.repeat)
            for name, ms in rows:
                print(f"  {name:<42} {ms:9.1f}")
            figures = dict(rows)
            first = figures["list page (first 50)"]
            naive = figures["baseline: Client.list() (every meta)"]
            print(f"  list page vs reading every meta: {naive / first:.1f}x faster")
            instance_ms = next(ms for name, ms in rows if name.startswith("instance page"))
            bare = figures["baseline: describe() + history()"]
            print(f"  instance page / its bare reads: {instance_ms / bare:.2f}x")
            print(f"  goals: list <= 300 ms: {'met' if first <= 300 else 'MISSED'}; "
                  f"instance <= 500 ms: {'met' if instance_ms <= 500 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    anyio.run(main)
