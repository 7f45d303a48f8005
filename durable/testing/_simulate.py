"""``simulate``: run a workflow to the end under seeded faults, on virtual time.

Everything random comes from one ``random.Random(seed)``: run and message ids, where
the process crashes (at a commit point, before or after the write lands), which
activity results are delivered twice, how concurrent completions are reordered,
which first attempts raise, and which store calls fail. The runtime is the real one
on an in-memory store, so a crash is a real crash: the runtime dies and a new one
recovers from the log. The same seed gives the same trace and the same result.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from durable._clock import MockClock
from durable._core._codec import JsonCodec
from durable._core._events import HistoryEvent
from durable._core._failure import FailureDetails
from durable._core._state import WorkflowStatus
from durable._engine import EngineHooks
from durable._errors import StoreError
from durable._log._reader import load_run
from durable._registry import ActivityDefinition, Registry
from durable._runtime import Runtime
from durable.store import MemoryStore, ObjectStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from durable._core._events import Event
    from durable._log._records import TurnRecord

__all__ = ["Faults", "SimulatedActivityError", "SimulationResult", "simulate"]

INSTANCE_ID = "simulated"


@dataclass(frozen=True)
class Faults:
    """Which faults to inject, and how often (each a probability per opportunity).

    - ``crash_rate``: the process dies at a commit point (before or after the write).
    - ``max_crashes``: at most this many crashes per simulation, so it ends.
    - ``duplicate_rate``: an activity result is delivered twice.
    - ``reorder``: concurrent activity completions arrive in a shuffled order.
    - ``activity_error_rate``: a first attempt raises ``SimulatedActivityError``
      (any retry policy with ``max_attempts >= 2`` absorbs it).
    - ``store_error_rate``: a store call fails transiently (before or after a write).
    """

    crash_rate: float = 0.0
    max_crashes: int = 3
    duplicate_rate: float = 0.0
    reorder: bool = True
    activity_error_rate: float = 0.0
    store_error_rate: float = 0.0


class SimulatedActivityError(Exception):
    """Raised by a first activity attempt chosen by ``Faults.activity_error_rate``."""


@dataclass(frozen=True)
class SimulationResult:
    """How a simulated run ended, and everything that happened on the way."""

    seed: int
    status: WorkflowStatus
    result: Any
    failure: FailureDetails | None
    trace: tuple[str, ...]
    history: list[HistoryEvent] = field(repr=False)
    crashes: int = 0

    def format_trace(self) -> str:
        """The trace, one line per step, headed by the seed that reproduces it."""
        return "\n".join([f"simulate(seed={self.seed}) -> {self.status}", *self.trace])


class _Crash(BaseException):
    """The simulated process dies here."""


class _Sim:
    """The seeded source of every decision, and the trace of what was decided."""

    def __init__(self, seed: int, faults: Faults) -> None:
        self.rng = random.Random(seed)
        self.faults = faults
        self.trace: list[str] = []
        self.crashes = 0
        self.faults_on = False
        self.dead = False  # crashed: the process must not touch the store again

    def chance(self, rate: float) -> bool:
        return self.faults_on and rate > 0 and self.rng.random() < rate


class _SimStore:
    """The store as the simulated process sees it: crashes and transient errors."""

    def __init__(self, inner: ObjectStore, sim: _Sim) -> None:
        self._inner = inner
        self._sim = sim

    @property
    def url(self) -> str:
        return "sim://"

    def _maybe_fail(self, op: str, key: str, *, after: bool) -> None:
        sim = self._sim
        if sim.dead:
            raise _Crash()
        if sim.chance(sim.faults.store_error_rate):
            sim.trace.append(f"store error on {op} {key} ({'after' if after else 'before'})")
            raise StoreError(f"simulated store error on {op} {key}", key=key)

    def _maybe_crash(self, key: str, *, after: bool) -> None:
        sim = self._sim
        if sim.dead:
            raise _Crash()
        crash_point = "/log/" in key and sim.crashes < sim.faults.max_crashes
        if crash_point and sim.chance(sim.faults.crash_rate):
            sim.crashes += 1
            sim.dead = True
            sim.trace.append(f"crash {'after' if after else 'before'} writing {key}")
            raise _Crash()

    async def _write(self, op: str, key: str, write: Callable[[], Awaitable[str]]) -> str:
        self._maybe_crash(key, after=False)
        self._maybe_fail(op, key, after=False)
        etag = await write()
        self._maybe_crash(key, after=True)
        self._maybe_fail(op, key, after=True)
        return etag

    async def get(self, key: str) -> bytes:
        self._maybe_fail("get", key, after=False)
        return await self._inner.get(key)

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        self._maybe_fail("get", key, after=False)
        return await self._inner.get_with_etag(key)

    async def put(self, key: str, data: bytes) -> str:
        return await self._write("put", key, lambda: self._inner.put(key, data))

    async def put_if_absent(self, key: str, data: bytes) -> str:
        return await self._write("put_if_absent", key, lambda: self._inner.put_if_absent(key, data))

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        return await self._write(
            "put_if_match", key, lambda: self._inner.put_if_match(key, data, etag)
        )

    async def list(self, prefix: str) -> list[str]:
        self._maybe_fail("list", prefix, after=False)
        return await self._inner.list(prefix)

    async def delete(self, key: str) -> None:
        self._maybe_fail("delete", key, after=False)
        await self._inner.delete(key)

    async def delete_if_match(self, key: str, etag: str) -> None:
        self._maybe_fail("delete_if_match", key, after=False)
        await self._inner.delete_if_match(key, etag)

    async def delete_prefix(self, prefix: str) -> None:
        self._maybe_fail("delete_prefix", prefix, after=False)
        await self._inner.delete_prefix(prefix)

    async def close(self) -> None:
        """The simulated store outlives each simulated process."""


class _SimHooks(EngineHooks):
    def __init__(self, sim: _Sim) -> None:
        self._sim = sim

    async def before_delivery(self, instance_id: str, outcome: Event) -> None:
        sim = self._sim
        if sim.faults.reorder:
            for _ in range(sim.rng.randrange(4)):
                await anyio.lowlevel.checkpoint()

    def deliveries(self, instance_id: str, outcome: Event) -> int:
        sim = self._sim
        if sim.chance(sim.faults.duplicate_rate):
            task = getattr(outcome, "task_id", "?")
            sim.trace.append(f"duplicate delivery to {instance_id} of task {task}")
            return 2
        return 1

    def committed(self, instance_id: str, record: TurnRecord) -> None:
        kinds = ",".join(type(e).__name__ for e in (*record.events, *record.next_run))
        self._sim.trace.append(f"commit {instance_id}/{record.seq} {record.status} [{kinds}]")


def _wrap_activity(definition: ActivityDefinition, sim: _Sim) -> ActivityDefinition:
    """Run every activity inline (no threads: the schedule stays seeded) and let first
    attempts fail at random."""
    fn = definition.fn

    async def simulated(*args: Any) -> Any:
        ctx = args[0]
        if ctx.attempt == 1 and sim.chance(sim.faults.activity_error_rate):
            sim.trace.append(f"activity error in {ctx.instance_id} step {ctx.task_id}")
            raise SimulatedActivityError(f"simulated failure of {definition.name}")
        result = fn(*args)
        return await result if inspect.isawaitable(result) else result

    return dataclasses.replace(definition, fn=simulated, is_async=True)


def _simulated_registry(registry: Registry, sim: _Sim) -> Registry:
    wrapped = Registry()
    wrapped.workflows = dict(registry.workflows)
    wrapped._versions = {name: dict(v) for name, v in registry._versions.items()}
    wrapped.activities = {
        name: _wrap_activity(definition, sim) for name, definition in registry.activities.items()
    }
    wrapped._names = dict(registry._names)
    return wrapped


async def simulate(
    registry: Registry,
    workflow: Callable[..., Awaitable[Any]] | str,
    input: Any = None,
    *,
    seed: int,
    faults: Faults | None = None,
    clock: MockClock | None = None,
) -> SimulationResult:
    """Run ``workflow(input)`` to the end under seeded faults and return what happened.

    The runtime crashes and recovers as ``faults`` decide; time is a
    ``MockClock(auto_advance=True)``. A failing seed can be run again to reproduce it.
    """
    faults = faults or Faults()
    codec = JsonCodec()
    sim = _Sim(seed, faults)
    inner = MemoryStore()
    store = _SimStore(inner, sim)
    clock = clock or MockClock(auto_advance=True)
    sim_registry = _simulated_registry(registry, sim)
    entropy = random.Random(sim.rng.getrandbits(64))
    hooks = _SimHooks(sim)
    started = False
    status: WorkflowStatus | None = None
    for incarnation in range(faults.max_crashes + 2):
        sim.faults_on = sim.dead = False  # a process starting up reads the log in peace
        crashed = False
        try:
            async with Runtime(
                sim_registry,
                store=store,
                clock=clock,
                entropy=entropy,
                _hooks=hooks,
            ) as runtime:
                if not started:
                    await runtime.start(workflow, input, instance_id=INSTANCE_ID)
                    started = True
                sim.faults_on = True
                status = await _wait_for_end(runtime, inner)
                sim.faults_on = False
        except* _Crash:
            crashed = True
            sim.trace.append(f"restart {incarnation + 1}")
        if not crashed:
            break
    if status is None:
        raise RuntimeError(f"simulate(seed={seed}) crashed more often than max_crashes allows")
    run = await load_run(inner, INSTANCE_ID)
    assert run is not None
    output, failure = run.outcome()
    definition = registry.workflows.get(run.started.name)
    output_type = definition.output_type if definition is not None else Any
    result = codec.decode(output, output_type) if status is WorkflowStatus.COMPLETED else None
    return SimulationResult(
        seed=seed,
        status=status,
        result=result,
        failure=failure,
        trace=tuple(sim.trace),
        history=run.history,
        crashes=sim.crashes,
    )


async def _wait_for_end(runtime: Runtime, inner: ObjectStore) -> WorkflowStatus:
    engine = runtime._engine
    while True:
        await engine.wait_done(INSTANCE_ID)
        run = await load_run(inner, INSTANCE_ID)
        if run is not None and run.status.is_terminal:
            return run.status
        await runtime.wait_idle()
