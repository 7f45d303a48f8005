"""The ``churn`` scenario: a store that purges ended instances all day (issue 18).

Rounds of N concurrent 5-step workflows; after each round the previous round's
instances are purged, as retention would. A store whose writes slow down after many
deletions nearby shows it as round 5 running slower than round 1.
"""

from __future__ import annotations

from time import perf_counter, process_time
from typing import TYPE_CHECKING

import anyio

from durable import Runtime

from ._scenarios import REGISTRY, bench_steps
from ._suite import Column, fresh_store, scenario

if TYPE_CHECKING:
    from durable.store import ObjectStore

__all__: list[str] = []

_ROUNDS = 5
_STEPS = 5


async def _churn_once(store: ObjectStore, n: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    previous: list[str] = []
    try:
        async with Runtime(REGISTRY, store=store) as rt:
            for round_ in range(1, _ROUNDS + 1):
                ids = [f"churn-{round_}-{i}" for i in range(n)]

                async def one(instance_id: str) -> None:
                    handle = await rt.start(bench_steps, _STEPS, instance_id=instance_id)
                    if await handle != _STEPS:
                        raise RuntimeError("churn run went wrong")

                started, cpu = perf_counter(), process_time()
                async with anyio.create_task_group() as tg:
                    for instance_id in ids:
                        tg.start_soon(one, instance_id)
                figures[f"round{round_}_steps_per_s"] = n * _STEPS / (perf_counter() - started)
                figures[f"round{round_}_cpu_us_per_step"] = (
                    (process_time() - cpu) / (n * _STEPS) * 1e6
                )
                started = perf_counter()
                async with anyio.create_task_group() as tg:
                    for instance_id in previous:
                        tg.start_soon(rt.client.purge, instance_id)
                if previous:
                    figures[f"purge{round_}_per_s"] = len(previous) / (perf_counter() - started)
                previous = ids
    finally:
        await store.close()
    figures["last_over_first"] = (
        figures[f"round{_ROUNDS}_steps_per_s"] / figures["round1_steps_per_s"]
    )
    figures["cpu_last_over_first"] = (
        figures[f"round{_ROUNDS}_cpu_us_per_step"] / figures["round1_cpu_us_per_step"]
    )
    return figures


@scenario(
    "churn",
    description=f"{_ROUNDS} rounds of N concurrent {_STEPS}-step workflows, each round "
    "followed by purging the previous round's instances",
    size_name="N",
    sizes=(2_000,),
    quick_sizes=(200,),
    columns=(
        *(
            Column(f"round{r}_steps_per_s", f"round {r} steps/s", ",.0f")
            for r in range(1, _ROUNDS + 1)
        ),
        Column(f"purge{_ROUNDS}_per_s", f"purge {_ROUNDS} inst/s", ",.0f"),
        Column("last_over_first", f"round {_ROUNDS}/round 1", ".2f"),
        Column("round1_cpu_us_per_step", "round 1 CPU µs/step", ",.0f"),
        Column(f"round{_ROUNDS}_cpu_us_per_step", f"round {_ROUNDS} CPU µs/step", ",.0f"),
        Column("cpu_last_over_first", f"CPU round {_ROUNDS}/round 1", ".2f"),
    ),
    notes=(
        "steps/s = N x 5 steps over the round's wall time (all N started at once, "
        "every result awaited); purge r = purging round r-1's N instances after round r",
        "bar (issue 18): round 5 >= 0.8 x round 1 on file and file-fsync",
        "CPU µs/step = this process's CPU time (user + system) over the round's steps: "
        "file creations that scan past recently freed inodes are system time, and it "
        "does not count waiting on a disk other processes share",
    ),
)
def churn(store_kind: str, n: int) -> dict[str, float]:
    with fresh_store(store_kind) as store:
        return anyio.run(_churn_once, store, n)
