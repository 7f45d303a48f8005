"""The file-system calls the local store makes, in one place, so a test can stand in for
the operating system (a power-loss model drops every write not yet flushed).

:class:`OsFiles` is the real thing. Every method is one whole call or a short fixed
sequence of calls; errors are the operating system's ``OSError`` subclasses.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import sys
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FileOps", "OsFiles"]


class FileOps(Protocol):
    """What the local store asks of the file system."""

    def write_new(self, path: str, data: bytes) -> None:
        """Create ``path`` (it must not exist) holding ``data``; nothing flushed."""
        ...

    def overwrite(self, path: str, data: bytes) -> None:
        """Make the existing file ``path`` hold ``data`` (written in place, cut to its
        length); nothing flushed."""
        ...

    def read(self, path: str) -> bytes:
        """A whole file's bytes, all of one version of the file ``path`` names."""
        ...

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` names a directory (not following a last symlink);
        ``FileNotFoundError`` if it names nothing."""
        ...

    def list_dir(self, path: str) -> list[str]:
        """The sorted names in ``path`` not starting with a dot; missing lists empty."""
        ...

    def link(self, src: str, dst: str) -> None:
        """A second name for ``src``; ``FileExistsError`` if ``dst`` exists (atomic)."""
        ...

    def replace(self, src: str, dst: str) -> None:
        """Rename ``src`` over ``dst`` atomically."""
        ...

    def exchange(self, a: str, b: str) -> bool:
        """Swap two names atomically; False if ``b`` is missing or this cannot swap."""
        ...

    def unlink(self, path: str) -> None:
        """Remove one name."""
        ...

    def makedirs(self, path: str) -> None:
        """Make ``path`` and its missing parents."""
        ...

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        ...

    def rmtree(self, path: str) -> None:
        """Remove a directory and everything below it."""
        ...

    def sync_file(self, path: str) -> None:
        """Flush a file's data to disk."""
        ...

    def sync_dir(self, path: str) -> None:
        """Flush a directory's entries to disk."""
        ...

    def sync_all(self, path: str) -> bool:
        """Flush the whole file system holding ``path`` (data and names, every file);
        False when this system cannot (then the caller flushes file by file)."""
        ...


class OsFiles:
    """The operating system's calls (POSIX; ``syncfs`` and ``renameat2`` on Linux)."""

    def __init__(self) -> None:
        self._can_exchange = _renameat2 is not None
        self._can_syncfs = _syncfs is not None

    def write_new(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            _unlink_quietly(path)
            raise
        os.close(fd)

    def overwrite(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            view, offset = memoryview(data), 0
            while offset < len(data):
                offset += os.pwrite(fd, view[offset:], offset)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def read(self, path: str) -> bytes:
        # a file named by a key is not written while it has that name, so fstat's size
        # is exact; but a store may free it and write it anew as another key's file
        # (see _localpool.py): a reader in another process then finds the name no
        # longer leads to the file it read, or the file changed meanwhile, and reads
        # again (this process's own reads hold freed files back instead)
        while True:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                before = os.fstat(fd)
                size = before.st_size
                data = os.read(fd, size) if size else os.read(fd, 1)  # a directory raises
                while len(data) < size:
                    more = os.read(fd, size - len(data))
                    if not more:
                        break
                    data += more
            finally:
                os.close(fd)
            named = os.stat(path)  # FileNotFoundError: deleted since, as it may be
            if named.st_ino == before.st_ino and named.st_ctime_ns == before.st_ctime_ns:
                return data

    def is_dir(self, path: str) -> bool:
        return stat.S_ISDIR(os.lstat(path).st_mode)

    def list_dir(self, path: str) -> list[str]:
        try:
            with os.scandir(path) as entries:
                return sorted(entry.name for entry in entries if entry.name[0] != ".")
        except (FileNotFoundError, NotADirectoryError):
            return []

    def link(self, src: str, dst: str) -> None:
        os.link(src, dst)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def exchange(self, a: str, b: str) -> bool:
        if _renameat2 is None or not self._can_exchange:
            return False
        if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), 2) == 0:
            return True
        code = ctypes.get_errno()
        if code == errno.ENOENT:
            return False
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            self._can_exchange = False  # e.g. a file system without RENAME_EXCHANGE
            return False
        raise OSError(code, os.strerror(code), b)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path)

    def sync_file(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync_all(self, path: str) -> bool:
        if _syncfs is None or not self._can_syncfs:
            return False
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if _syncfs(fd) == 0:
                return True
            code = ctypes.get_errno()
        finally:
            os.close(fd)
        if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            self._can_syncfs = False
            return False
        raise OSError(code, os.strerror(code), path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


_AT_FDCWD = -100


def _load_libc(name: str, argtypes: tuple[type, ...]) -> Callable[..., int] | None:
    """A libc function (Linux, glibc), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    func.argtypes = argtypes
    func.restype = ctypes.c_int
    loaded: Callable[..., int] = func
    return loaded


_renameat2 = _load_libc(
    "renameat2", (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
)
_syncfs = _load_libc("syncfs", (ctypes.c_int,))
