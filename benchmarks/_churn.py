"""The ``churn`` scenario: a store that purges ended instances all day (issue 18).

Rounds of N concurrent 5-step workflows; after each round the previous round's
instances are purged, as retention would. A store whose writes slow down after many
deletions nearby shows it as round 5 running slower than round 1.
"""

from __future__ import annotations

from time import perf_counter
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

                started = perf_counter()
                async with anyio.create_task_group() as tg:
                    for instance_id in ids:
                        tg.start_soon(one, instance_id)
                figures[f"round{round_}_steps_per_s"] = n * _STEPS / (perf_counter() - started)
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
    ),
    notes=(
        "steps/s = N x 5 steps over the round's wall time (all N started at once, "
        "every result awaited); purge r = purging round r-1's N instances after round r",
        "bar (issue 18): round 5 >= 0.8 x round 1 on file and file-fsync",
    ),
)
def churn(store_kind: str, n: int) -> dict[str, float]:
    with fresh_store(store_kind) as store:
        return anyio.run(_churn_once, store, n)
