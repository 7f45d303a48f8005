"""Measure flush strategies for a batch of new objects on this disk (issue 18).

``python -m benchmarks.flush [--batches 1,10,100] [--rounds N] [--dir PATH]``, or
``python -m benchmarks.flush --deletes 20000`` for the cost of creating files right after
deleting many (see :func:`delete_probe`).

Each strategy makes B new objects of 1 KiB, each in a directory of its own (as turns of
different instances are), durable before it returns, and the figure is objects per
second (median of rounds). The disk's own figures come first: one file created and
fsynced with its directory, and one append with ``fdatasync``.

* serial: today's order per object: write temp, fsync it, link, fsync its directory;
* parallel: the same fsyncs, but each phase's fsyncs spread over 8 threads (the file
  system merges concurrent journal commits);
* syncfs: write every temp, ``syncfs``, link every one, ``syncfs`` (two flushes a batch);
* wal: append every object to one segment file and ``fdatasync`` it once (a lower bound:
  the objects would still have to be materialized and the segment recycled).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import os
import shutil
import statistics
import tempfile
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

_DATA = os.urandom(1024)
_libc = ctypes.CDLL(None, use_errno=True)


def _syncfs(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")
    finally:
        os.close(fd)


def _fsync_path(path: str, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd) if directory else os.fdatasync(fd)
    finally:
        os.close(fd)


def _write(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        os.write(fd, _DATA)
    finally:
        os.close(fd)


def _dirs(root: str, b: int, round_: int) -> list[str]:
    out = [f"{root}/r{round_}-{i}" for i in range(b)]
    for d in out:
        os.mkdir(d)
    _syncfs(root)  # directories exist and are durable before timing
    return out


def serial(dirs: list[str], pool: concurrent.futures.Executor) -> None:
    for d in dirs:
        _write(f"{d}/.tmp")
        _fsync_path(f"{d}/.tmp")
        os.link(f"{d}/.tmp", f"{d}/obj")
        _fsync_path(d, directory=True)


def parallel(dirs: list[str], pool: concurrent.futures.Executor) -> None:
    for d in dirs:
        _write(f"{d}/.tmp")
    list(pool.map(_fsync_path, [f"{d}/.tmp" for d in dirs]))
    for d in dirs:
        os.link(f"{d}/.tmp", f"{d}/obj")
    list(pool.map(lambda d: _fsync_path(d, directory=True), dirs))


def syncfs(dirs: list[str], pool: concurrent.futures.Executor) -> None:
    for d in dirs:
        _write(f"{d}/.tmp")
    _syncfs(dirs[0])
    for d in dirs:
        os.link(f"{d}/.tmp", f"{d}/obj")
    _syncfs(dirs[0])


def wal(dirs: list[str], pool: concurrent.futures.Executor) -> None:
    fd = os.open(f"{os.path.dirname(dirs[0])}/segment", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, b"".join(_DATA for _ in dirs))
        os.fdatasync(fd)
    finally:
        os.close(fd)


STRATEGIES: dict[str, Callable[[list[str], concurrent.futures.Executor], None]] = {
    "serial": serial,
    "parallel": parallel,
    "syncfs": syncfs,
    "wal": wal,
}


def disk_figures(root: str, n: int) -> dict[str, float]:
    """The disk's own rates: create+fsync+dir fsync, and fdatasync'd appends, per second."""
    t0 = time.perf_counter()
    for i in range(n):
        path = f"{root}/own-{i}"
        _write(path)
        _fsync_path(path)
        _fsync_path(root, directory=True)
    creates = n / (time.perf_counter() - t0)
    fd = os.open(f"{root}/own-log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    t0 = time.perf_counter()
    for _ in range(n):
        os.write(fd, _DATA[:200])
        os.fdatasync(fd)
    appends = n / (time.perf_counter() - t0)
    os.close(fd)
    return {"create_fsync_per_s": creates, "append_fdatasync_per_s": appends}


def create_fsync_seconds(directory: str, n: int = 30) -> float:
    """The disk's own time for one new file fsynced with its directory (median of ``n``),
    measured in a dot-named folder of ``directory`` that is removed afterwards."""
    probe = f"{directory}/.disk-probe"
    os.makedirs(probe, exist_ok=True)
    times = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            _write(f"{probe}/{i}")
            _fsync_path(f"{probe}/{i}")
            _fsync_path(probe, directory=True)
            times.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return statistics.median(times)


def _creates(directory: str, n: int) -> float:
    """Mean µs to create (and write) ``n`` new files in a new ``directory``."""
    os.mkdir(directory)
    t0 = time.perf_counter()
    for i in range(n):
        _write(f"{directory}/{i}")
    return (time.perf_counter() - t0) / n * 1e6


def delete_probe(base: str, n: int) -> None:
    """Print the cost of a file creation fresh and right after deleting ``n`` files (on
    ext4 without a journal the allocator reads past every inode freed in the last
    half-minute or so: what makes a store slow while ended instances are purged)."""
    fresh = _creates(f"{base}/fresh", n)
    shutil.rmtree(f"{base}/fresh")
    after = _creates(f"{base}/after", n)
    print(f"create: {fresh:,.1f} µs fresh, {after:,.1f} µs right after deleting {n:,} files")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,10,100")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--deletes", type=int, default=0, help="only the delete probe, N files")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="flush-", dir=args.dir)
    try:
        if args.deletes:
            delete_probe(base, args.deletes)
            return
        own = disk_figures(base, 200)
        print(
            f"disk: {own['create_fsync_per_s']:,.0f} creates+fsync+dir fsync/s, "
            f"{own['append_fdatasync_per_s']:,.0f} appends+fdatasync/s "
            f"(one create = {1e6 / own['create_fsync_per_s']:,.0f} µs)"
        )
        print(f"{'batch':>6} " + " ".join(f"{name:>12}" for name in STRATEGIES) + "  (objects/s)")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for b in [int(x) for x in args.batches.split(",")]:
                figures = []
                for name, fn in STRATEGIES.items():
                    rates = []
                    for r in range(args.rounds):
                        root = f"{base}/{name}-{b}-{r}"
                        os.mkdir(root)
                        dirs = _dirs(root, b, r)
                        t0 = time.perf_counter()
                        fn(dirs, pool)
                        rates.append(b / (time.perf_counter() - t0))
                    figures.append(statistics.median(rates))
                print(f"{b:>6} " + " ".join(f"{f:>12,.0f}" for f in figures))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
