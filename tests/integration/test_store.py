"""Conformance tests every object-store backend must pass, then backend-specific ones.

The ``store`` fixture runs each conformance test against :class:`MemoryStore`, against
:class:`LocalStore` in a temporary directory, against :class:`S3Store` on a fresh
bucket of a local ``moto_server``, and against a :class:`FaultyStore` that injects
nothing (so it must be transparent). Races run from tasks and, for ``LocalStore``, from
separate OS processes started behind a stdin barrier (S3 races between clients are in
``test_s3_store.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable.store import (
    FaultyStore,
    LocalStore,
    MemoryStore,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStore,
    PreconditionFailedError,
    S3Store,
    StoreError,
    open_store,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "local", "s3", "faulty"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[ObjectStore]:
    """Yield a fresh, empty store of each backend (s3: a new bucket on moto_server;
    faulty: a FaultyStore at error rate 0, which must be transparent)."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "faulty":
        yield FaultyStore(MemoryStore(), seed=0)
    elif request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        s3 = request.getfixturevalue("moto_server").store()
        yield s3
        await s3.close()


# -- reads and unconditional writes ---------------------------------------------------------


async def test_get_missing_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        await store.get("instances/x/status")
    assert isinstance(info.value, LookupError)
    assert info.value.key == "instances/x/status"
    assert not info.value.transient
    with pytest.raises(ObjectNotFoundError):
        await store.get_with_etag("instances/x/status")


async def test_get_of_a_directory_is_not_found(store: ObjectStore) -> None:
    await store.put("a/b", b"x")
    with pytest.raises(ObjectNotFoundError):
        await store.get("a")


@pytest.mark.parametrize(
    "data", [b"", b"hello", bytes(range(256)) * 4096], ids=["empty", "small", "1MiB"]
)
async def test_put_get_round_trip(store: ObjectStore, data: bytes) -> None:
    etag = await store.put("instances/order-42/log/000000000003", data)
    assert isinstance(etag, str)
    assert etag
    assert await store.get("instances/order-42/log/000000000003") == data
    assert await store.get_with_etag("instances/order-42/log/000000000003") == (data, etag)


async def test_put_overwrites_and_changes_etag(store: ObjectStore) -> None:
    first = await store.put("k", b"one")
    second = await store.put("k", b"two")
    assert first != second
    assert await store.get_with_etag("k") == (b"two", second)


async def test_put_accepts_non_bytes_buffers_without_aliasing(store: ObjectStore) -> None:
    buffer = bytearray(b"abc")
    await store.put("k", buffer)  # type: ignore[arg-type]
    buffer[0] = ord("z")
    assert await store.get("k") == b"abc"


# -- conditional writes ---------------------------------------------------------------------


async def test_put_if_absent_refuses_a_second_write(store: ObjectStore) -> None:
    etag = await store.put_if_absent("log/1", b"first")
    with pytest.raises(ObjectExistsError) as info:
        await store.put_if_absent("log/1", b"second")
    assert info.value.key == "log/1"
    assert not info.value.transient
    assert await store.get_with_etag("log/1") == (b"first", etag)


async def test_put_if_absent_after_delete_succeeds(store: ObjectStore) -> None:
    await store.put_if_absent("log/1", b"first")
    await store.delete("log/1")
    await store.put_if_absent("log/1", b"again")
    assert await store.get("log/1") == b"again"


async def test_put_if_match_with_current_etag(store: ObjectStore) -> None:
    await store.put_if_absent("status", b"1")
    _, etag = await store.get_with_etag("status")
    new_etag = await store.put_if_match("status", b"2", etag)
    assert new_etag != etag
    assert await store.get_with_etag("status") == (b"2", new_etag)
    newer_etag = await store.put_if_match("status", b"3", new_etag)
    assert await store.get_with_etag("status") == (b"3", newer_etag)


async def test_put_if_match_with_stale_etag_fails(store: ObjectStore) -> None:
    stale = await store.put("status", b"1")
    await store.put("status", b"2")
    with pytest.raises(PreconditionFailedError) as info:
        await store.put_if_match("status", b"3", stale)
    assert info.value.key == "status"
    assert not info.value.transient
    assert await store.get("status") == b"2"


async def test_put_if_match_with_made_up_etag_fails(store: ObjectStore) -> None:
    await store.put("status", b"1")
    with pytest.raises(PreconditionFailedError):
        await store.put_if_match("status", b"3", "not-an-etag")


async def test_put_if_match_on_missing_key_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        await store.put_if_match("status", b"1", "whatever")
    etag = await store.put("status", b"1")
    await store.delete("status")
    with pytest.raises(ObjectNotFoundError):
        await store.put_if_match("status", b"2", etag)


# -- listing and deleting -------------------------------------------------------------------


async def test_list_immediate_children_sorted(store: ObjectStore) -> None:
    for key in ["a/x", "a/y/z", "a/b", "a/y/w/v", "c", "a10/q"]:
        await store.put(key, b".")
    assert await store.list("a") == ["b", "x", "y"]
    assert await store.list("a/") == ["b", "x", "y"]
    assert await store.list("a/y") == ["w", "z"]
    assert await store.list("") == ["a", "a10", "c"]
    assert await store.list("missing") == []
    assert await store.list("a/missing/deeper") == []
    assert await store.list("c") == []  # an object has no children


async def test_list_forgets_what_was_deleted(store: ObjectStore) -> None:
    await store.put("inst/1/inbox/m1", b".")
    await store.put("inst/1/inbox/m2", b".")
    await store.put("inst/1/status", b".")
    await store.delete("inst/1/inbox/m1")
    assert await store.list("inst/1/inbox") == ["m2"]
    await store.delete("inst/1/inbox/m2")
    assert await store.list("inst/1/inbox") == []
    assert await store.list("inst/1") == ["status"]
    await store.delete("inst/1/status")
    assert await store.list("inst") == []
    assert await store.list("") == []


async def test_delete(store: ObjectStore) -> None:
    await store.put("k", b"v")
    await store.delete("k")
    with pytest.raises(ObjectNotFoundError):
        await store.get("k")
    await store.delete("k")  # already gone: fine
    await store.delete("never/was/here")


async def test_delete_prefix(store: ObjectStore) -> None:
    keys = ["i/1/log/0", "i/1/log/1", "i/1/status", "i/10/status", "i/2/status", "i/1x"]
    for key in keys:
        await store.put(key, key.encode())
    await store.delete_prefix("i/1")
    assert await store.list("i") == ["10", "1x", "2"]
    assert await store.list("i/1") == []
    for key in ["i/1/log/0", "i/1/log/1", "i/1/status"]:
        with pytest.raises(ObjectNotFoundError):
            await store.get(key)
    for key in ["i/10/status", "i/2/status", "i/1x"]:
        assert await store.get(key) == key.encode()
    await store.delete_prefix("i/1")  # already gone: fine
    await store.delete_prefix("nothing/here")
    await store.put_if_absent("i/1/log/0", b"new life")
    assert await store.get("i/1/log/0") == b"new life"


BAD_KEYS = ["../x", "/abs", "a//b", "a/./b", "a/../b", "", "a/", ".hidden", "a/.lock"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_rejected_on_write(store: ObjectStore, key: str) -> None:
    await store.put("a/ok", b".")  # so the parent directory already exists
    for write in (store.put, store.put_if_absent):
        with pytest.raises(StoreError) as info:
            await write(key, b"x")
        assert type(info.value) is StoreError
        assert not info.value.transient
        assert info.value.key == key
    assert await store.list("") == ["a"]
    assert await store.list("a") == ["ok"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_local_store_rejects_bad_keys_everywhere(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "store")
    (tmp_path / "x").write_bytes(b"outside")
    calls = [
        store.get(key),
        store.get_with_etag(key),
        store.put_if_match(key, b"x", "e"),
        store.delete(key),
    ]
    for call in calls:
        with pytest.raises(StoreError) as info:
            await call
        assert type(info.value) is StoreError
        assert not info.value.transient
    prefix = key.rstrip("/")  # a trailing slash on a prefix is fine
    if prefix not in ("", "a"):  # "" lists the root
        with pytest.raises(StoreError):
            await store.list(prefix)
    if prefix != "a":
        with pytest.raises(StoreError):
            await store.delete_prefix(prefix)
    assert (tmp_path / "x").read_bytes() == b"outside"


async def test_memory_stores_are_isolated() -> None:
    one, two = MemoryStore(), MemoryStore()
    await one.put("k", b"one")
    with pytest.raises(ObjectNotFoundError):
        await two.get("k")
    assert await two.list("") == []
    await two.put_if_absent("k", b"two")
    assert await one.get("k") == b"one"


# -- races ----------------------------------------------------------------------------------


async def test_put_if_absent_race_between_tasks_has_one_winner(store: ObjectStore) -> None:
    keys = [f"race/{n}" for n in range(25)]
    winners: dict[str, list[bytes]] = {key: [] for key in keys}

    async def racer(n: int) -> None:
        data = f"racer-{n}".encode()
        for key in keys:
            try:
                await store.put_if_absent(key, data)
            except ObjectExistsError:
                continue
            winners[key].append(data)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(racer, n)
    for key in keys:
        assert len(winners[key]) == 1, key
        assert await store.get(key) == winners[key][0]


async def increment(store: ObjectStore, key: str) -> int:
    """Add one to the counter at ``key`` by compare-and-swap; return the conflicts seen."""
    conflicts = 0
    while True:
        data, etag = await store.get_with_etag(key)
        await anyio.lowlevel.checkpoint()  # let the other tasks read the same version
        try:
            await store.put_if_match(key, str(int(data) + 1).encode(), etag)
        except PreconditionFailedError:
            conflicts += 1
            continue
        return conflicts


async def test_put_if_match_counter_race_between_tasks(store: ObjectStore) -> None:
    await store.put("counter", b"0")
    conflicts: list[int] = []

    async def worker() -> None:
        conflicts.append(await increment(store, "counter"))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(worker)
    assert await store.get("counter") == b"10"
    assert sum(conflicts) > 0  # the race really happened


RACER = """
import asyncio, sys
from durable.store import LocalStore, ObjectExistsError, PreconditionFailedError

KEYS = 200

async def main(root, mode, arg):
    store = LocalStore(root)
    print("ready", flush=True)
    sys.stdin.readline()
    if mode == "create":
        won = []
        for n in range(KEYS):
            try:
                await store.put_if_absent(f"race/{n}", arg.encode())
            except ObjectExistsError:
                continue
            won.append(str(n))
        print("won " + " ".join(won), flush=True)
    else:
        conflicts = 0
        for _ in range(int(arg)):
            while True:
                data, etag = await store.get_with_etag("counter")
                try:
                    await store.put_if_match("counter", b"%d" % (int(data) + 1), etag)
                except PreconditionFailedError:
                    conflicts += 1
                    continue
                break
        print(f"conflicts {conflicts}", flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


def run_racers(root: Path, mode: str, args: list[str]) -> list[str]:
    """Run one racer process per arg, release them together, and return their last lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(root), mode, arg],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for arg in args
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:  # the barrier: every racer is waiting on stdin by now
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            results.append(out.strip().splitlines()[-1])
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_local_put_if_absent_race_between_processes(tmp_path: Path) -> None:
    args = [f"process-{n}" for n in range(4)]
    results = run_racers(tmp_path, "create", args)
    won = {arg: line.split()[1:] for arg, line in zip(args, results, strict=True)}
    keys = sorted(n for numbers in won.values() for n in numbers)
    assert keys == sorted(str(n) for n in range(200))  # every key won exactly once
    for arg, numbers in won.items():
        for n in numbers:
            assert (tmp_path / "race" / n).read_bytes() == arg.encode()
    assert len(os.listdir(tmp_path / "race")) == 200  # no temp files left behind


async def test_local_put_if_match_counter_race_between_processes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("counter", b"0")
    results = await anyio.to_thread.run_sync(run_racers, tmp_path, "count", ["10", "10"])
    assert all(line.startswith("conflicts ") for line in results)
    assert await store.get("counter") == b"20"


# -- LocalStore specifics -------------------------------------------------------------------


async def test_local_etags_are_content_hashes_shared_across_instances(tmp_path: Path) -> None:
    one, two = LocalStore(tmp_path), LocalStore(tmp_path)
    etag = await one.put("k", b"v1")
    assert await two.get_with_etag("k") == (b"v1", etag)
    new_etag = await two.put_if_match("k", b"v2", etag)
    with pytest.raises(PreconditionFailedError):
        await one.put_if_match("k", b"v3", etag)
    assert await one.put_if_match("k", b"v3", new_etag)


async def test_local_store_files_and_cleanup(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, fsync=True)
    await store.put_if_absent("inst/1/log/0", b"a")
    await store.put("inst/1/status", b"b")
    etag = await store.put_if_match(
        "inst/1/status", b"c", (await store.get_with_etag("inst/1/status"))[1]
    )
    assert etag
    assert (tmp_path / "inst" / "1" / "status").read_bytes() == b"c"
    assert sorted(os.listdir(tmp_path / "inst" / "1")) == ["log", "status"]
    assert sorted(os.listdir(tmp_path / "inst" / "1" / "log")) == ["0"]
    await store.delete("inst/1/log/0")
    # empty directories are pruned (by the store's thread: a listing waits for it)
    assert await store.list("inst/1") == ["status"]
    assert not (tmp_path / "inst" / "1" / "log").exists()
    await store.delete_prefix("inst/1")
    assert await store.list("") == []
    assert not (tmp_path / "inst").exists()
    # The directory cache must not believe in directories that are gone.
    await store.put_if_absent("inst/1/log/0", b"again")
    assert await store.get("inst/1/log/0") == b"again"


async def test_local_store_recreates_directories_removed_behind_its_back(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    await store.put("a/b/c", b"1")
    (tmp_path / "root" / "a" / "b" / "c").unlink()
    (tmp_path / "root" / "a" / "b").rmdir()
    await store.put_if_absent("a/b/c", b"2")
    assert await store.get("a/b/c") == b"2"


async def test_local_store_put_over_a_directory_fails_and_keeps_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("a/b", b"1")
    with pytest.raises(StoreError):
        await store.put("a", b"over a directory")
    assert await store.get("a/b") == b"1"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]
    assert await store.list("") == ["a"]


async def test_local_store_replaces_without_leaving_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    etag = await store.put("k/meta", b"one")
    etag = await store.put_if_match("k/meta", b"two", etag)
    await store.put("k/meta", b"three")
    assert await store.get("k/meta") == b"three"
    assert [p.name for p in (tmp_path / "k").iterdir()] == ["meta"]


@pytest.mark.parametrize("system", ["no renameat2", "no RENAME_EXCHANGE"])
async def test_local_store_replaces_by_rename_without_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, system: str
) -> None:
    import ctypes
    import errno

    from durable.store import _localfs

    def refuse(*args: object) -> int:
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(_localfs, "_renameat2", None if system == "no renameat2" else refuse)
    store = LocalStore(tmp_path)
    etag = await store.put("k/meta", b"one")
    etag = await store.put_if_match("k/meta", b"two", etag)
    await store.put("k/meta", b"three")
    assert await store.get("k/meta") == b"three"
    assert [p.name for p in (tmp_path / "k").iterdir()] == ["meta"]


async def test_local_store_skips_dot_files_in_listings(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("a/b", b"1")
    (tmp_path / "a" / ".tmp-crashed").write_bytes(b"partial")
    assert await store.list("a") == ["b"]
    assert await store.list("") == ["a"]  # not .locks


async def test_local_store_maps_os_errors_to_transient_store_errors(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("a", b"file")
    with pytest.raises(StoreError) as info:
        await store.put("a/b", b"under a file")
    assert info.value.transient
    assert info.value.key == "a/b"
    assert isinstance(info.value.__cause__, OSError)


# -- open_store -----------------------------------------------------------------------------


def test_open_store_memory() -> None:
    one, two = open_store("memory://"), open_store("memory://ignored/part")
    assert isinstance(one, MemoryStore)
    assert isinstance(two, MemoryStore)
    assert one is not two
    assert one.url == "memory://"


def test_open_store_passes_store_objects_through() -> None:
    store = MemoryStore()
    assert open_store(store) is store


def test_open_store_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("file://./.durable")
    assert isinstance(relative, LocalStore)
    assert relative.root == str(tmp_path / ".durable")
    assert relative.url == "file://./.durable"
    assert not relative.fsync

    absolute = open_store(f"file://{tmp_path}/abs")
    assert isinstance(absolute, LocalStore)
    assert absolute.root == str(tmp_path / "abs")

    plain = open_store("plain/dir")
    assert isinstance(plain, LocalStore)
    assert plain.root == str(tmp_path / "plain" / "dir")

    synced = open_store(f"file://{tmp_path}/s?fsync=1")
    assert isinstance(synced, LocalStore)
    assert synced.fsync
    assert synced.root == str(tmp_path / "s")


def test_open_store_s3_urls() -> None:
    options = {"endpoint_url": "http://127.0.0.1:1"}
    store = open_store("s3://bucket/some/prefix/", storage_options=options)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == ("bucket", "some/prefix")
    assert store.url == "s3://bucket/some/prefix/"
    whole = open_store("S3://bucket")
    assert isinstance(whole, S3Store)
    assert (whole.bucket, whole.prefix) == ("bucket", "")


def test_open_store_refuses_storage_options_for_other_stores() -> None:
    for store in ("memory://", "file:///tmp/x", "plain/dir", MemoryStore()):
        with pytest.raises(StoreError, match="storage_options are for s3://"):
            open_store(store, storage_options={"key": "k"})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "unsupported store URL 'ftp://host/x'"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://bucket/a/../b", "bad prefix"),
        ("s3://bucket/prefix?endpoint_url=x", "take none"),
        ("file://", "names no directory"),
        ("", "names no directory"),
        ("file:///tmp/x?fsnc=1", "unknown option"),
        ("file:///tmp/x?fsync=maybe", "fsync must be"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        open_store(url)
    assert not info.value.transient


# -- model-based ----------------------------------------------------------------------------

MODEL_KEYS = ["a", "b", "a/x", "a/y", "a/x/z", "b/c/d"]
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["put", "put_if_absent", "delete", "delete_prefix"]),
        st.sampled_from(MODEL_KEYS),
        st.binary(max_size=4),
    ),
    max_size=30,
)


def model_list(model: dict[str, bytes], prefix: str) -> list[str]:
    """List a dict model the way the Protocol says a store lists."""
    start = f"{prefix}/" if prefix else ""
    return sorted({k[len(start) :].split("/")[0] for k in model if k.startswith(start)})


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_memory_store_matches_a_dict_model(operations: list[tuple[str, str, bytes]]) -> None:
    async def check() -> None:
        store = MemoryStore()
        model: dict[str, bytes] = {}
        for operation, key, data in operations:
            if operation == "put":
                await store.put(key, data)
                model[key] = data
            elif operation == "put_if_absent":
                if key in model:
                    with pytest.raises(ObjectExistsError):
                        await store.put_if_absent(key, data)
                else:
                    await store.put_if_absent(key, data)
                    model[key] = data
            elif operation == "delete":
                await store.delete(key)
                model.pop(key, None)
            else:
                await store.delete_prefix(key)
                model = {k: v for k, v in model.items() if not k.startswith(f"{key}/")}
            for probe in MODEL_KEYS:
                if probe in model:
                    assert await store.get(probe) == model[probe]
                else:
                    with pytest.raises(ObjectNotFoundError):
                        await store.get(probe)
            for prefix in ["", "a", "a/x", "b", "b/c"]:
                assert await store.list(prefix) == model_list(model, prefix)

    anyio.run(check)
