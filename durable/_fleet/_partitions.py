"""Partitions: how a store's instances split between the processes that share it.

The count is fixed per store, written once (put-if-absent) in ``{root}/config`` by
whichever runtime or client touches the store first; everyone after reads it. An
instance's partition is a stable hash of its id, so every process agrees on it
without asking anyone.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import msgspec

from durable._errors import DurableError, ObjectExistsError, ObjectNotFoundError

if TYPE_CHECKING:
    from durable.store import ObjectStore

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_PARTITIONS",
    "StoreConfig",
    "StoreConfigError",
    "load_config",
    "partition_of",
    "read_config",
]

CONFIG_KEY = "config"
DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 4096


class StoreConfigError(DurableError):
    """The store's ``config`` object disagrees with what this process was told, or is
    unreadable."""


class StoreConfig(msgspec.Struct, frozen=True):
    """What every process sharing a store must agree on."""

    partitions: int


_decoder = msgspec.json.Decoder(StoreConfig)


def partition_of(instance_id: str, partitions: int) -> int:
    """The partition an instance belongs to: the same answer in every process."""
    return zlib.crc32(instance_id.encode()) % partitions


def _check_count(partitions: int) -> int:
    if not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be an int from 1 to {MAX_PARTITIONS}: {partitions!r}")
    return partitions


def _decode(store: ObjectStore, data: bytes) -> StoreConfig:
    try:
        found = _decoder.decode(data)
        _check_count(found.partitions)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as err:
        raise StoreConfigError(f"{store.url}: unreadable config object: {err}") from err
    return found


async def read_config(store: ObjectStore) -> StoreConfig | None:
    """The store's config, or None if no runtime has used the store yet. Only a runtime
    writes it (a client that fixed the default count would keep out a fleet configured
    with another one)."""
    try:
        return _decode(store, await store.get(CONFIG_KEY))
    except ObjectNotFoundError:
        return None


async def load_config(store: ObjectStore, partitions: int | None = None) -> StoreConfig:
    """Read the store's config, writing it first if the store has none.

    ``partitions`` is the count to write on a fresh store (default
    :data:`DEFAULT_PARTITIONS`); given explicitly, a store already configured
    otherwise raises :class:`StoreConfigError`.
    """
    wanted = StoreConfig(_check_count(partitions or DEFAULT_PARTITIONS))
    try:
        await store.put_if_absent(CONFIG_KEY, msgspec.json.encode(wanted))
        found = wanted
    except ObjectExistsError:
        config = await read_config(store)
        if config is None:  # deleted under us: a broken store
            raise StoreConfigError(f"{store.url}: the config object vanished") from None
        found = config
    if partitions is not None and found.partitions != partitions:
        raise StoreConfigError(
            f"{store.url} has {found.partitions} partitions (fixed when the store was first "
            f"used); this process asked for {partitions}"
        )
    return found
