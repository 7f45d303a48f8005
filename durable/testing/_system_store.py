"""The shared store of the whole-system simulation, as each simulated process sees it.

Every call may wait a few scheduling points (so concurrent calls reorder), now and
then stall for a few of the driver's steps (a slow request: whatever else happens
meanwhile lands first), fail transiently before or after it lands, or, for a
runtime's write, crash that runtime before or after it lands. Lease writes of a
process fail while the driver says its leases are out. Each write that lands is
reported to the :class:`~durable.testing._system_checks.Ledger`. A key component
longer than 255 bytes is refused for good, as a local file system would.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel

from durable._errors import StoreError
from durable.testing._system_checks import Ledger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from durable.store import MemoryStore
    from durable.testing._system import SystemConfig

__all__ = ["Crash", "Process", "Sim", "View"]

_MAX_KEY_PART = 255  # bytes in one key component, as on a local file system
_STALL = 0.004  # the share of calls that stall for a few of the driver's steps


class Process(Protocol):
    """What the store needs to know of a simulated process."""

    dead: bool
    scope: anyio.CancelScope | None


class Crash(BaseException):
    """The simulated process dies here."""


class Sim:
    """The seeded source of every decision, and what the simulation saw."""

    def __init__(self, seed: int, config: SystemConfig) -> None:
        self.rng = random.Random(seed)
        self.config = config
        self.trace: list[str] = []
        self.ledger = Ledger(self.trace)
        self.faults_on = True
        self.crashes = 0
        self.told_otherwise: set[str] = set()  # keys written while the writer was told not
        self.lease_outage: set[str] = set()  # processes whose lease writes fail now
        self.processes: Mapping[str, Process] = {}  # the driver's, by name
        self.step = 0  # the driver's steps so far
        self._stalled: list[tuple[int, anyio.Event]] = []  # (step it ends at, its release)

    def chance(self, rate: float) -> bool:
        return self.faults_on and self.rng.random() < rate

    async def stall(self, steps: int) -> None:
        """Wait until the driver has taken ``steps`` more steps (or faults end)."""
        release = anyio.Event()
        self._stalled.append((self.step + steps, release))
        await release.wait()

    def tick(self) -> None:
        """The driver took a step: release the stalls that end now."""
        self.step += 1
        self.ledger.step = self.step
        for end, release in self._stalled:
            if end <= self.step or not self.faults_on:
                release.set()
        self._stalled = [s for s in self._stalled if not s[1].is_set()]


def _check_key(key: str) -> None:
    for part in key.split("/"):
        if len(part.encode()) > _MAX_KEY_PART:
            raise StoreError(f"key component too long ({len(part.encode())} bytes): "
                             f"{key[:40]}...", key=key, transient=False)  # fmt: skip


class View:
    """The shared store as one process sees it: its faults, its crashes, its writes
    reported to the ledger as they land."""

    def __init__(self, inner: MemoryStore, sim: Sim, process: str) -> None:
        self._inner = inner
        self._sim = sim
        self._process = process

    @property
    def url(self) -> str:
        return f"sim://{self._process}"

    def _alive(self) -> None:
        proc = self._sim.processes.get(self._process)
        if proc is not None and proc.dead:
            raise Crash()

    async def _before(self, op: str, key: str, write: bool) -> str:
        """Latency, then maybe a fault before the call; returns the fault to raise after
        it: "" (none), "error" or "crash"."""
        sim = self._sim
        self._alive()
        if sim.config.latency and sim.faults_on:
            for _ in range(sim.rng.randrange(4)):
                await anyio.lowlevel.checkpoint()
            if sim.rng.random() < _STALL:
                steps = sim.rng.randint(1, 3)
                sim.trace.append(f"  {self._process}: {op} {key} stalls for {steps} step(s)")
                await sim.stall(steps)
            self._alive()
        if key.startswith(("leases/", "members/")) and self._process in sim.lease_outage:
            raise StoreError(f"simulated lease outage on {op} {key}", key=key)
        crashable = write and self._process in sim.processes and sim.config.crashes
        if crashable and sim.crashes < 3 and sim.chance(0.006):
            if sim.rng.random() < 0.5:
                self._crash(op, key, "before")
            return "crash"
        if sim.config.store_errors and sim.chance(0.025):
            if sim.rng.random() < 0.5:
                sim.trace.append(f"  {self._process}: store error before {op} {key}")
                raise StoreError(f"simulated store error before {op} {key}", key=key)
            return "error"
        return ""

    def _crash(self, op: str, key: str, when: str) -> None:
        sim = self._sim
        sim.crashes += 1
        proc = sim.processes[self._process]
        proc.dead = True
        sim.trace.append(f"  CRASH of {self._process} {when} {op} {key}")
        if proc.scope is not None:
            proc.scope.cancel()
        raise Crash()

    def _after(self, op: str, key: str, fault: str) -> None:
        if fault == "crash":
            self._crash(op, key, "after")
        elif fault:
            self._sim.trace.append(f"  {self._process}: store error after {op} {key}")
            raise StoreError(f"simulated store error after {op} {key}", key=key)

    async def get(self, key: str) -> bytes:
        fault = await self._before("get", key, False)
        data = await self._inner.get(key)
        self._after("get", key, fault)
        return data

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        fault = await self._before("get", key, False)
        found = await self._inner.get_with_etag(key)
        self._after("get", key, fault)
        return found

    async def _put(self, op: str, key: str, data: bytes, call: Callable[[], Awaitable[str]]) -> str:
        fault = await self._before(op, key, True)
        _check_key(key)
        etag = await call()
        self._sim.ledger.wrote(self._process, key, data)
        if fault:
            self._sim.told_otherwise.add(key)
        self._after(op, key, fault)
        return etag

    async def put(self, key: str, data: bytes) -> str:
        return await self._put("put", key, data, lambda: self._inner.put(key, data))

    async def put_if_absent(self, key: str, data: bytes) -> str:
        return await self._put(
            "put_if_absent", key, data, lambda: self._inner.put_if_absent(key, data)
        )

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        return await self._put(
            "put_if_match", key, data, lambda: self._inner.put_if_match(key, data, etag)
        )

    async def list(self, prefix: str) -> list[str]:
        fault = await self._before("list", prefix, False)
        names = await self._inner.list(prefix)
        self._after("list", prefix, fault)
        return names

    async def delete(self, key: str) -> None:
        fault = await self._before("delete", key, True)
        present = key in self._inner._objects
        await self._inner.delete(key)
        if present:
            self._sim.ledger.deleted(self._process, [key])
        self._after("delete", key, fault)

    async def delete_if_match(self, key: str, etag: str) -> None:
        fault = await self._before("delete_if_match", key, True)
        await self._inner.delete_if_match(key, etag)
        self._sim.ledger.deleted(self._process, [key])
        self._after("delete_if_match", key, fault)

    async def delete_prefix(self, prefix: str) -> None:
        fault = await self._before("delete_prefix", prefix, True)
        root = prefix.rstrip("/") + "/"
        doomed = sorted(k for k in self._inner._objects if k.startswith(root))
        await self._inner.delete_prefix(prefix)
        if doomed:
            self._sim.ledger.deleted(self._process, doomed)
        self._after("delete_prefix", prefix, fault)

    async def close(self) -> None:
        """The shared store outlives every process."""
