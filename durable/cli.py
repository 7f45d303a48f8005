"""The ``durable`` command: run the demo or a worker, and inspect or steer instances in a
store."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ._client import Client
from ._clock import SystemClock
from ._errors import DurableError
from ._fleet._leases import Fleet
from ._log._memo import MemoStore
from ._registry import Registry
from ._runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["main"]

DEFAULT_STORE = "file://./.durable"


def _find_example(name: str) -> Path:
    """The examples/ file, in the working directory or beside an editable install."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = root / "examples" / name
        if candidate.is_file():
            return candidate
    raise SystemExit(f"durable: cannot find examples/{name}; run from the repository root")


def _load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"durable_example_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"durable: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def _demo(args: argparse.Namespace) -> None:
    module = _load_module(_find_example("orders.py"))
    await module.main(args.store)


async def _list(args: argparse.Namespace) -> None:
    async with Client(args.store) as client:
        async for state in client.list(status=args.status, name=args.name, limit=args.limit):
            print(f"{state.instance_id}\t{state.name}\t{state.status}\t{state.updated_at}")


async def _show(args: argparse.Namespace) -> None:
    async with Client(args.store) as client:
        state = await client.get_handle(args.instance_id).describe()
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(state)) + b"\n")


async def _history(args: argparse.Namespace) -> None:
    async with Client(args.store) as client:
        events = await client.get_handle(args.instance_id).history()
        if args.json:
            sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(events)) + b"\n")
            return
        for event in events:
            fields = msgspec.structs.asdict(event)
            fields.pop("event_id"), fields.pop("timestamp")
            detail = " ".join(f"{k}={msgspec.json.encode(v).decode()}" for k, v in fields.items())
            print(
                f"{event.event_id:>5}  {event.timestamp.isoformat()}  "
                f"{type(event).__name__:<24} {detail}"
            )


async def _terminate(args: argparse.Namespace) -> None:
    async with Client(args.store) as client:
        await client.get_handle(args.instance_id).terminate(args.reason)


async def _purge(args: argparse.Namespace) -> None:
    async with Client(args.store) as client:
        await client.purge(args.instance_id)


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` (or a bare number of seconds)."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 7d, 12h, 30m)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a duration cannot be negative: {text!r}")
    return timedelta(**{_UNITS[unit]: value})


async def _sweep(args: argparse.Namespace) -> None:
    memo = MemoStore(args.store, args.prefix)
    try:
        swept = await memo.sweep(SystemClock().now(), args.retention)
    finally:
        await memo.store.close()
    print(f"swept the memo of {swept} ended instance(s)")


def _load_registry(target: str) -> Registry:
    """``package.module:attribute`` (attribute defaults to ``registry``), imported with the
    working directory on the path, as ``python -m`` would."""
    module_name, _, attribute = target.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SystemExit(f"durable: cannot import {module_name!r}: {err}") from None
    registry = getattr(module, attribute or "registry", None)
    if not isinstance(registry, Registry):
        raise SystemExit(f"durable: {target!r} is not a durable.Registry")
    return registry


def _storage_option(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it parses, else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


async def _worker(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    registry = _load_registry(args.target)
    fleet = None
    if not args.solo:
        fleet = Fleet(partitions=args.partitions, lease_ttl=args.lease_ttl, owner=args.owner)
    runtime = Runtime(
        registry, store=args.store, storage_options=dict(args.storage_option) or None, fleet=fleet,
        poll_interval=args.poll_interval,
        max_concurrent_activities=args.max_concurrent_activities,
    )  # fmt: skip
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with runtime:
            print(f"READY {runtime.owner} partitions={runtime.partitions}", flush=True)
            async for _ in signals:
                break  # a clean stop: leases are released on the way out
    print(f"STOPPED {runtime.owner}", flush=True)


async def _sidecar(args: argparse.Namespace) -> None:
    from .grpc import Sidecar  # grpc stubs load only for this command

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"durable: --listen wants HOST:PORT, got {args.listen!r}")
    fleet = None
    if args.fleet:
        ttl = timedelta(seconds=15) if args.lease_ttl is None else args.lease_ttl
        fleet = Fleet(partitions=args.partitions, lease_ttl=ttl, owner=args.owner)
    elif args.partitions is not None or args.owner is not None or args.lease_ttl is not None:
        raise SystemExit("durable: --partitions, --lease-ttl and --owner need --fleet")
    sidecar = Sidecar(
        args.store, host=host.strip("[]"), port=int(port),
        tls_cert=args.tls_cert, tls_key=args.tls_key, api_token=args.api_token,
        storage_options=dict(args.storage_option) or None, fleet=fleet,
        poll_interval=args.poll_interval, keepalive=args.keepalive or None,
        keepalive_timeout=args.keepalive_timeout,
    )  # fmt: skip
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with sidecar:
            print(f"durable sidecar listening on {host}:{sidecar.port}", flush=True)
            if fleet is not None:
                print(f"fleet member {sidecar.owner} partitions={sidecar.partitions}", flush=True)
            async for _ in signals:
                break  # a clean stop: in a fleet, leases are released on the way out
    print("durable sidecar stopped", flush=True)


async def _ui(args: argparse.Namespace) -> None:
    try:
        from .console import serve  # the ui extra: Starlette, uvicorn, Jinja2
    except ImportError as err:
        raise SystemExit(f'durable: the console needs pip install "durable[ui]" ({err})') from None

    def ready(url: str) -> None:
        print(f"durable ui listening on {url}", flush=True)

    await serve(
        args.store, listen=args.listen, api_token=args.api_token, memo_prefix=args.prefix,
        storage_options=dict(args.storage_option) or None, ready=ready, stop_on_signals=True,
    )  # fmt: skip
    print("durable ui stopped", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durable", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], Awaitable[None]],
                help: str) -> argparse.ArgumentParser:  # fmt: skip
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--store", default=DEFAULT_STORE, help=f"store URL ({DEFAULT_STORE})")
        p.set_defaults(run=run)
        return p

    command("demo", _demo, "run the example order workflow, printing each step")

    def storage_and_fleet(p: argparse.ArgumentParser, ttl: timedelta | None) -> None:
        p.add_argument(
            "-o",
            "--storage-option",
            type=_storage_option,
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="passed to the store (repeatable)",
        )
        p.add_argument("--partitions", type=int, help="partition count for a fresh store (16)")
        p.add_argument(
            "--lease-ttl",
            type=_duration,
            default=ttl,
            help="how long a lease outlives its last renewal (15s)",
        )
        p.add_argument("--owner", help="this process's name in lease objects")
        p.add_argument(
            "--poll-interval",
            type=float,
            default=1.0,
            help="seconds between looks for messages from other processes (1.0)",
        )

    p = command("worker", _worker, "run a registry's workflows and activities until stopped")
    p.add_argument("target", help="the registry, as package.module:attribute")
    storage_and_fleet(p, timedelta(seconds=15))
    p.add_argument(
        "--solo",
        action="store_true",
        help="run every partition: no leases (the only process on the store)",
    )
    p.add_argument("--max-concurrent-activities", type=int, default=100)
    p = command("list", _list, "list instances")
    p.add_argument("--status")
    p.add_argument("--name")
    p.add_argument("--limit", type=int)
    command("show", _show, "describe one instance").add_argument("instance_id")
    p = command("history", _history, "print an instance's history")
    p.add_argument("instance_id")
    p.add_argument("--json", action="store_true", help="as JSON (for the Replayer)")
    p = command("terminate", _terminate, "terminate a running instance")
    p.add_argument("instance_id")
    p.add_argument("--reason", default="terminated from the command line")
    command("purge", _purge, "delete an ended instance").add_argument("instance_id")
    p = command("sweep", _sweep, "delete the memo of instances that ended before the retention")
    p.add_argument("--retention", type=_duration, required=True, help="e.g. 7d, 12h, 30m")
    p.add_argument("--prefix", default="memo", help="memo key prefix (memo)")
    p = command("sidecar", _sidecar, "serve the Durable Task gRPC protocol over the store")
    p.add_argument("--listen", default="127.0.0.1:4001", help="HOST:PORT (127.0.0.1:4001)")
    p.add_argument("--tls-cert", help="PEM certificate file (TLS needs --tls-key too)")
    p.add_argument("--tls-key", help="PEM private key file")
    p.add_argument("--api-token", help="require this dapr-api-token on every call")
    p.add_argument(
        "--keepalive",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="ping each worker's connection this often; one that does not answer in time "
        "loses its work to other workers (30; 0: never)",
    )
    p.add_argument(
        "--keepalive-timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long a ping may go unanswered (20)",
    )
    p.add_argument(
        "--fleet",
        action="store_true",
        help="share the store with other sidecars: run only the partitions held by lease, "
        "set with the options below (default: solo, every partition, the only process on "
        "the store)",
    )
    storage_and_fleet(p, None)
    p = command("ui", _ui, "serve the web console: instances, histories and actions")
    p.add_argument("--listen", default="127.0.0.1:8233", help="HOST:PORT (127.0.0.1:8233)")
    p.add_argument("--api-token", help="require this token for every page and action")
    p.add_argument("--prefix", default="memo", help="memo key prefix (memo)")
    p.add_argument(
        "-o", "--storage-option", type=_storage_option, action="append", default=[],
        metavar="KEY=VALUE", help="passed to the store (repeatable)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``durable`` console script."""
    args = _parser().parse_args(argv)
    try:
        anyio.run(args.run, args)
    except DurableError as err:
        raise SystemExit(f"durable: {err}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:  # output piped into head, less, ...
        sys.stderr.close()
        raise SystemExit(0) from None
