"""``Runtime``: one process that runs workflows and activities against a store."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc

from ._client import Client, WorkflowHandle
from ._clock import Clock, SystemClock
from ._core._codec import JsonCodec, PayloadCodec
from ._engine import Engine, EngineHooks
from ._engine._base import supervised
from ._errors import StoreError
from ._fleet._leases import Fleet, Leases, default_owner
from ._fleet._partitions import load_config
from ._ids import IdSource
from ._log._memo import MemoStore
from ._log._purge import _PURGE_TAKEOVER
from ._log._purging import finish_purges
from ._log._retention import sweep_history
from ._observe import make_observer
from .store import ObjectStore, open_store

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable, Mapping

    from ._engine._eviction import EvictionPolicy
    from ._engine._executor import Executor
    from ._registry import Registry

__all__ = ["Runtime"]

log = logging.getLogger("durable.runtime")

T = TypeVar("T")

_START_ATTEMPTS = 5
_START_BACKOFF = timedelta(seconds=0.5)


class Runtime:
    """Runs a registry's workflows and activities, durably, in this process.

    Use it as an async context manager: on entry it recovers every unfinished
    instance in the store and starts serving; on exit it stops cleanly (anything in
    flight resumes from the log next time).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        store: str | ObjectStore = "file://./.durable",
        storage_options: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        codec: PayloadCodec | None = None,
        max_concurrent_activities: int = 100,
        max_concurrent_workflows: int = 32,
        max_resident_workflows: int | None = None,
        eviction: EvictionPolicy | None = None,
        poll_interval: float = 1.0,
        memo_store: MemoStore | None = None,
        memo_prefix: str = "memo",
        memo_retention: timedelta | None = None,
        memo_sweep_interval: timedelta = timedelta(hours=1),
        history_retention: timedelta | None = None,
        entropy: random.Random | None = None,
        fleet: Fleet | None = None,
        telemetry: bool | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        _hooks: EngineHooks | None = None,
        _executor: Executor | None = None,
    ) -> None:
        if max_concurrent_activities < 1 or max_concurrent_workflows < 1:
            raise ValueError("concurrency limits must be at least 1")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive (seconds)")
        if memo_sweep_interval <= timedelta(0):
            raise ValueError("memo_sweep_interval must be positive")
        if history_retention is not None and history_retention <= timedelta(0):
            raise ValueError("history_retention must be positive")
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.codec: PayloadCodec = codec or JsonCodec()
        self._owns_store = not isinstance(store, ObjectStore)
        self.store = open_store(store, storage_options=storage_options)
        observer = make_observer(self.clock, telemetry, tracer_provider, meter_provider)
        if observer is not None and observer.metrics is not None:
            self.store = observer.metrics.timed(self.store, self.clock)
        self.memo_store = memo_store or MemoStore(self.store, memo_prefix, codec=self.codec)
        """Where activities' memo entries and terminal markers live."""
        self.memo_retention = memo_retention
        self._sweep_interval = memo_sweep_interval
        self.history_retention = history_retention
        """Ended instances older than this are deleted whole (None: kept)."""
        ids = IdSource(entropy)
        self.fleet = fleet
        self.owner = (fleet.owner if fleet else None) or default_owner(ids.run_id()[:8])
        """This process's name in a fleet's lease objects."""
        self._leases: Leases | None = None
        self._lease_store: ObjectStore | None = None
        self._engine = Engine(
            registry,
            self.store,
            self.clock,
            self.codec,
            max_concurrent_workflows=max_concurrent_workflows,
            max_concurrent_activities=max_concurrent_activities,
            poll_interval=poll_interval,
            max_resident_workflows=max_resident_workflows,
            eviction=eviction,
            memo_store=self.memo_store,
            memo_retention=memo_retention,
            ids=ids,
            hooks=_hooks,
            executor=_executor,
            observer=observer,
        )
        if observer is not None and observer.metrics is not None:
            observer.metrics.gauges(
                self._engine,
                resident=lambda engine: len(engine._instances) if engine.running else 0,
                partitions=lambda engine: len(engine.owned_partitions()) if engine.running else 0,
            )
        self.client = Client(
            self.store, registry=registry, clock=self.clock, codec=self.codec,
            memo_store=self.memo_store, ids=ids, _engine=self._engine,
        )  # fmt: skip
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Runtime:
        if self._tg is not None:
            raise RuntimeError("this Runtime is already running")
        check = getattr(self.store, "check_conditional_writes", None)
        if check is not None:  # refuse an endpoint that would be silently unsafe
            await self._with_retries(check)
        fleet = self.fleet
        config = await self._with_retries(
            load_config, self.store, fleet.partitions if fleet else None
        )
        if fleet is not None:
            sibling = getattr(self.store, "sibling", None)
            # renewals on a busy S3 store must not wait behind its commits
            self._lease_store = sibling() if sibling is not None else self.store
            self._leases = Leases(
                self._lease_store, self.clock, fleet, config.partitions, self.owner,
                on_acquired=self._engine.take_partitions,
                on_lost=self._engine.drop_partitions,
            )  # fmt: skip
        self._engine.configure(config.partitions, self._leases)
        self._engine.history_retention = self.history_retention
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(supervised, self._engine.run)
            if self.memo_retention is not None:
                self._engine.busy_enter()  # the first sweep is under way from now on
                tg.start_soon(supervised, self._sweep_loop, self.memo_retention)
            if self.history_retention is not None:
                self._engine.busy_enter()
                tg.start_soon(supervised, self._history_loop, self.history_retention)
            tg.start_soon(supervised, self._purge_loop)
        except BaseException as exc:
            tg.cancel_scope.cancel()
            await tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._tg = tg
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None
        tg.cancel_scope.cancel()
        try:
            return await tg.__aexit__(*exc_info)
        finally:
            if self._lease_store is not None and self._lease_store is not self.store:
                with anyio.CancelScope(shield=True):
                    await self._lease_store.close()
            if self._owns_store:
                with anyio.CancelScope(shield=True):
                    await self.store.close()

    async def _with_retries(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(*args)``, tried again on transient store errors (a few times, backing off
        on the Clock) before the runtime gives up starting."""
        for attempt in range(_START_ATTEMPTS):
            try:
                return await fn(*args)
            except StoreError as err:
                if not err.transient or attempt == _START_ATTEMPTS - 1:
                    raise
                log.warning("starting: %s; retrying", err)
                await self.clock.sleep_until(self.clock.now() + _START_BACKOFF * (attempt + 1))
        raise AssertionError("unreachable")

    async def start(
        self,
        workflow: Callable[..., Awaitable[T]] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        reuse: bool = False,
        version: str | None = None,
        execution_timeout: timedelta | None = None,
        search_attributes: Mapping[str, Any] | None = None,
    ) -> WorkflowHandle[T]:
        """Start a workflow and return its handle (see :meth:`Client.start`)."""
        if self._tg is None:
            raise RuntimeError("start the Runtime first: async with Runtime(...) as runtime")
        return await self.client.start(
            workflow, input, instance_id=instance_id, reuse=reuse, version=version,
            execution_timeout=execution_timeout, search_attributes=search_attributes,
        )  # fmt: skip

    async def sweep(self) -> int:
        """Run one retention sweep now; return how many instances' memo it deleted."""
        if self.memo_retention is None:
            return 0
        return await self.memo_store.sweep(
            self.clock.now(), self.memo_retention, instances=self.store
        )

    async def sweep_history(self) -> int:
        """Delete, now, the instances of the partitions this process holds that ended
        longer ago than ``history_retention``; returns how many."""
        if self.history_retention is None:
            return 0
        engine = self._engine
        now = self.clock.now()
        return await sweep_history(
            engine.index, self.memo_store, engine.owned_partitions(),
            before=now - self.history_retention, now=now,
        )  # fmt: skip

    async def finish_purges(self) -> int:
        """Finish, now, the purges of the partitions this process holds that were cut
        short (their process died: see :mod:`durable._log._purging`); returns how many
        instances they deleted."""
        engine = self._engine
        return await finish_purges(
            engine.index, self.memo_store, engine.owned_partitions(), now=self.clock.now()
        )

    async def _purge_loop(self) -> None:
        """Every ``_PURGE_TAKEOVER`` on the Clock, finish the purges cut short (one
        LIST when none is in flight); in a fleet, those of the partitions it holds."""
        while True:
            await self.clock.sleep_until(self.clock.now() + _PURGE_TAKEOVER)
            try:
                if finished := await self.finish_purges():
                    log.info("finished %d purge(s) cut short", finished)
            except StoreError as err:
                log.warning("finishing purges failed, will retry next interval: %s", err)

    async def _history_loop(self, retention: timedelta) -> None:
        """Sweep old histories at start, then every interval (the memo sweep's), on the
        Clock; in a fleet, each process sweeps the partitions it holds."""
        while True:  # entered busy, like the memo sweep
            try:
                swept = await self.sweep_history()
                if swept:
                    log.info("history sweep deleted %d ended instance(s)", swept)
            except StoreError as err:
                log.warning("history sweep failed, will retry next interval: %s", err)
            finally:
                self._engine.busy_exit()
            await self.clock.sleep_until(self.clock.now() + self._sweep_interval)
            self._engine.busy_enter()

    async def _sweep_loop(self, retention: timedelta) -> None:
        """Sweep at start (markers left by earlier processes), then every interval.

        A background schedule: it waits on the Clock but never pulls a MockClock forward.
        """
        while True:  # entered busy: __aenter__ counted the first sweep as under way
            try:
                swept = await self.memo_store.sweep(
                    self.clock.now(), retention, instances=self.store
                )
                if swept:
                    log.info("memo sweep deleted the memo of %d ended instance(s)", swept)
            except StoreError as err:
                log.warning("memo sweep failed, will retry next interval: %s", err)
            finally:
                self._engine.busy_exit()
            await self.clock.sleep_until(self.clock.now() + self._sweep_interval)
            self._engine.busy_enter()

    @property
    def partitions(self) -> list[int]:
        """The partitions this process runs now (every one unless in a fleet)."""
        return self._engine.owned_partitions()

    async def wait_idle(self) -> None:
        """Return once no turn, activity or client call is in progress (for tests)."""
        await self._engine.wait_idle()
