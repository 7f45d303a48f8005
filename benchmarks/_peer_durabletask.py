"""Peer: the ``durabletask`` Python SDK on its own in-memory test backend.

Imported only in a peer child process (``python -m benchmarks._child peer ...``). The
backend is ``durabletask.testing.create_test_backend(port)``: a grpcio server (10
threads) on a free loopback port, in this process; a ``TaskHubGrpcWorker`` and a
``TaskHubGrpcClient`` from the SDK talk to it over gRPC, with trace spans off.
Orchestrators are generator functions that replay their whole history on every turn;
activities are plain functions returning their input. Nothing is written to disk.

The in-memory backend deadlocks with about 8 or more concurrent blocking waits (each
holds one of its 10 server threads), so scenario 2 starts all N orchestrations and then
waits for them with 4 waiter threads.
"""

from __future__ import annotations

import logging
import queue
import socket
import sys
import threading
from time import perf_counter
from typing import TYPE_CHECKING, Any

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.testing import create_test_backend
from durabletask.worker import TaskHubGrpcWorker

from ._figures import latency_figures, sequential_figures

if TYPE_CHECKING:
    from collections.abc import Generator
    from typing import TypeAlias

    from durabletask import task

    _Turns: TypeAlias = Generator[task.Task[Any], Any, int]

__all__ = ["open_bench"]

CONCURRENT_STEPS = 10
_WAITERS = 4  # well under the ~8 concurrent waits that deadlock the backend
_WAIT_TIMEOUT = 1800.0  # seconds, per orchestration

# perf_counter() at the start of every call of ``dt_bench_step`` in this measurement.
_stamps: list[float] = []


def dt_bench_step(ctx: task.ActivityContext, i: int) -> int:
    """A trivial activity that records when it was called."""
    _stamps.append(perf_counter())
    return i


def dt_bench_noop(ctx: task.ActivityContext, i: int) -> int:
    """A trivial activity."""
    return i


def dt_bench_sequential(ctx: task.OrchestrationContext, k: int) -> _Turns:
    """``k`` activity calls, one after another."""
    for i in range(k):
        yield ctx.call_activity(dt_bench_step, input=i)
    return k


def dt_bench_steps(ctx: task.OrchestrationContext, k: int) -> _Turns:
    """``k`` activity calls that record nothing (for many concurrent orchestrations)."""
    for i in range(k):
        yield ctx.call_activity(dt_bench_noop, input=i)
    return k


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _quiet_logger() -> logging.Logger:
    """Errors only: the SDK logs every call at INFO, and a warning when a worker stops."""
    logger = logging.getLogger("durable-bench.durabletask")
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
    return logger


class DurableTaskBench:
    """A backend, a worker and a client; ``close`` stops all three.

    ``variant`` is ``"in-memory"`` (the SDK's test backend, started here) or
    ``"sidecar=HOST:PORT"`` (a sidecar already listening there, e.g. ``durable
    sidecar``: the ``sidecar-sdk`` scenario)."""

    def __init__(self, variant: str) -> None:
        logging.getLogger("durabletask").setLevel(logging.WARNING)
        if variant == "in-memory":
            port = _free_loopback_port()
            self._backend: Any = create_test_backend(port=port)
            address = f"localhost:{port}"
        elif variant.startswith("sidecar="):
            self._backend = None
            address = variant.removeprefix("sidecar=")
        else:
            raise ValueError(f"unknown durabletask variant {variant!r}")
        logger = _quiet_logger()
        self._worker = TaskHubGrpcWorker(
            host_address=address, logger=logger, emit_trace_spans=False
        )
        orchestrators: list[task.Orchestrator[int, int]] = [dt_bench_sequential, dt_bench_steps]
        for orchestrator in orchestrators:
            self._worker.add_orchestrator(orchestrator)
        for activity in (dt_bench_step, dt_bench_noop):
            self._worker.add_activity(activity)
        self._client = TaskHubGrpcClient(
            host_address=address, logger=logger, emit_trace_spans=False
        )
        try:
            self._worker.start()  # type: ignore[no-untyped-call]
            # warm-up: first-call costs (channels, threads) stay out of the figures
            self._run(dt_bench_steps, 3)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._worker.stop()  # type: ignore[no-untyped-call]
        self._client.close()
        if self._backend is not None:
            self._backend.stop()
            self._backend.reset()

    def _run(self, orchestrator: task.Orchestrator[int, int], k: int) -> None:
        instance_id = self._client.schedule_new_orchestration(orchestrator, input=k)
        self._wait(instance_id, k)

    def _wait(self, instance_id: str, expected: int) -> Any:
        state = self._client.wait_for_orchestration_completion(instance_id, timeout=_WAIT_TIMEOUT)
        if (
            state is None
            or state.runtime_status != OrchestrationStatus.COMPLETED
            or state.serialized_output != str(expected)
        ):
            raise RuntimeError(f"durabletask run went wrong: {state}")
        return state

    def measure(self, scenario: str, size: int) -> dict[str, float]:
        if scenario == "sequential":
            return self._sequential(size)
        if scenario == "concurrent":
            return self._concurrent(size)
        raise ValueError(f"durabletask peer has no scenario {scenario!r}")

    def _sequential(self, k: int) -> dict[str, float]:
        _stamps.clear()
        started = perf_counter()
        self._run(dt_bench_sequential, k)
        ended = perf_counter()
        stamps = list(_stamps)
        _stamps.clear()
        return sequential_figures(stamps, started, ended, k)

    def _concurrent(self, n: int) -> dict[str, float]:
        steps: task.Orchestrator[int, int] = dt_bench_steps
        started = perf_counter()
        pending: queue.SimpleQueue[str] = queue.SimpleQueue()
        for _ in range(n):
            pending.put(self._client.schedule_new_orchestration(steps, input=CONCURRENT_STEPS))
        all_started = perf_counter()
        latencies: list[float] = []
        errors: list[BaseException] = []

        def waiter() -> None:
            try:
                while True:
                    try:
                        instance_id = pending.get_nowait()
                    except queue.Empty:
                        return
                    state = self._wait(instance_id, CONCURRENT_STEPS)
                    # the backend's own clock: creation to completion
                    latencies.append((state.last_updated_at - state.created_at).total_seconds())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=waiter, daemon=True) for _ in range(_WAITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ended = perf_counter()
        if errors:
            raise errors[0]
        figures = latency_figures(latencies, ended - started, n, CONCURRENT_STEPS)
        figures["all_started_s"] = all_started - started
        return figures


def open_bench(variant: str) -> DurableTaskBench:
    """A fresh backend with a worker and a client, warmed up."""
    return DurableTaskBench(variant)
