"""Partition leases: which process of a fleet runs which partitions.

Every process in a fleet writes a heartbeat ``members/{owner}`` and holds some
``leases/{partition}`` objects, each written by put-if-absent or put-if-match and
renewed on the :class:`~durable.Clock` before it expires. The object store's
conditional writes are the only coordination: two processes can never both renew
one lease, since the loser's ETag is stale. Each process aims for its fair share
of the partitions among the live members, so partitions flow to a process that
joins and away from one that leaves or dies.

A process commits a turn only while its lease is valid by its own clock, with a
margin; the put-if-absent of ``log/{seq}`` still guards an owner that paused
between that check and its write.
"""

from __future__ import annotations

import logging
import os
import socket
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import msgspec

from durable._core._events import EPOCH
from durable._errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)
from durable._ids import validate_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from durable._clock import Clock
    from durable.store import ObjectStore

__all__ = ["Fleet", "Leases", "default_owner"]

log = logging.getLogger("durable.leases")

LEASES = "leases"
MEMBERS = "members"


@dataclass(frozen=True)
class Fleet:
    """Run as one process of several sharing a store: take partitions by lease.

    ``partitions`` is the partition count for a store used for the first time
    (default 16; a store keeps the count it was first given). ``lease_ttl`` is how
    long a lease lasts without renewal: a dead process's partitions move after it.
    Leases are renewed every ``renew_interval`` (default a third of the TTL).
    ``owner`` names this process in lease objects (default host-pid-random).
    """

    partitions: int | None = None
    lease_ttl: timedelta = timedelta(seconds=15)
    renew_interval: timedelta | None = None
    owner: str | None = None

    def __post_init__(self) -> None:
        if self.lease_ttl <= timedelta(0):
            raise ValueError("lease_ttl must be positive")
        if self.renew_interval is not None and not (
            timedelta(0) < self.renew_interval < self.lease_ttl
        ):
            raise ValueError("renew_interval must be positive and shorter than lease_ttl")
        if self.owner is not None:
            validate_key(self.owner, "fleet owner")

    @property
    def renew_every(self) -> timedelta:
        return self.renew_interval or self.lease_ttl / 3


def default_owner(suffix: str) -> str:
    """A name for this process that no other process shares."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return f"{host or 'host'}-{os.getpid()}-{suffix}"


class _Record(msgspec.Struct, frozen=True):
    """The body of a lease or member object. ``incarnation`` tells apart two processes
    that were given the same owner name (or one process and its restart)."""

    owner: str
    expires_at: datetime
    incarnation: str = ""


_decoder = msgspec.json.Decoder(_Record)


def _decode(data: bytes) -> _Record | None:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # unreadable: treated as free, and overwritten by put-if-match


class Leases:
    """This process's partition leases: acquired, renewed, balanced and released."""

    def __init__(
        self,
        store: ObjectStore,
        clock: Clock,
        fleet: Fleet,
        partitions: int,
        owner: str,
        *,
        on_acquired: Callable[[list[int]], Awaitable[None]],
        on_lost: Callable[[list[int]], None],
        incarnation: str | None = None,
    ) -> None:
        self.store = store
        self.incarnation = incarnation or os.urandom(8).hex()
        """This process's lease-holding life: a lease of the same owner name written
        by another incarnation is another process's until it expires."""
        self._warned_twin = False
        self._beats = 0  # heartbeats written
        self.clock = clock
        self.fleet = fleet
        self.partitions = partitions
        self.owner = validate_key(owner, "fleet owner")
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._ttl = fleet.lease_ttl
        self._margin = fleet.lease_ttl / 5  # stop committing this long before expiry
        self._held: dict[int, tuple[str, datetime]] = {}  # partition -> (etag, valid until)
        # the order this process tries free partitions in: its own, so processes spread
        self._preference = sorted(
            range(partitions), key=lambda p: zlib.crc32(f"{self.owner}/{p}".encode())
        )

    # -- what the engine asks -------------------------------------------------------

    def owns(self, partition: int) -> bool:
        """Whether this process runs ``partition`` now: it holds the lease and the lease
        is still valid by this process's clock. A lease whose renewals keep failing
        stops counting here at once, so work for the partition is left to the store
        (inbox, wakeups) for whichever process renews or takes it."""
        held = self._held.get(partition)
        return held is not None and self.clock.now() < held[1]

    def can_commit(self, partition: int) -> bool:
        """Whether this process may commit a turn of ``partition`` now."""
        return self.owns(partition)

    @property
    def held(self) -> list[int]:
        """The partitions this process runs now (valid leases only)."""
        now = self.clock.now()
        return sorted(p for p, (_, valid_until) in self._held.items() if now < valid_until)

    # -- the loop -------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Take a first share, report started, then renew and rebalance on the Clock
        until cancelled; release everything on the way out."""
        try:
            await self._tick_logged()
            task_status.started()
            due = self.clock.now()
            while True:
                # at a fixed rate: a slow round must not push the next renewal later
                due = max(due + self.fleet.renew_every, self.clock.now())
                await self.clock.sleep_until(due)
                await self._tick_logged()
        finally:
            with anyio.CancelScope(shield=True):
                await self.release_all()

    async def _tick_logged(self) -> None:
        try:
            await self.tick()
        except StoreError as err:
            log.warning("lease round of %s failed on the store: %s", self.owner, err)

    async def tick(self) -> None:
        """One round: renew what is held, heartbeat, then give or take to the fair share."""
        now = self.clock.now()
        await self._renew(now)  # first: the renewals are what must not be late
        try:
            target = await self._fair_share(now)  # reads our heartbeat as last round left it
        finally:  # the heartbeat goes out even when reading the others failed
            await self.store.put(f"{MEMBERS}/{self.owner}", self._body(now))
            self._beats += 1
        if len(self._held) > target:
            await self._give_up(sorted(self._held, key=self._preference.index)[target:])
        elif len(self._held) < target:
            await self._take(now, target)

    async def _renew(self, now: datetime) -> None:
        """Renew every held lease at once (a slow store must not eat the TTL)."""
        lost: list[int] = []
        regained: list[int] = []  # renewed after their validity had lapsed
        body = self._body(now)
        if lapsed := sorted(p for p, (_, valid_until) in self._held.items() if now >= valid_until):
            # while lapsed, their messages went to the store, not to this process: the
            # engine lets go of their instances before a renewal makes them ours again
            self._on_lost(lapsed)

        async def renew(partition: int, etag: str, lapsed: bool) -> None:
            try:
                new_etag = await self.store.put_if_match(self._key(partition), body, etag)
            except (PreconditionFailedError, ObjectNotFoundError):
                lost.append(partition)  # another process took it after it expired
                return
            except StoreError as err:  # kept until its validity runs out; next round retries
                log.warning("renewal of partition %d failed: %s", partition, err)
                return
            if partition in self._held:
                self._held[partition] = (new_etag, now + self._ttl - self._margin)
                if lapsed:
                    regained.append(partition)

        async with anyio.create_task_group() as tg:
            for partition, (etag, valid_until) in list(self._held.items()):
                tg.start_soon(renew, partition, etag, now >= valid_until)
        if lost:
            log.warning("%s lost partitions %s to another process", self.owner, lost)
            self._lose(lost)
        if regained:
            # the engine let go of their instances: load them again
            log.info("%s renewed lapsed partitions %s", self.owner, regained)
            await self._on_acquired(sorted(regained))

    async def _fair_share(self, now: datetime) -> int:
        """This process's share: the partitions split evenly among live members, the
        remainder going to the first members by name."""
        live = {self.owner}
        for name in await self.store.list(MEMBERS):
            try:
                record = _decode(await self.store.get(f"{MEMBERS}/{name}"))
            except ObjectNotFoundError:
                continue
            if record is not None and record.expires_at > now:
                live.add(name)
                if name == self.owner and self._beats and not self._mine(record):
                    self._warn_twin(record)  # written since our last beat by another
            elif record is None or record.expires_at + self._ttl < now:
                await self._forget_member(name)
        members = sorted(live)
        base, extra = divmod(self.partitions, len(members))
        return base + (1 if members.index(self.owner) < extra else 0)

    async def _forget_member(self, name: str) -> None:
        """Tidy the heartbeat of a member long dead (it would rejoin with a new name)."""
        try:
            await self.store.delete(f"{MEMBERS}/{name}")
        except StoreError as err:
            log.debug("could not delete the heartbeat of %s: %s", name, err)

    async def _take(self, now: datetime, target: int) -> None:
        """Acquire free or expired partitions, in this process's order, up to ``target``."""
        taken: list[int] = []
        body = self._body(now)
        for partition in self._preference:
            if len(self._held) >= target:
                break
            if partition in self._held:
                continue
            key = self._key(partition)
            try:
                data, etag = await self.store.get_with_etag(key)
            except ObjectNotFoundError:
                try:
                    new_etag = await self.store.put_if_absent(key, body)
                except ObjectExistsError:
                    continue
            else:
                record = _decode(data)
                if record is not None and not self._mine(record) and record.expires_at > now:
                    continue  # held by a live process (maybe one with this owner name)
                try:
                    new_etag = await self.store.put_if_match(key, body, etag)
                except (PreconditionFailedError, ObjectNotFoundError):
                    continue
            self._held[partition] = (new_etag, now + self._ttl - self._margin)
            taken.append(partition)
        if taken:
            log.info("%s took partitions %s, holds %d", self.owner, taken, len(self._held))
            await self._on_acquired(taken)

    async def _give_up(self, partitions: list[int]) -> None:
        """Hand partitions back for another process: stop using them, then free them."""
        log.info("%s releases partitions %s", self.owner, partitions)
        await self._free(self._lose(partitions))

    def _lose(self, partitions: list[int]) -> dict[int, str]:
        """Stop using ``partitions`` at once; return the ETags they were held at."""
        etags = {p: self._held.pop(p)[0] for p in partitions if p in self._held}
        if etags:
            self._on_lost(sorted(etags))
        return etags

    async def _free(self, etags: dict[int, str]) -> None:
        body = msgspec.json.encode(_Record("", EPOCH))
        for partition, etag in etags.items():
            try:
                await self.store.put_if_match(self._key(partition), body, etag)
            except (PreconditionFailedError, ObjectNotFoundError):
                pass  # someone else holds it already
            except StoreError as err:
                log.warning("could not release partition %d: %s", partition, err)

    async def release_all(self) -> None:
        """Clean shutdown: free every lease now, so others need not wait for expiry."""
        if self._held:
            await self._free(self._lose(list(self._held)))
        try:
            await self.store.delete(f"{MEMBERS}/{self.owner}")
        except StoreError as err:
            log.warning("could not remove the heartbeat of %s: %s", self.owner, err)

    def _key(self, partition: int) -> str:
        return f"{LEASES}/{partition:04d}"

    def _body(self, now: datetime) -> bytes:
        return msgspec.json.encode(_Record(self.owner, now + self._ttl, self.incarnation))

    def _mine(self, record: _Record) -> bool:
        return record.owner == self.owner and record.incarnation == self.incarnation

    def _warn_twin(self, record: _Record) -> None:
        """Another live process writes this owner's heartbeat: it was given the same
        name. Leases stay safe (each is held by one incarnation) but the fair share
        counts the two as one member, so say so, once."""
        if not self._warned_twin:
            self._warned_twin = True
            log.error(
                "another live process runs as fleet owner %r (incarnation %s, this one %s): "
                "give each process its own name",
                self.owner, record.incarnation or "?", self.incarnation,
            )  # fmt: skip
