"""The simulated fleet: the driver's shared state and its runtime processes.

:class:`_DriverBase` holds what one seeded simulation keeps (the store, the clock, the
ledger, the programs started, the outside operations acknowledged) and runs each
runtime process: started, crashed or stopped, and restarted under the same name. Each
concern of the driver (the outside operations, the drain, the verdicts) is a mixin over
this base.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel

from durable._client import Client
from durable._clock import MockClock
from durable._engine import EngineHooks
from durable._fleet._leases import Fleet
from durable._ids import IdSource
from durable._runtime import Runtime
from durable.store import MemoryStore
from durable.testing._system_programs import Harness, Program, build_registry
from durable.testing._system_store import Crash, Sim, View
from durable.testing._system_trace import SpanLog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from durable._core._events import EventSent
    from durable._registry import Registry
    from durable.testing._system import SystemConfig
    from durable.testing._system_checks import Ledger

_TTL = timedelta(seconds=9)
_RENEW = timedelta(seconds=3)


@dataclass
class _Process:
    """One simulated runtime process (restarted under the same name after a crash)."""

    name: str
    max_resident: int | None
    retention: timedelta | None
    sweep_every: timedelta
    runtime: Runtime | None = None
    scope: anyio.CancelScope | None = None
    dead: bool = False
    running: bool = False
    lives: int = 0
    down_at: int = -1  # the driver's step when it last went down
    lapsed: dict[int, int] = field(default_factory=dict)  # partition -> step it let go of it


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside nested exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def _settle(limit: int = 5000) -> None:
    """Let every task run until all wait on something not yet done (or ``limit``
    scheduling points pass). Deterministic: it counts, it never reads time."""
    me = asyncio.current_task()
    for _ in range(limit):
        await anyio.lowlevel.checkpoint()
        if all(
            task is me or (task._fut_waiter is not None and not task._fut_waiter.done())  # type: ignore[attr-defined]
            for task in asyncio.all_tasks()
        ):
            return


class _DriverBase:
    """One seeded simulation's state, and its runtime processes."""

    def __init__(self, seed: int, config: SystemConfig) -> None:
        self.seed = seed
        self.config = config
        self.sim = sim = Sim(seed, config)
        self.rng = sim.rng
        self.inner = MemoryStore()
        self.spans = SpanLog()  # what every process records of its turns, attempts and runs
        self.tracer_provider = self.spans.provider()
        self.clock = MockClock()
        self.harness = Harness(began=sim.ledger.attempt_began)
        self.changes: tuple[bool, ...] = ()  # code changes deployed: guarded by a patch?
        self.registry: Registry = build_registry(self.harness)
        self.in_flight = 0  # outside operations under way
        self._holders: dict[int, tuple[tuple[str, str], int]] = {}  # partition -> holder, since
        self._unannounced: set[str] = set()
        self.acked_ghosts: dict[str, int] = {}  # ghost instance -> write its start began at
        self.partitions = 4
        self.programs: dict[str, Program] = {}  # tag -> program
        self.roots: list[str] = []
        self.ghosts: list[str] = []
        self.terminated: set[str] = set()  # instances a terminate was sent to
        self.cancelled: set[str] = set()  # instances a cancel was sent to
        self.bounded: set[str] = set()  # tags started with an execution_timeout
        self.terminate_acked: set[str] = set()  # instances a terminate was acknowledged to
        self.nonces = 0
        self.updates = 0
        self.asked_updates: dict[str, list[tuple[str, int]]] = {}  # by instance, in order
        self.tags = 0
        self.acked_starts: list[tuple[str, str, int]] = []  # (instance, tag, write)
        self.finished = False
        outside = View(self.inner, sim, "client")
        ids = IdSource(random.Random(self.rng.getrandbits(64)))
        self.client = Client(outside, registry=self.registry, clock=self.clock, ids=ids)
        ghost_ids = IdSource(random.Random(self.rng.getrandbits(64)))
        self.ghost_client = Client(outside, clock=self.clock, ids=ghost_ids)
        count = self.rng.randint(1, max(1, config.runtimes))
        self.processes: dict[str, _Process] = {}
        sim.processes = self.processes
        for i in range(count):
            max_resident = 0 if config.eviction and self.rng.random() < 0.4 else None
            retention = (
                timedelta(seconds=self.rng.choice([0, 5, 30])) if self.rng.random() < 0.6 else None
            )
            sweep_every = timedelta(seconds=self.rng.choice([2, 5, 20]))
            self.processes[f"p{i}"] = _Process(f"p{i}", max_resident, retention, sweep_every)

    def note(self, line: str) -> None:
        self.sim.trace.append(f"[t={(self.clock.now().timestamp() % 100000):.0f}] {line}")

    # -- processes ------------------------------------------------------------------

    async def _run_process(self, proc: _Process) -> None:
        proc.lives += 1
        proc.dead = False
        proc.running = True
        entropy = random.Random(self.rng.getrandbits(64))
        fleet = Fleet(partitions=self.partitions, lease_ttl=_TTL, renew_interval=_RENEW,
                      owner=proc.name)  # fmt: skip
        runtime = Runtime(
            self.registry, store=View(self.inner, self.sim, proc.name), clock=self.clock,
            max_concurrent_activities=4, max_concurrent_workflows=4, poll_interval=1.0,
            max_resident_workflows=proc.max_resident, memo_retention=proc.retention,
            memo_sweep_interval=proc.sweep_every, entropy=entropy, fleet=fleet,
            tracer_provider=self.tracer_provider, _hooks=_Drops(self.sim.ledger),
            history_retention=None if proc.retention is None else timedelta(hours=1),
        )  # fmt: skip
        try:
            with anyio.CancelScope() as scope:
                proc.scope = scope
                async with runtime:
                    proc.runtime = runtime
                    self._watch_lapses(proc, runtime)
                    await anyio.sleep_forever()
        except* Crash:
            pass
        except* Exception as group:
            for exc in _leaves(group):
                self.sim.ledger.violate(f"runtime {proc.name} died: {type(exc).__name__}: {exc}")
        finally:
            proc.runtime = None
            proc.scope = None
            proc.running = False
            proc.dead = True
            proc.down_at = self.sim.step
            if not self.finished:
                self.note(f"{proc.name} is down")

    def _watch_lapses(self, proc: _Process, runtime: Runtime) -> None:
        """Record when the process lets go of a partition's instances (a lease lost, or
        lapsed and maybe renewed within the same round): until its recovery loads them
        again, a run of that partition is in no memory, and nothing is wrong."""
        leases = runtime._leases
        assert leases is not None
        let_go = leases._on_lost

        def on_lost(partitions: list[int]) -> None:
            for partition in partitions:
                proc.lapsed[partition] = self.sim.step
            let_go(partitions)

        leases._on_lost = on_lost

    def _client_for(self) -> tuple[Client, str]:
        """An outside client, or a live runtime's own client."""
        live = [p for p in self.processes.values() if p.runtime is not None and not p.dead]
        if live and self.rng.random() < 0.5:
            proc = self.rng.choice(live)
            assert proc.runtime is not None
            return proc.runtime.client, proc.name
        return self.client, "client"

    def _restart_the_down(self, tg: anyio.abc.TaskGroup) -> None:
        for proc in self.processes.values():
            if not proc.running:
                self.note(f"restart {proc.name}")
                tg.start_soon(self._run_process, proc)

    if TYPE_CHECKING:  # what one mixin calls of another

        async def _guard(self, what: Callable[[], Awaitable[None]]) -> None: ...

        async def op_control(
            self, client: Client, via: str, instance_id: str, what: str
        ) -> None: ...


class _Drops(EngineHooks):
    """Tells the ledger which sent events a runtime dropped (no receiver, or an ended one)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def dropped(self, sender: str, sent: EventSent) -> None:
        self._ledger.dropped(sent)
