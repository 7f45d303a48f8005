"""CPU time and profiled calls per step of the engine on ``memory://``, this tree
against baseline trees, each run in a child process of its own.

``python -m benchmarks.stepcpu BASE_DIR [BASE_DIR...] [--rounds 5]`` runs, per round
and tree (the order turning every round, so drift in the machine's load falls on all
alike), one sequential workflow of K steps and N concurrent workflows of 10 steps,
timing each with ``process_time`` (CPU of this process only: the figure a loaded
machine moves least), then once more under cProfile to count calls per step (a
deterministic figure: compare it function by function with ``--profile``). Prints
every run, the median per tree and each tree's CPU per step over the first's (< 1x:
less CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = """
import anyio, cProfile, json, pstats, sys
from time import process_time
from durable import Runtime
from durable.store import MemoryStore
from benchmarks._scenarios import REGISTRY, bench_sequential, bench_steps

K, N, PROFILE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"

async def sequential(k, prof=None):
    async with Runtime(REGISTRY, store=MemoryStore("memory://")) as rt:
        prof and prof.enable()
        cpu = process_time()
        assert await (await rt.start(bench_sequential, k)) == k
        cpu = process_time() - cpu
        prof and prof.disable()
        return cpu

async def concurrent(n, prof=None):
    async with Runtime(REGISTRY, store=MemoryStore("memory://")) as rt:
        async def one(i):
            assert await (await rt.start(bench_steps, 10, instance_id=f"c-{i}")) == 10
        prof and prof.enable()
        cpu = process_time()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        cpu = process_time() - cpu
        prof and prof.disable()
        return cpu

def calls(fn, arg):
    prof = cProfile.Profile()
    anyio.run(fn, arg, prof)
    return sum(nc for (_, nc, _, _, _) in pstats.Stats(prof).stats.values())

anyio.run(sequential, 50)  # warm-up
out = {"seq_us": anyio.run(sequential, K) / K * 1e6,
       "con_us": anyio.run(concurrent, N) / (N * 10) * 1e6}
if PROFILE:
    out["seq_calls"] = calls(sequential, K) / K
    out["con_calls"] = calls(concurrent, N) / (N * 10)
print(json.dumps(out))
"""


def _run(tree: Path, k: int, n: int, profile: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(k), str(n), "1" if profile else "0"],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bases", nargs="+", type=Path, help="baseline trees")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-k", type=int, default=1000, help="sequential steps")
    parser.add_argument("-n", type=int, default=500, help="concurrent workflows")
    args = parser.parse_args()
    trees = [*args.bases, Path(__file__).resolve().parent.parent]
    runs: dict[Path, list[dict[str, float]]] = {tree: [] for tree in trees}
    print(f"load average {os.getloadavg()}")
    for round_ in range(args.rounds):
        order = trees[round_ % len(trees) :] + trees[: round_ % len(trees)]
        for tree in order:
            figures = _run(tree, args.k, args.n, profile=round_ == 0)
            runs[tree].append(figures)
            print(f"  round {round_ + 1} {tree}: {figures}", flush=True)
    print(f"load average {os.getloadavg()}")
    first = trees[0]
    medians = {
        tree: {key: statistics.median(r[key] for r in rs if key in r) for key in rs[0]}
        for tree, rs in runs.items()
    }
    for tree in trees:
        m = medians[tree]
        ratios = {key: m[key] / medians[first][key] for key in ("seq_us", "con_us")}
        print(
            f"{tree}: CPU us/step seq {m['seq_us']:.1f} con {m['con_us']:.1f}; "
            f"calls/step seq {m['seq_calls']:.1f} con {m['con_calls']:.1f}; "
            f"CPU over {first.name}'s: seq {ratios['seq_us']:.2f}x con {ratios['con_us']:.2f}x"
        )


if __name__ == "__main__":
    main()
