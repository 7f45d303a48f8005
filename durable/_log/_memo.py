"""The per-step memo: results of expensive side effects, kept in object storage.

An activity runs at least once; a step's :class:`Memo` lets a retry find what an
earlier attempt already paid for. Entries live under
``{prefix}/{instance_id}/{step}/{key}``; when retention is on, an instance that
ends gets a terminal marker ``{prefix}-terminal/{instance_id}``, and the sweeper
deletes the memo of instances whose marker is older than the retention window.

Steps are numbered over the instance's whole life: a reuse or rerun numbers its steps
above every earlier run's (``WorkflowStarted.step_base``). So deleting the memo of the
ended runs (steps below the bound the log gives) never touches a run started since.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import msgspec

from durable._core._codec import JsonCodec, PayloadCodec
from durable._errors import InvalidInstanceIdError, ObjectNotFoundError, StoreError
from durable._fleet._leases import LEASES, MEMBERS
from durable._fleet._partitions import CONFIG_KEY
from durable._ids import validate_key
from durable.store import ObjectStore, open_store

from ._reader import load_run, read_meta
from ._records import INSTANCES, WAKEUPS

__all__ = ["Memo", "MemoStore"]

log = logging.getLogger("durable.memo")

# The store's own top-level names (and S3Store's probe): a memo prefix must not be one.
_RESERVED = frozenset({INSTANCES, WAKEUPS, LEASES, MEMBERS, CONFIG_KEY, "_probe"})

HEARTBEAT_KEY = "~heartbeat"  # the step's heartbeat details; no memo key may take it

_marker_encoder = msgspec.json.Encoder()
_marker_decoder = msgspec.json.Decoder(datetime)


class MemoStore:
    """Where memo entries and terminal markers live: an object store and a key prefix.

    Runtimes that share one bucket use distinct prefixes.
    """

    def __init__(
        self,
        store: str | ObjectStore,
        prefix: str = "memo",
        *,
        codec: PayloadCodec | None = None,
    ) -> None:
        self.store = open_store(store)
        self.prefix = validate_key(prefix, "memo prefix")
        clash = {prefix, f"{prefix}-terminal"} & _RESERVED
        if clash:
            raise InvalidInstanceIdError(
                f"memo prefix {prefix!r} would put memo entries or markers under "
                f"{sorted(clash)[0]!r}, where the store keeps its own objects; choose another"
            )
        self.codec: PayloadCodec = codec or JsonCodec()

    def __repr__(self) -> str:
        return f"MemoStore({self.store.url!r}, prefix={self.prefix!r})"

    def view(self, instance_id: str, task_id: int) -> Memo:
        """The memo of one step: ``(instance_id, task_id)``."""
        return Memo(self, validate_key(instance_id, "instance id"), task_id)

    def _step_prefix(self, instance_id: str, task_id: int) -> str:
        return f"{self.prefix}/{instance_id}/{task_id}"

    def heartbeat_key(self, instance_id: str, step: int) -> str:
        """Where a step's last heartbeat details live: in its memo, under a name no memo
        key may take, so purge and retention cover them."""
        return f"{self._step_prefix(validate_key(instance_id), step)}/{HEARTBEAT_KEY}"

    async def read_heartbeat(self, instance_id: str, step: int) -> bytes | None:
        """The encoded details of the step's last recorded heartbeat, or None."""
        key = self.heartbeat_key(instance_id, step)
        try:
            return await self.store.get(key)
        except ObjectNotFoundError:
            return None
        except StoreError as err:
            raise _transient(err, f"heartbeat read of {key!r} failed") from err

    def _marker_key(self, instance_id: str) -> str:
        return f"{self.prefix}-terminal/{instance_id}"

    async def mark_terminal(self, instance_id: str, when: datetime) -> None:
        """Record that the instance ended at ``when`` (starts its retention window)."""
        await self.store.put(self._marker_key(instance_id), _marker_encoder.encode(when))

    async def terminal_time(self, instance_id: str) -> datetime | None:
        """When the instance's marker says it ended; ``None`` without a marker."""
        key = self._marker_key(instance_id)
        try:
            data = await self.store.get(key)
        except ObjectNotFoundError:
            return None
        try:
            return _marker_decoder.decode(data)
        except msgspec.DecodeError as err:
            raise StoreError(f"corrupt terminal marker at {key!r}: {err}", key=key,
                             transient=False) from err  # fmt: skip

    async def purge(self, instance_id: str, *, below: int | None = None) -> None:
        """Delete the instance's memo and its marker; with ``below``, only the memo of
        the steps under it (those of ended runs: a later run's steps are above)."""
        root = f"{self.prefix}/{instance_id}"
        if below is None:
            await self.store.delete_prefix(root)
            await self.store.delete(self._marker_key(instance_id))
            return
        for step in await self.store.list(root):
            if step.isdigit() and int(step) < below:
                await self.store.delete_prefix(f"{root}/{step}")

    async def sweep(
        self, now: datetime, retention: timedelta, *, instances: ObjectStore | None = None
    ) -> int:
        """Delete the memo of every instance that ended before ``now - retention``.

        Only the steps of runs that have ended go: the instance's log (in ``instances``,
        by default the memo's own store) is read now, and a run started since the marker
        (a reuse or rerun) numbers its steps above theirs. The memo goes first and the
        marker last, so a sweep cut short is finished by the next one. Returns how many
        instances were swept.
        """
        swept = 0
        for instance_id in await self.store.list(f"{self.prefix}-terminal"):
            try:
                ended = await self.terminal_time(instance_id)
                if ended is None or now - ended < retention:
                    continue
                await self._sweep_one(instance_id, instances or self.store)
            except StoreError as err:
                if err.transient:
                    raise
                log.warning("skipping the memo of %r: %s", instance_id, err)
                continue
            swept += 1
        return swept

    async def _sweep_one(self, instance_id: str, instances: ObjectStore) -> None:
        """Delete the memo of the instance's ended runs, then its marker."""
        found = await read_meta(instances, instance_id)
        run = await load_run(instances, instance_id, found[0] if found else None)
        if run is None:  # purged (or its log is kept elsewhere): no run to keep
            await self.store.delete_prefix(f"{self.prefix}/{instance_id}")
        else:
            ended = run.step_end if run.status.is_terminal else run.started.step_base
            await self.purge(instance_id, below=ended)
        await self.store.delete(self._marker_key(instance_id))


class Memo:
    """One step's memo: ``get``/``put``/``delete`` by key, values in the payload codec.

    Every attempt of the step sees the same entries; no other step does.
    """

    __slots__ = ("_memo_store", "_prefix", "instance_id", "task_id")

    def __init__(self, memo_store: MemoStore, instance_id: str, task_id: int) -> None:
        self._memo_store = memo_store
        self.instance_id = instance_id
        self.task_id = task_id
        self._prefix = memo_store._step_prefix(instance_id, task_id)

    def __repr__(self) -> str:
        return f"Memo({self.instance_id!r}, task {self.task_id})"

    def _key(self, key: str) -> str:
        if key == HEARTBEAT_KEY:
            raise InvalidInstanceIdError(f"memo key {key!r} is reserved for heartbeat details")
        return f"{self._prefix}/{validate_key(key, 'memo key')}"

    async def get(self, key: str, type: Any = Any) -> Any:
        """The value stored under ``key``, or ``None``."""
        full = self._key(key)
        try:
            data = await self._memo_store.store.get(full)
        except ObjectNotFoundError:
            return None
        except StoreError as err:
            raise _transient(err, f"memo read of {full!r} failed") from err
        return self._memo_store.codec.decode(data, type)

    async def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (encoded first: a bad value writes nothing)."""
        full = self._key(key)
        data = self._memo_store.codec.encode(value)
        try:
            await self._memo_store.store.put(full, data)
        except StoreError as err:
            raise _transient(err, f"memo write of {full!r} failed") from err

    async def delete(self, key: str) -> None:
        """Remove ``key`` (absent is fine)."""
        full = self._key(key)
        try:
            await self._memo_store.store.delete(full)
        except StoreError as err:
            raise _transient(err, f"memo delete of {full!r} failed") from err


def _transient(err: StoreError, message: str) -> StoreError:
    """Memo failures are worth retrying: the activity's RetryPolicy decides."""
    return StoreError(f"{message}: {err}", key=err.key, transient=True)
