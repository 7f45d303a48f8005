"""Object stores that hold durable's histories: the interface, its backends, and errors.

Open one from a URL with :func:`open_store` (``memory://``, ``file://PATH``,
``s3://BUCKET/PREFIX``). :class:`FaultyStore` wraps any store to inject errors and latency.
"""

from durable._errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)

from ._base import ObjectStore
from ._faulty import FaultyStore
from ._local import LocalStore
from ._memory import MemoryStore
from ._open import open_store
from ._s3 import S3Store

__all__ = [
    "FaultyStore",
    "LocalStore",
    "MemoryStore",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "ObjectStore",
    "PreconditionFailedError",
    "S3Store",
    "StoreError",
    "open_store",
]
