"""How to test a workflow: these tests run the demo order in milliseconds.

Run them with ``pytest examples``. ``durable_env_factory`` (from durable's pytest
plugin) gives an in-memory runtime on a clock that skips ahead, so the retry backoff
and the two-second warehouse wait take no real time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import durable
from durable.testing import Faults, Replayer, simulate

from .orders import Order, Receipt, place_order, registry

pytestmark = pytest.mark.anyio

ORDER = Order("t-1", ["lamp", "desk"], 4_200)


async def test_an_order_ships_every_item(durable_env_factory: Any) -> None:
    async with durable_env_factory(registry) as env:
        receipt = await env.run(place_order, ORDER)
    assert receipt == Receipt("t-1", "ch_t-1", ["TRACK-LAMP", "TRACK-DESK"])


async def test_the_charge_is_retried_on_virtual_time(durable_env_factory: Any) -> None:
    async with durable_env_factory(registry) as env:
        start = env.clock.now()
        handle = await env.start(place_order, ORDER)
        await handle
        history = await handle.history()
    charges = [e for e in history if getattr(e, "name", None) == "charge"]
    assert [e.attempt for e in charges] == [1, 2]  # the first attempt times out
    assert env.clock.now() - start == timedelta(seconds=1 + 2)  # backoff + warehouse


async def test_shipping_can_be_watched_and_stopped(durable_env_factory: Any) -> None:
    async with durable_env_factory(registry, clock=durable.MockClock()) as env:
        handle = await env.start(place_order, ORDER)
        await env.wait_idle()  # the charge failed once; its retry waits on the clock
        assert (await handle.describe()).custom_status == "charging"
        await handle.terminate("customer cancelled")
        with pytest.raises(durable.WorkflowFailed, match="customer cancelled"):
            await handle


async def test_saved_histories_still_replay(durable_env_factory: Any) -> None:
    async with durable_env_factory(registry) as env:
        handle = await env.start(place_order, ORDER)
        await handle
        Replayer(registry).check(await handle.history())  # run this on real histories in CI


async def test_the_order_survives_crashes_and_duplicates() -> None:
    faults = Faults(crash_rate=0.2, duplicate_rate=0.2)
    for seed in range(20):
        run = await simulate(registry, place_order, ORDER, seed=seed, faults=faults)
        assert run.result == Receipt("t-1", "ch_t-1", ["TRACK-LAMP", "TRACK-DESK"]), (
            run.format_trace()
        )
