"""Measure the local store's file patterns under churn, by design (issue 18).

``python -m benchmarks.churnfs [--instances 2000] [--rounds 5] [--dir PATH]``

Each round makes N instances the way ``file://`` lays them out (a directory with a
``log`` directory; per instance ``_FILES`` objects, each a temp file linked under its
name, ``_REWRITES`` of them rewriting ``meta`` by exchange), then deletes the previous
round's instances, as the ``churn`` scenario does with the real store. Printed per
design: microseconds per object written in round 1 and in the last round, their ratio,
and microseconds per instance deleted. On ext4 without a journal a new inode is not
taken from those freed in the last minute or so, so every file creation scans past
them: the designs differ in how many inodes they free and take.

* ``today``: create every temp file, unlink deleted files and replaced versions;
* ``batched``: the same, but a round's deletions run together at its end;
* ``fewer``: a quarter of the files per instance (the log in one file, say);
* ``pool``: deleted files and replaced versions are renamed into a pool directory and
  renamed back as the next temp files, written over in place (no inode freed or taken).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time

_FILES = 13  # objects an instance writes in a 5-step workflow (counted on file://)
_REWRITES = 3  # of which rewrites of an existing one (meta)
_DATA = os.urandom(300)


class _Design:
    """One layout's way to make and delete an instance's files."""

    def __init__(self, base: str, *, pool: bool, files: int, batched: bool) -> None:
        self.base, self.pool, self.files, self.batched = base, pool, files, batched
        self.free: list[str] = []
        self.freed = 0
        self.later: list[str] = []
        os.makedirs(f"{base}/.free")

    def _release(self, path: str) -> None:
        if self.pool:
            self.freed += 1
            name = f"{self.base}/.free/{self.freed}"
            os.rename(path, name)
            self.free.append(name)
        elif self.batched:
            self.later.append(path)
        else:
            os.unlink(path)

    def _temp(self, directory: str, n: int) -> str:
        temp = f"{directory}/.tmp-{n}"
        if self.free:
            os.rename(self.free.pop(), temp)
            fd = os.open(temp, os.O_WRONLY)
            os.pwrite(fd, _DATA, 0)
            os.ftruncate(fd, len(_DATA))
        else:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            os.write(fd, _DATA)
        os.close(fd)
        return temp

    def make(self, name: str) -> None:
        directory = f"{self.base}/{name}/log"
        os.makedirs(directory)
        for n in range(self.files):
            temp = self._temp(directory, n)
            if n < _REWRITES and n:
                os.replace(temp, f"{directory}/../meta.new")  # stands in for an exchange
                os.rename(f"{directory}/../meta", f"{directory}/.old{n}")
                os.rename(f"{directory}/../meta.new", f"{directory}/../meta")
                self._release(f"{directory}/.old{n}")
            elif n == 0:
                os.link(temp, f"{directory}/../meta")
                os.unlink(temp)
            else:
                os.link(temp, f"{directory}/{n:012d}")
                os.unlink(temp)

    def delete(self, name: str) -> None:
        top = f"{self.base}/{name}"
        for entry in os.listdir(f"{top}/log"):
            if entry[0] == ".":
                continue  # a replaced version released already (batched: at the end)
            self._release(f"{top}/log/{entry}")
        self._release(f"{top}/meta")
        if not self.batched:
            os.rmdir(f"{top}/log")
            os.rmdir(top)
        else:
            self.later.extend((f"{top}/log", top))

    def end_round(self) -> None:
        for path in self.later:
            (os.rmdir if os.path.isdir(path) else os.unlink)(path)
        self.later = []


DESIGNS = {
    "today": {"pool": False, "files": _FILES, "batched": False},
    "batched": {"pool": False, "files": _FILES, "batched": True},
    "fewer": {"pool": False, "files": 4, "batched": False},
    "pool": {"pool": True, "files": _FILES, "batched": False},
}


def _cpu() -> float:
    """This process's CPU time (user and system): the inode scans are system time, and
    unlike wall time it does not count waiting on a disk other processes share."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(base: str, design: str, n: int, rounds: int) -> dict[str, float]:
    """Rounds of n instances made then the previous round's deleted; the figures."""
    d = _Design(base, **DESIGNS[design])  # type: ignore[arg-type]
    made: list[float] = []
    made_cpu: list[float] = []
    deleted: list[float] = []
    previous: list[str] = []
    for r in range(rounds):
        names = [f"r{r}-{i}" for i in range(n)]
        t0, c0 = time.perf_counter(), _cpu()
        for name in names:
            d.make(name)
        made.append((time.perf_counter() - t0) / (n * d.files) * 1e6)
        made_cpu.append((_cpu() - c0) / (n * d.files) * 1e6)
        t0 = time.perf_counter()
        for name in previous:
            d.delete(name)
        d.end_round()
        if previous:
            deleted.append((time.perf_counter() - t0) / n * 1e6)
        previous = names
    return {
        "first_us": made[0],
        "last_us": made[-1],
        "last_over_first": made[-1] / made[0],
        "first_cpu_us": made_cpu[0],
        "last_cpu_us": made_cpu[-1],
        "cpu_last_over_first": made_cpu[-1] / made_cpu[0],
        "delete_us": statistics.median(deleted),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    print(
        f"{'design':>8} {'round 1 µs/obj':>15} {'last µs/obj':>12} {'last/first':>11} "
        f"{'delete µs/inst':>15}  (median of {args.repeat}, designs interleaved)"
    )
    results: dict[str, list[dict[str, float]]] = {name: [] for name in DESIGNS}
    for _ in range(args.repeat):
        for name in DESIGNS:
            base = tempfile.mkdtemp(prefix=f"churnfs-{name}-", dir=args.dir)
            try:
                results[name].append(run(base, name, args.instances, args.rounds))
            finally:
                shutil.rmtree(base, ignore_errors=True)
            print(
                f"  .. {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[name][-1].items()),
                flush=True,
            )
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{name:>8} {med['first_us']:>15.1f} {med['last_us']:>12.1f} "
            f"{med['last_over_first']:>11.2f} {med['first_cpu_us']:>10.1f} "
            f"{med['last_cpu_us']:>12.1f} {med['cpu_last_over_first']:>15.2f} "
            f"{med['delete_us']:>15.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
