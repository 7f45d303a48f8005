"""Files the local store frees, kept for reuse as new files (issue 18: steady under churn).

On ext4 without a journal, a new inode is not taken from those freed in the last minute
or so: every file creation scans past them, so a store that deletes ended instances
while it writes new ones slows down several times. The store therefore frees no file
it can keep: a deleted object, or the version a put replaced, is renamed into
``{root}/.free/`` (a dot-name: listings skip it), and the next temp file is one of those,
renamed into place and written over, instead of a new one. No inode is freed or taken.

A freed file is handed out again only once nobody can still see it as what it was:

* no read of this store that began before it was freed is still reading (a reader
  holding it open would see another object's bytes);
* with fsync, a flush of the whole file system covered the rename that freed it (else a
  power loss could undo the rename but keep the new bytes: the old key holding another
  key's object). Where the system cannot flush it whole, freed files are not reused.

A reader in another process checks instead that the name still leads to the file it
read (see :meth:`~durable.store._localfs.OsFiles.read`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ._localfs import FileOps

__all__ = ["FreeFiles"]

CAPACITY = 65_536  # freed files kept; beyond, a file is deleted (a churn round frees ~32k)


class FreeFiles:
    """The pool of freed files of one store (see module doc); thread-safe."""

    def __init__(self, fs: FileOps, root: str, changes: Callable[[], int] | None) -> None:
        self._fs = fs
        self._dir = f"{root}/.free"
        # with fsync, the store's count of changes: a file freed waits for a whole flush
        # that began after its rename (one that covers a higher count) before reuse
        self._changes = changes
        self._lock = threading.Lock()
        self._names = itertools.count()
        self._pid = -1  # the process the names were made in (refreshed after a fork)
        # freed, each with (the reads begun before it, the store's change count then)
        self._waiting: deque[tuple[str, int, int]] = deque()
        self._ready: list[str] = []
        self._reads_begun = 0
        self._reading: dict[int, None] = {}  # tickets of reads in flight, oldest first
        self._covered = 0  # the change count the last whole flush covered
        self._enabled = True
        self._adopted = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting) + len(self._ready)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold back files freed from now on while the caller reads."""
        with self._lock:
            ticket = self._reads_begun
            self._reads_begun += 1
            self._reading[ticket] = None
        try:
            yield
        finally:
            with self._lock:
                del self._reading[ticket]

    def give(self, path: str) -> bool:
        """Free ``path`` into the pool; False if the pool is full or off (then the caller
        deletes it). ``FileNotFoundError`` if ``path`` is missing."""
        with self._lock:
            if not self._enabled or len(self._waiting) + len(self._ready) >= CAPACITY:
                return False
            pid = os.getpid()
            if pid != self._pid:
                self._pid, self._names = pid, itertools.count()
            name = f"{self._dir}/{pid}-{next(self._names)}"
        try:
            self._fs.replace(path, name)
        except FileNotFoundError:
            self._fs.makedirs(self._dir)  # the first one (or someone removed the pool)
            self._fs.replace(path, name)
        # stamped after the rename: the reads begun before it, and a count any flush
        # that covers it must have begun after it
        changes = self._changes() + 1 if self._changes is not None else 0
        with self._lock:
            self._waiting.append((name, self._reads_begun, changes))
        return True

    def take(self) -> str | None:
        """The name of a freed file now safe to reuse, or None; the caller renames it
        into place (and hands it back with :meth:`untake` if that fails for want of the
        destination's directory)."""
        with self._lock:
            if not self._ready:
                self._promote()
            return self._ready.pop() if self._ready else None

    def untake(self, name: str) -> None:
        """Return a name :meth:`take` gave, unused."""
        with self._lock:
            self._ready.append(name)

    def flushed(self, changes: int, whole: bool) -> None:
        """Note a flush: of the whole file system covering ``changes`` changes (files
        freed by then may be reused), or of some files only (then reuse stops)."""
        with self._lock:
            if whole:
                self._covered = max(self._covered, changes)
            elif self._changes is not None:
                self._enabled = False

    def _promote(self) -> None:
        """Move the freed files now safe to reuse to the ready list (under the lock);
        the first time none waits, adopt those of processes that have ended."""
        if not self._adopted and not self._waiting:
            self._adopted = True
            self._adopt()
        oldest = next(iter(self._reading), self._reads_begun)
        waiting = self._waiting
        while waiting and waiting[0][1] <= oldest:
            if self._changes is not None and waiting[0][2] > self._covered:
                break
            self._ready.append(waiting.popleft()[0])

    def _adopt(self) -> None:
        """Take over the freed files of processes that have ended (under the lock)."""
        alive: dict[str, bool] = {}
        for name in self._fs.list_dir(self._dir):
            pid = name.partition("-")[0]
            if pid not in alive:
                alive[pid] = _alive(pid)
            if not alive[pid] and len(self._waiting) < CAPACITY:
                # a rename its process made may not be flushed yet: wait for one
                self._waiting.append((f"{self._dir}/{name}", 0, self._covered + 1))
                # (its process's reads are over; it waits only for a flush, if any)


def _alive(pid: str) -> bool:
    """Whether the process ``pid`` runs (or the name is not one of ours: keep out)."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:
        return True
    return True
