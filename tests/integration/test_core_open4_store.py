"""``ObjectStore.delete_if_match`` on every backend (memory, local directory, S3 on
moto's server), and on an S3 endpoint whose DELETE ignores ``If-Match``: the purge's
conditional deletes rest on it (see test_core_open4_purge.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from aiobotocore.session import AioSession

from durable.store import (
    FaultyStore,
    MemoryStore,
    ObjectNotFoundError,
    PreconditionFailedError,
    S3Store,
)

if TYPE_CHECKING:
    from durable.store import ObjectStore

    from .conftest import MotoServer

pytestmark = pytest.mark.anyio


async def test_delete_if_match_deletes_only_the_version_named(store: ObjectStore) -> None:
    """A delete by ETag removes the object at that ETag, refuses any other version
    (``PreconditionFailedError``, the object stays) and a missing key
    (``ObjectNotFoundError``)."""
    old = await store.put("instances/x/log/000000000000", b"old")
    new = await store.put("instances/x/log/000000000000", b"new")
    assert old != new
    with pytest.raises(PreconditionFailedError):
        await store.delete_if_match("instances/x/log/000000000000", old)
    assert await store.get("instances/x/log/000000000000") == b"new"
    await store.delete_if_match("instances/x/log/000000000000", new)
    with pytest.raises(ObjectNotFoundError):
        await store.get("instances/x/log/000000000000")
    assert await store.list("instances") == []  # no empty directory left behind
    with pytest.raises(ObjectNotFoundError):
        await store.delete_if_match("instances/x/log/000000000000", new)


async def test_a_faulty_store_passes_delete_if_match_through() -> None:
    """The fault injector wraps the new call like the others (and counts it)."""
    store = FaultyStore(MemoryStore(), seed=0)
    etag = await store.put("k", b"v")
    await store.delete_if_match("k", etag)
    assert store.calls == 2
    with pytest.raises(ObjectNotFoundError):
        await store.get("k")


def _strip_delete_if_match(request: Any, **_: Any) -> None:
    """A before-sign hook: a DELETE's If-Match never reaches the server (a backend that
    ignores it, as some S3-compatible servers do)."""
    if request.method == "DELETE" and "If-Match" in request.headers:
        del request.headers["If-Match"]


async def test_an_s3_endpoint_ignoring_if_match_on_delete_still_refuses_a_stale_etag(
    moto_server: MotoServer,
) -> None:
    """The probe finds that DELETE ignores If-Match; the store is still used (conditional
    writes work), and its delete_if_match reads the ETag before deleting, so a stale
    ETag is refused rather than deleting the newer object."""
    session = AioSession()
    session.register("before-sign.s3", _strip_delete_if_match)
    options = {**moto_server.storage_options, "session": session}
    store = S3Store(f"s3://{moto_server.new_bucket()}/root", storage_options=options)
    try:
        await store.check_conditional_writes()
        assert not store._conditional_deletes
        assert not store.sibling()._conditional_deletes
        old = await store.put("k", b"old")
        new = await store.put("k", b"new")
        with pytest.raises(PreconditionFailedError):
            await store.delete_if_match("k", old)
        assert await store.get("k") == b"new"
        await store.delete_if_match("k", new)
        assert await store.list("") == []  # the probe's object is gone too
    finally:
        await store.close()


async def test_an_s3_endpoint_doing_conditional_deletes_is_used_so(
    moto_server: MotoServer,
) -> None:
    """moto's server (as AWS S3) refuses a DELETE whose If-Match names another ETag:
    the probe keeps conditional deletes on."""
    store = moto_server.store()
    try:
        await store.check_conditional_writes()
        assert store._conditional_deletes
    finally:
        await store.close()
