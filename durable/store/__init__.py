"""Object stores that hold durable's histories: the interface, its backends, and errors.

Open one from a URL with :func:`open_store` (``memory://``, ``file://PATH``).
"""

from durable._errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)

from ._base import ObjectStore
from ._local import LocalStore
from ._memory import MemoryStore
from ._open import open_store

__all__ = [
    "LocalStore",
    "MemoryStore",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "ObjectStore",
    "PreconditionFailedError",
    "StoreError",
    "open_store",
]
