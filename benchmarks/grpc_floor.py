"""The gRPC transport's own CPU cost per call, without durable or protobuf (issue 14).

``python -m benchmarks.grpc_floor [--calls 2000] [--rounds 5]``

A server that echoes raw bytes runs in a process of its own on a loopback port; a
grpclib client in this process makes ``--calls`` unary calls one after another (the
shape of a worker's ``CompleteActivityTask`` and ``CompleteOrchestratorTask``), then
reads ``--calls`` messages from one server stream (the shape of ``GetWorkItems``),
then makes ``--calls`` exchanges on one bidirectional stream, a message each way (the
shape of a completion and its ack on durable's work stream). Figures: CPU time
(``/proc``) of the server process per unary call, per streamed message and per
exchange, and of the client per unary call and per exchange; medians of ``--rounds``
rounds.

Servers: ``grpclib`` (what ``durable sidecar`` serves with: grpclib over the
pure-Python ``h2``) and, when ``grpcio`` is installed, ``grpcio`` (its C core with a
thread pool, what the ``durabletask`` SDK's in-memory backend serves with) and
``grpcio-aio`` (the same core under asyncio, ``grpc.aio``: what the sidecar could serve
with). A sidecar step of an SDK worker takes two unary calls and two streamed work
items, so twice their sum is the transport's floor for the sidecar's CPU per step;
over durable's work stream a step takes two streamed items and two exchanges.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from ._figures import cpu_seconds
from ._suite import free_port, wait_listening

_PATH = "/Floor/Echo"
_STREAM = "/Floor/Items"
_CHAT = "/Floor/Chat"
_PAYLOAD = b"x" * 200


def _serve_grpclib(port: int, count: int) -> None:
    import asyncio

    from grpclib.const import Cardinality, Handler
    from grpclib.encoding.base import CodecBase
    from grpclib.server import Server

    class Raw(CodecBase):
        __content_subtype__ = "proto"

        def encode(self, message: Any, message_type: Any) -> bytes:
            return bytes(message)

        def decode(self, data: bytes, message_type: Any) -> bytes:
            return data

    async def echo(stream: Any) -> None:
        await stream.send_message(await stream.recv_message())

    async def items(stream: Any) -> None:
        await stream.recv_message()
        for _ in range(count):
            await stream.send_message(_PAYLOAD)

    async def chat(stream: Any) -> None:
        async for message in stream:
            await stream.send_message(message)

    class Service:
        def __mapping__(self) -> dict[str, Handler]:
            return {
                _PATH: Handler(echo, Cardinality.UNARY_UNARY, bytes, bytes),
                _STREAM: Handler(items, Cardinality.UNARY_STREAM, bytes, bytes),
                _CHAT: Handler(chat, Cardinality.STREAM_STREAM, bytes, bytes),
            }

    async def main() -> None:
        server = Server([Service()], codec=Raw())
        await server.start("127.0.0.1", port)
        await server.wait_closed()

    asyncio.run(main())


def _serve_grpcio(port: int, count: int) -> None:
    import grpc  # type: ignore[import-untyped, unused-ignore]

    def echo(request: bytes, context: Any) -> bytes:
        return request

    def items(request: bytes, context: Any) -> Any:
        for _ in range(count):
            yield _PAYLOAD

    def chat(requests: Any, context: Any) -> Any:
        yield from requests

    handler = grpc.method_handlers_generic_handler(
        "Floor",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Items": grpc.unary_stream_rpc_method_handler(items),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    from concurrent.futures import ThreadPoolExecutor

    server = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=(handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def _serve_grpcio_aio(port: int, count: int) -> None:
    import asyncio

    import grpc  # type: ignore[import-untyped, unused-ignore]

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    async def items(request: bytes, context: Any) -> Any:
        for _ in range(count):
            yield _PAYLOAD

    async def chat(requests: Any, context: Any) -> Any:
        async for message in requests:
            yield message

    handler = grpc.method_handlers_generic_handler(
        "Floor",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Items": grpc.unary_stream_rpc_method_handler(items),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )

    async def main() -> None:
        server = grpc.aio.server(handlers=(handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


async def _client(port: int, pid: int, calls: int) -> dict[str, float]:
    from grpclib.client import Channel
    from grpclib.const import Cardinality

    from durable.grpc._server import BytesCodec

    channel = Channel("127.0.0.1", port, codec=BytesCodec())

    async def unary() -> None:
        async with channel.request(_PATH, Cardinality.UNARY_UNARY, bytes, bytes) as stream:
            await stream.send_message(_PAYLOAD, end=True)
            await stream.recv_message()

    try:
        for _ in range(50):  # connected and warm
            await unary()
        server0, client0 = cpu_seconds(pid), time.process_time()
        for _ in range(calls):
            await unary()
        server1, client1 = cpu_seconds(pid), time.process_time()
        async with channel.request(_STREAM, Cardinality.UNARY_STREAM, bytes, bytes) as stream:
            await stream.send_message(b"", end=True)
            got = 0
            async for _ in stream:
                got += 1
        server2 = cpu_seconds(pid)
        async with channel.request(_CHAT, Cardinality.STREAM_STREAM, bytes, bytes) as stream:
            await stream.send_message(_PAYLOAD)
            await stream.recv_message()  # open and warm
            server3, client3 = cpu_seconds(pid), time.process_time()
            for _ in range(calls):
                await stream.send_message(_PAYLOAD)
                await stream.recv_message()
            server4, client4 = cpu_seconds(pid), time.process_time()
            await stream.end()
    finally:
        channel.close()
    if got != calls:
        raise RuntimeError(f"streamed {got} messages, expected {calls}")
    return {
        "server_unary_us": (server1 - server0) / calls * 1e6,
        "client_unary_us": (client1 - client0) / calls * 1e6,
        "server_stream_us": (server2 - server1) / calls * 1e6,
        "server_chat_us": (server4 - server3) / calls * 1e6,
        "client_chat_us": (client4 - client3) / calls * 1e6,
    }


def _round(kind: str, calls: int) -> dict[str, float]:
    import anyio

    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.grpc_floor", "--serve", kind,
            "--port", str(port), "--calls", str(calls)]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        wait_listening(proc, port, f"{kind} server")
        return anyio.run(_client, port, proc.pid, calls)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_floor")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", choices=tuple(_SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        _SERVERS[args.serve](args.port, args.calls)
        return
    print(f"load average {os.getloadavg()[0]:.2f}; µs of CPU, median of {args.rounds} "
          f"rounds of {args.calls:,} calls")  # fmt: skip
    print(f"{'server':11} {'srv/unary':>10} {'srv/streamed':>13} {'srv/exchange':>13} "
          f"{'cli/unary':>10} {'cli/exchange':>13} {'floor/step':>11} "
          f"{'stream/step':>12}")  # fmt: skip
    try:
        import grpc  # type: ignore[import-untyped, unused-ignore]  # noqa: F401

        kinds = list(_SERVERS)
    except ImportError:
        kinds = ["grpclib"]
    for kind in kinds:
        rounds = [_round(kind, args.calls) for _ in range(args.rounds)]
        f = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        floor = 2 * (f["server_unary_us"] + f["server_stream_us"])
        streamed = 2 * (f["server_stream_us"] + f["server_chat_us"])
        print(f"{kind:11} {f['server_unary_us']:10,.0f} {f['server_stream_us']:13,.0f} "
              f"{f['server_chat_us']:13,.0f} {f['client_unary_us']:10,.0f} "
              f"{f['client_chat_us']:13,.0f} {floor:11,.0f} {streamed:12,.0f}")  # fmt: skip
    print("floor/step = the server's CPU for 2 unary calls and 2 streamed messages (a "
          "step of an SDK worker); stream/step = for 2 streamed messages and 2 exchanges "
          "(a step of RemoteWorker over durable's work stream); exchange = one message "
          "each way on a bidirectional stream; cli = the grpclib client's CPU")  # fmt: skip


_SERVERS = {"grpclib": _serve_grpclib, "grpcio": _serve_grpcio, "grpcio-aio": _serve_grpcio_aio}


if __name__ == "__main__":
    main()
