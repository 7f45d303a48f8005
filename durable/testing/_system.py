"""``simulate_system``: a whole fleet, outside clients and faults, from one seed.

One ``random.Random(seed)`` decides everything: how many runtimes share the store
(a fleet with leases, on one ``MockClock``), which random programs start
(:mod:`durable.testing._system_programs`), which outside operations interleave with
them (raise_event, a burst of them, suspend, resume, terminate, cancel, start with reuse,
start with an event, an update, rerun, rewind, purge, sweep, a workflow no runtime has, a deploy
of changed code that restarts every runtime; programs upsert search attributes), and which
fault hits each store call: a
transient error before or after the write lands, a crash of the calling runtime before
or after a write (it dies, and a new one starts later on the same store), a few
scheduling points of latency that reorder concurrent calls, a stall of a few steps, lease
renewals that fail, and clock jumps. Outside operations run in the background, each
alongside the steps that follow it. Nothing reads real time and every task runs on
one event loop, so the same seed gives the same trace.

The :class:`~durable.testing._system_checks.Ledger` judges every write as it lands;
at the end, with faults off, the simulation resumes and feeds every run until all
end, then checks each against the reference. A failure reports its seed, and
:func:`~durable.testing._system_shrink.shrink` finds a smaller configuration that still fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import anyio
import anyio.abc

from durable._fleet._partitions import load_config
from durable.testing._system_drain import _Drain
from durable.testing._system_fleet import _settle
from durable.testing._system_listing import _Listing
from durable.testing._system_operations import _Operations
from durable.testing._system_search import _Search
from durable.testing._system_verdicts import _Verdicts

__all__ = ["SystemConfig", "SystemResult", "simulate_system"]


@dataclass(frozen=True)
class SystemConfig:
    """What one simulated run may do; each switch turns one kind of fault or operation
    off (for :func:`shrink`). ``operations`` bounds the driver's steps."""

    operations: int = 40
    runtimes: int = 3
    store_errors: bool = True
    crashes: bool = True
    latency: bool = True
    lease_faults: bool = True
    clock_jumps: bool = True
    eviction: bool = True
    outside_ops: bool = True


@dataclass(frozen=True)
class SystemResult:
    """How one seeded run went: the invariants it broke, and its trace."""

    seed: int
    config: SystemConfig
    violations: tuple[str, ...]
    trace: tuple[str, ...] = field(repr=False)

    @property
    def ok(self) -> bool:
        return not self.violations

    def format(self, tail: int = 60) -> str:
        """The seed, the configuration, what broke, and the end of the trace."""
        lines = [f"simulate_system(seed={self.seed}, config={self.config})"]
        lines += [f"  {v}" for v in self.violations]
        lines.append(f"trace (last {min(tail, len(self.trace))} of {len(self.trace)} lines):")
        lines += [f"  {line}" for line in self.trace[-tail:]]
        return "\n".join(lines)


class _Driver(_Operations, _Drain, _Verdicts, _Search, _Listing):
    """Runs one seeded simulation: operations and faults step by step, then the drain
    and the verdicts."""

    def _fault_step(self, tg: anyio.abc.TaskGroup) -> None:
        """Between operations: move the clock, fail or heal leases, restart the dead."""
        rng, sim, config = self.rng, self.sim, self.config
        for proc in self.processes.values():
            if not proc.running and rng.random() < 0.5:
                self.note(f"restart {proc.name}")
                tg.start_soon(self._run_process, proc)
        if config.lease_faults and rng.random() < 0.08:
            name = rng.choice(sorted(self.processes))
            if name in sim.lease_outage:
                sim.lease_outage.discard(name)
                self.note(f"{name}: lease writes work again")
            else:
                sim.lease_outage.add(name)
                self.note(f"{name}: lease writes fail from now")
        if config.clock_jumps and rng.random() < 0.06:
            jump = timedelta(seconds=rng.randint(10, 40))
            self.note(f"clock jumps {jump.total_seconds():.0f}s")
            self.clock.advance(jump)
        elif rng.random() < 0.6:
            self.clock.advance(timedelta(seconds=rng.randint(1, 4)))

    # -- the run --------------------------------------------------------------------

    async def run(self) -> SystemResult:
        sim = self.sim
        # the fleet's partition count is set before anyone uses the store (an outside
        # client first to use it would fix the default count, and no runtime could start)
        await load_config(self.inner, self.partitions)
        async with anyio.create_task_group() as tg:
            for proc in self.processes.values():
                tg.start_soon(self._run_process, proc)
            await _settle()
            for _ in range(self.config.operations):
                batch = [op for op in (self._pick_operation() for _ in range(
                    self.rng.choice([1, 1, 2, 3]))) if op is not None]  # fmt: skip
                for op in batch:
                    self.in_flight += 1
                    tg.start_soon(self._background, op)
                await _settle()
                sim.tick()
                self._check_announced()
                self._fault_step(tg)
                await _settle()
            await self._drain(tg)
            await self._check_purges()
            await self._check_search()
            await self._check_listing()
            self.finished = True  # the order tasks are cancelled in is not seeded: untraced
            tg.cancel_scope.cancel()
        self._final_checks()
        return SystemResult(self.seed, self.config, tuple(sim.ledger.violations), tuple(sim.trace))


async def simulate_system(seed: int, config: SystemConfig | None = None) -> SystemResult:
    """Run one seeded whole-system simulation and return what it found.

    Several runtimes share one in-memory store on a ``MockClock``; random programs
    run while outside operations and faults interleave; invariants are checked at
    every write and at the end. The same seed and config give the same trace.
    """
    driver = _Driver(seed, config or SystemConfig())
    return await driver.run()
