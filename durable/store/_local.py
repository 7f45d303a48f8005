"""A local-directory object store whose conditional writes stay atomic across processes.

fsspec's local ``pipe_file(mode="create")`` checks then writes, so two processes can both
"create" a key; this backend uses the operating system directly instead:

* every write goes to a dot-named temp file first, so a reader never sees a partial object
  and a crash leaves at most a stray dot-file (listings skip dot-names);
* ``put_if_absent`` publishes with ``os.link``, which fails atomically if the key exists;
* ``put``, ``put_if_match``, ``delete`` and ``delete_if_match`` run under an exclusive
  ``fcntl.flock`` on one of a fixed set of lock files in ``.locks/`` (chosen by a stable
  hash of the key), so a compare-and-swap cannot interleave with another writer of the
  same key in any process;
* ETags are content hashes, so every process computes the same ETag for the same bytes;
* a deleted object's file, and the version a put replaced, are kept in ``.free/`` and
  written over as the next new objects (see ``_localpool.py``): a store that deletes
  ended instances all day neither frees nor takes inodes, which on ext4 without a
  journal makes every creation scan past the inodes freed in the last minute;
* a directory a delete empties is removed by a thread of the store, not by the delete
  (milliseconds each on a disk with discard), and a listing waits for those below it,
  so it never shows one (see ``_localdirs.py``).

Without fsync, one object's operation is a handful of metadata syscalls (tens of
microseconds), far less than a hop to a worker thread (hundreds on a small VM), so those
run inline; so do reads with fsync (they need no flush). Everything else (fsync,
listings, deleting trees) runs in worker threads on the store's own limiter, and
operations that arrive while others are in flight are grouped: one thread hop runs the
whole batch in order, each operation still atomic with its own result. With fsync a
batch shares its flushes (group commit): its temp files' contents are flushed together,
then its names, and only then does anyone get an answer (see ``LocalStore._run_batch``).
Every file-system call goes through a :class:`~durable.store._localfs.FileOps`, so a
test can model a power loss. POSIX only.

What survives, per mode:

* without fsync: a process crash loses nothing acknowledged; a power loss may lose
  recent writes, and may leave an object empty or torn (and, as freed files are
  reused, a key deleted shortly before holding part of a newer object);
* with fsync: a power loss loses nothing acknowledged, and never tears an object (a name
  is published only over contents already on disk); an unacknowledged write may or may
  not be there, whole. A freed file is reused only after a flush covered the rename
  that freed it, so a deleted key never comes back holding another object.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import os
import threading
import zlib
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio
import anyio.to_thread

from durable._errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)

from ._localdirs import EmptyDirs
from ._localfs import FileOps, OsFiles
from ._localpool import FreeFiles

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

__all__ = ["LocalStore"]

_T = TypeVar("_T")

_LEADERS = 2  # batches in flight at once (worker threads doing file I/O)
_LOCK_STRIPES = 64  # lock files in .locks/; keys hashing to one stripe serialize their writes
_WRITE_ATTEMPTS = 5  # a concurrent delete may prune the directory we are about to write in
_NOT_A_FILE = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
_temp_numbers = itertools.count()
_pid = os.getpid()  # in temp file names; a syscall each time is measurable, so kept here


def _after_fork() -> None:
    global _pid  # one process-wide value, refreshed in a forked child
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def content_etag(data: bytes) -> str:
    """Return the ETag of ``data``: a content hash, the same in every process."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class LocalStore:
    """An :class:`~durable.store.ObjectStore` kept as files under a local directory.

    Keys map to paths under ``root``. With ``fsync=True`` every write is on disk with
    its directory entry before it returns, so it survives power loss; by default writes
    survive a process crash only. Writing the same bytes again gives the same ETag
    (it is a content hash), which is harmless for compare-and-swap: a match means the
    caller's view of the content is current.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        url: str | None = None,
        fsync: bool = False,
        files: FileOps | None = None,
    ) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self._url = url if url is not None else f"file://{self._root}"
        self._fsync = fsync
        self._fs: FileOps = files if files is not None else OsFiles()
        self._lock_dir = f"{self._root}/.locks"
        self._queue: _Batch = []  # operations waiting for the next batch
        self._stripe_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._lock_fds: dict[int, int] = {}  # stripe -> open lock file, kept for reuse
        self._leaders = 0  # callers running batches now (at most _LEADERS)
        # the store's own worker threads: sync activities or other users of anyio's
        # default limiter cannot hold the threads a commit needs, nor it theirs
        self._threads = anyio.CapacityLimiter(_LEADERS)
        # with fsync: changes made (temp files, names) and changes a flush has covered,
        # counted by batch, so a batch that changed nothing since the last flush skips it
        self._count_lock = threading.Lock()
        self._flushing = threading.Lock()  # held by the leader flushing now
        self._changes = 0
        self._flushed = 0
        # files freed by deletes and replaced versions, reused for new files
        self._free = FreeFiles(self._fs, self._root, self._change_count if fsync else None)
        # directories deletes emptied, removed by a thread of their own (see _localdirs.py)
        self._empty = EmptyDirs(self._fs, self._root)

    @property
    def url(self) -> str:
        """The URL this store was opened from."""
        return self._url

    @property
    def root(self) -> str:
        """The absolute path of the store's directory."""
        return self._root

    @property
    def never_suspends(self) -> bool:
        """Whether single-object calls (get, put, put-if-absent, put-if-match, delete)
        complete without yielding to the event loop: true without fsync, where each is a
        few syscalls run inline (the engine then needs no shield around a commit, and a
        turn that commits does not give up its place to every other ready task)."""
        return not self._fsync

    @property
    def fsync(self) -> bool:
        """Whether every write is flushed to disk before it returns."""
        return self._fsync

    def __repr__(self) -> str:
        return f"LocalStore({self._root!r}, fsync={self._fsync})"

    async def get(self, key: str) -> bytes:
        """Return the object's bytes; raise ``ObjectNotFoundError`` if absent."""
        return await self._one(_Op(self._get, (key, self._path(key))), "read", key)

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Return the object's bytes and ETag; raise ``ObjectNotFoundError`` if absent."""
        return await self._one(_Op(self._get_with_etag, (key, self._path(key))), "read", key)

    async def put(self, key: str, data: bytes) -> str:
        """Write the object unconditionally (temp file, then rename); return its ETag."""
        path = self._path(key)
        return await self._one(_Op(self._put, (key, path, data), path, data), "write", key)

    async def put_if_absent(self, key: str, data: bytes) -> str:
        """Write only if the key is absent (temp file, then link); else ``ObjectExistsError``."""
        path = self._path(key)
        op = _Op(self._put_if_absent, (key, path, data), path, data)
        return await self._one(op, "create", key)

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Write only if the content's ETag is ``etag``; else ``PreconditionFailedError``."""
        path = self._path(key)
        op = _Op(self._put_if_match, (key, path, data, etag), path, data)
        return await self._one(op, "update", key)

    async def list(self, prefix: str) -> list[str]:
        """Return the sorted non-dot names in the directory ``prefix``; missing lists empty."""
        prefix = prefix.rstrip("/")
        path = self._path(prefix) if prefix else self._root
        return await self._run(_Op(self._list, (path,)), "list", prefix)

    async def delete(self, key: str) -> None:
        """Delete one object (and, soon after, off the event loop, any directories it
        leaves empty: listings never show them); missing is fine."""
        path = self._path(key)
        await self._one(_Op(self._delete, (key, path), path), "delete", key)

    async def delete_if_match(self, key: str, etag: str) -> None:
        """Delete only if the content's ETag is ``etag``; else ``PreconditionFailedError``."""
        path = self._path(key)
        await self._one(_Op(self._delete_if_match, (key, path, etag), path), "delete", key)

    async def delete_prefix(self, prefix: str) -> None:
        """Delete the directory ``prefix`` and everything in it; missing is fine."""
        path = self._path(prefix.rstrip("/"))
        await self._run(_Op(self._delete_prefix, (path,), path), "delete", prefix)

    async def close(self) -> None:
        """Remove the directories deletes left empty, and close the lock files this
        store keeps open."""
        await anyio.to_thread.run_sync(self._empty.close, limiter=self._threads)
        fds, self._lock_fds = self._lock_fds, {}
        for fd in fds.values():
            os.close(fd)

    # -- event-loop side ------------------------------------------------------------------

    def _path(self, key: str) -> str:
        """Return the file path of ``key``, refusing keys that could escape the root."""
        if not key or "\x00" in key or "\\" in key:
            raise _bad_key(key)
        for part in key.split("/"):
            if not part or part[0] == ".":
                raise _bad_key(key)
        return f"{self._root}/{key}"

    async def _one(self, op: _Op[_T], verb: str, key: str) -> _T:
        """One object's operation: inline when it cannot take long (a read, or any
        operation without fsync), without yielding to the event loop (see
        :attr:`never_suspends`). A read needs no flush: batched with fsync, it waited
        for the flush of the batch in flight."""
        if self._fsync and op.path is not None:
            return await self._run(op, verb, key)
        try:
            if op.data is not None:
                op.temp = self._write_temp(op.path, op.data, None)
            return self._publish(op)
        except OSError as err:
            raise _os_error(err, verb, key, self._url) from err

    async def _run(self, op: _Op[_T], verb: str, key: str) -> _T:
        """Run one operation in a batch in a worker thread, mapping ``OSError``.

        A caller that finds fewer than ``_LEADERS`` batches in flight leads: it runs
        batches until the queue is empty (shielded, so a cancelled leader cannot strand
        the others). A lone caller runs at once; callers arriving meanwhile form the
        next batch, so the batch grows with the load and shares its flushes.
        """
        self._queue.append(op)
        if self._leaders >= _LEADERS:
            await op.done.wait()
        else:
            self._leaders += 1
            try:
                with anyio.CancelScope(shield=True):
                    await self._lead()
            finally:
                self._leaders -= 1
        if op.error is None:
            return cast("_T", op.value)
        if isinstance(op.error, OSError):
            raise _os_error(op.error, verb, key, self._url) from op.error
        raise op.error

    async def _lead(self) -> None:
        """Run batches until the queue is empty and every caller has its answer.

        With fsync the batches form a pipeline: one thread hop writes batch k's temp
        files, flushes, then publishes batch k. That flush also covers batch k-1's
        names, so batch k-1's callers are answered after it: under load each batch
        costs one flush; a lone caller's batch takes two (its contents, its name).
        """
        unanswered: _Batch = []  # published, waiting for the flush that covers it
        while self._queue or unanswered:
            batch, self._queue = self._queue, []
            try:
                settled = await anyio.to_thread.run_sync(
                    self._run_batch, batch, unanswered, limiter=self._threads
                )
            except BaseException as err:  # not the operations' own: none may hang on it
                for op in (*unanswered, *batch):
                    op.error = op.error or err
                    op.done.set()
                raise
            for op in unanswered:
                op.done.set()
            unanswered = []
            if settled:
                for op in batch:
                    op.done.set()
            else:
                unanswered = batch

    # -- worker-thread side ---------------------------------------------------------------

    def _run_batch(self, batch: _Batch, unanswered: _Batch) -> bool:
        """Run a batch, each operation whole and in order with its own outcome; return
        whether its callers may have their answers now (else after the next flush).

        With fsync this is group commit: every new object's temp file is written, then
        one flush makes their contents durable, and with them the names ``unanswered``
        (the previous batch) published; then every operation publishes (link, rename,
        unlink) in order. A name is published only over flushed contents, so no power
        loss leaves a torn object, and no caller hears of a change before a flush
        covers it, so a turn's effects follow its objects to disk.
        """
        if not self._fsync:
            for op in batch:
                self._attempt(op)
            return True
        made: set[str] = set()  # directories whose entries the flush must cover
        temps: _Paths = []
        for op in batch:
            if op.data is not None:
                try:
                    op.temp = self._write_temp(op.path, op.data, made)
                    temps.append(op.temp)
                except BaseException as err:  # handed back to the operation's own caller
                    op.error = err
        changed = {os.path.dirname(op.path) for op in unanswered if op.path and _changed(op)}
        covered = self._count_changes(bool(temps))
        if temps or changed or covered > self._flushed:
            # one flush at a time: a leader that waited for another's may find that
            # flush covered its changes too (it began after they were counted)
            with self._flushing:
                if covered > self._flushed:
                    covered = self._change_count()  # counted: written before this flush
                    whole = self._flush([*unanswered, *batch], temps, made | changed)
                    if whole is None:
                        return True
                    self._free.flushed(covered, whole)
                    if whole:  # it covered every change counted so far, other leaders' too
                        with self._count_lock:
                            self._flushed = max(self._flushed, covered)
        for op in batch:
            if op.error is None:
                self._attempt(op)
        return self._count_changes(any(map(_changed, batch))) == covered

    def _change_count(self) -> int:
        """The count of changes so far (for the pool of freed files)."""
        with self._count_lock:
            return self._changes

    def _count_changes(self, changed: bool) -> int:
        """Count one more change if ``changed``; return the count."""
        with self._count_lock:
            self._changes += changed
            return self._changes

    def _attempt(self, op: _Op[Any]) -> None:
        """Run one operation (its temp file written, if it has data), keeping its outcome."""
        try:
            if op.data is not None and op.temp is None:
                op.temp = self._write_temp(op.path, op.data, None)
            op.value = self._publish(op)
        except BaseException as err:  # handed back to the operation's own caller
            op.error = err

    def _publish(self, op: _Op[_T]) -> _T:
        """The operation's own step; the temp file of one that failed is removed."""
        if op.temp is None:
            return op.func(*op.args)
        try:
            return op.func(*op.args, op.temp)
        except BaseException:
            self._release_quietly(op.temp)
            raise

    def _flush(self, batch: _Batch, files: Iterable[str], dirs: Iterable[str]) -> bool | None:
        """Make ``files``' contents and ``dirs``' entries durable: one flush of the whole
        file system where the system has it (True), else each file and directory in turn
        (False: that covers only these). On failure (None) every operation of the batch
        that changed something fails with it (its outcome is unknown, as after a
        timeout)."""
        fs = self._fs
        try:
            if fs.sync_all(self._root):
                return True
            for path in files:
                fs.sync_file(path)
            for path in dirs:
                fs.sync_dir(path)
        except OSError as err:
            for op in batch:
                if _changed(op):
                    op.error = err
                    if op.temp is not None:
                        _unlink_quietly(fs, op.temp)
            return None
        return False

    def _list(self, path: str) -> _Paths:
        with self._empty.settled(path):  # no directory a delete emptied shows
            return self._fs.list_dir(path)

    def _get(self, key: str, path: str) -> bytes:
        try:
            with self._free.reading():
                return self._fs.read(path)
        except _NOT_A_FILE:
            raise ObjectNotFoundError(key) from None

    def _get_with_etag(self, key: str, path: str) -> tuple[bytes, str]:
        data = self._get(key, path)
        return data, content_etag(data)

    def _put(self, key: str, path: str, data: bytes, temp: str) -> str:
        with self._locked(key):
            self._replace(path, temp)
        return content_etag(data)

    def _put_if_absent(self, key: str, path: str, data: bytes, temp: str) -> str:
        try:
            self._fs.link(temp, path)
        except FileExistsError:
            raise ObjectExistsError(key) from None  # the temp file is freed by _publish
        _unlink_quietly(self._fs, temp)  # the file lives on under the key's name
        return content_etag(data)

    def _put_if_match(self, key: str, path: str, data: bytes, etag: str, temp: str) -> str:
        with self._locked(key):
            current = self._get(key, path)
            if content_etag(current) != etag:
                raise PreconditionFailedError(key)
            self._replace(path, temp, a_file=True)
        return content_etag(data)

    def _delete(self, key: str, path: str) -> None:
        with self._locked(key):
            try:
                self._release(path, a_file=False)
            except _NOT_A_FILE:
                return
        self._empty.note(os.path.dirname(path))

    def _delete_if_match(self, key: str, path: str, etag: str) -> None:
        with self._locked(key):
            if content_etag(self._get(key, path)) != etag:
                raise PreconditionFailedError(key)
            self._release(path, a_file=False)
        self._empty.note(os.path.dirname(path))

    def _delete_prefix(self, path: str) -> None:
        try:
            with self._empty.settled(path):  # none vanishes while the tree is walked
                self._fs.rmtree(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        self._empty.note(os.path.dirname(path))

    def _replace(self, path: str, temp: str, *, a_file: bool = False) -> None:
        """Atomically make ``path`` name the contents of ``temp``: exchanged with it and
        the old version then freed into the pool (see _localpool.py), which readers see
        alike, or, where the system cannot exchange, renamed over it. ``a_file``: the
        caller knows ``path`` names a file (it just read it), so it need not be looked
        at before it is freed.

        Besides keeping the old file for reuse, the exchange spares ext4
        (``auto_da_alloc``) writing out a file renamed over another one at once and
        freeing the old one's blocks, several times the cost of the whole rest of the
        write.
        """
        fs = self._fs
        if fs.exchange(temp, path):
            try:
                self._release(temp, a_file=a_file)  # it names the old version now
            except IsADirectoryError:  # the key names a directory: put it back
                fs.exchange(temp, path)
                raise
            return
        fs.replace(temp, path)

    def _release(self, path: str, *, a_file: bool = True) -> None:
        """Remove the name ``path`` of a file, keeping the file for reuse if the pool
        takes it (``FileNotFoundError`` if missing, ``IsADirectoryError`` if a directory:
        unless ``a_file`` says it is one, it is looked at first, as the pool would take
        a directory whole)."""
        if not a_file and self._fs.is_dir(path):
            raise IsADirectoryError(errno.EISDIR, "a directory", path)
        if not self._free.give(path):
            self._fs.unlink(path)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Hold the exclusive lock of ``key``'s stripe: a thread lock within this process
        (flock does not exclude threads sharing a descriptor), flock across processes."""
        stripe = zlib.crc32(key.encode()) % _LOCK_STRIPES
        with self._stripe_locks[stripe]:
            fd = self._lock_fds.get(stripe)
            if fd is None:
                fd = self._lock_fds[stripe] = self._open_lock(stripe)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _open_lock(self, stripe: int) -> int:
        lock_path = f"{self._lock_dir}/{stripe:02d}"
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            return os.open(lock_path, flags, 0o666)
        except FileNotFoundError:
            os.makedirs(self._lock_dir, exist_ok=True)
            return os.open(lock_path, flags, 0o666)

    def _write_temp(self, path: str | None, data: bytes, made: set[str] | None) -> str:
        """Write ``data`` to a new dot-named file beside ``path`` (a freed file reused,
        if one is ready) and return its name; a directory made on the way adds its
        ancestors to ``made`` (their entries must be flushed too)."""
        assert path is not None
        directory = os.path.dirname(path)
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            temp = f"{directory}/.tmp-{_pid}-{next(_temp_numbers)}"
            try:
                if not self._write_reused(directory, temp, data, made):
                    self._fs.write_new(temp, data)
                return temp
            except FileExistsError:
                if attempt == _WRITE_ATTEMPTS:
                    raise  # a key component is a file, or stray temp files fill our names
            except FileNotFoundError:
                if attempt == _WRITE_ATTEMPTS:
                    raise
                self._make_dirs(directory, made)  # new, or pruned by a concurrent delete
        raise AssertionError("unreachable")

    def _write_reused(self, directory: str, temp: str, data: bytes, made: set[str] | None) -> bool:
        """Make ``temp`` hold ``data`` by renaming a freed file there and writing over it;
        False if no freed file is ready (or the one taken is gone)."""
        name = self._free.take()
        if name is None:
            return False
        try:
            try:
                self._fs.replace(name, temp)
            except FileNotFoundError:  # no directory yet, or the freed file is gone
                self._make_dirs(directory, made)
                self._fs.replace(name, temp)
        except FileNotFoundError:
            return False  # gone: taken by another process, which adopted it
        except BaseException:
            self._free.untake(name)
            raise
        try:
            self._fs.overwrite(temp, data)
        except BaseException:
            _unlink_quietly(self._fs, temp)
            raise
        return True

    def _release_quietly(self, temp: str) -> None:
        """Free the temp file of an operation that failed, into the pool if it takes
        it; a failure here is left behind as a dot-file (the operation's own matters)."""
        try:
            self._release(temp)
        except OSError:
            _unlink_quietly(self._fs, temp)

    def _make_dirs(self, directory: str, made: set[str] | None) -> None:
        """Make ``directory`` and its missing parents; with ``made``, note the
        directories whose entries a flush must then cover."""
        self._fs.makedirs(directory)
        if made is not None:
            parent = directory
            while len(parent) > len(self._root):
                parent = os.path.dirname(parent)
                made.add(parent)


_Batch = list["_Op[Any]"]  # spelled here: in LocalStore's body, ``list`` is its own method
_Paths = list[str]


class _Op(Generic[_T]):
    """One operation: what it runs, the path it changes and the bytes it writes (if
    any), and, once its batch ran, its outcome."""

    __slots__ = ("args", "data", "done", "error", "func", "path", "temp", "value")

    def __init__(
        self,
        func: Callable[..., _T],
        args: tuple[object, ...],
        path: str | None = None,
        data: bytes | None = None,
    ) -> None:
        self.func = func
        self.args = args
        self.path = path  # None for reads
        self.data = data
        self.temp: str | None = None
        self.done = anyio.Event()
        self.value: _T | None = None
        self.error: BaseException | None = None


def _changed(op: _Op[Any]) -> bool:
    """Whether the operation changes the store and has not failed (so far)."""
    return op.path is not None and op.error is None


def _unlink_quietly(fs: FileOps, path: str) -> None:
    """Remove a temp file if the system lets us: one left behind is a dot-file, skipped by
    listings, and the failure that matters is the operation's own."""
    with contextlib.suppress(OSError):
        fs.unlink(path)


_PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EACCES, errno.EPERM})


def _os_error(err: OSError, verb: str, key: str, url: str) -> StoreError:
    """An OSError as a StoreError; retrying cannot fix a name too long or a denied path."""
    transient = err.errno not in _PERMANENT_ERRNOS
    return StoreError(f"cannot {verb} {key!r} in {url}: {err}", key=key, transient=transient)


def _bad_key(key: str) -> StoreError:
    """Build the error for a key that cannot safely name a file under the root."""
    return StoreError(
        f"invalid object key {key!r}: must be relative, '/'-separated, with non-empty "
        "components that do not start with '.'",
        key=key,
        transient=False,
    )
