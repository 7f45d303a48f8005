"""A local-directory object store whose conditional writes stay atomic across processes.

fsspec's local ``pipe_file(mode="create")`` checks then writes, so two processes can both
"create" a key; this backend uses the operating system directly instead:

* every write goes to a dot-named temp file first, so a reader never sees a partial object
  and a crash leaves at most a stray dot-file (listings skip dot-names);
* ``put_if_absent`` publishes with ``os.link``, which fails atomically if the key exists;
* ``put``, ``put_if_match`` and ``delete`` run under an exclusive ``fcntl.flock`` on one of
  a fixed set of lock files in ``.locks/`` (chosen by a stable hash of the key), so a
  compare-and-swap cannot interleave with another writer of the same key in any process;
* ETags are content hashes, so every process computes the same ETag for the same bytes.

Without fsync, one object's operation is a handful of metadata syscalls (tens of
microseconds), far less than a hop to a worker thread (hundreds on a small VM), so those
run inline. Everything else (fsync, listings, deleting trees) runs in worker threads, and
operations that arrive while others are in flight are grouped: one thread hop runs the
whole batch in order (group commit), each operation still atomic with its own result.
POSIX only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import itertools
import os
import shutil
import sys
import threading
import zlib
from typing import TYPE_CHECKING, TypeVar

import anyio.lowlevel
import anyio.to_thread

from durable._errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["LocalStore"]

_T = TypeVar("_T")

_LEADERS = 2  # batches in flight at once (worker threads doing file I/O)
_LOCK_STRIPES = 64  # lock files in .locks/; keys hashing to one stripe serialize their writes
_MADE_DIRS_MAX = 100_000  # directories remembered as existing (a bounded cache)
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

    Keys map to paths under ``root``. With ``fsync=True`` every write is flushed to disk
    with its directory before it returns, so it survives power loss; by default writes
    survive a process crash only. Writing the same bytes again gives the same ETag
    (it is a content hash), which is harmless for compare-and-swap: a match means the
    caller's view of the content is current.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, url: str | None = None, fsync: bool = False
    ) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self._url = url if url is not None else f"file://{self._root}"
        self._fsync = fsync
        self._lock_dir = f"{self._root}/.locks"
        # With fsync: directories this store made and synced (or found), so each is synced
        # once per process. Without fsync none is remembered: a write just tries, and
        # makes the directory if the open says it is missing (no memory per instance).
        self._made_dirs: set[str] = set()
        self._queue: list[_Op] = []  # operations waiting for the next batch
        self._stripe_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._lock_fds: dict[int, int] = {}  # stripe -> open lock file, kept for reuse
        self._leaders = 0  # callers running batches now (at most _LEADERS)
        # the store's own worker threads: sync activities or other users of anyio's
        # default limiter cannot hold the threads a commit needs, nor it theirs
        self._threads = anyio.CapacityLimiter(_LEADERS)
        self._can_exchange = True  # renameat2(RENAME_EXCHANGE) works here (see _replace)

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
        return await self._one("read", key, self._get, key, self._path(key))

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Return the object's bytes and ETag; raise ``ObjectNotFoundError`` if absent."""
        return await self._one("read", key, self._get_with_etag, key, self._path(key))

    async def put(self, key: str, data: bytes) -> str:
        """Write the object unconditionally (temp file, then rename); return its ETag."""
        return await self._one("write", key, self._put, key, self._path(key), data)

    async def put_if_absent(self, key: str, data: bytes) -> str:
        """Write only if the key is absent (temp file, then link); else ``ObjectExistsError``."""
        return await self._one("create", key, self._put_if_absent, key, self._path(key), data)

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Write only if the content's ETag is ``etag``; else ``PreconditionFailedError``."""
        path = self._path(key)
        return await self._one("update", key, self._put_if_match, key, path, data, etag)

    async def list(self, prefix: str) -> list[str]:
        """Return the sorted non-dot names in the directory ``prefix``; missing lists empty."""
        prefix = prefix.rstrip("/")
        path = self._path(prefix) if prefix else self._root
        return await self._run("list", prefix, _list_dir, path)

    async def delete(self, key: str) -> None:
        """Delete one object and any directories it leaves empty; missing is fine."""
        await self._one("delete", key, self._delete, key, self._path(key))

    async def delete_prefix(self, prefix: str) -> None:
        """Delete the directory ``prefix`` and everything in it; missing is fine."""
        prefix = prefix.rstrip("/")
        await self._run("delete", prefix, self._delete_prefix, self._path(prefix))

    async def close(self) -> None:
        """Close the lock files this store keeps open."""
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

    async def _one(self, verb: str, key: str, func: Callable[..., _T], *args: object) -> _T:
        """One object's operation: inline when it cannot take long (no fsync), without
        yielding to the event loop (see :attr:`never_suspends`)."""
        if self._fsync:
            return await self._run(verb, key, func, *args)
        try:
            return func(*args)
        except OSError as err:
            raise _os_error(err, verb, key, self._url) from err

    async def _run(self, verb: str, key: str, func: Callable[..., _T], *args: object) -> _T:
        """Run one operation's blocking helper in a worker thread, mapping ``OSError``.

        A caller that finds fewer than ``_LEADERS`` batches in flight leads: it runs
        batches until the queue is empty (shielded, so a cancelled leader cannot strand
        the others). Two leaders keep two threads, so both cores, busy.
        """
        op = _Op(func, args)
        self._queue.append(op)
        if self._leaders >= _LEADERS:
            await op.done.wait()
        else:
            self._leaders += 1
            try:
                with anyio.CancelScope(shield=True):
                    while self._queue:
                        batch, self._queue = self._queue, []
                        await anyio.to_thread.run_sync(_run_batch, batch, limiter=self._threads)
                        for done in batch:
                            done.done.set()
            finally:
                self._leaders -= 1
        if op.error is None:
            return op.value  # type: ignore[return-value]
        if isinstance(op.error, OSError):
            raise _os_error(op.error, verb, key, self._url) from op.error
        raise op.error

    # -- worker-thread side: each helper is one whole operation ---------------------------

    def _get(self, key: str, path: str) -> bytes:
        try:
            return _read_file(path)
        except _NOT_A_FILE:
            raise ObjectNotFoundError(key) from None

    def _get_with_etag(self, key: str, path: str) -> tuple[bytes, str]:
        data = self._get(key, path)
        return data, content_etag(data)

    def _put(self, key: str, path: str, data: bytes) -> str:
        with self._locked(key):
            self._replace(path, data)
        return content_etag(data)

    def _put_if_absent(self, key: str, path: str, data: bytes) -> str:
        directory = os.path.dirname(path)
        temp = self._write_temp(directory, data)
        try:
            os.link(temp, path)
        except FileExistsError:
            raise ObjectExistsError(key) from None
        finally:
            _unlink_quietly(temp)
        if self._fsync:
            _sync_dir(directory)
        return content_etag(data)

    def _put_if_match(self, key: str, path: str, data: bytes, etag: str) -> str:
        with self._locked(key):
            current = self._get(key, path)
            if content_etag(current) != etag:
                raise PreconditionFailedError(key)
            self._replace(path, data)
        return content_etag(data)

    def _delete(self, key: str, path: str) -> None:
        directory = os.path.dirname(path)
        with self._locked(key):
            try:
                os.unlink(path)
            except _NOT_A_FILE:
                return
        if self._fsync:
            _sync_dir(directory)
        self._prune(directory)

    def _delete_prefix(self, path: str) -> None:
        try:
            shutil.rmtree(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        finally:
            inside = path + "/"
            self._made_dirs = {d for d in self._made_dirs if d != path and not d.startswith(inside)}
        directory = os.path.dirname(path)
        if self._fsync:
            _sync_dir(directory)
        self._prune(directory)

    def _replace(self, path: str, data: bytes) -> None:
        """Atomically make ``path`` hold ``data``: a temp file renamed over it, or (without
        fsync, on Linux) exchanged with it and then removed, which readers see alike.

        ext4 (``auto_da_alloc``) writes out a file renamed over another one at once and
        frees the old one's blocks, several times the cost of the whole rest of the
        write; an exchange followed by an unlink does neither. With fsync the temp file
        is on disk already, so the plain rename is as cheap.
        """
        directory = os.path.dirname(path)
        temp = self._write_temp(directory, data)
        try:
            if not self._fsync and self._exchange(temp, path):
                try:
                    os.unlink(temp)  # it names the old version now
                except IsADirectoryError:  # the key names a directory: put it back
                    self._exchange(temp, path)
                    raise
                return
            os.replace(temp, path)
        except BaseException:
            _unlink_quietly(temp)
            raise
        if self._fsync:
            _sync_dir(directory)

    def _exchange(self, temp: str, path: str) -> bool:
        """Swap the two names atomically (``renameat2(RENAME_EXCHANGE)``); False when
        ``path`` does not exist or the system cannot (then never tried again)."""
        if _renameat2 is None or not self._can_exchange:
            return False
        if _renameat2(_AT_FDCWD, os.fsencode(temp), _AT_FDCWD, os.fsencode(path), 2) == 0:
            return True
        code = ctypes.get_errno()
        if code == errno.ENOENT:
            return False
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            self._can_exchange = False  # e.g. a file system without RENAME_EXCHANGE
            return False
        raise OSError(code, os.strerror(code), path)

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

    def _write_temp(self, directory: str, data: bytes) -> str:
        """Write ``data`` to a new dot-named file in ``directory`` and return its path."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                if self._fsync and directory not in self._made_dirs:
                    self._make_dir(directory)
                temp = f"{directory}/.tmp-{_pid}-{next(_temp_numbers)}"
                fd = os.open(temp, flags, 0o666)
                break
            except FileExistsError:
                if attempt == _WRITE_ATTEMPTS:
                    raise  # a key component is a file, or stray temp files fill our names
            except FileNotFoundError:
                if attempt == _WRITE_ATTEMPTS:
                    raise
                if self._fsync:
                    self._made_dirs.discard(directory)  # pruned by a concurrent delete
                else:
                    self._make_dir(directory)  # new, or pruned by a concurrent delete
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(temp)
            raise
        os.close(fd)
        return temp

    def _make_dir(self, directory: str) -> None:
        """Create ``directory`` and its parents, syncing their entries if ``fsync`` is on."""
        os.makedirs(directory, exist_ok=True)
        if not self._fsync:
            return
        path = directory
        while path != self._root and len(path) > len(self._root):
            path = os.path.dirname(path)
            _sync_dir(path)
        made = self._made_dirs
        if len(made) >= _MADE_DIRS_MAX:
            made.clear()  # only a cache: a miss costs one makedirs and its syncs
        made.add(directory)

    def _prune(self, directory: str) -> None:
        """Remove ``directory`` and its ancestors below the root while they are empty."""
        while directory != self._root and len(directory) > len(self._root):
            try:
                os.rmdir(directory)
            except OSError:
                return  # not empty (the usual case), or already gone
            self._made_dirs.discard(directory)
            directory = os.path.dirname(directory)


class _Op:
    """One queued operation and, once its batch ran, its outcome."""

    __slots__ = ("args", "done", "error", "func", "value")

    def __init__(self, func: Callable[..., object], args: tuple[object, ...]) -> None:
        self.func = func
        self.args = args
        self.done = anyio.Event()
        self.value: object = None
        self.error: BaseException | None = None


def _run_batch(batch: list[_Op]) -> None:
    """Worker-thread side of a group: each operation whole, in order."""
    for op in batch:
        try:
            op.value = op.func(*op.args)
        except BaseException as err:  # handed back to the operation's own caller
            op.error = err


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


def _read_file(path: str) -> bytes:
    """Return a whole file's bytes (files are never changed in place, so fstat is exact)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size) if size else os.read(fd, 1)  # a directory raises here
        while len(data) < size:
            more = os.read(fd, size - len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


def _list_dir(path: str) -> list[str]:
    """Return the sorted names in ``path`` that do not start with a dot."""
    try:
        with os.scandir(path) as entries:
            return sorted(entry.name for entry in entries if entry.name[0] != ".")
    except (FileNotFoundError, NotADirectoryError):
        return []


_AT_FDCWD = -100


def _load_renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    """libc's ``renameat2`` (Linux, glibc 2.28+), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    func.restype = ctypes.c_int
    renameat2: Callable[[int, bytes, int, bytes, int], int] = func
    return renameat2


_renameat2 = _load_renameat2()


def _sync_dir(path: str) -> None:
    """Flush a directory's entries to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    """Remove a temp file, ignoring a file that is already gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
