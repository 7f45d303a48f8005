"""The local store's pool of freed files (issue 18: steady under churn).

Deleted objects and replaced versions are kept under ``.free/`` and written over as the
next new files, so a store that purges all day neither frees nor takes inodes. These
tests pin what reuse must never do: hand a reader another object's bytes, or let a
power loss leave a deleted key holding another key's object.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable._errors import StoreError
from durable.store import LocalStore
from durable.store._localfs import OsFiles
from tests.unit.test_local_powerloss import FakeDisk, PowerLoss

pytestmark = pytest.mark.anyio


def _inode(root: str, key: str) -> int:
    return os.stat(f"{root}/{key}").st_ino


async def test_a_deleted_object_s_file_is_the_next_new_object_s(tmp_path: Path) -> None:
    """Churn (issue 18): deleting an object and writing a new one takes no new inode;
    the freed file is renamed into place and written over (ext4 without a journal
    scans past every inode freed in the last minute on each creation)."""
    root = str(tmp_path)
    store = LocalStore(root)
    await store.put_if_absent("i/a/log/0", b"first object, longer than the next")
    freed = _inode(root, "i/a/log/0")
    await store.delete("i/a/log/0")
    assert await store.list("") == []  # .free/ is hidden, the emptied directories gone
    await store.put_if_absent("i/b/log/0", b"second")
    assert _inode(root, "i/b/log/0") == freed
    assert await store.get("i/b/log/0") == b"second"  # cut to its own length
    etag = await store.put("i/b/meta", b"v1")
    replaced = _inode(root, "i/b/meta")
    await store.put_if_match("i/b/meta", b"v2", etag)  # the old version is freed
    await store.put_if_absent("i/c/log/0", b"third")
    assert _inode(root, "i/c/log/0") == replaced
    assert await store.get("i/b/meta") == b"v2"
    await store.close()


async def test_a_file_freed_while_a_read_is_in_flight_waits_for_it(tmp_path: Path) -> None:
    """Churn (issue 18): a file freed while a read of this store is in flight is not
    reused until that read ends; else the reader, holding it open, could read another
    object's bytes under the deleted key. The read is paused inside the file system."""
    root = str(tmp_path)
    entered, release = threading.Event(), threading.Event()
    files = _PausingReads(f"{root}/i/a/log/0", entered, release)
    store = LocalStore(root, fsync=True, files=files)
    await store.put_if_absent("i/a/log/0", b"old object")
    got: list[bytes] = []

    async def read() -> None:
        got.append(await store.get("i/a/log/0"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.to_thread.run_sync(entered.wait)
        await store.delete("i/a/log/0")
        await store.put_if_absent("i/b/log/0", b"NEW OBJECT")  # must not reuse it
        release.set()
    assert got == [b"old object"]
    assert await store.get("i/b/log/0") == b"NEW OBJECT"
    await store.close()


class _PausingReads(OsFiles):
    """The real file system, but a read of one path opens the file, then waits."""

    def __init__(self, path: str, entered: threading.Event, release: threading.Event) -> None:
        super().__init__()
        self._path, self._entered, self._release = path, entered, release

    def read(self, path: str) -> bytes:
        if path != self._path or self._entered.is_set():
            return super().read(path)
        with open(path, "rb") as held:  # the reader holds the file open, then reads
            self._entered.set()
            self._release.wait(10)
            return held.read()


def test_a_reader_in_another_process_reads_again_when_the_file_was_reused(
    tmp_path: Path,
) -> None:
    """Churn (issue 18): a reader that opened a key's file which was then freed and
    written over as another key's does not return those bytes (it finds the name no
    longer leads to the file it read): another process has no share in this one's
    read tickets."""
    root = str(tmp_path)
    os.makedirs(f"{root}/k")
    with open(f"{root}/k/a", "wb") as f:
        f.write(b"the object of a")
    fs = OsFiles()
    real_open = os.open
    opened: list[int] = []

    def open_then_reuse(path: str, flags: int, *args: int) -> int:
        fd = real_open(path, flags, *args)
        if path == f"{root}/k/a" and not opened:
            opened.append(fd)
            os.rename(f"{root}/k/a", f"{root}/k/.tmp")  # freed and reused, as by a store
            fs.overwrite(f"{root}/k/.tmp", b"ANOTHER KEY'S BYTES")
            os.link(f"{root}/k/.tmp", f"{root}/k/b")
            os.unlink(f"{root}/k/.tmp")
        return fd

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", open_then_reuse)
        with pytest.raises(FileNotFoundError):
            fs.read(f"{root}/k/a")  # the key is gone: never the other key's bytes


# -- power loss with reuse ----------------------------------------------------------------

KEYS = tuple(f"i/{name}/log/{n}" for name in "abc" for n in range(2))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.lists(st.tuples(st.booleans(), st.integers(0, len(KEYS) - 1)), min_size=2, max_size=6),
        min_size=1,
        max_size=5,
    ),
    cut_at=st.integers(1, 120),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_power_loss_never_leaves_a_deleted_key_with_another_key_s_bytes(
    steps: list[list[tuple[bool, int]]], cut_at: int, seed: int
) -> None:
    """Churn (issue 18), ``file://?fsync=1``: a freed file is reused only after a flush
    of the whole file system covered the rename that freed it. Deletes and creates run
    concurrently round by round (so a file freed in one batch would be written over by
    the next batch before any flush); at a power loss any subset of the unflushed
    changes survives, torn files too. Every key then holds a value written to it or
    nothing, and every acknowledged change is there."""
    anyio.run(_churn_under_power_loss, steps, cut_at, seed)


async def _churn_under_power_loss(
    steps: list[list[tuple[bool, int]]], cut_at: int, seed: int
) -> None:
    root = "/fake/store"
    disk = FakeDisk(root, cut_at=cut_at)
    store = LocalStore(root, fsync=True, files=disk)
    latest: dict[str, tuple[bytes | None, bool]] = {}  # the last change asked, and if done
    written: dict[str, set[bytes | None]] = {key: {None} for key in KEYS}
    serial = 0
    for round_ in steps:
        outcomes: dict[str, bytes | None] = {}
        ops: list[tuple[str, bytes | None]] = []
        for create, index in round_:
            key = KEYS[index]
            if key in outcomes:
                continue
            serial += 1
            data = f"{key}#{serial}".encode() * 4 if create else None
            outcomes[key] = data
            ops.append((key, data))
            written[key].add(data)
        done: dict[str, bool] = {}

        async def one(key: str, data: bytes | None, done: dict[str, bool] = done) -> None:
            try:
                if data is None:
                    await store.delete(key)
                else:
                    await store.put(key, data)
                done[key] = True
            except StoreError as err:
                if not isinstance(err.__cause__, PowerLoss):
                    raise

        async with anyio.create_task_group() as tg:
            for key, data in ops:
                tg.start_soon(one, key, data)
        for key, data in outcomes.items():
            latest[key] = (data, key in done)
        if disk.dead:
            break
    await store.close()
    after = LocalStore(root, fsync=True, files=disk.after_loss(random.Random(seed), 0.5))
    for key in KEYS:
        try:
            found: bytes | None = await after.get(key)
        except StoreError:
            found = None
        assert found in written[key], (key, found)
        if latest.get(key, (None, False))[1]:
            assert found == latest[key][0], (key, found)
    await after.close()


@pytest.mark.parametrize("cut_at", range(1, 60))
def test_a_power_loss_while_deletes_and_creates_share_batches(cut_at: int) -> None:
    """Churn (issue 18), ``file://?fsync=1``: the batch after a delete's batch writes
    its new files before the flush that covers the delete; reusing the freed file there
    would let a power loss keep the new bytes but undo the delete (the deleted key then
    holding another key's object). Every call is tried as the one the power goes out at,
    each with several kept subsets of the unflushed changes."""
    rounds = [
        [(True, 0), (True, 1), (True, 2)],  # made and flushed
        [(False, 0), (False, 1), (True, 3), (True, 4), (True, 5)],  # deletes lead
        [(False, 2), (False, 3), (True, 0), (True, 1)],
    ]
    for seed in range(8):
        anyio.run(_churn_under_power_loss, rounds, cut_at, seed)


async def test_deleting_a_key_that_names_a_directory_keeps_the_directory(tmp_path: Path) -> None:
    """Churn (issue 18): a delete frees the key's file into the pool by renaming it,
    and a rename moves a directory as readily: deleting a key that names a directory
    (a prefix of other keys) must leave it, and everything in it, where it is."""
    store = LocalStore(tmp_path)
    await store.put_if_absent("instances/x/log/0", b"turn")
    await store.delete("instances/x")
    await store.delete("instances/x/log")
    assert await store.get("instances/x/log/0") == b"turn"
    await store.put_if_absent("instances/y/log/0", b"next")
    assert await store.get("instances/y/log/0") == b"next"
    assert await store.get("instances/x/log/0") == b"turn"
    await store.close()


async def test_freed_files_of_an_ended_process_are_reused_and_a_live_one_s_are_not(
    tmp_path: Path,
) -> None:
    """Churn (issue 18): a store takes over the freed files a process that has ended
    left in ``.free/`` (else they would stay there for good), never those of a live
    process (it may still be reading them, or, with fsync, not have flushed their
    rename yet)."""
    free = tmp_path / ".free"
    free.mkdir()
    (free / f"{os.getpid()}-7").write_bytes(b"a live process's freed file")
    (free / "4194304-0").write_bytes(b"an ended process's")  # no pid reaches 2**22
    ended = os.stat(free / "4194304-0").st_ino
    store = LocalStore(tmp_path)
    await store.put_if_absent("i/a/log/0", b"new")
    assert _inode(str(tmp_path), "i/a/log/0") == ended
    await store.put_if_absent("i/a/log/1", b"newer")
    assert (free / f"{os.getpid()}-7").read_bytes() == b"a live process's freed file"
    assert await store.get("i/a/log/0") == b"new"
    await store.close()
