"""An in-process object store: a private dict, for tests and single-process benchmarks.

Every operation runs inline on the event loop (no thread hop, no copy), so this store is
the fast path the runtime is measured on. Nothing survives the process.
"""

from __future__ import annotations

import itertools

from durable._errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """An :class:`~durable.store.ObjectStore` held in a private dict.

    Two instances never share data (unlike fsspec's process-global ``memory://``).
    ETags are the decimal strings of a per-store counter, so every write gets a new one.
    Listing reads a directory index kept up to date as keys appear and disappear, so it
    costs the size of the answer, not the size of the store.
    """

    never_suspends = True
    """Its calls complete without yielding to the event loop (the engine needs no shield)."""

    def __init__(self, url: str = "memory://") -> None:
        self._url = url
        self._objects: dict[str, tuple[bytes, str]] = {}
        # Directory index: "" is the root; each non-empty directory maps to the names of
        # its children (objects, subdirectories, or both under one name).
        self._children: dict[str, set[str]] = {}
        self._etags = itertools.count(1)

    @property
    def url(self) -> str:
        """The URL this store was opened from."""
        return self._url

    def __repr__(self) -> str:
        return f"MemoryStore({self._url!r}, objects={len(self._objects)})"

    async def get(self, key: str) -> bytes:
        """Return the object's bytes; raise ``ObjectNotFoundError`` if absent."""
        try:
            return self._objects[key][0]
        except KeyError:
            raise ObjectNotFoundError(key) from None

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Return the object's bytes and ETag; raise ``ObjectNotFoundError`` if absent."""
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFoundError(key) from None

    async def put(self, key: str, data: bytes) -> str:
        """Write the object unconditionally; return its new ETag."""
        if key not in self._objects:
            self._index(key)
        return self._store(key, data)

    async def put_if_absent(self, key: str, data: bytes) -> str:
        """Write only if the key is absent; raise ``ObjectExistsError`` if not."""
        if key in self._objects:
            raise ObjectExistsError(key)
        self._index(key)
        return self._store(key, data)

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Write only if the current ETag is ``etag``; raise ``PreconditionFailedError`` if not."""
        current = self._objects.get(key)
        if current is None:
            raise ObjectNotFoundError(key)
        if current[1] != etag:
            raise PreconditionFailedError(key)
        return self._store(key, data)

    async def list(self, prefix: str) -> list[str]:
        """Return the sorted names of the immediate children of ``prefix``."""
        return sorted(self._children.get(prefix.rstrip("/"), ()))

    async def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error."""
        if self._objects.pop(key, None) is not None:
            self._unindex(key)

    async def delete_if_match(self, key: str, etag: str) -> None:
        """Delete only if the current ETag is ``etag``; raise ``PreconditionFailedError`` if not."""
        current = self._objects.get(key)
        if current is None:
            raise ObjectNotFoundError(key)
        if current[1] != etag:
            raise PreconditionFailedError(key)
        del self._objects[key]
        self._unindex(key)

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix/`` by walking the directory index."""
        doomed: list[str] = []
        stack = [prefix.rstrip("/")]
        while stack:
            directory = stack.pop()
            for name in self._children.get(directory, ()):
                key = f"{directory}/{name}" if directory else name
                if key in self._objects:
                    doomed.append(key)
                if key in self._children:
                    stack.append(key)
        for key in doomed:
            del self._objects[key]
            self._unindex(key)

    async def close(self) -> None:
        """Do nothing: the store holds no connections or threads."""

    def _store(self, key: str, data: bytes) -> str:
        """Record ``data`` under ``key`` with a fresh ETag and return the ETag."""
        if type(data) is not bytes:  # a bytearray or memoryview could change under us
            data = bytes(data)
        etag = str(next(self._etags))
        self._objects[key] = (data, etag)
        return etag

    def _index(self, key: str) -> None:
        """Add a new key to the directory index, rejecting keys no other backend takes."""
        parent, _, name = key.rpartition("/")
        siblings = self._children.get(parent)
        if siblings is None:
            _check_key(key)  # slow path: a new directory, so check every component once
            siblings = self._children[parent] = set()
            if key != name:
                self._index_dir(parent)
        elif not name or name[0] == "." or (not parent and key != name):
            _check_key(key)
        siblings.add(name)

    def _index_dir(self, directory: str) -> None:
        """Record that ``directory`` has just become non-empty."""
        parent, _, name = directory.rpartition("/")
        siblings = self._children.get(parent)
        if siblings is None:
            siblings = self._children[parent] = set()
            if directory != name:
                self._index_dir(parent)
        siblings.add(name)

    def _unindex(self, path: str) -> None:
        """Drop a path that no longer names an object or a non-empty directory."""
        if path in self._objects or path in self._children:
            return
        parent, _, name = path.rpartition("/")
        siblings = self._children[parent]
        siblings.discard(name)
        if not siblings:
            del self._children[parent]
            if path != name:
                self._unindex(parent)


def _check_key(key: str) -> None:
    """Raise ``StoreError`` unless ``key`` is relative and every component is a plain name."""
    for part in key.split("/"):
        if not part or part[0] == ".":
            raise StoreError(
                f"invalid object key {key!r}: components must be non-empty and not start with '.'",
                key=key,
                transient=False,
            )
