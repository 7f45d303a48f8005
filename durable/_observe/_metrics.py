"""OpenTelemetry metrics of a runtime (imported only when the ``opentelemetry-api`` is
installed), and the store wrapper that times each store request."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from durable._clock import Clock
    from durable.store import ObjectStore

__all__ = ["Metrics", "TimedStore", "metrics_for"]

_NAME = "durable"

# The SDK keeps one instrument per name and meter, and only the callbacks given when it
# was first made: every runtime on one meter shares one Metrics. Keyed weakly by the
# meter, so nothing outlives the provider that made it.
_BY_METER: weakref.WeakKeyDictionary[Any, Metrics] = weakref.WeakKeyDictionary()


def metrics_for(provider: metrics.MeterProvider | None = None) -> Metrics:
    """The instruments on ``provider``'s meter (None: the global meter provider), shared
    by every runtime that records there."""
    meter = metrics.get_meter(_NAME) if provider is None else provider.get_meter(_NAME)
    found = _BY_METER.get(meter)
    if found is None:
        found = _BY_METER[meter] = Metrics(meter)
    return found


class Metrics:
    """The instruments on one meter: counters and gauges are read when the SDK
    collects (the runtimes' counts and state summed), histograms recorded as they come."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._meter = meter
        self._sources: list[tuple[weakref.ref[Any], Callable[[Any], int], Callable[[Any], int]]]
        self._sources = []
        self.started = _Tally(
            meter, "durable.workflow.started", ("workflow",), unit="{run}",
            description="runs that took a first turn",
        )  # fmt: skip
        self.ended = _Tally(
            meter, "durable.workflow.ended", ("workflow", "status"), unit="{run}",
            description="runs that ended, by status",
        )  # fmt: skip
        self.turn_duration = meter.create_histogram(
            "durable.turn.duration", unit="s", description="a turn, from its start to its commit"
        )
        self.attempts = _Tally(
            meter, "durable.activity.attempts", ("activity", "outcome"), unit="{attempt}",
            description="activity attempts, by outcome",
        )  # fmt: skip
        self.activity_duration = meter.create_histogram(
            "durable.activity.duration", unit="s", description="one activity attempt"
        )
        self.store_duration = meter.create_histogram(
            "durable.store.request.duration", unit="s",
            description="one object store request, by operation",
        )  # fmt: skip
        # each record names its instrument's method and attributes made once, not per call
        self._turn_record = self.turn_duration.record
        self._activity_record = self.activity_duration.record
        self._by_workflow: dict[str, dict[str, str]] = {}
        self._by_activity: dict[str, dict[str, str]] = {}

    def turn(self, workflow: str, seconds: float, first: bool) -> None:
        """A turn of a ``workflow`` run took ``seconds``; ``first``: the run's first."""
        self._turn_record(seconds, _labels(self._by_workflow, "workflow", workflow))
        if first:
            self.started.count(workflow)

    def attempted(self, activity: str, outcome: str, seconds: float) -> None:
        """An attempt of ``activity`` ended with ``outcome`` after ``seconds``."""
        self.attempts.count(activity, outcome)
        self._activity_record(seconds, _labels(self._by_activity, "activity", activity))

    def timed(self, store: ObjectStore, clock: Clock) -> ObjectStore:
        """``store``, with each request's duration recorded."""
        return TimedStore(store, clock, self)

    def gauges(self, owner: object, resident: Callable[[Any], int],
               partitions: Callable[[Any], int]) -> None:  # fmt: skip
        """Count ``resident(owner)`` and ``partitions(owner)`` in the gauges while
        ``owner`` lives (held weakly: a stopped runtime does not stay alive through its
        meter)."""
        if not self._sources:
            self._meter.create_observable_gauge(
                "durable.instances.resident", [self._observe(1)], unit="{instance}",
                description="instances held in this process's memory",
            )  # fmt: skip
            self._meter.create_observable_gauge(
                "durable.fleet.partitions_held", [self._observe(2)], unit="{partition}",
                description="partitions this process runs",
            )  # fmt: skip
        self._sources.append((weakref.ref(owner), resident, partitions))

    def _observe(self, which: int) -> Callable[[Any], Iterable[metrics.Observation]]:
        def callback(options: Any) -> Iterable[metrics.Observation]:
            self._sources = [source for source in self._sources if source[0]() is not None]
            total = 0
            for ref, resident, partitions in self._sources:
                owner = ref()
                if owner is not None:
                    total += (resident if which == 1 else partitions)(owner)
            return [metrics.Observation(total)]

        return callback


def _labels(made: dict[str, dict[str, str]], label: str, value: str) -> dict[str, str]:
    """The attributes ``{label: value}``, made once per value (the SDK copies them)."""
    found = made.get(value)
    if found is None:
        found = made[value] = {label: value}
    return found


class _Tally:
    """A counter kept as plain integers per label values, which the SDK reads when it
    collects (an observable counter): counting costs a dict update, not an SDK call."""

    def __init__(
        self, meter: metrics.Meter, name: str, labels: tuple[str, ...], unit: str,
        description: str,
    ) -> None:  # fmt: skip
        self._labels = labels
        self._counts: dict[tuple[str, ...], int] = {}
        meter.create_observable_counter(name, [self._observe], unit=unit,
                                        description=description)  # fmt: skip

    def count(self, *values: str) -> None:
        counts = self._counts
        counts[values] = counts.get(values, 0) + 1

    def _observe(self, options: Any) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(count, dict(zip(self._labels, values, strict=True)))
            for values, count in list(self._counts.items())
        ]


# the attributes of each operation's records (the SDK copies them; made once here)
_GET, _PUT, _PUT_IF_ABSENT, _PUT_IF_MATCH, _LIST, _DELETE, _DELETE_IF_MATCH, _DELETE_PREFIX = (
    {"operation": operation}
    for operation in ("get", "put", "put_if_absent", "put_if_match", "list", "delete",
                      "delete_if_match", "delete_prefix")
)  # fmt: skip


class TimedStore:
    """An :class:`~durable.store.ObjectStore` that records how long each request to
    ``inner`` takes (on ``clock``), by operation; anything else is ``inner``'s."""

    def __init__(self, inner: ObjectStore, clock: Clock, metrics: Metrics) -> None:
        self.inner = inner
        self._clock = clock
        self._record = metrics.store_duration.record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # never_suspends, sibling(), checks of a backend

    @property
    def url(self) -> str:
        return self.inner.url

    def _done(self, operation: dict[str, str], began: Any) -> None:
        self._record((self._clock.now() - began).total_seconds(), operation)

    async def get(self, key: str) -> bytes:
        began = self._clock.now()
        try:
            return await self.inner.get(key)
        finally:
            self._done(_GET, began)

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        began = self._clock.now()
        try:
            return await self.inner.get_with_etag(key)
        finally:
            self._done(_GET, began)

    async def put(self, key: str, data: bytes) -> str:
        began = self._clock.now()
        try:
            return await self.inner.put(key, data)
        finally:
            self._done(_PUT, began)

    async def put_if_absent(self, key: str, data: bytes) -> str:
        began = self._clock.now()
        try:
            return await self.inner.put_if_absent(key, data)
        finally:
            self._done(_PUT_IF_ABSENT, began)

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        began = self._clock.now()
        try:
            return await self.inner.put_if_match(key, data, etag)
        finally:
            self._done(_PUT_IF_MATCH, began)

    async def list(self, prefix: str) -> list[str]:
        began = self._clock.now()
        try:
            return await self.inner.list(prefix)
        finally:
            self._done(_LIST, began)

    async def delete(self, key: str) -> None:
        began = self._clock.now()
        try:
            await self.inner.delete(key)
        finally:
            self._done(_DELETE, began)

    async def delete_if_match(self, key: str, etag: str) -> None:
        began = self._clock.now()
        try:
            await self.inner.delete_if_match(key, etag)
        finally:
            self._done(_DELETE_IF_MATCH, began)

    async def delete_prefix(self, prefix: str) -> None:
        began = self._clock.now()
        try:
            await self.inner.delete_prefix(prefix)
        finally:
            self._done(_DELETE_PREFIX, began)

    async def close(self) -> None:
        await self.inner.close()
