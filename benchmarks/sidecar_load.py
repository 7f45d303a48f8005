"""A normal client's GetInstance latency while the sidecar carries idle load (issue 19).

``python -m benchmarks.sidecar_load [--idle 1000] [--waiting 1000] [--calls 300] [--rounds 3]``

Runs ``durable sidecar`` (``memory://``, loopback) as a subprocess, and measures the
GetInstance p50/p99 of one client making ``--calls`` calls in a row, first with
nothing else open (the baseline), then with ``--idle`` TCP connections that never send
a request and ``--waiting`` callers in WaitForInstanceStart on an instance no worker
runs. It also prints the sidecar's CPU use over the loaded measurement (waiting callers
used to poll the store every 50 ms each). The idle timeout is raised for the run, so the
idle connections stay open throughout: the worst case, not the default (they would be
closed after 8 s). Figures are medians over ``--rounds``; quote the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import anyio
from grpclib.client import Channel
from grpclib.const import Cardinality

from durable.grpc._proto import ms
from durable.grpc._server import BytesCodec

from ._figures import cpu_seconds

PATH = "/TaskHubSidecarService/"


async def _call(ch: Channel, method: str, request: bytes) -> bytes:
    async with ch.request(PATH + method, Cardinality.UNARY_UNARY, bytes, bytes) as stream:
        await stream.send_message(request, end=True)
        reply = await stream.recv_message()
        await stream.recv_trailing_metadata()
    return reply or b""


async def _latencies(port: int, calls: int) -> list[float]:
    ch = Channel("127.0.0.1", port, codec=BytesCodec())
    request = ms.GetInstanceRequest(instanceId="pending").SerializeToString()
    try:
        await _call(ch, "GetInstance", request)  # connect first
        out = []
        for _ in range(calls):
            start = time.perf_counter()
            await _call(ch, "GetInstance", request)
            out.append((time.perf_counter() - start) * 1000)
        return out
    finally:
        ch.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _round(port: int, pid: int, idle: int, waiting: int, calls: int) -> dict[str, float]:
    quiet = await _latencies(port, calls)
    sockets = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(idle)]
    channels = [Channel("127.0.0.1", port, codec=BytesCodec()) for _ in range(10)]
    wait = ms.GetInstanceRequest(instanceId="pending").SerializeToString()
    try:
        async with anyio.create_task_group() as tg:
            for i in range(waiting):
                tg.start_soon(_call, channels[i % len(channels)], "WaitForInstanceStart", wait)
            await anyio.sleep(2)  # every caller waiting
            cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
            loaded = await _latencies(port, calls)
            await anyio.sleep(2)  # and a stretch of only waiting
            cpu = (cpu_seconds(pid) - cpu_before) / (time.perf_counter() - wall_before)
            tg.cancel_scope.cancel()
    finally:
        for ch in channels:
            ch.close()
        for sock in sockets:
            await sock.aclose()
    return {
        "quiet_p50": _pct(quiet, 0.5), "quiet_p99": _pct(quiet, 0.99),
        "loaded_p50": _pct(loaded, 0.5), "loaded_p99": _pct(loaded, 0.99),
        "sidecar_cpu": cpu,
    }  # fmt: skip


async def _main(args: argparse.Namespace) -> None:
    paths = [os.getcwd(), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    env.pop("DURABLE_API_TOKEN", None)
    command = [sys.executable, "-m", "durable", "sidecar", "--store", "memory://",
               "--listen", "127.0.0.1:0", "--idle-timeout", "3600"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        assert process.stdout is not None
        line = await anyio.to_thread.run_sync(process.stdout.readline)
        port = int(line.rsplit(":", 1)[1])
        ch = Channel("127.0.0.1", port, codec=BytesCodec())
        start = ms.CreateInstanceRequest(instanceId="pending", name="wf")
        await _call(ch, "StartInstance", start.SerializeToString())
        ch.close()
        rounds = [await _round(port, process.pid, args.idle, args.waiting, args.calls)
                  for _ in range(args.rounds)]  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=30)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"load average {os.getloadavg()[0]:.2f}, {args.rounds} rounds, medians")
    print(f"GetInstance, nothing else open:       p50 {median['quiet_p50']:.2f} ms  "
          f"p99 {median['quiet_p99']:.2f} ms")  # fmt: skip
    print(f"with {args.idle} idle connections and {args.waiting} waiting callers: "
          f"p50 {median['loaded_p50']:.2f} ms  p99 {median['loaded_p99']:.2f} ms")  # fmt: skip
    print(f"ratio loaded/quiet: p50 x{median['loaded_p50'] / median['quiet_p50']:.2f}, "
          f"p99 x{median['loaded_p99'] / median['quiet_p99']:.2f}")  # fmt: skip
    print(f"sidecar CPU while loaded: {median['sidecar_cpu'] * 100:.1f}% of a core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--waiting", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
