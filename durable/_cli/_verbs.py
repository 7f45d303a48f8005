"""The verbs that read and steer instances in a store, each ``async (args) -> exit code``.

Exit codes: 0 ok; 1 a workflow that failed (``start --wait``, ``watch``); 2 bad usage;
3 not found (``durable.cli.main`` maps the errors).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from durable._client import Client
from durable._clock import SystemClock
from durable._core._events import WorkflowStarted
from durable._core._search import parse_where
from durable._core._state import WorkflowStatus
from durable._errors import (
    DurableError,
    InstanceNotFoundError,
    InstanceRunningError,
    SearchAttributeError,
    TimeoutError,
)
from durable._log._memo import MemoStore

from ._output import cell, print_json, print_pairs, print_table, progress

if TYPE_CHECKING:
    import argparse

    from durable._client import WorkflowHandle
    from durable._core._events import HistoryEvent
    from durable._core._state import WorkflowState

__all__ = [
    "UsageError",
    "cancel",
    "describe",
    "history",
    "list_instances",
    "purge",
    "query",
    "raise_event",
    "rerun",
    "resume",
    "rewind",
    "start",
    "suspend",
    "sweep",
    "terminate",
    "update",
    "watch",
]

OK, FAILED = 0, 1


class UsageError(DurableError):
    """Raised when the command line asks for something malformed (exit code 2)."""


def _client(args: argparse.Namespace) -> Client:
    return Client(args.store, storage_options=dict(getattr(args, "storage_option", [])) or None)


def _payload(text: str | None, option: str) -> Any:
    """A JSON payload given on the command line (None when not given)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as err:
        raise UsageError(f"{option} is not JSON: {err}") from None


def _failed(state: WorkflowState) -> str:
    failure = state.failure
    detail = f": {failure.type}: {failure.message}" if failure is not None else ""
    return f"durable: {state.instance_id} {state.status.value.lower()}{detail}"


# -- starting and steering ---------------------------------------------------------------


async def start(args: argparse.Namespace) -> int:
    """Start a workflow by name; with ``--wait``, wait for its end and print its output."""
    data = _payload(args.input, "--input")
    async with _client(args) as client:
        handle: WorkflowHandle[Any] = await client.start(
            args.name, data, instance_id=args.id, reuse=args.reuse, version=args.version
        )
        if not args.wait:
            if args.json:
                print_json({"instance_id": handle.instance_id})
            else:
                print(handle.instance_id)
            return OK
        state = await _until_ended(handle, args.timeout)
        if args.json:
            print_json(state)
        if state.status is not WorkflowStatus.COMPLETED:
            print(_failed(state), file=sys.stderr)
            return FAILED
        if not args.json:
            print(msgspec.json.encode(state.output).decode())
        return OK


_LOOK = timedelta(seconds=0.25)


async def _until_ended(handle: WorkflowHandle[Any], limit: float | None) -> WorkflowState:
    """The instance's state once it ended, looking every quarter second; why it makes
    no progress (no worker runs its workflow, say) is said on stderr as it changes."""
    clock = SystemClock()
    deadline = None if limit is None else clock.now() + timedelta(seconds=limit)
    said = ""
    while True:
        state = await handle.describe()
        if state.status.is_terminal:
            return state
        if state.reason != said:
            said = state.reason
            if said:
                print(f"durable: {handle.instance_id} is waiting: {said}", file=sys.stderr)
        now = clock.now()
        if deadline is not None and now >= deadline:
            raise TimeoutError(f"{handle.instance_id} did not end within {limit:g} s")
        await clock.sleep_until(now + _LOOK if deadline is None else min(now + _LOOK, deadline))


async def raise_event(args: argparse.Namespace) -> int:
    data = _payload(args.data, "--data")
    async with _client(args) as client:
        await client.get_handle(args.instance_id).raise_event(args.event, data)
    print(f"raised {args.event!r} on {args.instance_id}")
    return OK


async def query(args: argparse.Namespace) -> int:
    """Ask an instance's query handler; print its answer as JSON. Answered by a replay
    of the instance's log here, so the workflow's code (``--app``) is needed."""
    values = [_payload(text, "a query argument") for text in args.args]
    async with Client(
        args.store,
        storage_options=dict(getattr(args, "storage_option", [])) or None,
        registry=args.app,
    ) as client:
        answer = await client.get_handle(args.instance_id).query(args.name, *values)
    print(msgspec.json.encode(answer).decode())
    return OK


async def update(args: argparse.Namespace) -> int:
    """Deliver an update (its validator first); print its result as JSON. ``--id`` makes
    a retry after an unclear failure the same update: it runs once."""
    value = _payload(args.arg, "the update argument")
    async with Client(
        args.store,
        storage_options=dict(getattr(args, "storage_option", [])) or None,
        registry=args.app,
    ) as client:
        handle = client.get_handle(args.instance_id)
        update_id = await handle.start_update(args.name, value, update_id=args.id)
        print(f"update {update_id}", file=sys.stderr)
        result = await handle.update_result(update_id)
    print(msgspec.json.encode(result).decode())
    return OK


async def _request(args: argparse.Namespace, verb: str, doing: str) -> int:
    """Send the instance a request its handle makes with a reason (suspend, resume,
    cancel), and say so."""
    async with _client(args) as client:
        await getattr(client.get_handle(args.instance_id), verb)(args.reason)
    print(f"{doing} {args.instance_id}")
    return OK


async def suspend(args: argparse.Namespace) -> int:
    return await _request(args, "suspend", "suspending")


async def resume(args: argparse.Namespace) -> int:
    return await _request(args, "resume", "resuming")


async def terminate(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        handle = client.get_handle(args.instance_id)
        await handle.terminate(args.reason, recursive=not args.no_recursive)
    print(f"terminating {args.instance_id}")
    return OK


async def cancel(args: argparse.Namespace) -> int:
    return await _request(args, "cancel", "cancelling")


async def rerun(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        handle = await client.rerun(args.instance_id, args.from_event)
    print(f"rerunning {handle.instance_id} from event {args.from_event}")
    return OK


async def rewind(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.rewind(args.instance_id, args.reason)
    print(f"rewinding {args.instance_id}")
    return OK


# -- reading -----------------------------------------------------------------------------


async def describe(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        state = await client.get_handle(args.instance_id).describe()
    if args.json:
        print_json(state)
        return OK
    pairs: list[tuple[str, Any]] = [
        ("instance", state.instance_id), ("workflow", state.name),
        ("status", state.status.value), ("version", state.version or "-"),
        ("created", state.created_at), ("updated", state.updated_at),
        ("input", state.input), ("output", state.output),
        ("custom status", state.custom_status),
    ]  # fmt: skip
    if state.reason:
        pairs.append(("reason", state.reason))
    for key, value in sorted(state.search_attributes.items()):
        pairs.append((f"search {key}", value))
    if state.failure is not None:
        pairs.append(("failure", f"{state.failure.type}: {state.failure.message}"))
    print_pairs(pairs)
    if state.failure is not None and state.failure.stack_trace:
        print(state.failure.stack_trace.rstrip())
    return OK


def _moment(when: timedelta | datetime | None) -> datetime | None:
    """A ``--since``/``--until`` value as a time: a duration counts back from now."""
    if isinstance(when, timedelta):
        return SystemClock().now() - when
    return when


async def list_instances(args: argparse.Namespace) -> int:
    """List instances: all of them, or one page of ``--limit`` from ``--cursor`` (the
    next page's cursor goes to stderr)."""
    paged = args.cursor is not None
    since, until = _moment(args.since), _moment(args.until)
    try:
        search = parse_where(args.where or ())
    except SearchAttributeError as err:
        raise UsageError(f"--where {err}") from None
    states: list[WorkflowState] = []
    cursor: str | None = args.cursor
    async with _client(args) as client:
        while True:
            size = 100 if args.limit is None else min(100, args.limit - len(states))
            page = await client.list_page(
                status=args.status, name=args.name, created_after=since, created_before=until,
                search=search, page_size=size, cursor=cursor, id_prefix=args.prefix,
            )  # fmt: skip
            states += page.items
            cursor = page.next_cursor
            if cursor is None or (args.limit is not None and len(states) >= args.limit):
                break
    if args.json:
        print_json(states)
    else:
        print_table(
            ("instance", "workflow", "status", "created", "updated"),
            [(s.instance_id, s.name, s.status.value, s.created_at, s.updated_at) for s in states],
        )
    if cursor is not None and (paged or args.limit is not None):
        print(f"more: --cursor {cursor}", file=sys.stderr)
    return OK


def _event_line(event: HistoryEvent) -> str:
    fields = msgspec.structs.asdict(event)
    fields.pop("event_id"), fields.pop("timestamp")
    detail = " ".join(f"{k}={msgspec.json.encode(v).decode()}" for k, v in fields.items())
    return (
        f"{event.event_id:>5}  {event.timestamp.isoformat()}  {type(event).__name__:<24} {detail}"
    )


async def history(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        events = await client.get_handle(args.instance_id).history()
    if args.json:
        print_json(events)
    else:
        for event in events:
            print(_event_line(event))
    return OK


async def watch(args: argparse.Namespace) -> int:
    """Print an instance's events as they are committed, until it ends (each run of a
    continue-as-new in turn); exit 0 if it completed, 1 if it failed or was ended."""
    clock = SystemClock()
    run_id, shown = None, 0
    async with _client(args) as client:
        handle = client.get_handle(args.instance_id)
        while True:
            state = await handle.describe()
            events = await handle.history()  # read after the state: an end shows in full
            started = events[0]
            run = started.run_id if isinstance(started, WorkflowStarted) else ""
            if run != run_id:
                run_id, shown = run, 0
            for event in events[shown:]:
                if args.json:
                    sys.stdout.buffer.write(msgspec.json.encode(event) + b"\n")
                else:
                    sys.stdout.write(_event_line(event) + "\n")
            sys.stdout.flush()
            shown = len(events)
            if state.status.is_terminal:
                if state.status is not WorkflowStatus.COMPLETED:
                    print(_failed(state), file=sys.stderr)
                    return FAILED
                return OK
            await clock.sleep_until(clock.now() + timedelta(seconds=args.interval))


# -- housekeeping ------------------------------------------------------------------------


async def purge(args: argparse.Namespace) -> int:
    """Delete one ended instance, or every ended instance a filter matches (``--dry-run``:
    only say which)."""
    filtered = args.status is not None or args.name is not None or args.ended_before is not None
    if (args.instance_id is None) == (not filtered):
        raise UsageError("purge takes an instance id, or --status/--name/--ended-before, not both")
    if args.instance_id is not None and args.dry_run:
        raise UsageError("--dry-run goes with a filter (--status/--name/--ended-before)")
    cutoff = _moment(args.ended_before)
    async with _client(args) as client:
        if args.instance_id is not None:
            await client.purge(args.instance_id)
            print(f"purged {args.instance_id}")
            return OK
        wanted = [args.status] if args.status else [s.value for s in _ENDED]
        ids = [
            state.instance_id
            for status in wanted
            async for state in client.list(status=status, name=args.name)
            if cutoff is None or (state.updated_at is not None and state.updated_at < cutoff)
        ]
        if args.dry_run:
            for instance_id in ids:
                print(instance_id)
            print(f"would purge {len(ids)} instance(s)", file=sys.stderr)
            return OK
        skipped = 0
        with progress("purging", len(ids)) as advance:
            for instance_id in ids:
                try:
                    await client.purge(instance_id)
                except (InstanceRunningError, InstanceNotFoundError):
                    skipped += 1  # started again, or purged by someone else, meanwhile
                advance(1)
    print(f"purged {len(ids) - skipped} instance(s)" + (f", {skipped} skipped" if skipped else ""))
    return OK


_ENDED = (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.TERMINATED)
ENDED_STATUSES = [s.value for s in _ENDED]


async def sweep(args: argparse.Namespace) -> int:
    memo = MemoStore(args.store, args.prefix)
    try:
        with progress("sweeping the memo of ended instances", None):
            swept = await memo.sweep(SystemClock().now(), args.retention)
    finally:
        await memo.store.close()
    print(f"swept the memo of {cell(swept)} ended instance(s)")
    return OK
