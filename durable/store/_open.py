"""Turn a store URL (or a store object) into an :class:`ObjectStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from durable._errors import StoreError

from ._local import LocalStore
from ._memory import MemoryStore
from ._s3 import S3Store

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._base import ObjectStore

__all__ = ["open_store"]

_SUPPORTED = "memory://, file://PATH[?fsync=1], s3://BUCKET[/PREFIX] or a plain directory path"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def open_store(
    store: str | ObjectStore, *, storage_options: Mapping[str, Any] | None = None
) -> ObjectStore:
    """Return ``store`` itself if it is a store object, else open the store its URL names.

    ``memory://`` gives a new, private :class:`MemoryStore`; ``file://PATH`` (relative as in
    ``file://./.durable`` or absolute as in ``file:///var/durable``) or a bare path gives
    a :class:`LocalStore`, with ``?fsync=1`` to flush every write to disk;
    ``s3://BUCKET[/PREFIX]`` gives an :class:`S3Store`, configured by ``storage_options``
    (:class:`s3fs.S3FileSystem`'s arguments, such as ``endpoint_url``) and botocore's
    usual environment variables and config files. Other stores take no
    ``storage_options``.
    """
    if isinstance(store, str) and store[:5].lower() == "s3://":
        return S3Store(store, storage_options=storage_options)
    if storage_options is not None:
        raise StoreError(f"storage_options are for s3:// URLs, not {store!r}", transient=False)
    if not isinstance(store, str):
        return store
    scheme, sep, rest = store.partition("://")
    if not sep:
        return _open_local(store, store)
    scheme = scheme.lower()
    if scheme == "memory":
        return MemoryStore(store)
    if scheme == "file":
        return _open_local(store, rest)
    raise StoreError(f"unsupported store URL {store!r}: use {_SUPPORTED}", transient=False)


def _open_local(url: str, location: str) -> LocalStore:
    """Open a :class:`LocalStore` from ``PATH[?fsync=...]``."""
    path, _, query = location.partition("?")
    if not path:
        raise StoreError(f"store URL {url!r} names no directory: use {_SUPPORTED}", transient=False)
    params = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(params) - {"fsync"})
    if unknown:
        raise StoreError(
            f"store URL {url!r} has unknown option(s) {', '.join(unknown)}: only fsync is known",
            transient=False,
        )
    fsync = False
    for value in params.get("fsync", []):
        if value.lower() in _TRUE:
            fsync = True
        elif value.lower() in _FALSE:
            fsync = False
        else:
            raise StoreError(
                f"store URL {url!r}: fsync must be 1 or 0, not {value!r}", transient=False
            )
    return LocalStore(path, url=url, fsync=fsync)
