"""S3Store against a real S3 protocol server (``moto_server`` on loopback).

The conformance suite in ``test_store.py`` runs on S3 too; these are the S3-only checks:
races between separate clients, the refusal of an endpoint that ignores conditional
writes, request counts, listing pages, ambiguous retried writes, and error mapping.
Request hooks go through an aiobotocore session passed in ``storage_options``, the same
way a user would configure one.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError, EndpointConnectionError

import durable
from durable.store import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    S3Store,
    StoreError,
    open_store,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from .conftest import MotoServer

pytestmark = pytest.mark.anyio

StoreFactory = Any  # (prefix="root", *, session=None, **options) -> S3Store


class RequestLog:
    """Counts the HTTP requests a client sends (each retry too), by method."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def __call__(self, request: Any, **_: Any) -> None:
        self.methods.append(request.method)

    def take(self) -> dict[str, int]:
        """Return the counts since the last call, and start again."""
        counts = dict(Counter(self.methods))
        self.methods.clear()
        return counts


def session_with(**handlers: Callable[..., Any]) -> AioSession:
    """An aiobotocore session with event handlers (``before_send`` is "before-send")."""
    session = AioSession()
    for name, handler in handlers.items():
        session.register(f"{name.replace('_', '-')}.s3", handler)
    return session


@pytest.fixture
async def make_store(moto_server: MotoServer) -> AsyncIterator[StoreFactory]:
    """``make_store(prefix, session=..., **options)``: stores on one fresh bucket, closed
    at the end of the test."""
    bucket = moto_server.new_bucket()
    made: list[S3Store] = []

    def make(prefix: str = "root", *, session: AioSession | None = None, **options: Any) -> S3Store:
        storage_options = {**moto_server.storage_options, **options}
        if session is not None:
            storage_options["session"] = session
        store = S3Store(f"s3://{bucket}/{prefix}", storage_options=storage_options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


# -- two clients ----------------------------------------------------------------------------


async def test_put_if_absent_race_between_two_clients(make_store: StoreFactory) -> None:
    clients = [make_store(), make_store()]  # two stores: two sessions, two connection pools
    keys = [f"instances/i/log/{n:012d}" for n in range(20)]
    winners: dict[str, list[bytes]] = {key: [] for key in keys}

    async def racer(store: S3Store, name: str, order: list[str]) -> None:
        for key in order:
            try:
                await store.put_if_absent(key, name.encode())
            except ObjectExistsError:
                continue
            winners[key].append(name.encode())

    async with anyio.create_task_group() as tg:
        for n, store in enumerate(clients):
            tg.start_soon(racer, store, f"client-{n}-up", keys)
            tg.start_soon(racer, store, f"client-{n}-down", keys[::-1])
    for key in keys:
        assert len(winners[key]) == 1, key
        assert await clients[0].get(key) == winners[key][0]
        assert await clients[1].get(key) == winners[key][0]
    assert len({w[0] for w in winners.values()}) > 1  # the race really was contested


async def test_put_if_match_counter_race_between_two_clients(make_store: StoreFactory) -> None:
    clients = [make_store(), make_store()]
    await clients[0].put("counter", b"0")
    conflicts = 0

    async def worker(store: S3Store) -> None:
        nonlocal conflicts
        for _ in range(3):
            while True:
                data, etag = await store.get_with_etag("counter")
                await anyio.lowlevel.checkpoint()
                try:
                    await store.put_if_match("counter", str(int(data) + 1).encode(), etag)
                except PreconditionFailedError:
                    conflicts += 1
                    continue
                break

    async with anyio.create_task_group() as tg:
        for store in clients:
            for _ in range(3):
                tg.start_soon(worker, store)
    assert await clients[1].get("counter") == b"18"
    assert conflicts > 0


# -- the conditional-write probe ------------------------------------------------------------


def strip_header(header: str) -> Callable[..., None]:
    """A before-sign hook that drops a header: the client then talks to S3 like a backend
    that ignores it (the server gets an unconditional PUT)."""

    def hook(request: Any, **_: Any) -> None:
        if header in request.headers:
            del request.headers[header]

    return hook


async def test_an_endpoint_ignoring_if_none_match_is_refused(make_store: StoreFactory) -> None:
    log = RequestLog()
    store = make_store(session=session_with(before_sign=strip_header("If-None-Match"),
                                            before_send=log))  # fmt: skip
    honest = make_store()
    with pytest.raises(StoreError, match="If-None-Match is ignored") as info:
        await store.put_if_absent("instances/i/log/000000000000", b"turn")
    assert type(info.value) is StoreError
    assert not info.value.transient
    assert "refusing s3://" in str(info.value)
    assert log.take() == {"PUT": 2, "DELETE": 1}  # probe, probe again (it overwrote), cleanup
    with pytest.raises(ObjectNotFoundError):  # the caller's write was never sent
        await honest.get("instances/i/log/000000000000")
    assert await honest.list("") == []  # the probe object is gone
    # Refused for good, without probing again; and refused on put-if-match too.
    with pytest.raises(StoreError, match="If-None-Match is ignored"):
        await store.put_if_absent("k", b"x")
    etag = await store.put("meta", b"1")
    log.take()
    with pytest.raises(StoreError, match="If-None-Match is ignored"):
        await store.put_if_match("meta", b"2", etag)
    assert log.take() == {}
    assert await store.get("meta") == b"1"
    with pytest.raises(StoreError, match="If-None-Match is ignored"):
        await store.check_conditional_writes()  # an explicit check probes again


async def test_an_endpoint_ignoring_if_match_is_refused(make_store: StoreFactory) -> None:
    store = make_store(session=session_with(before_sign=strip_header("If-Match")))
    with pytest.raises(StoreError, match="If-Match is ignored") as info:
        await store.check_conditional_writes()
    assert not info.value.transient
    with pytest.raises(StoreError, match="If-Match is ignored"):
        await store.put_if_absent("k", b"x")
    assert await make_store().list("") == []


async def test_the_probe_runs_once_before_the_first_conditional_write(
    make_store: StoreFactory,
) -> None:
    log = RequestLog()
    store = make_store(session=session_with(before_send=log))
    await store.put("plain", b"x")  # unconditional writes and reads never probe
    await store.get("plain")
    assert log.take() == {"PUT": 1, "GET": 1}
    async with anyio.create_task_group() as tg:  # five first writers: one probe
        for n in range(5):
            tg.start_soon(store.put_if_absent, f"k{n}", b"x")
    # probe: create, create again (refused), wrong-ETag update (refused), wrong-ETag
    # delete (refused), delete
    assert log.take() == {"PUT": 3 + 5, "DELETE": 2}
    await store.put_if_absent("k5", b"x")
    assert log.take() == {"PUT": 1}
    assert await store.list("") == ["k0", "k1", "k2", "k3", "k4", "k5", "plain"]


# -- request counts -------------------------------------------------------------------------


async def test_each_operation_costs_one_request(make_store: StoreFactory) -> None:
    log = RequestLog()
    store = make_store(session=session_with(before_send=log))
    await store.check_conditional_writes()
    log.take()
    counts: dict[str, dict[str, int]] = {}

    async def measure(name: str, call: Any) -> None:
        try:
            await call
        except StoreError:
            pass
        counts[name] = log.take()

    etag = await store.put("a/k", b"1")
    log.take()
    await measure("get", store.get("a/k"))
    await measure("get_with_etag", store.get_with_etag("a/k"))
    await measure("get (missing)", store.get("a/missing"))
    await measure("put", store.put("a/k", b"2"))
    await measure("put_if_absent", store.put_if_absent("a/new", b"1"))
    await measure("put_if_absent (taken)", store.put_if_absent("a/new", b"2"))
    _, etag = await store.get_with_etag("a/k")
    log.take()
    await measure("put_if_match", store.put_if_match("a/k", b"3", etag))
    await measure("put_if_match (stale)", store.put_if_match("a/k", b"4", etag))
    await measure("list", store.list("a"))
    await measure("delete", store.delete("a/k"))
    await measure("delete_prefix", store.delete_prefix("a"))
    assert counts == {
        "get": {"GET": 1},
        "get_with_etag": {"GET": 1},
        "get (missing)": {"GET": 1},
        "put": {"PUT": 1},
        "put_if_absent": {"PUT": 1},
        "put_if_absent (taken)": {"PUT": 1},
        "put_if_match": {"PUT": 1},
        "put_if_match (stale)": {"PUT": 1},
        "list": {"GET": 1},
        "delete": {"DELETE": 1},
        "delete_prefix": {"GET": 1, "POST": 1},  # one listing page, one batched delete
    }


# -- listing pages --------------------------------------------------------------------------


async def test_listing_and_deleting_follow_pages(make_store: StoreFactory) -> None:
    log = RequestLog()
    store = make_store(session=session_with(before_send=log))
    store._page_size = 3  # the server pages at 1,000; small pages exercise the same path
    keys = [f"p/{n:02d}" for n in range(8)] + [f"p/d{n}/x" for n in range(3)] + ["p/d0/y"]
    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(store.put, key, b".")
    log.take()
    expected = [f"{n:02d}" for n in range(8)] + ["d0", "d1", "d2"]
    assert await store.list("p") == expected
    assert log.take() == {"GET": 4}  # 11 children (d0 twice as keys), 3 per page
    await store.delete_prefix("p")
    assert log.take() == {"GET": 4, "POST": 4}  # 12 objects, 3 per page, one batch each
    assert await store.list("") == []


# -- ambiguous writes -----------------------------------------------------------------------


def retry_first_attempt_of(header: str) -> Callable[..., int | None]:
    """A needs-retry hook that makes botocore send a conditional PUT twice, as it would
    after losing the first answer: the first attempt lands, the second is refused."""

    def hook(attempts: int, request_dict: dict[str, Any], **_: Any) -> int | None:
        probe = "/_probe/" in request_dict["url_path"]
        if attempts == 1 and header in request_dict["headers"] and not probe:
            return 0  # retry at once
        return None

    return hook


async def test_a_refused_retry_of_a_landed_create_is_transient(make_store: StoreFactory) -> None:
    store = make_store(session=session_with(needs_retry=retry_first_attempt_of("If-None-Match")))
    with pytest.raises(StoreError, match="may have landed") as info:
        await store.put_if_absent("log/1", b"mine")
    assert type(info.value) is StoreError  # not ObjectExistsError: that would be a lie
    assert info.value.transient
    assert await store.get("log/1") == b"mine"  # reading back tells the truth


async def test_a_refused_retry_of_a_landed_update_is_transient(make_store: StoreFactory) -> None:
    store = make_store(session=session_with(needs_retry=retry_first_attempt_of("If-Match")))
    etag = await store.put("meta", b"1")
    with pytest.raises(StoreError, match="may have landed") as info:
        await store.put_if_match("meta", b"2", etag)
    assert type(info.value) is StoreError
    assert info.value.transient
    assert await store.get("meta") == b"2"


# -- errors ---------------------------------------------------------------------------------


async def test_unreachable_endpoint_is_transient() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3Store(
        "s3://bucket/root",
        storage_options={
            "endpoint_url": f"http://127.0.0.1:{port}",
            "key": "k",
            "secret": "s",
            "client_kwargs": {"region_name": "us-east-1"},
            "config_kwargs": {"retries": {"total_max_attempts": 1}},
        },
    )
    try:
        for call in (store.get("k"), store.put("k", b"x"), store.list(""), store.delete("k")):
            with pytest.raises(StoreError) as info:
                await call
            assert info.value.transient
            assert isinstance(info.value.__cause__, EndpointConnectionError)
        with pytest.raises(StoreError) as info:
            await store.put_if_absent("k", b"x")  # the probe cannot run: transient too
        assert info.value.transient
    finally:
        await store.close()


async def test_missing_bucket_is_not_transient(moto_server: MotoServer) -> None:
    store = S3Store("s3://no-such-bucket/root", storage_options=moto_server.storage_options)
    try:
        for call in (store.get("k"), store.put("k", b"x"), store.put_if_absent("k", b"x")):
            with pytest.raises(StoreError, match="no bucket 'no-such-bucket'") as info:
                await call
            assert not isinstance(info.value, ObjectNotFoundError)
            assert not info.value.transient
    finally:
        await store.close()


def client_error(status: int, code: str, retries: int = 0) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "message"},
        "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("verb", "status", "code", "expected", "transient"),
    [
        ("create", 412, "PreconditionFailed", ObjectExistsError, False),
        ("update", 412, "PreconditionFailed", PreconditionFailedError, False),
        ("update", 404, "NoSuchKey", ObjectNotFoundError, False),
        ("read", 404, "NoSuchKey", ObjectNotFoundError, False),
        ("write", 404, "NoSuchKey", StoreError, False),
        ("create", 409, "ConditionalRequestConflict", StoreError, True),
        ("read", 503, "SlowDown", StoreError, True),
        ("read", 500, "InternalError", StoreError, True),
        ("write", 429, "TooManyRequests", StoreError, True),
        ("read", 400, "RequestTimeout", StoreError, True),
        ("read", 403, "AccessDenied", StoreError, False),
        ("write", 400, "InvalidArgument", StoreError, False),
        ("write", 400, "KeyTooLongError", StoreError, False),
    ],
)
async def test_s3_error_responses_map_to_store_errors(
    verb: str, status: int, code: str, expected: type[StoreError], transient: bool
) -> None:
    store = S3Store("s3://bucket/root")  # no request is sent
    with pytest.raises(StoreError) as info, store._errors(verb, "k"):
        raise client_error(status, code)
    assert type(info.value) is expected
    assert info.value.transient is transient
    assert info.value.key == "k"


async def test_other_errors_pass_through_unchanged() -> None:
    store = S3Store("s3://bucket/root")
    with pytest.raises(ZeroDivisionError), store._errors("read", "k"):
        _ = 1 / 0


async def test_a_closed_store_refuses_calls(make_store: StoreFactory) -> None:
    store = make_store()
    await store.put("k", b"x")
    await store.close()
    with pytest.raises(StoreError, match="closed") as info:
        await store.get("k")
    assert not info.value.transient
    await store.close()  # twice is fine


async def test_bad_keys_are_refused_before_any_request(make_store: StoreFactory) -> None:
    log = RequestLog()
    store = make_store(session=session_with(before_send=log))
    for call in (
        store.get("../x"),
        store.get_with_etag("a//b"),
        store.put_if_match(".lock", b"x", "e"),
        store.delete("a/./b"),
        store.delete_prefix(""),
        store.list("a/../b"),
        store.put("a\\b", b"x"),
    ):
        with pytest.raises(StoreError, match="invalid object key") as info:
            await call
        assert not info.value.transient
    assert log.take() == {}


# -- layout and configuration ---------------------------------------------------------------


async def test_prefixes_separate_stores_in_one_bucket(make_store: StoreFactory) -> None:
    left, right, whole = make_store("app/left"), make_store("app/right"), make_store("")
    await left.put("k", b"left")
    await right.put("k", b"right")
    assert await left.get("k") == b"left"
    assert await right.list("") == ["k"]
    assert await whole.list("") == ["app"]
    assert await whole.list("app") == ["left", "right"]
    assert await whole.get("app/left/k") == b"left"
    await left.delete_prefix("k")  # an object, not a prefix: nothing under it
    await whole.delete_prefix("app/left")
    assert await whole.list("app") == ["right"]


async def test_a_runtime_on_an_s3_url_configured_from_the_environment(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = moto_server.new_bucket()
    registry = durable.Registry()

    @registry.activity
    async def double(ctx: durable.ActivityContext, x: int) -> int:
        return 2 * x

    @registry.workflow
    async def flow(ctx: durable.WorkflowContext, x: int) -> int:
        return await ctx.call_activity(double, x) + 1

    url = f"s3://{bucket}/app"
    clock = durable.MockClock(auto_advance=True)
    async with durable.Runtime(registry, store=url, clock=clock) as rt:
        assert isinstance(rt.store, S3Store)
        handle = await rt.start(flow, 20, instance_id="order-42")
        assert await handle == 41
    reader = open_store(url, storage_options=moto_server.storage_options)
    try:
        assert await reader.list("instances/order-42") != []
    finally:
        await reader.close()
