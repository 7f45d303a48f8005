"""The ``durable`` command: run the demo or a worker, and inspect or steer instances in a
store."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ._cli import _verbs as v
from ._cli._verbs import UsageError
from ._core._state import WorkflowStatus
from ._errors import (
    DurableError,
    InstanceNotFoundError,
    InvalidInstanceIdError,
    UnknownQueryError,
    UnknownUpdateError,
    UnknownWorkflowError,
)
from ._fleet._leases import Fleet
from ._registry import Registry
from ._runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

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


def _moment(text: str) -> timedelta | datetime:
    """``7d`` (that long ago) or an ISO-8601 time (UTC unless it says otherwise)."""
    if (text[:1].isdigit() and text[-1:] in _UNITS) or text.replace(".", "", 1).isdigit():
        return _duration(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (try 7d, 12h, or 2026-01-31T12:00)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


async def _demo(args: argparse.Namespace) -> None:
    module = _load_module(_find_example("orders.py"))
    await module.main(args.store)


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


def _api_token(args: argparse.Namespace) -> str | None:
    """The sidecar's API token: ``--api-token``, ``--api-token-file`` or the
    ``DURABLE_API_TOKEN`` environment variable (one at most); none means no token."""
    given = [args.api_token is not None, args.api_token_file is not None]
    if all(given):
        raise ValueError("give --api-token or --api-token-file, not both")
    if args.api_token_file is not None:
        try:
            with open(args.api_token_file, encoding="utf-8") as file:
                token: str | None = file.read().strip()
        except OSError as err:
            raise ValueError(f"cannot read --api-token-file: {err}") from None
        if not token:
            raise ValueError(f"--api-token-file {args.api_token_file} is empty")
        return token
    if args.api_token is not None:
        return str(args.api_token)
    token = os.environ.get("DURABLE_API_TOKEN")
    if token is not None and not token.strip():
        raise ValueError("DURABLE_API_TOKEN is set but empty")
    return token


_SIZES = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "b": 1}


def _size(text: str) -> int:
    """``4MiB``, ``512KiB``, ``16MB`` (or a bare number of bytes), at least 1 KiB."""
    lowered = text.strip().lower()
    unit = next((u for u in _SIZES if lowered.endswith(u)), "")
    try:
        value = int(float(lowered.removesuffix(unit) or "x") * _SIZES.get(unit, 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 4MiB)") from None
    if value < 1024:
        raise argparse.ArgumentTypeError(f"a message limit under 1 KiB is no use: {text!r}")
    return value


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


def _host_port(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"{option} wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


@contextlib.asynccontextmanager
async def _metrics(listen: str | None) -> AsyncIterator[Any]:
    """``--metrics HOST:PORT``: serve the metrics for Prometheus while the block runs;
    yields the meter provider to give the runtime (None: the global one)."""
    if listen is None:
        yield None
        return
    from ._observe._prometheus import MetricsEndpoint  # the prometheus extra

    endpoint = MetricsEndpoint(*_host_port(listen, "--metrics"))
    async with anyio.create_task_group() as tg:
        port = await tg.start(endpoint.serve)
        print(f"metrics on http://{endpoint.host}:{port}/metrics", flush=True)
        yield endpoint.meter_provider
        tg.cancel_scope.cancel()


async def _worker(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    registry = _load_registry(args.target)
    fleet = None
    if not args.solo:
        fleet = Fleet(partitions=args.partitions, lease_ttl=args.lease_ttl, owner=args.owner)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with _metrics(args.metrics) as meter_provider:
            runtime = Runtime(
                registry, store=args.store, storage_options=dict(args.storage_option) or None,
                fleet=fleet, poll_interval=args.poll_interval,
                max_concurrent_activities=args.max_concurrent_activities,
                meter_provider=meter_provider,
            )  # fmt: skip
            async with runtime:
                print(f"READY {runtime.owner} partitions={runtime.partitions}", flush=True)
                async for _ in signals:
                    break  # a clean stop: leases are released on the way out
    print(f"STOPPED {runtime.owner}", flush=True)


async def _sidecar(args: argparse.Namespace) -> None:
    from .grpc import Sidecar  # grpc stubs load only for this command

    host, port = _host_port(args.listen, "--listen")
    fleet = None
    if args.fleet:
        ttl = timedelta(seconds=15) if args.lease_ttl is None else args.lease_ttl
        fleet = Fleet(partitions=args.partitions, lease_ttl=ttl, owner=args.owner)
    elif args.partitions is not None or args.owner is not None or args.lease_ttl is not None:
        raise SystemExit("durable: --partitions, --lease-ttl and --owner need --fleet")
    try:
        api_token = _api_token(args)
    except ValueError as err:  # a setting that cannot work: one line, no traceback
        raise SystemExit(f"durable sidecar: {err}") from None
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with _metrics(args.metrics) as meter_provider:
            try:
                sidecar = Sidecar(
                    args.store, host=host, port=port,
                    tls_cert=args.tls_cert, tls_key=args.tls_key,
                    tls_client_ca=args.tls_client_ca, api_token=api_token,
                    storage_options=dict(args.storage_option) or None, fleet=fleet,
                    poll_interval=args.poll_interval, keepalive=args.keepalive or None,
                    keepalive_timeout=args.keepalive_timeout, meter_provider=meter_provider,
                    max_message_size=args.max_message_size, idle_timeout=args.idle_timeout,
                    max_connections=args.max_connections,
                    turn_timeout=args.turn_timeout or None,
                    activity_timeout=args.activity_timeout, max_waiting=args.max_waiting,
                )  # fmt: skip
            except ValueError as err:  # a setting that cannot work: one line
                raise SystemExit(f"durable sidecar: {err}") from None
            async with sidecar:
                print(f"durable sidecar listening on {host}:{sidecar.port}", flush=True)
                if fleet is not None:
                    print(f"fleet member {sidecar.owner} partitions={sidecar.partitions}",
                          flush=True)  # fmt: skip
                async for _ in signals:
                    break  # a clean stop: in a fleet, leases are released on the way out
    print("durable sidecar stopped", flush=True)


async def _ui(args: argparse.Namespace) -> None:
    try:  # the ui extra: Starlette, uvicorn, Jinja2
        from .console._serve import ListenError, serve
    except ImportError as err:
        raise SystemExit(f'durable: the console needs pip install "durable[ui]" ({err})') from None

    def ready(url: str) -> None:
        print(f"durable ui listening on {url}", flush=True)

    try:
        await serve(
            args.store, listen=args.listen, api_token=args.api_token, memo_prefix=args.prefix,
            storage_options=dict(args.storage_option) or None, ready=ready,
            stop_on_signals=True,
        )  # fmt: skip
    except ListenError as err:
        raise UsageError(str(err)) from None  # exit code 2
    print("durable ui stopped", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durable", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], Awaitable[int | None]],
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
    p.add_argument(*_METRICS, **_METRICS_HELP)
    _steering_verbs(command)
    p = command("sweep", v.sweep, "delete the memo of instances that ended before the retention")
    p.add_argument("--retention", type=_duration, required=True, help="e.g. 7d, 12h, 30m")
    p.add_argument("--prefix", default="memo", help="memo key prefix (memo)")
    p = command("sidecar", _sidecar, "serve the Durable Task gRPC protocol over the store")
    p.add_argument("--listen", default="127.0.0.1:4001", help="HOST:PORT (127.0.0.1:4001)")
    p.add_argument("--tls-cert", help="PEM certificate file (TLS needs --tls-key too)")
    p.add_argument("--tls-key", help="PEM private key file")
    p.add_argument(
        "--tls-client-ca",
        help="PEM CA file: require a client certificate it signed on every connection (mTLS)",
    )
    p.add_argument(
        "--api-token",
        help="require this dapr-api-token on every call (visible to other users of the "
        "machine in the process list: prefer --api-token-file or DURABLE_API_TOKEN)",
    )
    p.add_argument("--api-token-file", help="read the API token from this file")
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
        "--max-message-size",
        type=_size,
        default=4 * 1024 * 1024,
        metavar="BYTES",
        help="largest message either way, e.g. 4MiB, 16MiB (4MiB, gRPC's usual): a bigger "
        "request is refused unread, a bigger work item fails its instance",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=8.0,
        metavar="SECONDS",
        help="close a connection with no call open this long (8)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="connections open at once at most (the file-descriptor limit less a headroom "
        "for the store)",
    )
    p.add_argument(
        "--turn-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="a turn a worker has not answered this long goes to another worker (300; 0: never)",
    )
    p.add_argument(
        "--activity-timeout",
        type=float,
        metavar="SECONDS",
        help="the same for an activity attempt (default: none, activities may run long)",
    )
    p.add_argument(
        "--max-waiting",
        type=int,
        default=10_000,
        metavar="N",
        help="callers waiting in WaitForInstanceStart/Completion at once (10000)",
    )
    p.add_argument(
        "--fleet",
        action="store_true",
        help="share the store with other sidecars: run only the partitions held by lease, "
        "set with the options below (default: solo, every partition, the only process on "
        "the store)",
    )
    storage_and_fleet(p, None)
    p.add_argument(*_METRICS, **_METRICS_HELP)
    p = command("ui", _ui, "serve the web console: instances, histories and actions")
    p.add_argument("--listen", default="127.0.0.1:8233", help="HOST:PORT (127.0.0.1:8233)")
    p.add_argument("--api-token", help="require this token for every page and action")
    p.add_argument("--prefix", default="memo", help="memo key prefix (memo)")
    p.add_argument(
        "-o", "--storage-option", type=_storage_option, action="append", default=[],
        metavar="KEY=VALUE", help="passed to the store (repeatable)",
    )  # fmt: skip
    return parser


_METRICS = ("--metrics",)
_METRICS_HELP: dict[str, Any] = {
    "metavar": "HOST:PORT",
    "help": "serve metrics for Prometheus at http://HOST:PORT/metrics (needs durable[prometheus])",
}


def _steering_verbs(command: Callable[..., argparse.ArgumentParser]) -> None:
    """The verbs that read and steer instances (``durable._cli._verbs``)."""

    def read(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--json", action="store_true", help="print JSON, not a table")
        return p

    p = read(command("start", v.start, "start a workflow by name; print its instance id"))
    p.add_argument("name", help="the workflow's registered name")
    p.add_argument("--input", metavar="JSON", help="the input, as JSON (null)")
    p.add_argument("--id", help="the instance id (a new one by default)")
    p.add_argument("--reuse", action="store_true", help="start an ended instance again")
    p.add_argument("--version", help="the workflow version (its newest by default)")
    p.add_argument(
        "--wait", action="store_true",
        help="wait for the end and print the output (exit 1 if the workflow failed)",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait: at most this")
    p = command("raise-event", v.raise_event, "send an event to an instance")
    p.add_argument("instance_id")
    p.add_argument("event", help="the event's name")
    p.add_argument("--data", metavar="JSON", help="the event's payload, as JSON (null)")
    p = command("query", v.query, "ask a workflow's query handler; print its answer as JSON")
    p.add_argument("instance_id")
    p.add_argument("name", help="the query's name")
    p.add_argument("args", nargs="*", metavar="JSON", help="the handler's arguments, as JSON")
    p.add_argument(
        "--app", type=_load_registry, required=True, metavar="MODULE:ATTRIBUTE",
        help="the registry with the workflow's code (a replay of its log answers)",
    )  # fmt: skip
    p = command("update", v.update, "deliver an update to a workflow; print its result as JSON")
    p.add_argument("instance_id")
    p.add_argument("name", help="the update's name")
    p.add_argument("arg", nargs="?", metavar="JSON", help="the handler's argument, as JSON")
    p.add_argument("--id", help="the update id: the same id runs once (a new one by default)")
    p.add_argument(
        "--app", type=_load_registry, required=True, metavar="MODULE:ATTRIBUTE",
        help="the registry with the workflow's code (its validator runs here)",
    )  # fmt: skip
    for name, run, what in (
        ("suspend", v.suspend, "pause an instance: events wait until it resumes"),
        ("resume", v.resume, "resume a suspended instance"),
        ("terminate", v.terminate, "end a running instance now"),
        ("cancel", v.cancel, "ask a running instance to cancel: it may clean up first"),
    ):
        p = command(name, run, what)
        p.add_argument("instance_id")
        p.add_argument("--reason", default=f"{name} from the command line")
        if name == "terminate":
            p.add_argument(
                "--no-recursive", action="store_true", help="leave its sub-workflows running"
            )
    p = command("rerun", v.rerun, "run an ended instance again from one of its events")
    p.add_argument("instance_id")
    p.add_argument("from_event", type=int, help="the event id of a scheduled step")
    p = command("rewind", v.rewind, "run a failed instance on: what failed runs again")
    p.add_argument("instance_id")
    p.add_argument("--reason", default="rewind from the command line")
    for name in ("show", "describe"):
        read(command(name, v.describe, "describe one instance")).add_argument("instance_id")
    p = read(command("list", v.list_instances, "list instances"))
    p.add_argument("--status", choices=[s.value for s in WorkflowStatus])
    p.add_argument("--name", help="only this workflow")
    p.add_argument("--prefix", help="only instances whose id starts with this")
    p.add_argument("--since", type=_moment, help="created after this (7d ago, or an ISO time)")
    p.add_argument("--until", type=_moment, help="created before this (7d ago, or an ISO time)")
    p.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="a search attribute equals a str (KEY:=VALUE: an int, true, false "
                   "or an ISO time); repeat for more")  # fmt: skip
    p.add_argument("--limit", type=_positive, help="at most this many (then a --cursor)")
    p.add_argument("--cursor", help="go on where an earlier --limit stopped")
    p = read(command("history", v.history, "print an instance's history"))
    p.add_argument("instance_id")
    p = read(command("watch", v.watch, "follow an instance's events until it ends"))
    p.add_argument("instance_id")
    p.add_argument("--interval", type=float, default=0.5, metavar="SECONDS",
                   help="how often to look (0.5)")  # fmt: skip
    p = command("purge", v.purge, "delete an ended instance, or every one a filter matches")
    p.add_argument("instance_id", nargs="?")
    p.add_argument("--status", choices=v.ENDED_STATUSES, help="every ended one with it")
    p.add_argument("--name", help="every ended one of this workflow")
    p.add_argument("--ended-before", type=_moment, metavar="WHEN",
                   help="every one ended before this (30d ago, or an ISO time)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="list them; delete nothing")


# exit codes: 0 ok, 1 a failed workflow (or any other error), 2 bad usage, 3 not found
_USAGE = (
    v.UsageError, InvalidInstanceIdError, UnknownWorkflowError, UnknownQueryError,
    UnknownUpdateError,
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``durable`` console script."""
    args = _parser().parse_args(argv)
    try:
        code = anyio.run(args.run, args)
    except _USAGE as err:
        print(f"durable: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except InstanceNotFoundError as err:
        print(f"durable: {err}", file=sys.stderr)
        raise SystemExit(3) from None
    except DurableError as err:
        raise SystemExit(f"durable: {err}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:  # output piped into head, less, ...
        sys.stderr.close()
        raise SystemExit(0) from None
    if code:
        raise SystemExit(code)
