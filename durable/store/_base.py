"""The object-store interface every backend implements.

Keys are relative, ``/``-separated strings (``instances/order-42/log/000000000003``);
the backend maps them under its root. The runtime needs nothing else: the commit
protocol rests on :meth:`ObjectStore.put_if_absent` and :meth:`ObjectStore.put_if_match`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["ObjectStore"]


@runtime_checkable
class ObjectStore(Protocol):
    """An async key/value object store with conditional writes.

    ETags are opaque strings; a backend returns a new one on every successful write.
    Errors are :class:`durable.StoreError` subclasses, with ``transient`` telling
    whether a retry may succeed.
    """

    @property
    def url(self) -> str:
        """The URL this store was opened from (for messages and the CLI)."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the object's bytes; raise ``ObjectNotFoundError`` if absent."""
        ...

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Return the object's bytes and ETag; raise ``ObjectNotFoundError`` if absent."""
        ...

    async def put(self, key: str, data: bytes) -> str:
        """Write the object unconditionally; return its new ETag."""
        ...

    async def put_if_absent(self, key: str, data: bytes) -> str:
        """Write only if the key is absent, atomically; raise ``ObjectExistsError`` if not.

        A reader never sees a partly written object.
        """
        ...

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Write only if the current ETag is ``etag``; raise ``PreconditionFailedError`` if not.

        Raises ``ObjectNotFoundError`` when the key is absent.
        """
        ...

    async def list(self, prefix: str) -> list[str]:
        """Return the sorted names of the immediate children of ``prefix``.

        Children are objects or "directories" (a name with objects beneath it); names
        carry no prefix and no trailing slash. A missing prefix lists as empty.
        """
        ...

    async def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error."""
        ...

    async def delete_if_match(self, key: str, etag: str) -> None:
        """Delete only if the current ETag is ``etag``; raise ``PreconditionFailedError``
        if not, ``ObjectNotFoundError`` if the key is absent.

        The store decides, so a request that arrives late (its caller paused between
        its check and its delete) never removes an object written since.
        """
        ...

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix/``."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...
