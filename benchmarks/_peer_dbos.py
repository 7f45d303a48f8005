"""Peer: DBOS Transact (the ``dbos`` package) with a SQLite system database.

Imported only in a peer child process (``python -m benchmarks._child peer ...``). DBOS
runs in-process, as a library: ``DBOS(config=...)`` then ``DBOS.launch()``, no server.
Workflows and steps are DBOS's synchronous kind (``@DBOS.workflow()``, ``@DBOS.step()``;
every workflow runs in a thread of DBOS's executor), which is its main, documented
mode; a step is a plain function returning its input.

Variants:

* ``default``: ``system_database_url = sqlite:///<temp dir>/dbos.sqlite``, as DBOS sets
  SQLite up itself: rollback journal, ``synchronous=FULL`` (each commit is fsynced, so it
  survives power loss);
* ``nosync``: the same, through an engine of our own that sets ``PRAGMA synchronous=OFF``
  on top of what DBOS sets on its connections (IMMEDIATE transactions, busy timeout,
  foreign keys): commits reach the OS but are not fsynced, so they survive a process
  crash, not power loss (the guarantee of durable's ``file://``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from time import perf_counter
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig

from ._figures import latency_figures, sequential_figures

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = ["open_bench"]

CONCURRENT_STEPS = 10

# perf_counter() at the start of every call of ``dbos_bench_step`` in this measurement.
_stamps: list[float] = []


@DBOS.step()
def dbos_bench_step(i: int) -> int:
    """A trivial step that records when it was called."""
    _stamps.append(perf_counter())
    return i


@DBOS.step()
def dbos_bench_noop(i: int) -> int:
    """A trivial step."""
    return i


@DBOS.workflow()
def dbos_bench_sequential(k: int) -> int:
    """``k`` steps, one after another."""
    for i in range(k):
        dbos_bench_step(i)
    return k


@DBOS.workflow()
def dbos_bench_steps(k: int) -> int:
    """``k`` steps that record nothing (for many concurrent workflows)."""
    for i in range(k):
        dbos_bench_noop(i)
    return k


def _nosync_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # what DBOS's own SQLite engine sets (dbos/_sys_db_sqlite.py), then synchronous=OFF
        dbapi_conn.isolation_level = "IMMEDIATE"
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA synchronous=OFF")

    return engine


class DbosBench:
    """A launched DBOS on a fresh SQLite file; ``close`` destroys both."""

    def __init__(self, variant: str) -> None:
        if variant not in ("default", "nosync"):
            raise ValueError(f"unknown DBOS variant {variant!r}")
        for name in ("dbos", "sqlalchemy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._dir = tempfile.mkdtemp(prefix="durable-bench-dbos-")
        url = f"sqlite:///{self._dir}/dbos.sqlite"
        config: DBOSConfig = {"name": "durable-bench", "log_level": "WARNING"}
        self._engine: sa.Engine | None = None
        if variant == "nosync":
            self._engine = _nosync_engine(url)
            config["system_database_engine"] = self._engine
        else:
            config["system_database_url"] = url
        try:
            DBOS(config=config)
            DBOS.launch()
            # warm-up: first-call costs stay out of the figures
            DBOS.start_workflow(dbos_bench_steps, 3).get_result()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        DBOS.destroy()
        if self._engine is not None:
            self._engine.dispose()
        shutil.rmtree(self._dir, ignore_errors=True)

    def measure(self, scenario: str, size: int) -> dict[str, float]:
        if scenario == "sequential":
            return self._sequential(size)
        if scenario == "concurrent":
            return self._concurrent(size)
        raise ValueError(f"DBOS peer has no scenario {scenario!r}")

    def _sequential(self, k: int) -> dict[str, float]:
        _stamps.clear()
        started = perf_counter()
        result = DBOS.start_workflow(dbos_bench_sequential, k).get_result()
        ended = perf_counter()
        stamps = list(_stamps)
        _stamps.clear()
        if result != k:
            raise RuntimeError(f"DBOS sequential run went wrong: result {result}")
        return sequential_figures(stamps, started, ended, k)

    def _concurrent(self, n: int) -> dict[str, float]:
        starts: list[float] = []
        ends: dict[int, float] = {}

        def finished(i: int) -> Any:
            def record(_: Future[Any]) -> None:
                ends.setdefault(i, perf_counter())

            return record

        started = perf_counter()
        handles = []
        for i in range(n):
            starts.append(perf_counter())
            handle = DBOS.start_workflow(dbos_bench_steps, CONCURRENT_STEPS)
            # the local handle wraps the executor's Future: its completion is the moment
            # the result is there (DBOS's SQLite timestamps have 1-second resolution)
            future: Future[Any] | None = getattr(handle, "future", None)
            if future is not None:
                future.add_done_callback(finished(i))
            handles.append(handle)
        all_started = perf_counter()
        for i, handle in enumerate(handles):
            if handle.get_result() != CONCURRENT_STEPS:
                raise RuntimeError("DBOS concurrent run went wrong")
            ends.setdefault(i, perf_counter())
        ended = perf_counter()
        latencies = [ends[i] - starts[i] for i in range(n)]
        figures = latency_figures(latencies, ended - started, n, CONCURRENT_STEPS)
        figures["all_started_s"] = all_started - started
        return figures


def open_bench(variant: str) -> DbosBench:
    """A fresh DBOS (fresh SQLite file), launched and warmed up."""
    return DbosBench(variant)
