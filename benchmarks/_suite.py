"""The benchmark framework: a registry of scenarios, stores to run them on, statistics.

A scenario measures one run (``measure(store_kind, size) -> {metric: value}``); the
suite runs it for every store and size ``--repeat`` times and reports the median of
each metric. Add a scenario by decorating a ``measure`` function with :func:`scenario`
in a module that ``benchmarks/__main__.py`` imports.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import durable
from durable.store import LocalStore, MemoryStore

from ._figures import Row, percentile

if TYPE_CHECKING:
    import cProfile
    from collections.abc import Iterator

    from durable.store import ObjectStore

__all__ = [
    "SCENARIOS",
    "ALL_STORES",
    "DEFAULT_STORES",
    "LOCAL_STORES",
    "STORES",
    "ChildFailed",
    "Column",
    "Row",
    "Scenario",
    "environment",
    "fresh_store",
    "median_of_runs",
    "percentile",
    "run_child",
    "run_scenario",
    "scenario",
]

STORES = ("memory", "file")  # every scenario runs on these by default
LOCAL_STORES = (*STORES, "file-fsync")  # file-fsync (survives power loss) only with --store
ALL_STORES = (*LOCAL_STORES, "s3")  # s3: moto_server on loopback, for scenarios that take it
DEFAULT_STORES = (*STORES, "s3")  # what runs without --store (s3 only where a scenario asks)


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
    stores: tuple[str, ...] = LOCAL_STORES
    notes: tuple[str, ...] = ()
    # Side by side: with variants, ``measure`` returns "{variant}.{key}" for each column
    # (and "{ratio}.{key}" for each ratio label, shown as a ratio): one table line each.
    variant_name: str = ""
    variants: tuple[str, ...] = ()
    ratios: tuple[str, ...] = ()


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
    stores: tuple[str, ...] = LOCAL_STORES,
    notes: tuple[str, ...] = (),
    variant_name: str = "",
    variants: tuple[str, ...] = (),
    ratios: tuple[str, ...] = (),
) -> Callable[[Callable[[str, int], dict[str, float]]], Callable[[str, int], dict[str, float]]]:
    """Register ``measure(store_kind, size) -> {metric: value}`` as scenario ``name``.

    With ``variants`` (e.g. ``("on", "off")``, headed ``variant_name``) each run
    measures every variant: ``measure`` returns ``"{variant}.{column key}"``, and
    ``"{label}.{column key}"`` for each of ``ratios`` (e.g. ``"on/off"``, printed as
    a ratio); the table shows one line per variant and ratio.
    """

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
            variant_name=variant_name,
            variants=variants,
            ratios=ratios,
        )
        return measure

    return register


# -- stores -----------------------------------------------------------------------------


_SESSION_ENV = "DURABLE_BENCH_DIR"


def _session_dir() -> str:
    """The directory that holds this suite run's file stores, removed when the run ends.

    Stores are not deleted between measurements: on ext4 without a journal (the
    reference machine's disk), a new inode is not taken from those freed in the last
    few seconds, and each file creation scans past them, so deleting one run's tens of
    thousands of files makes the next run's file creations several times slower. Child
    processes (``run_child`` passes the environment on) put their stores here too.
    Set ``DURABLE_BENCH_DIR`` to an existing directory to keep the stores there (the
    suite then leaves it alone, so several runs in a row free no inodes at all).
    """
    path = os.environ.get(_SESSION_ENV)
    if path is None:
        path = tempfile.mkdtemp(prefix="durable-bench-")
        os.environ[_SESSION_ENV] = path
        atexit.register(shutil.rmtree, path, True)
    return path


@contextlib.contextmanager
def fresh_store(kind: str) -> Iterator[ObjectStore]:
    """A new, empty store: a private MemoryStore, a LocalStore in a new directory under
    the run's session directory (see :func:`_session_dir`), or an S3Store on a fresh
    bucket of a moto_server on loopback."""
    if kind == "s3":
        from ._s3 import moto_s3_store

        yield moto_s3_store()
        return
    if kind == "memory":
        yield MemoryStore("memory://")
        return
    if kind in ("file", "file-fsync"):
        root = tempfile.mkdtemp(prefix="store-", dir=_session_dir())
        fsync = kind == "file-fsync"
        yield LocalStore(root, url=f"file://{root}{'?fsync=1' if fsync else ''}", fsync=fsync)
        return
    raise ValueError(f"unknown store kind {kind!r}: use one of {', '.join(ALL_STORES)}")


# -- statistics -------------------------------------------------------------------------


def median_of_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each metric over the runs that have it."""
    keys = list(runs[0])
    return {key: statistics.median(run[key] for run in runs if key in run) for key in keys}


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
            rows.append(Row(store, size, median_of_runs(runs), runs))
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


# -- child processes --------------------------------------------------------------------


class ChildFailed(RuntimeError):
    """A measurement in a child process failed; the message ends with its stderr tail."""


def run_child(
    args: list[str], *, timeout: float, progress: Callable[[str], None] | None = None
) -> Any:
    """Run ``python -m benchmarks._child ARGS`` and return the JSON it prints last.

    A child process keeps a measurement apart from the parent's heap (RSS figures) and
    from other runtimes' threads (peers). Lines it writes to stderr that start with
    ``..`` are passed to ``progress``; others are kept to explain a failure.
    """
    import collections
    import threading

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._child", *args],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        tail: collections.deque[str] = collections.deque(maxlen=25)
        try:
            assert proc.stderr is not None
            for raw in proc.stderr:
                line = raw.rstrip("\n")
                if line.startswith("..") and progress is not None:
                    progress(line[2:].strip())
                elif line.strip():
                    tail.append(line)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        lines = out.read().decode("utf-8", "replace").strip().splitlines()
    if code != 0 or not lines:
        why = f"killed after {timeout:.0f} s" if code == -9 else f"exit code {code}"
        detail = "\n".join(tail) or "(no output)"
        raise ChildFailed(f"child {' '.join(args[:2])} failed ({why}):\n{detail}")
    return json.loads(lines[-1])


def free_port() -> int:
    """A free TCP port on loopback."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(proc: subprocess.Popen[Any], port: int, what: str) -> None:
    """Block until ``proc`` accepts connections on loopback ``port``; RuntimeError if it
    exits first or never does."""
    import socket

    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            try:  # paces the polling (a refused connect returns at once) and sees an exit
                code = proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"{what} exited ({code}) before listening") from None
    raise RuntimeError(f"{what} does not listen on {port}")
