"""The ``sidecar`` scenario: a K-step workflow through ``durable sidecar`` (the Durable
Task gRPC protocol) with stateful history on and off, and over durable's work stream or
the standard unary completions, side by side.

Each run measures both variants, each on a fresh store in a fresh event loop: an
in-process :class:`~durable.grpc.Sidecar` on a free loopback port, one
:class:`~durable.grpc.RemoteWorker` (Dapr dialect) connected to it over a real TCP
socket, advertising ``STATEFUL_HISTORY`` ("on": the sidecar sends ``cachedHistory``
deltas) or not ("off": every turn carries the whole history), and a
:class:`~durable.grpc.RemoteClient` that starts the workflow over the same socket.
What the sidecar sent per turn comes from ``Sidecar.sent``.

(No ``from __future__ import annotations`` here: the registry reads the payload types
from the annotations, so they must resolve at runtime.)
"""

from time import perf_counter, process_time

import anyio

from durable import ActivityContext, Registry, WorkflowContext
from durable.grpc import RemoteClient, RemoteWorker, Sidecar
from durable.store import ObjectStore

from ._suite import Column, fresh_store, scenario

__all__ = ["SIDECAR_REGISTRY"]

SIDECAR_REGISTRY = Registry()

# label -> (stateful_history, work_stream)
_VARIANTS = {"on": (True, True), "off": (False, True), "unary": (True, False)}
_RATIOS = ("on/off", "on/unary")
_WARM_UP_STEPS = 5

# perf_counter() at the start of every call of ``sidecar_step`` in the current run.
_stamps: list[float] = []
_order = [0]  # runs so far: the variants alternate which goes first
_warmed = [False]


@SIDECAR_REGISTRY.activity
async def sidecar_step(ctx: ActivityContext, i: int) -> int:
    """A trivial async activity that records when it was called."""
    _stamps.append(perf_counter())
    return i


@SIDECAR_REGISTRY.workflow
async def sidecar_sequential(ctx: WorkflowContext, k: int) -> int:
    """``k`` activity steps, one after another."""
    for i in range(k):
        await ctx.call_activity(sidecar_step, i)
    return k


def _tenths(values: list[float]) -> tuple[float, float, float]:
    """The mean of ``values``, of their first tenth and of their last tenth."""
    tenth = max(1, len(values) // 10)
    return (
        sum(values) / len(values),
        sum(values[:tenth]) / tenth,
        sum(values[-tenth:]) / tenth,
    )


async def _run_once(
    store: ObjectStore, k: int, stateful: bool, work_stream: bool = True
) -> dict[str, float]:
    _stamps.clear()
    instance_id = f"sidecar-{k}"
    try:
        async with Sidecar(store, port=0) as sidecar:
            target = f"127.0.0.1:{sidecar.port}"
            worker = RemoteWorker(
                SIDECAR_REGISTRY, target, stateful_history=stateful, work_stream=work_stream
            )
            async with (
                worker,
                RemoteClient(target, registry=SIDECAR_REGISTRY, poll_interval=0.01) as client,
            ):
                with anyio.fail_after(30):
                    await worker.wait_connected()
                started, cpu_started = perf_counter(), process_time()
                await client.start(sidecar_sequential, k, instance_id=instance_id)
                # wait in the sidecar's own client: no polling, so the end is exact
                await sidecar.client.get_handle(instance_id).result()
                ended, cpu = perf_counter(), process_time() - cpu_started
                result = await client.get_handle(instance_id).result()  # over the wire
                fetches = worker.history_fetches
                if worker.streamed != work_stream:
                    raise RuntimeError(f"work stream {worker.streamed}, asked for {work_stream}")
                hits = worker.cache_stats().hits
            sent = [t for t in sidecar.sent if t.instance_id == instance_id]
    finally:
        await store.close()
    stamps = list(_stamps)
    _stamps.clear()
    if result != k or len(stamps) != k:
        raise RuntimeError(f"sidecar run went wrong: result {result}, {len(stamps)} step calls")
    if len(sent) != k + 1:
        raise RuntimeError(f"sidecar run sent {len(sent)} turns for K={k} (expected {k + 1})")
    total = ended - started
    past_mean, past_first, past_last = _tenths([float(t.past) for t in sent])
    size_mean, size_first, size_last = _tenths([float(t.size) for t in sent])
    tenth = max(1, (k - 1) // 10)
    return {
        "total_s": total,
        "cpu_s": cpu,
        "steps_per_s": k / total,
        "first10_step_s": (stamps[tenth] - stamps[0]) / tenth if k > 1 else total,
        "last10_step_s": (stamps[-1] - stamps[-1 - tenth]) / tenth if k > 1 else total,
        "turns": float(len(sent)),
        "past_mean": past_mean,
        "past_first10": past_first,
        "past_last10": past_last,
        "bytes_mean": size_mean,
        "bytes_first10": size_first,
        "bytes_last10": size_last,
        "bytes_total": float(sum(t.size for t in sent)),
        "deltas": float(sum(t.cached is not None for t in sent)),
        "history_fetches": float(fetches),
        "cache_hits": float(hits),
    }


def _measure(store_kind: str, k: int) -> dict[str, float]:
    """Every variant, each on a fresh store; which runs first turns per run."""
    if not _warmed[0]:  # first-call costs (imports, protobuf classes) stay out of figures
        for variant in _VARIANTS.values():
            with fresh_store("memory") as store:
                anyio.run(_run_once, store, _WARM_UP_STEPS, *variant)
        _warmed[0] = True
    labels = list(_VARIANTS)
    turn = _order[0] % len(labels)
    labels = labels[turn:] + labels[:turn]
    _order[0] += 1
    by_variant: dict[str, dict[str, float]] = {}
    for label in labels:
        with fresh_store(store_kind) as store:
            by_variant[label] = anyio.run(_run_once, store, k, *_VARIANTS[label])
    figures: dict[str, float] = {}
    for label, run in by_variant.items():
        figures.update({f"{label}.{key}": value for key, value in run.items()})
    for ratio in _RATIOS:
        top, bottom = (by_variant[label] for label in ratio.split("/"))
        for key, value in top.items():
            if bottom[key]:  # no ratio to a zero (deltas, history fetches): --json stays valid
                figures[f"{ratio}.{key}"] = value / bottom[key]
    return figures


@scenario(
    "sidecar",
    description="one workflow of K sequential trivial activity steps through the gRPC "
    "sidecar (RemoteWorker over loopback), stateful history on vs off, work stream vs "
    "unary completions",
    size_name="K",
    sizes=(1_000,),
    quick_sizes=(100,),
    stores=("memory", "file"),
    variant_name="variant",
    variants=tuple(_VARIANTS),
    ratios=_RATIOS,
    columns=(
        Column("total_s", "total s", ".3f"),
        Column("cpu_s", "CPU s", ".3f"),
        Column("steps_per_s", "steps/s", ",.0f"),
        Column("first10_step_s", "first10% µs/step", ",.0f", 1e6),
        Column("last10_step_s", "last10% µs/step", ",.0f", 1e6),
        Column("past_mean", "past ev/turn", ",.1f"),
        Column("past_first10", "first10%", ",.1f"),
        Column("past_last10", "last10%", ",.1f"),
        Column("bytes_mean", "B/turn", ",.0f"),
        Column("bytes_first10", "first10%", ",.0f"),
        Column("bytes_last10", "last10%", ",.0f"),
        Column("bytes_total", "KB sent", ",.0f", 1e-3),
    ),
    notes=(
        "on = the RemoteWorker advertises STATEFUL_HISTORY (Dapr dialect): the sidecar "
        "sends cachedHistory deltas; off = RemoteWorker(stateful_history=False): every "
        "turn carries its whole history (the worker's cache still spares the replay); "
        "both over durable's work stream (completions and acks on one call); unary = "
        "as on, with RemoteWorker(work_stream=False): GetWorkItems and a unary call per "
        "completion, as against a Dapr sidecar",
        "total = RemoteClient.start() to the end seen by the sidecar's own client; CPU = "
        "this process's CPU time (sidecar, worker and client) over the same span, the "
        "figure that holds on a loaded machine; "
        "µs/step = mean gap between consecutive activity calls over the first/last 10% of "
        "steps; per turn = the K+1 workflow work items the sidecar sent (Sidecar.sent): "
        "pastEvents messages and the encoded WorkItem's bytes, mean and first/last 10% of "
        "turns; KB sent = all of them (1 KB = 1,000 B); activity work items not counted",
        "each run measures every variant on fresh stores, turning which goes first; "
        "on/off, on/unary = the medians of the per-run ratios (< 1x: on sends less or "
        "takes less time); sidecar, worker and client share this process's event loop",
    ),
)
def sidecar(store_kind: str, k: int) -> dict[str, float]:
    return _measure(store_kind, k)
