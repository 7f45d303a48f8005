"""The simulation's check that every new run reaches its owner (``_check_announced``)
judged two runs that nothing was wrong with (soak seeds 632 and 665 at 628ad54), and
the engine side of the second: a child whose parent's process died between the
child's first record and its wakeup is started by the parent's recovery."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import pytest

import durable
from durable import Registry, WorkflowContext
from durable._fleet._partitions import partition_of
from durable._log._records import meta_key
from durable.store import MemoryStore
from durable.testing import SystemConfig
from durable.testing._system import _Driver
from durable.testing._system_checks import Epoch

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.anyio

_ID = "r0-c0"


def _driver_with_an_unannounced_child() -> tuple[_Driver, Epoch, int]:
    """A driver whose ``p0`` holds the partition of child ``r0-c0`` from step 0: the
    child's first record was written at step 1 by ``p1`` and never announced to ``p0``."""
    driver = _Driver(0, SystemConfig())
    driver.processes.setdefault("p1", driver.processes["p0"].__class__("p1", None, None, 0))  # type: ignore[arg-type]
    partition = partition_of(_ID, driver.partitions)
    lease = {"owner": "p0", "expires_at": datetime(2100, 1, 1, tzinfo=UTC), "incarnation": "i"}
    driver.inner._objects[f"leases/{partition:04d}"] = (msgspec.json.encode(lease), "1")
    leases = SimpleNamespace(incarnation="i", owns=lambda p: p == partition)
    engine = SimpleNamespace(_instances={}, _handovers={})
    driver.processes["p0"].runtime = SimpleNamespace(_leases=leases, _engine=engine)  # type: ignore[assignment]
    driver._check_announced()  # step 0: p0 holds the partition from now
    epoch = Epoch(_ID, 0, "s1/c0", "wf", started_at=1, parent=None, step=1, commits=1)
    epoch.writer = "p1"
    driver.sim.ledger.epochs[_ID] = [epoch]
    driver.sim.step = 20
    return driver, epoch, partition


def _violations(driver: _Driver) -> list[Any]:
    return list(driver.sim.ledger.violations)


def test_an_unannounced_run_is_still_found() -> None:
    """The check still finds what it is for: a run its holder never heard of."""
    driver, _, _ = _driver_with_an_unannounced_child()
    driver._check_announced()
    assert any("never announced" in v for v in _violations(driver))


def test_a_run_whose_writer_died_before_it_rang_is_not_judged() -> None:
    """Soak seed 665: ``p1`` wrote child ``r0-c0``'s first record and crashed before it
    rang the child's wakeup. Nothing is wrong: the child is started again, and rung,
    by whichever process takes the parent's partition once its lease expires; the check
    reported it as never announced."""
    driver, _, _ = _driver_with_an_unannounced_child()
    driver.processes["p1"].down_at = 5
    driver._check_announced()
    assert _violations(driver) == []


def test_a_run_whose_holder_let_go_of_its_partition_is_not_judged() -> None:
    """Soak seed 632: ``p0``'s lease lapsed (its renewals failed) after the run
    began, so it let go of the partition's instances; renewed, it loads them again by
    recovery, which was under way (a stalled listing). The lease object never changed,
    so the check took ``p0`` for a holder since before the run and reported it."""
    driver, _, partition = _driver_with_an_unannounced_child()
    driver.processes["p0"].lapsed[partition] = 5
    driver._check_announced()
    assert _violations(driver) == []


class CrashAt:
    """Wraps a store; the first write of a key ``at`` matches raises ``Crash`` before it
    lands (the process dies there)."""

    def __init__(self, inner: MemoryStore, at: Callable[[str], bool]) -> None:
        self._inner = inner
        self._at: Callable[[str], bool] | None = at
        self.never_suspends = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _crash_at(self, key: str) -> None:
        if self._at is not None and self._at(key):
            self._at = None
            raise Crash

    async def put(self, key: str, data: bytes) -> str:
        self._crash_at(key)
        return await self._inner.put(key, data)

    async def put_if_absent(self, key: str, data: bytes) -> str:
        self._crash_at(key)
        return await self._inner.put_if_absent(key, data)

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        self._crash_at(key)
        return await self._inner.put_if_match(key, data, etag)


class Crash(BaseException):
    """The process dies here."""


def _family() -> Registry:
    registry = Registry()

    @registry.workflow
    async def child(ctx: WorkflowContext) -> str:
        return "done"

    @registry.workflow
    async def parent(ctx: WorkflowContext) -> str:
        got: str = await ctx.call_workflow(child, instance_id=_ID)
        return got

    return registry


async def test_a_child_whose_parents_process_died_before_its_wakeup_runs() -> None:
    """Seed 246's kind (a crash between a child's start and its wakeup): the process
    running the parent wrote the child's first record and died before anything else
    (its meta, its wakeup or its load). The next process recovers the parent, starts
    the child again (it exists: it is announced) and the parent gets its result."""
    inner, clock = MemoryStore(), durable.MockClock(auto_advance=True)
    crashing = CrashAt(inner, lambda key: key == meta_key(_ID))
    with pytest.raises(BaseExceptionGroup) as died:  # noqa: PT012
        async with durable.Runtime(_family(), store=crashing, clock=clock) as rt:  # type: ignore[arg-type]
            await rt.start("parent", instance_id="p")
            await anyio.sleep_forever()
    assert died.group_contains(Crash)
    assert "instances/r0-c0/log/000000000000" in inner._objects
    async with durable.Runtime(_family(), store=inner, clock=clock) as rt:
        with anyio.fail_after(30):
            assert await rt.client.get_handle("p").result() == "done"
