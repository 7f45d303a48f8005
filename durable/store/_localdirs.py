"""Directories the local store's deletes leave empty, removed off the event loop
(issue 18: purge speed).

A key's directories exist while objects sit below them; a delete that empties one
removes it, and its parents while they are empty too, so a listing never shows a name
with nothing beneath it. On a disk mounted with discard, removing a directory that held
files takes milliseconds (its block is discarded at once): a purge removes two
(``instances/{id}/log`` and ``instances/{id}``), which was most of its time, inline on
the event loop. So a delete only notes the directory; one worker thread of the store
removes the noted directories in turn, and a listing (or a delete of a prefix) below
one first removes the noted ones there itself, so it sees no emptied directory.

Removing an empty directory is atomic (``rmdir`` fails on one that is not empty), so
a write racing it either keeps the directory or makes it again (the store's writes
retry when their directory vanished): nothing but an empty directory is ever removed.
A process that dies leaves its noted directories empty, as a crash between a delete
and its ``rmdir`` always could: a listing of their parent shows them, with nothing
beneath.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._localfs import FileOps

__all__ = ["EmptyDirs"]

_IDLE_SECONDS = 2.0  # how long the thread waits for more before it ends


class EmptyDirs:
    """The directories a store's deletes may have left empty, and the thread that
    removes them (started when one is noted, ended once none has been for a while)."""

    def __init__(self, fs: FileOps, root: str) -> None:
        self._fs = fs
        self._root = root
        self._lock = threading.Condition()  # guards the rest; notified on every change
        self._noted: dict[str, None] = {}  # in the order noted
        self._removing: str | None = None  # the directory the thread is removing
        self._held: list[str] = []  # paths listed or walked now: the thread keeps out
        self._thread: threading.Thread | None = None

    def note(self, directory: str) -> None:
        """``directory`` may be empty now: remove it (and its empty parents) soon."""
        with self._lock:
            self._noted[directory] = None
            if self._thread is None or not self._thread.is_alive():
                # started once per busy spell, not per delete (a start costs ~100 us)
                self._thread = threading.Thread(
                    target=self._work, name="durable-local-rmdir", daemon=True
                )
                self._thread.start()
            else:
                self._lock.notify_all()

    @contextlib.contextmanager
    def settled(self, path: str) -> Iterator[None]:
        """Remove now the noted directories at or below ``path`` (after the thread's
        removal of one there, if under way), and let the thread remove none there
        while the caller lists or walks ``path``. Elsewhere the thread goes on."""
        with self._lock:
            while self._removing is not None and _at_or_below(self._removing, path):
                self._lock.wait()
            mine = [d for d in self._noted if _at_or_below(d, path)]
            for directory in mine:
                del self._noted[directory]
            self._held.append(path)
        try:
            for directory in mine:
                self._prune(directory)
            yield
        finally:
            with self._lock:
                self._held.remove(path)
                self._lock.notify_all()

    def close(self) -> None:
        """Stop the thread and remove every noted directory (a worker thread's call:
        it may wait on the disk)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._lock.notify_all()
        if thread is not None:
            thread.join()
        with self.settled(self._root):
            pass

    def _work(self) -> None:
        """The thread: remove noted directories, oldest first, until none has been
        noted for a while (or the store closes)."""
        me = threading.current_thread()
        while True:
            with self._lock:
                while (directory := self._next()) is None:
                    if self._thread is not me or not self._lock.wait(_IDLE_SECONDS):
                        if self._thread is me and self._next() is None:
                            self._thread = None
                        if self._thread is not me:
                            return  # closed, or idle (a note starts another)
                if self._thread is not me:
                    return  # closed: close() removes what is left
                del self._noted[directory]
                self._removing = directory
            try:
                self._prune(directory)
            finally:
                with self._lock:
                    self._removing = None
                    self._lock.notify_all()

    def _next(self) -> str | None:
        """The oldest noted directory outside every held path (under the lock)."""
        for directory in self._noted:
            if not any(_at_or_below(directory, path) for path in self._held):
                return directory
        return None

    def _prune(self, directory: str) -> None:
        """Remove ``directory`` and its ancestors below the root while they are empty."""
        while len(directory) > len(self._root):
            try:
                self._fs.rmdir(directory)
            except OSError:
                return  # not empty (the usual case), or already gone
            directory = directory.rpartition("/")[0]


def _at_or_below(directory: str, path: str) -> bool:
    """Whether ``directory`` is ``path`` or inside it."""
    return directory.startswith(path) and (
        len(directory) == len(path) or directory[len(path)] == "/"
    )
