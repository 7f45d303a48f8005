"""The benchmark framework: a registry of scenarios, stores to run them on, statistics.

A scenario measures one run (``measure(store_kind, size) -> {metric: value}``); the
suite runs it for every store and size ``--repeat`` times and reports the median of
each metric. Add a scenario by decorating a ``measure`` function with :func:`scenario`
in a module that ``benchmarks/__main__.py`` imports.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import durable
from durable.store import LocalStore, MemoryStore

if TYPE_CHECKING:
    import cProfile
    from collections.abc import Iterator

    from durable.store import ObjectStore

__all__ = [
    "SCENARIOS",
    "STORES",
    "Column",
    "Scenario",
    "environment",
    "fresh_store",
    "percentile",
    "run_scenario",
    "scenario",
]

STORES = ("memory", "file")


@dataclass(frozen=True)
class Column:
    """One metric as a table shows it: key in the result, header, and format spec."""

    key: str
    header: str
    fmt: str = ",.0f"
    scale: float = 1.0  # multiply before formatting (1e6 shows seconds as µs)


@dataclass
class Scenario:
    """A registered benchmark."""

    name: str
    description: str
    measure: Callable[[str, int], dict[str, float]]
    size_name: str  # what the size parameter means ("K" steps, "N" workflows)
    sizes: tuple[int, ...]
    quick_sizes: tuple[int, ...]
    columns: tuple[Column, ...]
    repeatable: bool = True  # False: deterministic figures, one run is enough
    stores: tuple[str, ...] = STORES
    notes: tuple[str, ...] = ()


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    *,
    description: str,
    size_name: str,
    sizes: tuple[int, ...],
    quick_sizes: tuple[int, ...] | None = None,
    columns: tuple[Column, ...],
    repeatable: bool = True,
    stores: tuple[str, ...] = STORES,
    notes: tuple[str, ...] = (),
) -> Callable[[Callable[[str, int], dict[str, float]]], Callable[[str, int], dict[str, float]]]:
    """Register ``measure(store_kind, size) -> {metric: value}`` as scenario ``name``."""

    def register(
        measure: Callable[[str, int], dict[str, float]],
    ) -> Callable[[str, int], dict[str, float]]:
        if name in SCENARIOS:
            raise ValueError(f"benchmark scenario {name!r} is registered twice")
        SCENARIOS[name] = Scenario(
            name=name,
            description=description,
            measure=measure,
            size_name=size_name,
            sizes=sizes,
            quick_sizes=quick_sizes if quick_sizes is not None else sizes,
            columns=columns,
            repeatable=repeatable,
            stores=stores,
            notes=notes,
        )
        return measure

    return register


# -- stores -----------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_store(kind: str) -> Iterator[ObjectStore]:
    """A new, empty store: a private MemoryStore, or a LocalStore in a new temp dir."""
    if kind == "memory":
        yield MemoryStore("memory://")
        return
    if kind == "file":
        root = tempfile.mkdtemp(prefix="durable-bench-")
        try:
            yield LocalStore(root, url=f"file://{root}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    raise ValueError(f"unknown store kind {kind!r}: use one of {', '.join(STORES)}")


# -- statistics -------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """The ``pct``-th percentile (0-100) by linear interpolation between ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _median_of_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = list(runs[0])
    return {key: statistics.median(run[key] for run in runs if key in run) for key in keys}


@dataclass
class Row:
    """The figures of one (store, size) cell: the median of its runs, and the runs."""

    store: str
    size: int
    median: dict[str, float]
    runs: list[dict[str, float]] = field(default_factory=list)


def run_scenario(
    sc: Scenario,
    *,
    stores: tuple[str, ...],
    sizes: tuple[int, ...],
    repeat: int,
    progress: Callable[[str], None],
    profiler: cProfile.Profile | None = None,
) -> list[Row]:
    """Run ``sc`` for every store and size, ``repeat`` times each (once if not repeatable).

    With ``profiler``, profiling is on during the measurements only.
    """
    rows: list[Row] = []
    times = repeat if sc.repeatable else 1
    for store in stores:
        if store not in sc.stores:
            continue
        for size in sizes:
            runs: list[dict[str, float]] = []
            for i in range(times):
                progress(f"{sc.name}: store={store} {sc.size_name}={size:,} run {i + 1}/{times}")
                gc.collect()
                if profiler is not None:
                    profiler.enable()
                try:
                    runs.append(sc.measure(store, size))
                finally:
                    if profiler is not None:
                        profiler.disable()
            rows.append(Row(store, size, _median_of_runs(runs), runs))
    return rows


# -- the environment header -------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def _source_digest() -> str:
    """A short hash of durable's source files, so figures name the code they measured."""
    root = Path(durable.__file__).resolve().parent
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "?"


def environment() -> dict[str, Any]:
    """What the figures were measured on (wall time is fine here)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": " ".join(platform.python_build()),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "durable": durable.__version__,
        "git": _git("describe", "--always", "--dirty"),
        "durable_source_digest": _source_digest(),
        "anyio": _version("anyio"),
        "msgspec": _version("msgspec"),
        "temp_dir": tempfile.gettempdir(),
        "loadavg_at_start": list(os.getloadavg()),
        "argv": sys.argv,
    }
