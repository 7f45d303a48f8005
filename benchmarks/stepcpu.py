"""CPU time, calls and bytecode ops per step of the engine, this tree against
baseline trees, each run in a child process of its own.

``python -m benchmarks.stepcpu BASE_DIR [BASE_DIR...] [--rounds 5] [--store memory file]
[--profile]`` runs, per store, round and tree (the order of the trees turning every
round, so drift in the machine's load falls on all alike), one sequential workflow of
K steps and N concurrent workflows of 10 steps, timing each with ``process_time`` (CPU
of this process and its threads: the figure a loaded machine moves least). ``file`` is
``file://`` without fsync, on a fresh directory per run. In the first round each tree
also runs both once more under a tracer counting Python calls and bytecode ops per
step (deterministic figures, whatever the load). Prints every run, the median per
tree and each tree's CPU per step over the first's (< 1x: less CPU); with
``--profile``, the functions whose ops per step differ from the first tree's, matched
by name (modules move between trees).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import anyio, json, sys, tempfile
from collections import Counter
from time import process_time
from durable import Runtime
from benchmarks._scenarios import REGISTRY, bench_sequential, bench_steps

K, N, PROFILE, STORE, TMP = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", *sys.argv[4:]
ops, calls = Counter(), Counter()

def tracer(frame, event, arg):
    code = frame.f_code
    path = code.co_filename
    key = f"{path.rpartition('/durable/' if '/durable/' in path else '/')[2]}:{code.co_name}"
    calls[key] += 1
    frame.f_trace_opcodes = True
    def local(frame, event, arg):
        if event == "opcode":
            ops[key] += 1
        return local
    return local

def store():
    return "memory://" if STORE == "memory" else "file://" + tempfile.mkdtemp(dir=TMP)

async def sequential(k, trace=False):
    async with Runtime(REGISTRY, store=store()) as rt:
        trace and sys.settrace(tracer)
        cpu = process_time()
        assert await (await rt.start(bench_sequential, k)) == k
        cpu = process_time() - cpu
        sys.settrace(None)
        return cpu

async def concurrent(n, trace=False):
    async with Runtime(REGISTRY, store=store()) as rt:
        async def one(i):
            assert await (await rt.start(bench_steps, 10, instance_id=f"c-{i}")) == 10
        trace and sys.settrace(tracer)
        cpu = process_time()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        cpu = process_time() - cpu
        sys.settrace(None)
        return cpu

def traced(fn, size, steps):
    ops.clear(); calls.clear()
    anyio.run(fn, size, True)
    funcs = {key: (calls[key] / steps, ops[key] / steps) for key in calls}
    return sum(calls.values()) / steps, sum(ops.values()) / steps, funcs

anyio.run(sequential, 50)  # warm-up
out = {"seq_us": anyio.run(sequential, K) / K * 1e6,
       "con_us": anyio.run(concurrent, N) / (N * 10) * 1e6}
if PROFILE:  # fewer steps: the tracer is slow, and its figures do not need many
    out["seq_calls"], out["seq_ops"], out["seq_funcs"] = traced(sequential, K // 5, K // 5)
    out["con_calls"], out["con_ops"], out["con_funcs"] = traced(concurrent, N // 5, N // 5 * 10)
print(json.dumps(out))
"""

Funcs = dict[str, tuple[float, float]]


def _run(tree: Path, store: str, k: int, n: int, profile: bool, tmp: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(k), str(n), "1" if profile else "0", store, tmp],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _by_name(funcs: Funcs) -> dict[str, tuple[float, float, str]]:
    """Calls and ops per step per function name, summed over the modules defining it."""
    named: dict[str, tuple[float, float, str]] = {}
    for key, (calls, ops) in funcs.items():
        module, _, name = key.rpartition(":")
        c, o, modules = named.get(name, (0.0, 0.0, ""))
        named[name] = (c + calls, o + ops, f"{modules},{module}" if modules else module)
    return {name: (c, o, _few(modules)) for name, (c, o, modules) in named.items()}


def _few(modules: str) -> str:
    """At most three of a function name's modules (``__init__`` has dozens)."""
    names = sorted(modules.split(","))
    return ",".join(names[:3]) + (f",+{len(names) - 3}" if len(names) > 3 else "")


def _diff(label: str, base: Funcs, this: Funcs, top: int) -> None:
    """Print the functions whose ops per step differ most between two trees."""
    b, t = _by_name(base), _by_name(this)
    rows = []
    for name in b.keys() | t.keys():
        bc, bo, _ = b.get(name, (0.0, 0.0, ""))
        tc, to, modules = t.get(name, (0.0, 0.0, ""))
        rows.append((to - bo, bo, to, bc, tc, name, modules or b[name][2]))
    rows.sort(key=lambda r: -abs(r[0]))
    print(f"  {label}: ops/step (base -> this), calls/step (base -> this)")
    for delta, bo, to, bc, tc, name, modules in rows[:top]:
        figures = f"{delta:+7.1f} ({bo:6.1f} -> {to:6.1f})  {bc:5.2f} -> {tc:5.2f}"
        print(f"    {figures}  {name} [{modules}]")


def _median(runs: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs if key in r)  # type: ignore[arg-type]


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bases", nargs="+", type=Path, help="baseline trees")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-k", type=int, default=1000, help="sequential steps")
    parser.add_argument("-n", type=int, default=500, help="concurrent workflows")
    parser.add_argument("--store", nargs="+", choices=("memory", "file"), default=["memory"])
    parser.add_argument("--profile", action="store_true", help="diff ops against the first")
    parser.add_argument("--top", type=int, default=30, help="rows of each --profile diff")
    args = parser.parse_args()
    trees = [*args.bases, Path(__file__).resolve().parent.parent]
    first = trees[0]
    print(f"load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="stepcpu-") as tmp:
        for store in args.store:
            runs: dict[Path, list[dict[str, object]]] = {tree: [] for tree in trees}
            for round_ in range(args.rounds):
                order = trees[round_ % len(trees) :] + trees[: round_ % len(trees)]
                for tree in order:
                    figures = _run(tree, store, args.k, args.n, round_ == 0, tmp)
                    runs[tree].append(figures)
                    shown = {k: round(v, 1) for k, v in figures.items() if isinstance(v, float)}
                    print(f"  {store} round {round_ + 1} {tree}: {shown}", flush=True)
            base_seq, base_con = _median(runs[first], "seq_us"), _median(runs[first], "con_us")
            for tree in trees:
                rs = runs[tree]
                seq, con = _median(rs, "seq_us"), _median(rs, "con_us")
                print(
                    f"{store} {tree}: CPU us/step seq {seq:.1f} con {con:.1f} "
                    f"(over {first.name}'s: seq {seq / base_seq:.2f}x con {con / base_con:.2f}x); "
                    f"calls/step seq {_median(rs, 'seq_calls'):.1f} "
                    f"con {_median(rs, 'con_calls'):.1f}; ops/step seq "
                    f"{_median(rs, 'seq_ops'):.0f} con {_median(rs, 'con_ops'):.0f}"
                )
            if args.profile:
                for tree in trees[1:]:
                    for scen in ("seq", "con"):
                        base_f: Funcs = runs[first][0][f"{scen}_funcs"]  # type: ignore[assignment]
                        this_f: Funcs = runs[tree][0][f"{scen}_funcs"]  # type: ignore[assignment]
                        label = f"{store} {scen} {first.name} -> {tree.name}"
                        _diff(label, base_f, this_f, args.top)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
