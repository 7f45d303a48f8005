"""``simulate_system``: a whole fleet, outside clients and faults, from one seed.

One ``random.Random(seed)`` decides everything: how many runtimes share the store
(a fleet with leases, on one ``MockClock``), which random programs start
(:mod:`durable.testing._system_programs`), which outside operations interleave with
them (raise_event, a burst of them, suspend, resume, terminate, cancel, start with reuse,
start with an event, an update, rerun, purge, sweep, a workflow no runtime has, a deploy
of changed code that restarts every runtime), and which fault hits each store call: a
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

import asyncio
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from durable._client import Client
from durable._clock import MockClock
from durable._core._events import (
    ActivityScheduled,
    ChildWorkflowScheduled,
    EventSent,
    TimerCreated,
)
from durable._core._state import TERMINAL
from durable._engine import EngineHooks
from durable._errors import DurableError
from durable._fleet._leases import Fleet
from durable._fleet._partitions import load_config, partition_of
from durable._ids import IdSource
from durable._log._reader import load_run
from durable._log._records import wakeup_key
from durable._log._retention import sweep_history
from durable._runtime import Runtime
from durable.store import MemoryStore
from durable.testing._system_checks import Epoch, Ledger, Raise
from durable.testing._system_hangs import decode_lease, open_steps
from durable.testing._system_programs import (
    EVENT_NAMES,
    TICK,
    Harness,
    Program,
    build_registry,
    event_names,
    expected_mismatch,
    random_program,
)
from durable.testing._system_store import Crash, Sim, View
from durable.testing._system_trace import SpanLog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from durable._registry import Registry

__all__ = ["SystemConfig", "SystemResult", "simulate_system"]

_TTL = timedelta(seconds=9)
_RENEW = timedelta(seconds=3)
_DRAIN_ROUNDS = 120


_ENDED = frozenset(status.value for status in TERMINAL)  # the statuses of an ended run


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


class _Driver:
    """Runs one seeded simulation."""

    def __init__(self, seed: int, config: SystemConfig) -> None:
        self.seed = seed
        self.config = config
        self.sim = sim = Sim(seed, config)
        self.rng = sim.rng
        self.inner = MemoryStore()
        self.spans = SpanLog()  # what every process records of its turns, attempts and runs
        self.tracer_provider = self.spans.provider()
        self.clock = MockClock()
        self.harness = Harness()
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
            if not self.finished:
                self.note(f"{proc.name} is down")

    def _client_for(self) -> tuple[Client, str]:
        """An outside client, or a live runtime's own client."""
        live = [p for p in self.processes.values() if p.runtime is not None and not p.dead]
        if live and self.rng.random() < 0.5:
            proc = self.rng.choice(live)
            assert proc.runtime is not None
            return proc.runtime.client, proc.name
        return self.client, "client"

    # -- operations -----------------------------------------------------------------

    def _new_tag(self, program: Program) -> str:
        self.tags += 1
        tag = f"s{self.tags}"
        self.programs[tag] = program
        for index, step in enumerate(s for s in program if s[0] not in ("can", "raise")):
            if step[0] == "child":
                self.programs[f"{tag}/c{index}"] = step[1]
        return tag

    def _input(self, tag: str) -> dict[str, Any]:
        return {"tag": tag, "prog": self.programs[tag], "acc": []}

    async def op_start(self, client: Client, via: str) -> None:
        instance_id = f"r{len(self.roots)}"
        self.roots.append(instance_id)
        program = random_program(self.rng)
        tag = self._new_tag(program)
        version = self.rng.choice(["1", "2"])
        limit = None
        if self.rng.random() < 0.15:  # bounded: it may end FAILED with a TimeoutError
            limit = timedelta(seconds=self.rng.randint(5, 60))
            self.bounded.add(tag)
        began = self.sim.ledger.writes
        bound = f" within {limit.total_seconds():.0f}s" if limit else ""
        self.note(f"{via}: start {instance_id} {tag} v{version}{bound} {program}")
        await client.start(
            "prog", self._input(tag), instance_id=instance_id, version=version,
            execution_timeout=limit,
        )  # fmt: skip
        self.acked_starts.append((instance_id, tag, began))

    def _ended_root(self) -> str:
        """A root instance, most often one whose current run has ended (a reuse of it
        is accepted)."""
        ended = [i for i in self.roots if (e := self.sim.ledger.current(i)) and e.ended]
        return self.rng.choice(ended if ended and self.rng.random() < 0.8 else self.roots)

    async def op_reuse(self, client: Client, via: str, instance_id: str) -> None:
        program = random_program(self.rng)
        tag = self._new_tag(program)
        began = self.sim.ledger.writes
        self.note(f"{via}: start {instance_id} {tag} reuse {program}")
        await client.start("prog", self._input(tag), instance_id=instance_id, reuse=True)
        self.acked_starts.append((instance_id, tag, began))

    async def op_start_with_event(self, client: Client, via: str, instance_id: str) -> None:
        """Start the instance with an event, or give its running run the event."""
        program = random_program(self.rng)
        tag = self._new_tag(program)
        self.nonces += 1
        name = self.rng.choice(EVENT_NAMES)
        began = self.sim.ledger.writes
        r = Raise(self.nonces, instance_id, name, via, began)
        self.sim.ledger.raises[r.nonce] = r
        self.note(f"{via}: start {instance_id} {tag} with {name}={r.nonce} {program}")
        await client.start_with_event(
            "prog", self._input(tag), instance_id=instance_id, event=name, data=r.nonce
        )
        r.acked = self.sim.ledger.writes
        if any(e.tag == tag for e in self.sim.ledger.epochs.get(instance_id, [])):
            self.acked_starts.append((instance_id, tag, began))

    async def op_update(self, client: Client, via: str, instance_id: str) -> None:
        """Ask for an update (sometimes one the validator refuses), and sometimes ask
        again with the same id, as a caller does after an unclear failure."""
        self.updates += 1
        update_id = f"up{self.updates}"
        value = self.rng.choice([-1, self.rng.randrange(100)])
        again = self.rng.random() < 0.3
        self.note(f"{via}: update {update_id} bump({value}) of {instance_id}"
                  + (", then again" if again else ""))  # fmt: skip
        handle = client.get_handle(instance_id)
        await handle.start_update("bump", value, update_id=update_id)
        if again:
            await handle.start_update("bump", value, update_id=update_id)

    async def op_ghost(self, client: Client, via: str) -> None:
        instance_id = f"g{len(self.ghosts)}"
        self.ghosts.append(instance_id)
        self.note(f"client: start {instance_id} of a workflow no runtime has")
        began = self.sim.ledger.writes
        await self.ghost_client.start("ghost", None, instance_id=instance_id)
        self.acked_ghosts[instance_id] = began

    async def op_raise(self, client: Client, via: str, instance_id: str) -> None:
        self.nonces += 1
        nonce = self.nonces
        name = self.rng.choice(EVENT_NAMES)
        r = Raise(nonce, instance_id, name, via, self.sim.ledger.writes)
        self.sim.ledger.raises[nonce] = r
        self.note(f"{via}: raise {name}={nonce} to {instance_id}")
        await client.get_handle(instance_id).raise_event(name, nonce)
        r.acked = self.sim.ledger.writes

    async def op_burst(self, client: Client, via: str, instance_id: str) -> None:
        """Raise many ticks to one instance, one after another (a loop's runs take them)."""
        count = self.rng.randint(3, 30)
        self.note(f"{via}: raise {count} {TICK}s to {instance_id}")
        for _ in range(count):
            self.nonces += 1
            r = Raise(self.nonces, instance_id, TICK, via, self.sim.ledger.writes)
            self.sim.ledger.raises[r.nonce] = r
            await client.get_handle(instance_id).raise_event(TICK, r.nonce)
            r.acked = self.sim.ledger.writes

    async def op_deploy(self) -> None:
        """Deploy changed workflow code: every runtime stops and starts again with it
        (the outside client gets it too). The change is guarded by a patch or not."""
        guarded = self.rng.random() < 0.5
        self.changes += (guarded,)
        self.registry = build_registry(self.harness, self.changes)
        self.client.registry = self.registry
        self.sim.ledger.deployed(guarded)
        how = "under a patch" if guarded else "unguarded"
        self.note(f"deploy code generation {len(self.changes)} ({how}): every runtime restarts")
        for proc in self.processes.values():
            if proc.running:
                proc.dead = True
                if proc.scope is not None:
                    proc.scope.cancel()

    async def op_control(self, client: Client, via: str, instance_id: str, what: str) -> None:
        self.note(f"{via}: {what} {instance_id}")
        handle = client.get_handle(instance_id)
        if what == "terminate":
            self.terminated.add(instance_id)
            await handle.terminate("simulated")
            self.terminate_acked.add(instance_id)
        elif what == "cancel":
            self.cancelled.add(instance_id)
            await handle.cancel("simulated")
        elif what == "suspend":
            await handle.suspend("simulated")
        else:
            await handle.resume("simulated")

    async def op_purge(self, client: Client, via: str, instance_id: str) -> None:
        self.note(f"{via}: purge {instance_id}")
        await client.purge(instance_id)

    async def op_rerun(self, client: Client, via: str, instance_id: str) -> None:
        run = await load_run(self.inner, instance_id)
        if run is None or not run.status.is_terminal:
            return
        steps: list[ActivityScheduled | TimerCreated | ChildWorkflowScheduled]
        steps = [e for e in run.history if isinstance(e, ChildWorkflowScheduled)]
        if not steps or self.rng.random() < 0.5:
            steps = [
                e for e in run.history
                if isinstance(e, ActivityScheduled | TimerCreated | ChildWorkflowScheduled)
            ]  # fmt: skip
        if not steps:
            return
        target = self.rng.choice(steps)
        began = self.sim.ledger.writes
        self.note(f"{via}: rerun {instance_id} from event {target.event_id}")
        await client.rerun(instance_id, target.event_id)
        tag = self.sim.ledger.current(instance_id)
        self.acked_starts.append((instance_id, tag.tag if tag else "?", began))

    async def op_sweep(self, client: Client, via: str) -> None:
        retention = timedelta(seconds=self.rng.choice([0, 5]))
        self.note(f"{via}: sweep (retention {retention.total_seconds():.0f}s)")
        await client.memo_store.sweep(self.clock.now(), retention)
        # and the histories: every hour of markers so far is past
        now = self.clock.now()
        index = await client._active()
        swept = await sweep_history(
            index, client.memo_store, range(self.partitions),
            before=now + timedelta(hours=2), now=now,
        )  # fmt: skip
        self.note(f"  history sweep deleted {swept}")

    async def _guard(self, what: Callable[[], Awaitable[None]]) -> None:
        """Run one operation; what it raises is its answer, not a failure (a crash of
        the runtime whose client it used kills only that runtime)."""
        try:
            await what()
        except Crash:
            self.note("  the call died with its runtime")
        except (DurableError, ValueError) as err:
            self.note(f"  -> {type(err).__name__}: {str(err)[:100]}")

    async def _background(self, what: Callable[[], Awaitable[None]]) -> None:
        """One outside operation, run alongside the steps that follow it."""
        try:
            await self._guard(what)
        finally:
            self.in_flight -= 1

    def _pick_operation(self) -> Callable[[], Awaitable[None]] | None:
        rng = self.rng
        client, via = self._client_for()
        known = self.roots + [
            i for i in self.sim.ledger.epochs if i not in self.roots and i not in self.ghosts
        ]
        roll = rng.random()
        if not self.roots or roll < 0.12:
            return lambda: self.op_start(client, via)
        if not self.config.outside_ops:
            return lambda: self.op_raise(client, via, rng.choice(known))
        if roll < 0.41:
            return lambda: self.op_raise(client, via, rng.choice(known))
        if roll < 0.45:
            return lambda: self.op_burst(client, via, rng.choice(known))
        if roll < 0.53:
            what = rng.choice(["suspend", "resume", "resume"])
            return lambda: self.op_control(client, via, rng.choice(known), what)
        if roll < 0.58:
            what = "terminate" if rng.random() < 0.6 else "cancel"
            return lambda: self.op_control(client, via, rng.choice(known + self.ghosts), what)
        if roll < 0.62:
            return lambda: self.op_reuse(client, via, self._ended_root())
        if roll < 0.65:
            return lambda: self.op_update(client, via, rng.choice(known))
        if roll < 0.68:
            return lambda: self.op_start_with_event(client, via, self._ended_root())
        if roll < 0.75:
            return lambda: self.op_rerun(client, via, rng.choice(self.roots))
        if roll < 0.81:
            return lambda: self.op_purge(client, via, rng.choice(self.roots + self.ghosts))
        if roll < 0.88:
            return lambda: self.op_sweep(client, via)
        if roll < 0.90:
            return lambda: self.op_ghost(client, via)
        if roll < 0.92:
            return self.op_deploy
        return None

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
            self.finished = True  # the order tasks are cancelled in is not seeded: untraced
            tg.cancel_scope.cancel()
        self._final_checks()
        return SystemResult(self.seed, self.config, tuple(sim.ledger.violations), tuple(sim.trace))

    def _check_announced(self) -> None:
        """Every new run reaches its owner: a run that has not begun (PENDING), whose
        partition has had one live holder since before the run was written, is in that
        holder's memory (or being loaded into it) or has its wakeup rung a few steps on
        (nothing else would ever load it, short of the lease moving)."""
        objects, step = self.inner._objects, self.sim.step
        for partition in range(self.partitions):
            lease = decode_lease(objects.get(f"leases/{partition:04d}", (b"",))[0])
            holder = (lease.owner, lease.incarnation) if lease is not None else ("", "")
            if self._holders.get(partition, (None, 0))[0] != holder:
                self._holders[partition] = (holder, step)
        for instance_id, epochs in self.sim.ledger.epochs.items():
            epoch = epochs[-1]
            if epoch.commits > 1 or epoch.status != "PENDING" or instance_id in self._unannounced:
                continue  # (only a run that has no record but its first)
            if not self._acknowledged(instance_id, epoch):
                continue  # a start that failed (its wakeup, say) may wait for a lease move
            partition = partition_of(instance_id, self.partitions)
            (owner, incarnation), since = self._holders[partition]
            proc = self.processes.get(owner)
            if proc is None or proc.runtime is None or since >= epoch.step or step < epoch.step + 8:
                continue
            leases = proc.runtime._leases
            if leases is None or leases.incarnation != incarnation or not leases.owns(partition):
                continue  # the holder named in the lease is gone, or the lease lapsed
            if wakeup_key(instance_id, partition) in objects:
                continue
            engine = proc.runtime._engine
            if instance_id in engine._instances or instance_id in engine._handovers:
                continue  # in memory, or being loaded (after a lapse let go of it, say)
            meta = objects.get(f"instances/{instance_id}/meta")
            if meta is not None and b'"reason"' in meta[0]:
                continue  # loaded, and parked: no worker here has its workflow
            self._unannounced.add(instance_id)
            self.sim.ledger.violate(
                f"{instance_id!r} run {epoch.tag!r} (epoch {epoch.number}) was never announced: "
                "PENDING, no wakeup, not in the memory of the process that has held its "
                "partition since before it began"
            )

    def _acknowledged(self, instance_id: str, epoch: Epoch) -> bool:
        """Whether the run began from a start that returned (a child's start is its
        parent's step: always)."""
        if instance_id in self.ghosts:
            return self.acked_ghosts.get(instance_id, epoch.started_at + 1) <= epoch.started_at
        if instance_id not in self.roots:
            return True
        epochs = self.sim.ledger.epochs[instance_id]
        for i, _, began in self.acked_starts:
            first = min((e.started_at for e in epochs if e.started_at >= began), default=None)
            if i == instance_id and first == epoch.started_at:
                return True  # the first run to begin after the start's call began
        return False

    async def _drain(self, tg: anyio.abc.TaskGroup) -> None:
        """Faults off: bring every process up, resume and feed every run, let time pass
        until every run has ended (or report those that never do)."""
        sim = self.sim
        sim.faults_on = False
        sim.lease_outage.clear()
        sim.tick()  # every stalled call goes on
        self.note("drain: faults off")
        await _settle()  # the processes a last step stopped are down
        for _ in range(_DRAIN_ROUNDS):
            self._restart_the_down(tg)
            await _settle()
            if not self.in_flight:
                break
            self.clock.advance(_RENEW)
        fed: set[tuple[str, int]] = set()
        for round_ in range(_DRAIN_ROUNDS):
            self._restart_the_down(tg)  # as a supervisor would
            open_ = self._open_epochs()
            if not open_:
                return
            for instance_id, epoch in open_:
                if (instance_id, epoch) not in fed and round_ >= 2:
                    fed.add((instance_id, epoch))
                    await self._feed(instance_id)
            self.clock.advance(_RENEW)
            await _settle()
        for instance_id, number in self._open_epochs():
            stuck = sim.ledger.epochs[instance_id][number]
            why = await self._why_stuck(instance_id)
            sim.ledger.violate(
                f"{instance_id!r} run {stuck.tag!r} (epoch {number}"
                f"{', a rerun' if stuck.rerun else ''}) never ended: "
                f"status {stuck.status} after the drain; {why}"
            )

    def _restart_the_down(self, tg: anyio.abc.TaskGroup) -> None:
        for proc in self.processes.values():
            if not proc.running:
                self.note(f"restart {proc.name}")
                tg.start_soon(self._run_process, proc)

    async def _why_stuck(self, instance_id: str) -> str:
        """What a run that never ended waits on, and what should have woken it: its
        open steps, its inbox, its wakeup, its partition's lease, its owner's memory."""
        ledger, objects = self.sim.ledger, self.inner._objects
        run = await load_run(self.inner, instance_id)
        waits = "no log" if run is None else open_steps(run.history, ledger)
        partition = partition_of(instance_id, self.partitions)
        unapplied = [
            k for k in ledger.inbox.get(instance_id, ())
            if run is None or k.rsplit("/", 1)[-1] not in run.consumed
        ]  # fmt: skip
        rung = wakeup_key(instance_id, partition) in objects
        lease = decode_lease(objects.get(f"leases/{partition:04d}", (b"",))[0])
        holder = self.processes.get(lease.owner) if lease is not None else None
        memory = ""
        if not any(p.runtime is not None for p in self.processes.values()):
            owner = "every runtime is down"
        elif lease is None or not lease.owner:
            owner = "its partition is not leased"
        elif holder is None or holder.runtime is None:
            owner = "its partition is leased to a process that is down"
        else:
            valid = self.clock.now() < lease.expires_at
            owner = f"its partition is leased{'' if valid else ' (expired)'}"
            engine = holder.runtime._engine
            inst = engine._instances.get(instance_id)
            memory = (", not in its owner's memory" if inst is None
                      else f", in its owner's memory ({inst.state.name.lower()})")  # fmt: skip
        inbox = "unapplied inbox messages" if unapplied else "no unapplied inbox message"
        return (f"waits on {waits}; {inbox}; wakeup {'rung' if rung else 'absent'}; "
                f"{owner}{memory}")  # fmt: skip

    def _open_epochs(self) -> list[tuple[str, int]]:
        found = []
        for instance_id, epochs in self.sim.ledger.epochs.items():
            epoch = epochs[-1]
            if epoch.ended:
                continue
            if instance_id in self.ghosts and instance_id not in self.terminate_acked:
                continue  # no runtime can run it: it waits, as it should (a terminate
                # that failed may never have been written; a cancel needs its code)
            found.append((instance_id, epoch.number))
        return found

    async def _feed(self, instance_id: str) -> None:
        """Resume the run and raise every event its program still needs."""
        epoch = self.sim.ledger.current(instance_id)
        assert epoch is not None
        await self._guard(lambda: self.op_control(self.client, "client", instance_id, "resume"))
        program = self.programs.get(epoch.tag, [])
        delivered = [
            r for r in self.sim.ledger.raises.values()
            if r.delivered is not None and r.delivered[0] == epoch.number
            and r.instance_id == instance_id
        ]  # fmt: skip
        needed = event_names(program)
        for r in delivered:
            if r.name in needed:
                needed.remove(r.name)
        for name in needed:
            self.nonces += 1
            r = Raise(self.nonces, instance_id, name, "client", self.sim.ledger.writes)
            self.sim.ledger.raises[r.nonce] = r
            self.note(f"drain: raise {name}={r.nonce} to {instance_id}")
            try:
                await self.client.get_handle(instance_id).raise_event(name, r.nonce)
                r.acked = self.sim.ledger.writes
            except DurableError as err:
                self.note(f"  -> {type(err).__name__}")

    # -- at the end -----------------------------------------------------------------

    def _final_checks(self) -> None:
        ledger = self.sim.ledger
        ledger.check_event_order()
        ledger.check_sends_posted()
        self.spans.check(ledger.violate)
        self.spans.check_ends(self._ended_runs(), self._told_otherwise_logs(), ledger.violate)
        for instance_id, tag, began in self.acked_starts:
            epochs = ledger.epochs.get(instance_id, [])
            if not any(e.started_at >= began for e in epochs):
                ledger.violate(f"acknowledged start of {instance_id!r} ({tag}) is not in the log")
            ours = min((e for e in epochs if e.started_at >= began), default=None,
                       key=lambda e: e.started_at)  # fmt: skip
            if ours is not None and ours.gap:
                ledger.violate(ours.gap)
            if ours is not None and ours.erased_by:  # a start withdrawn unacknowledged is not
                ledger.violate(f"{ours.erased_by} erased the log of {instance_id!r} while its "
                               f"run {ours.tag!r} (epoch {ours.number}) had not ended")  # fmt: skip
        raised = {r.nonce for r in ledger.raises.values()}
        failed_children = {  # children whose failure is explained: terminated, or their
            e.tag  # code changed without a patch under them
            for epochs in ledger.epochs.values()
            for e in epochs
            if e.status in ("TERMINATED", "CANCELED")
            or (e.failure_type.endswith("NonDeterminismError") and ledger.unguarded_since(e))
        }
        for instance_id, epochs in ledger.epochs.items():
            if instance_id in self.ghosts:
                continue
            for epoch in epochs:
                self._check_epoch(epoch, raised, failed_children)

    def _ended_runs(self) -> list[tuple[str, str]]:
        """``(instance id, status)`` of each start whose last run ended (not erased)."""
        return [
            (epoch.instance_id, epoch.status)
            for epochs in self.sim.ledger.epochs.values()
            for epoch in epochs
            if epoch.ended and epoch.status in TERMINAL
        ]

    def _told_otherwise_logs(self) -> set[str]:
        """Instances a log record of which landed while its writer was told it had not."""
        return {key.split("/")[1] for key in self.sim.told_otherwise if "/log/" in key}

    def _bounded(self, epoch: Epoch) -> bool:
        """Whether the run's start (its own, or a continue-as-new chain's first run's)
        had an execution_timeout."""
        return epoch.tag in self.bounded

    def _parent_ended(self, epoch: Epoch) -> bool:
        """Whether a child run's parent may have ended it: a parent run that ends
        (returns, fails, is terminated or cancelled) terminates the children it still
        waits on (their default ``on_parent_close``), and a new run of the parent (a
        reuse, a rerun) ends an older run's child to take its id."""
        parent = epoch.parent
        epochs = self.sim.ledger.epochs.get(parent.instance_id, []) if parent else []
        return len(epochs) > 1 or any(e.status in _ENDED for e in epochs)

    def _check_epoch(self, epoch: Epoch, raised: set[int | str], failed_children: set[str]) -> None:
        ledger = self.sim.ledger
        program = self.programs.get(epoch.tag)
        where = f"{epoch.instance_id!r} run {epoch.tag!r} (epoch {epoch.number})"
        if program is None or not epoch.ended:
            return
        if epoch.erased_by:
            return  # judged with the acknowledged starts
        if epoch.status == "TERMINATED":
            if epoch.instance_id not in self.terminated and not self._parent_ended(epoch):
                ledger.violate(f"{where} was TERMINATED, but no one terminated it")
            return
        if epoch.status == "CANCELED":
            if epoch.instance_id not in self.cancelled and not self._parent_ended(epoch):
                ledger.violate(f"{where} was CANCELED, but no one cancelled it")
            return
        if epoch.status == "FAILED":
            if epoch.failure_type.endswith("NonDeterminismError") and ledger.unguarded_since(epoch):
                return  # code changed without a patch under its history: fails, visibly
            if epoch.failure_type == "durable.TimeoutError" and self._bounded(epoch):
                return  # its start's execution_timeout passed
            if not (any(s[0] == "raise" for s in program) and epoch.failure_type == "ValueError"):
                patched = " (its code changed under a patch)" if ledger.deploys_in(epoch) else ""
                ledger.violate(f"{where} FAILED ({epoch.failure_type}) though its program "
                               f"does not fail{patched}")  # fmt: skip
            return
        problem = expected_mismatch(program, epoch.tag, epoch.output, raised, failed_children)
        if problem is not None and not epoch.misled:  # (a misled run was reported already)
            ledger.violate(f"{where} returned what the reference does not allow: {problem}")


class _Drops(EngineHooks):
    """Tells the ledger which sent events a runtime dropped (no receiver, or an ended one)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def dropped(self, sender: str, sent: EventSent) -> None:
        self._ledger.dropped(sent)


async def simulate_system(seed: int, config: SystemConfig | None = None) -> SystemResult:
    """Run one seeded whole-system simulation and return what it found.

    Several runtimes share one in-memory store on a ``MockClock``; random programs
    run while outside operations and faults interleave; invariants are checked at
    every write and at the end. The same seed and config give the same trace.
    """
    driver = _Driver(seed, config or SystemConfig())
    return await driver.run()
