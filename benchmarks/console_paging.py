"""The web console's list pages, in store requests per page view (issue 16).

    python -m benchmarks.console_paging [--ended 100000] [--size 20] [--repeat 5]

A memory store holds ``--ended`` ended instances (as a runtime leaves them) and 100
running ones, against the same store with 0 ended, in the same run. Each console view
is fetched through the ASGI test client and counted by a counting store: its calls,
the names its listings returned, and what S3 would bill for them (a LIST returns at
most 1,000 names: ceil(names / 1000) requests per listing). The counting store lists
from a point as S3 does (``list_after``); plain memory:// and file:// cannot, so there
a view makes the same calls but its one listing returns every id. The baseline is the
old pager, which listed every id for each view. The bar: each view <= 2x the page size
in requests, the same with N ended as with 0, and constant across pages.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import statistics
from datetime import timedelta
from time import perf_counter

import anyio
import httpx

from durable import Client, MockClock, Runtime
from durable._log._records import INSTANCES
from durable.console import create_app
from durable.store import MemoryStore

from ._aging import _RUNNING, _T0, _write_ended, bench_idle
from ._counting import CountingStore
from ._scenarios import REGISTRY


class Billed(CountingStore):
    """A counting store that also lists from a point (``list_after``, as S3 does) and
    adds up what S3 would bill for its listings."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.names = 0  # names every listing returned
        self.billed = 0  # requests, as S3 counts them

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        self.billed += 1
        return await super().get_with_etag(key)

    async def get(self, key: str) -> bytes:
        self.billed += 1
        return await super().get(key)

    async def list(self, prefix: str) -> list[str]:
        names = await super().list(prefix)
        self._listed(len(names))
        return names

    async def list_after(
        self, prefix: str, after: str, limit: int, *, starting: str = ""
    ) -> list[str]:
        found = await self.inner.list(prefix)
        self.calls["list"] += 1
        names = [n for n in found if n > after and n.startswith(starting)][:limit]
        self._listed(len(names))
        return names

    def _listed(self, count: int) -> None:
        self.names += count
        self.billed += max(1, math.ceil(count / 1000))

    def figures(self) -> tuple[int, int, int]:
        return sum(self.calls.values()), self.names, self.billed


def _delta(after: tuple[int, int, int], before: tuple[int, int, int]) -> tuple[int, int, int]:
    return after[0] - before[0], after[1] - before[1], after[2] - before[2]


def _link(html: str, name: str) -> str:
    found = re.search(rf'id="{name}" href="([^"]+)"', html)
    if found is None:
        raise RuntimeError(f"no {name} link on the page")
    return found.group(1).replace("&amp;", "&")


async def _fill(ended: int) -> MemoryStore:
    store = MemoryStore()
    await _write_ended(store, ended)
    clock = MockClock(_T0 + timedelta(days=1))
    async with Runtime(REGISTRY, store=store, clock=clock) as rt:
        for i in range(_RUNNING):
            await rt.start(bench_idle, i, instance_id=f"run-{i:04d}")
        await anyio.wait_all_tasks_blocked()
    return store


async def _views(store: MemoryStore, size: int) -> list[tuple[str, tuple[int, int, int], float]]:
    """Each view's (calls, names listed, S3-billed requests) and milliseconds."""
    counted = Billed(store)
    rows: list[tuple[str, tuple[int, int, int], float]] = []
    async with Client(counted) as client:
        transport = httpx.ASGITransport(app=create_app(client))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            await http.get("/", params={"size": size})  # the config and index markers

            async def view(name: str, url: str) -> str:
                before = counted.figures()
                began = perf_counter()
                response = await http.get(url)
                ms = (perf_counter() - began) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code}")
                after = counted.figures()
                rows.append((name, _delta(after, before), ms))
                return response.text

            first = await view("first page", f"/?size={size}")
            second = await view("next (page 2)", _link(first, "next"))
            third = await view("next (page 3)", _link(second, "next"))
            await view("previous (page 2)", _link(third, "prev"))
            await view("id prefix run-00", f"/?size={size}&prefix=run-00")
            running = await view("RUNNING, page 1", f"/?size={size}&status=RUNNING")
            await view("RUNNING, page 2", _link(running, "next"))
            done = await view("COMPLETED, page 1", f"/?size={size}&status=COMPLETED")
            if 'id="next"' in done:
                await view("COMPLETED, page 2", _link(done, "next"))

            before = counted.figures()
            began = perf_counter()
            await counted.list(INSTANCES)
            ms = (perf_counter() - began) * 1000
            after = counted.figures()
            rows.append(("baseline: every id, once (old pager)",
                         _delta(after, before), ms))  # fmt: skip
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ended", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"console page views on memory://, pages of {args.size}, {_RUNNING} running; "
          f"cpus={os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"requests are exact, ms the median of {args.repeat}")  # fmt: skip
    results: dict[int, dict[str, tuple[tuple[int, int, int], float]]] = {}
    for ended in (0, args.ended):
        began = perf_counter()
        store = await _fill(ended)
        filled = perf_counter() - began
        gc.collect()
        gc.freeze()
        runs = [await _views(store, args.size) for _ in range(args.repeat)]
        gc.unfreeze()
        results[ended] = {
            name: (counts, statistics.median(run[i][2] for run in runs))
            for i, (name, counts, _) in enumerate(runs[0])
        }
        print(f"\n{ended:,} ended (filled in {filled:.1f} s)")
        print(f"  {'view':<38} {'calls':>6} {'names listed':>13} {'S3 requests':>12} {'ms':>8}")
        for name, ((calls, names, billed), ms) in results[ended].items():
            print(f"  {name:<38} {calls:>6} {names:>13,} {billed:>12} {ms:>8.1f}")
    none, many = results[0], results[args.ended]
    views = [n for n in many if n in none and not n.startswith(("baseline", "COMPLETED"))]
    worst = max(many[n][0][2] for n in many if not n.startswith("baseline"))
    ratios = [many[n][0][2] / none[n][0][2] for n in views]
    pages = [many[n][0][2] for n in ("first page", "next (page 2)", "next (page 3)")]
    print(f"\nS3 requests per view, {args.ended:,} ended vs 0 (views in both): max ratio "
          f"{max(ratios):.2f}x; worst view {worst} (bar <= {2 * args.size}: "
          f"{'met' if worst <= 2 * args.size else 'MISSED'}); pages 1-3 {pages} "
          f"({'constant' if len(set(pages)) == 1 else 'NOT constant'})")  # fmt: skip
    listing = many["baseline: every id, once (old pager)"][0][2]
    old = listing + args.size
    print(f"the old pager's view: its listing of every id ({listing} S3 requests) and the "
          f"page's metas, {old} requests: {old / max(pages):.1f}x a view now")  # fmt: skip


if __name__ == "__main__":
    anyio.run(main)
