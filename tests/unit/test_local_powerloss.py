"""Power loss under the fsync local store's group commit (issue 18).

The store runs over a fake file system (``FakeDisk``) that keeps what is flushed apart
from what is not. At a chosen call the power goes out: that call and every later one
fail. Then a new disk is made from what was flushed, plus any subset of the unflushed
changes (each name change kept or dropped, each file's unflushed contents kept, dropped
or cut short, as a disk with a write cache may), and a new store reads it. Every
acknowledged write must be there, whole; every key holds one value some write gave it.
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
import threading
from dataclasses import dataclass, field

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable._errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)
from durable.store import LocalStore
from durable.store._local import content_etag


class PowerLoss(OSError):
    """Raised by every call of a ``FakeDisk`` once its power has gone out."""


@dataclass
class _Inode:
    data: bytes  # what a reader sees
    durable: bytes = b""  # what the disk holds


@dataclass
class FakeDisk:
    """An in-memory file system that knows which changes are flushed (see module doc)."""

    root: str
    cut_at: int | None = None  # the call at which the power goes out
    whole: bool = True  # flushes the whole file system at once (else file by file)
    files: dict[str, _Inode] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    durable_files: dict[str, _Inode] = field(default_factory=dict)
    durable_dirs: set[str] = field(default_factory=set)
    pending: list[tuple[str, str, str, _Inode | None]] = field(default_factory=list)
    calls: int = 0
    dead: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.dirs.add(self.root)
        self.durable_dirs.add(self.root)

    # -- the power ----------------------------------------------------------------------

    def _tick(self) -> None:
        self.calls += 1
        if self.dead or self.calls == self.cut_at:
            self.dead = True
            raise PowerLoss(errno.EIO, "the power went out")

    def after_loss(self, rng: random.Random, keep: float) -> FakeDisk:
        """The disk as found after the power came back: the flushed state, plus each
        unflushed change with probability ``keep`` (contents may be cut short)."""
        files, dirs = dict(self.durable_files), set(self.durable_dirs)
        for change in self.pending:
            if rng.random() < keep:
                _apply(files, dirs, change)
        dirs = {d for d in dirs if _reachable(self.root, d, dirs)}
        files = {p: i for p, i in files.items() if _reachable(self.root, p, dirs)}
        disk = FakeDisk(self.root)
        for path, inode in files.items():
            data = inode.durable
            if inode.data != inode.durable and rng.random() < keep:  # torn: part written
                cut = rng.randint(0, len(inode.data))
                data = inode.data[:cut] + inode.durable[cut:]
            disk.files[path] = disk.durable_files[path] = _Inode(data, data)
        disk.dirs, disk.durable_dirs = set(dirs), set(dirs)
        return disk

    def _change(self, kind: str, a: str, b: str = "", inode: _Inode | None = None) -> None:
        change = (kind, a, b, inode)
        _apply(self.files, self.dirs, change)
        self.pending.append(change)

    def _inside(self, path: str) -> str:
        """The prefix of the names inside directory ``path`` (which must exist)."""
        if path not in self.dirs:
            raise FileNotFoundError(errno.ENOENT, "missing", path)
        return path + "/"

    def _need_parent(self, path: str) -> None:
        parent = os.path.dirname(path)
        if parent not in self.dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", parent)

    # -- FileOps --------------------------------------------------------------------------

    def write_new(self, path: str, data: bytes) -> None:
        with self.lock:
            self._tick()
            self._need_parent(path)
            if path in self.files or path in self.dirs:
                raise FileExistsError(errno.EEXIST, "exists", path)
            self._change("create", path, inode=_Inode(data))

    def overwrite(self, path: str, data: bytes) -> None:
        with self.lock:
            self._tick()
            if path not in self.files:
                raise FileNotFoundError(errno.ENOENT, "missing", path)
            self.files[path].data = data  # in place: the disk keeps the old until flushed

    def read(self, path: str) -> bytes:
        with self.lock:
            self._tick()
            if path in self.dirs:
                raise IsADirectoryError(errno.EISDIR, "a directory", path)
            if path not in self.files:
                raise FileNotFoundError(errno.ENOENT, "missing", path)
            return self.files[path].data

    def is_dir(self, path: str) -> bool:
        with self.lock:
            self._tick()
            if path not in self.files and path not in self.dirs:
                raise FileNotFoundError(errno.ENOENT, "missing", path)
            return path in self.dirs

    def list_dir(self, path: str) -> list[str]:
        with self.lock:
            self._tick()
            inside = path + "/"
            names = {p[len(inside) :].split("/")[0] for p in (*self.files, *self.dirs)}
            names = {n for n in names if n} if path in self.dirs else set()
            return sorted(
                n
                for n in names
                if n[0] != "." and (f"{inside}{n}" in self.files or f"{inside}{n}" in self.dirs)
            )

    def link(self, src: str, dst: str) -> None:
        with self.lock:
            self._tick()
            self._need_parent(dst)
            if dst in self.files or dst in self.dirs:
                raise FileExistsError(errno.EEXIST, "exists", dst)
            self._change("create", dst, inode=self.files[src])

    def replace(self, src: str, dst: str) -> None:
        with self.lock:
            self._tick()
            if src not in self.files:
                raise FileNotFoundError(errno.ENOENT, "missing", src)
            self._need_parent(dst)
            if dst in self.dirs:
                raise IsADirectoryError(errno.EISDIR, "a directory", dst)
            self._change("rename", src, dst)

    def exchange(self, a: str, b: str) -> bool:
        with self.lock:
            self._tick()
            if a not in self.files:
                raise FileNotFoundError(errno.ENOENT, "missing", a)
            if b in self.dirs:
                raise IsADirectoryError(errno.EISDIR, "a directory", b)
            if b not in self.files:
                return False
            self._change("exchange", a, b)
            return True

    def unlink(self, path: str) -> None:
        with self.lock:
            self._tick()
            if path in self.dirs:
                raise IsADirectoryError(errno.EISDIR, "a directory", path)
            if path not in self.files:
                raise FileNotFoundError(errno.ENOENT, "missing", path)
            self._change("unlink", path)

    def makedirs(self, path: str) -> None:
        with self.lock:
            self._tick()
            missing = []
            while path not in self.dirs:
                if path in self.files:
                    raise FileExistsError(errno.EEXIST, "a file", path)
                missing.append(path)
                path = os.path.dirname(path)
            for new in reversed(missing):
                self._change("mkdir", new)

    def rmdir(self, path: str) -> None:
        with self.lock:
            self._tick()
            inside = self._inside(path)
            if any(p.startswith(inside) for p in (*self.files, *self.dirs)):
                raise OSError(errno.ENOTEMPTY, "not empty", path)
            self._change("rmdir", path)

    def rmtree(self, path: str) -> None:
        with self.lock:
            self._tick()
            inside = self._inside(path)
            for name in [p for p in self.files if p.startswith(inside)]:
                self._change("unlink", name)
            for name in sorted((d for d in self.dirs if d.startswith(inside)), reverse=True):
                self._change("rmdir", name)
            self._change("rmdir", path)

    def sync_file(self, path: str) -> None:
        with self.lock:
            self._tick()
            inode = self.files[path]
            inode.durable = inode.data

    def sync_dir(self, path: str) -> None:
        """Make the directory's own entry changes durable (a change whose directory is
        not durable itself stays lost, as on a disk)."""
        with self.lock:
            self._tick()
            kept = []
            for change in self.pending:
                _, a, b, _ = change
                if os.path.dirname(a) == path and (not b or os.path.dirname(b) == path):
                    _apply(self.durable_files, self.durable_dirs, change)
                else:
                    kept.append(change)
            self.pending = kept

    def sync_all(self, path: str) -> bool:
        if not self.whole:
            return False  # like a system without syncfs: no call made
        with self.lock:
            self._tick()
            for inode in self.files.values():
                inode.durable = inode.data
            self.durable_files, self.durable_dirs = dict(self.files), set(self.dirs)
            self.pending.clear()
            return True


def _apply(
    files: dict[str, _Inode], dirs: set[str], change: tuple[str, str, str, _Inode | None]
) -> None:
    """Apply one name change to one directory's entries (whether the directory itself
    is reachable is settled by :func:`_reachable` after a loss)."""
    kind, a, b, inode = change
    if kind == "create" and a not in dirs:
        assert inode is not None
        files[a] = inode
    elif kind == "rename" and a in files and b not in dirs:
        files[b] = files.pop(a)
    elif kind == "exchange" and a in files and b in files:
        files[a], files[b] = files[b], files[a]
    elif kind == "unlink":
        files.pop(a, None)
    elif kind == "mkdir" and a not in files:
        dirs.add(a)
    elif kind == "rmdir":  # what was inside belongs to the directory gone with it
        inside = a + "/"
        for path in [p for p in files if p.startswith(inside)]:
            del files[path]
        dirs.difference_update([d for d in dirs if d == a or d.startswith(inside)])


def _reachable(root: str, path: str, dirs: set[str]) -> bool:
    """Whether every directory above ``path`` up to ``root`` exists."""
    parent = os.path.dirname(path)
    while len(parent) > len(root):
        if parent not in dirs:
            return False
        parent = os.path.dirname(parent)
    return True


# -- the scenario ----------------------------------------------------------------------------

KEYS = ("i/a/log/0", "i/a/log/1", "i/a/meta", "i/b/log/0", "i/b/meta", "j")
PREFIXES = ("i/a", "i/b")
KINDS = ("put", "put_if_absent", "put_if_match", "delete", "delete_prefix", "race")

op_strategy = st.tuples(st.sampled_from(KINDS), st.integers(0, len(KEYS) - 1))
rounds_strategy = st.lists(st.lists(op_strategy, min_size=1, max_size=6), min_size=1, max_size=6)


@dataclass
class _Outcome:
    kind: str
    key: str
    data: bytes | None  # None: a delete
    ok: bool | None = None  # True: acknowledged done; False: refused; None: unknown


async def _play(store: LocalStore, ops: list[_Outcome], model: dict[str, bytes]) -> None:
    """Run one round's operations concurrently, recording each one's outcome."""

    async def one(op: _Outcome) -> None:
        try:
            if op.kind == "put":
                await store.put(op.key, op.data or b"")
            elif op.kind in ("put_if_absent", "race"):
                await store.put_if_absent(op.key, op.data or b"")
            elif op.kind == "put_if_match":
                etag = content_etag(model[op.key]) if op.key in model else "none"
                await store.put_if_match(op.key, op.data or b"", etag)
            elif op.kind == "delete":
                await store.delete(op.key)
            else:
                await store.delete_prefix(op.key)
            op.ok = True
        except (ObjectExistsError, ObjectNotFoundError, PreconditionFailedError):
            op.ok = False
        except StoreError as err:
            if not isinstance(err.__cause__, PowerLoss):
                raise
            op.ok = None

    async with anyio.create_task_group() as tg:
        for op in ops:
            tg.start_soon(one, op)


def _round_ops(drawn: list[tuple[str, int]], serial: list[int]) -> list[_Outcome]:
    """One round: at most one operation per key, except put-if-absent racers."""
    ops: list[_Outcome] = []
    taken: set[str] = set()
    for kind, index in drawn:
        key = PREFIXES[index % len(PREFIXES)] if kind == "delete_prefix" else KEYS[index]
        if any(t == key or t.startswith(key + "/") or key.startswith(t + "/") for t in taken):
            continue
        taken.add(key)
        copies = 3 if kind == "race" else 1
        for _ in range(copies):
            serial[0] += 1
            data = None if kind.startswith("delete") else f"{key}#{serial[0]}".encode() * 3
            ops.append(_Outcome(kind, key, data))
    return ops


def _covers(op: _Outcome, key: str) -> bool:
    return op.key == key or (op.kind == "delete_prefix" and key.startswith(op.key + "/"))


async def _scenario(
    root: str,
    rounds: list[list[tuple[str, int]]],
    cut_at: int,
    seed: int,
    keep: float,
    whole: bool,
) -> None:
    if not whole:  # the model keeps names by path, so a directory removed and made
        # again would share its entries with the old one: file by file, no deletes
        rounds = [[(k, i) for k, i in drawn if not k.startswith("delete")] for drawn in rounds]
    disk = FakeDisk(root, cut_at=cut_at, whole=whole)
    store = LocalStore(root, fsync=True, files=disk)
    model: dict[str, bytes] = {}  # every acknowledged value
    serial = [0]
    last: list[_Outcome] = []
    for drawn in rounds:
        last = _round_ops(drawn, serial)
        await _play(store, last, model)
        racers: dict[str, list[_Outcome]] = {}
        for op in last:
            if op.kind == "race":
                racers.setdefault(op.key, []).append(op)
        for key, group in racers.items():  # exactly one racer wins while the power is on
            if all(op.ok is not None for op in group):
                assert sum(bool(op.ok) for op in group) == (0 if key in model else 1)
        if disk.dead:
            break
        for op in last:
            assert op.ok is not None
            if op.ok:
                for key in KEYS:
                    if _covers(op, key):
                        if op.data is None:
                            model.pop(key, None)
                        else:
                            model[key] = op.data
        last = []
    await store.close()

    after = LocalStore(root, fsync=True, files=disk.after_loss(random.Random(seed), keep))
    for key in KEYS:
        allowed = {model.get(key)}
        for op in last:
            if _covers(op, key) and op.ok is not False:
                allowed.add(op.data)
        for op in last:  # acknowledged in the round the power went out: durable
            if _covers(op, key) and op.ok and op.kind != "race":
                allowed = {op.data}
        try:
            found: bytes | None = await after.get(key)
        except StoreError:
            found = None
        assert found in allowed, (key, found, allowed)
    await after.put_if_absent("j2", b"the store works after the loss")
    await after.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rounds=rounds_strategy,
    cut_at=st.integers(1, 150),
    seed=st.integers(0, 2**32 - 1),
    keep=st.sampled_from([0.0, 0.5, 1.0]),
    whole=st.booleans(),
)
def test_every_acknowledged_write_survives_a_power_loss_whole(
    rounds: list[list[tuple[str, int]]], cut_at: int, seed: int, keep: float, whole: bool
) -> None:
    """Group commit on ``file://?fsync=1``: after a power loss at any call, with any
    subset of the unflushed changes kept, every acknowledged write is present and no
    object is torn (issue 18: a turn's objects are durable before it is answered), with
    one flush of the whole file system (``syncfs``) or file by file where there is none
    (there a flush of one leader's files was taken to cover another's: an acknowledged
    write lost, found by this test)."""
    with tempfile.TemporaryDirectory() as root:
        anyio.run(_scenario, root, rounds, cut_at, seed, keep, whole)
