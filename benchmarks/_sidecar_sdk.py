"""The ``sidecar-sdk`` scenario: the ``durabletask`` SDK's own worker and client on
``durable sidecar`` against the same SDK on its in-memory test backend, in the same run.

Each run measures both variants, alternating which goes first, each in a child process
of its own that imports the SDK and never durable (``python -m benchmarks._child sdk``):

* ``sidecar``: ``python -m durable sidecar --store memory://`` in a process of its own on
  a free loopback port (fresh per run), the SDK worker and client in the child;
* ``in-memory``: the SDK's test backend (``durabletask.testing``, a grpcio server) in the
  child, beside its worker and client (the ``durabletask`` peer's setup).

Both run N orchestrations of 10 activity steps started at once (the ``concurrent``
scenario's workload, ``benchmarks/_peer_durabletask.py``). CPU time comes from
``/proc``: the child's (SDK worker, client and, for ``in-memory``, its backend) and the
sidecar process's, each over the measured run only (after the warm-up), per step.

With ``DURABLE_BENCH_SIDECAR_PROFILE=PATH`` set, the sidecar runs under cProfile and
writes its profile to PATH when it stops (the last run's; profiling slows it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ._figures import cpu_seconds
from ._suite import Column, free_port, run_child, scenario, wait_listening

__all__ = ["sdk_run_in_this_process"]

_VARIANTS = ("sidecar", "in-memory")
_RATIO = "sidecar/in-memory"
_TIMEOUT = 900.0  # seconds, per child
_PROFILE_ENV = "DURABLE_BENCH_SIDECAR_PROFILE"
_order = [0]  # runs so far: the variants alternate which goes first


def sdk_run_in_this_process(variant: str, n: int, sidecar_pid: int | None) -> dict[str, float]:
    """One measured run in this (child) process: figures plus CPU per step."""
    from . import _peer_durabletask

    bench = _peer_durabletask.open_bench(variant)  # warmed up
    try:
        before = (time.process_time(), cpu_seconds(sidecar_pid) if sidecar_pid else 0.0)
        figures = bench.measure("concurrent", n)
        after = (time.process_time(), cpu_seconds(sidecar_pid) if sidecar_pid else 0.0)
    finally:
        bench.close()
    steps = n * _peer_durabletask.CONCURRENT_STEPS
    figures["sdk_cpu_step_s"] = (after[0] - before[0]) / steps
    if sidecar_pid:
        figures["sidecar_cpu_step_s"] = (after[1] - before[1]) / steps
    return figures


def _sidecar_run(n: int) -> dict[str, float]:
    """A fresh ``durable sidecar --store memory://`` and one SDK child against it."""
    root = Path(__file__).resolve().parent.parent
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    profile = os.environ.get(_PROFILE_ENV)
    argv = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []),
            "-m", "durable", "sidecar", "--store", "memory://",
            "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_listening(proc, port, "durable sidecar")
        figures: dict[str, float] = run_child(
            ["sdk", f"sidecar=127.0.0.1:{port}", str(n), str(proc.pid)], timeout=_TIMEOUT
        )
        return figures
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@scenario(
    "sidecar-sdk",
    description="the durabletask SDK's worker and client, N concurrent 10-step "
    "orchestrations, on durable sidecar (memory://) vs the SDK's in-memory backend",
    size_name="N",
    sizes=(100,),
    quick_sizes=(20,),
    stores=("memory",),
    variant_name="backend",
    variants=_VARIANTS,
    ratios=(_RATIO,),
    columns=(
        Column("total_s", "total s", ".3f"),
        Column("steps_per_s", "steps/s", ",.0f"),
        Column("p50_s", "p50 ms", ",.0f", 1e3),
        Column("p99_s", "p99 ms", ",.0f", 1e3),
        Column("sidecar_cpu_step_s", "sidecar CPU µs/step", ",.0f", 1e6),
        Column("sdk_cpu_step_s", "SDK process CPU µs/step", ",.0f", 1e6),
    ),
    notes=(
        "sidecar = `python -m durable sidecar --store memory://` in its own process; "
        "in-memory = durabletask.testing's backend inside the SDK's process; the SDK "
        "(worker + client, durabletask 1.12) runs in a child process of its own",
        "CPU per step from /proc over the measured run only: the sidecar process's, and "
        "the SDK process's (which holds the in-memory backend too); CPU time, not wall "
        "time, is the figure that holds on a loaded machine",
        "sidecar/in-memory: the median of the per-run ratios (> 1x steps/s: the sidecar "
        "is faster); the variants alternate which goes first",
    ),
)
def sidecar_sdk(store_kind: str, n: int) -> dict[str, float]:
    variants = list(_VARIANTS)
    if _order[0] % 2:
        variants.reverse()
    _order[0] += 1
    runs: dict[str, dict[str, float]] = {}
    for variant in variants:
        if variant == "sidecar":
            runs[variant] = _sidecar_run(n)
        else:
            runs[variant] = run_child(["sdk", variant, str(n)], timeout=_TIMEOUT)
    figures: dict[str, float] = {}
    for variant, run in runs.items():
        figures.update({f"{variant}.{key}": value for key, value in run.items()})
    ours, theirs = runs["sidecar"], runs["in-memory"]
    for key, value in ours.items():
        if theirs.get(key):
            figures[f"{_RATIO}.{key}"] = value / theirs[key]
    return figures
