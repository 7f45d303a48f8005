"""The active index: per partition, one object for each run not yet ended, so start-up,
recovery and lease takeover list what runs instead of every instance that ever ran.

Layout (the log stays the truth; every entry can be checked against it)::

    active/{partition:04d}/{id}^{seq:012d}-{run_id}   a run began (or may begin) at seq
    indexed/{partition:04d}                           the partition's index is complete
    indexing/{partition:04d}                          how far its one-time scan got

An entry is one object beside the partition's others (``^`` cannot occur in an id), so
a start and an end each write or delete one object and no directory: on ``file://`` a
directory per entry cost a ``mkdir`` per start and an ``rmdir`` per end, milliseconds
each on a disk with discard. Where the name would pass 255 bytes (an id near the
longest), and in stores written before, an entry sits in a directory of its own,
``active/{partition:04d}/{id}/{seq:012d}-{run_id}``: both are read, and recovery
moves an instance's older entry to the flat name (see :func:`repair`). A fleet is
upgraded whole: a process of a version before this one does not read flat entries.

An entry is written *before* the log record that starts its run (a create, a reuse,
a rerun), so no run is ever in the log without one; it is deleted *after* the record
that ends the run (a continue-as-new moves it to the new run). A crash between the two
leaves an entry too many, never one too few: recovery finds it, reads the log and
deletes it. Run ids are never reused, so deleting one run's entry never touches
another's, however a reuse or purge races the end. Seqs order the runs of one log
only: a create at seq 0 whose entry went in while an ended run held ``log/0`` may land
after a purge deleted that log, so a repair that took it for a loser reads the log
again after each delete and puts back the entry of a run that began meanwhile, and
such a create puts its entry again after its record (whichever comes last restores it).

A store without ``indexed/`` markers (written before the index existed, or new) is
scanned once by the first recovery of each partition (:func:`build`), which writes its
progress so that a scan cut short resumes where it stopped. Until a runtime has used
the store there is no partition count: a client's start then writes no entry before
its record, but looks again after it (the scan, which comes after the count, finds
the record otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import anyio
import msgspec

from durable._core._events import WorkflowStarted
from durable._core._state import WorkflowStatus
from durable._errors import StoreError
from durable._fleet._partitions import partition_of, read_config

from ._reader import RunLog, load_run, new_run_after, read_meta, read_record
from ._records import INSTANCES, SEP, entry_key

if TYPE_CHECKING:
    from collections.abc import Iterable

    from durable.store import ObjectStore

__all__ = ["ACTIVE", "INDEXED", "SEP", "ActiveIndex", "Entry", "build", "parse_key", "repair"]

ACTIVE = "active"
INDEXED = "indexed"
INDEXING = "indexing"
_CHECKPOINT = 256  # instances scanned between two progress writes of a migration
_BATCH = 32  # instances a migration reads at once
_ATTEMPTS = 5  # tries of one instance's reads before its batch fails


class Entry(NamedTuple):
    """One index entry: the run that began (or may begin) at ``seq``; ``legacy``: kept
    in a directory of the instance's own although a flat name would fit (written by
    an earlier version; recovery moves it)."""

    seq: int
    run_id: str
    legacy: bool = False

    @property
    def name(self) -> str:
        return f"{self.seq:012d}-{self.run_id}"

    @classmethod
    def parse(cls, name: str) -> Entry | None:
        seq, sep, run_id = name.partition("-")
        if not sep or not seq.isdigit() or not run_id:
            return None
        return cls(int(seq), run_id)


class _Progress(msgspec.Struct, frozen=True):
    """How far a partition's one-time scan got: the last instance id it indexed."""

    after: str


_progress_decoder = msgspec.json.Decoder(_Progress)


class ActiveIndex:
    """The active index of one store, as every process sharing it sees it
    (``partitions`` None: no runtime has used the store yet, nothing is indexed)."""

    def __init__(self, store: ObjectStore, partitions: int | None) -> None:
        self.store = store
        self.partitions = partitions

    @property
    def known(self) -> bool:
        return self.partitions is not None

    async def refresh(self) -> bool:
        """Whether the store's partition count is known now (reading it if not yet)."""
        if self.partitions is None and (config := await read_config(self.store)) is not None:
            self.partitions = config.partitions
        return self.partitions is not None

    def partition(self, instance_id: str) -> int:
        assert self.partitions is not None, "no runtime has used this store yet"
        return partition_of(instance_id, self.partitions)

    def _prefix(self, instance_id: str) -> str:
        return f"{ACTIVE}/{self.partition(instance_id):04d}"

    def key(self, instance_id: str, entry: Entry) -> str:
        if entry.legacy:
            return f"{self._prefix(instance_id)}/{instance_id}/{entry.name}"
        return entry_key(self._prefix(instance_id), instance_id, entry.name)

    async def begin(self, instance_id: str, seq: int, run_id: str) -> None:
        """A run is about to be written at ``seq``: enter it first."""
        if self.known:
            await self.store.put(self.key(instance_id, Entry(seq, run_id)), b"")

    async def end(self, instance_id: str, seq: int, run_id: str) -> None:
        """The run that began at ``seq`` has ended (or will never begin): drop it."""
        await self.drop(instance_id, Entry(seq, run_id))

    async def drop(self, instance_id: str, entry: Entry) -> None:
        """Delete one entry, wherever it is kept."""
        if self.known:
            await self.store.delete(self.key(instance_id, entry))

    async def scan(self, partition: int) -> dict[str, list[Entry] | None]:
        """The instances with an entry in ``partition`` (one LIST), each with its
        entries, or None where some are in a directory of the instance's own
        (:meth:`entries` reads those)."""
        found: dict[str, list[Entry] | None] = {}
        for name in await self.store.list(f"{ACTIVE}/{partition:04d}"):
            instance_id, sep, rest = name.partition(SEP)
            entry = Entry.parse(rest) if sep else None
            if entry is None:
                found[name] = None  # a directory of entries (or a stray name)
            elif (entries := found.setdefault(instance_id, [])) is not None:
                entries.append(entry)
        return found

    async def ids(self, partition: int) -> list[str]:
        """The instances with an entry in ``partition``, sorted (one LIST)."""
        return sorted(await self.scan(partition))

    async def entries(self, instance_id: str) -> list[Entry]:
        """The instance's entries: one LIST of its partition, and one of its own
        directory if it has one."""
        prefix = self._prefix(instance_id)
        found: list[Entry] = []
        for name in await self.store.list(prefix):
            if name == instance_id:
                nested = map(Entry.parse, await self.store.list(f"{prefix}/{name}"))
                found += [e._replace(legacy=_legacy(prefix, instance_id, e)) for e in nested if e]
            elif name.startswith(instance_id + SEP):
                entry = Entry.parse(name[len(instance_id) + 1 :])
                if entry is not None:
                    found.append(entry)
        return found

    async def ready(self) -> set[int]:
        """The partitions whose index is complete (one LIST)."""
        return {int(name) for name in await self.store.list(INDEXED) if name.isdigit()}

    async def _scanned_after(self, partition: int) -> str:
        """The last instance id a cut-short scan of ``partition`` got through."""
        try:
            data = await self.store.get(f"{INDEXING}/{partition:04d}")
            return _progress_decoder.decode(data).after
        except (StoreError, msgspec.DecodeError, msgspec.ValidationError) as err:
            if isinstance(err, StoreError) and err.transient:
                raise
            return ""

    async def _scanned(self, partition: int, after: str) -> None:
        await self.store.put(f"{INDEXING}/{partition:04d}", msgspec.json.encode(_Progress(after)))

    async def _done(self, partition: int) -> None:
        await self.store.put(f"{INDEXED}/{partition:04d}", b"")
        await self.store.delete(f"{INDEXING}/{partition:04d}")


async def build(index: ActiveIndex, partitions: Iterable[int]) -> None:
    """Index the runs of ``partitions`` that the log says have not ended: the one-time
    scan of a store written before the index existed. Its progress is written every
    few hundred instances, so a scan cut short resumes where it stopped."""
    done = await index.ready()
    after = {p: await index._scanned_after(p) for p in partitions if p not in done}
    if not after:
        return
    ids = [
        i
        for i in await index.store.list(INSTANCES)
        if index.partition(i) in after and i > after[index.partition(i)]
    ]
    since: dict[int, int] = dict.fromkeys(after, 0)
    last: dict[int, str] = {}
    for offset in range(0, len(ids), _BATCH):
        batch = ids[offset : offset + _BATCH]
        failed: list[StoreError] = []
        async with anyio.create_task_group() as tg:
            for instance_id in batch:
                tg.start_soon(_index_one, index, instance_id, failed)
        if failed:
            raise failed[0]  # the scan goes on from its last checkpoint when tried again
        for instance_id in batch:  # the batch is whole: the scan may resume after it
            since[index.partition(instance_id)] += 1
            last[index.partition(instance_id)] = instance_id
        for partition, count in since.items():
            if count >= _CHECKPOINT:
                await index._scanned(partition, last[partition])
                since[partition] = 0
    for partition in after:
        await index._done(partition)


async def _index_one(index: ActiveIndex, instance_id: str, failed: list[StoreError]) -> None:
    """Index one instance if it runs; a transient error is tried again a few times
    before it fails the batch (a scan of many instances meets some)."""
    for attempt in range(_ATTEMPTS):
        try:
            run = await _running(index.store, instance_id)
            if run is not None:
                await index.begin(instance_id, run.run_start, run.started.run_id)
            return
        except StoreError as err:
            if not err.transient or attempt == _ATTEMPTS - 1:
                failed.append(err)
                return


async def _running(store: ObjectStore, instance_id: str) -> RunLog | None:
    """The instance's current run if the log says it has not ended; None otherwise
    (ended, absent, or broken for good: recovery fails those by the meta)."""
    found = await read_meta(store, instance_id)
    meta = found[0] if found is not None else None
    if (
        meta is not None
        and WorkflowStatus(meta.status).is_terminal
        and not await new_run_after(store, meta)
    ):
        return None
    try:
        run = await load_run(store, instance_id, meta)
    except StoreError as err:
        if err.transient:
            raise
        return None
    return run if run is not None and not run.status.is_terminal else None


async def repair(index: ActiveIndex, instance_id: str, entries: list[Entry]) -> None:
    """Bring an instance's entries in line with its log: the current run has one if it
    has not ended; an entry whose seq the log has passed, and that is not the current
    run's, goes (its run ended, or lost its race). An instance that ended goes only
    once its meta says so (what follows an end is finished by then). An entry past the
    log's end is a start under way (or one that died): it stays, unless it is a legacy
    one (no start writes those now). A legacy entry of the current run is moved: the
    flat one is put before it goes. ``entries`` were listed before this call reads
    the log."""
    found = await read_meta(index.store, instance_id)
    meta = found[0] if found is not None else None
    current: Entry | None = None
    if (
        meta is not None
        and WorkflowStatus(meta.status).is_terminal
        and not await new_run_after(index.store, meta)
    ):
        last_seq = meta.seq
    else:
        try:
            run = await load_run(index.store, instance_id, meta)
        except StoreError as err:
            if err.transient:
                raise
            return  # broken for good: recovery fails it, and the next one tidies up
        if run is None:  # absent or being purged: an entry may be a start under way
            for entry in entries:
                if entry.legacy:
                    await index.drop(instance_id, entry)
            return
        if run.status.is_terminal:
            return  # ended, but its meta lags: what follows an end (its sent events, its
            # parent told) may be under way, and the meta's write drops the entry
        last_seq = run.last_seq
        current = Entry(run.run_start, run.started.run_id)
        if current not in entries:
            await index.begin(instance_id, current.seq, current.run_id)
    for entry in entries:
        if entry != current and entry.seq <= last_seq:
            await _end_checked(index, instance_id, entry)


async def _end_checked(index: ActiveIndex, instance_id: str, entry: Entry) -> None:
    """Delete the entry of a run that ended or lost its race; a loser's is put back if
    its run began meanwhile (a create at seq 0 whose record landed after a purge
    deleted the log read: see above)."""
    lost = not await _begins(index, instance_id, entry)
    await index.drop(instance_id, entry)
    if lost and await _begins(index, instance_id, entry):
        await index.begin(instance_id, entry.seq, entry.run_id)


async def _begins(index: ActiveIndex, instance_id: str, entry: Entry) -> bool:
    """Whether the log's record at the entry's seq starts the entry's run."""
    record = await read_record(index.store, instance_id, entry.seq)
    started = record.next_run[0] if record is not None and record.next_run else None
    return isinstance(started, WorkflowStarted) and started.run_id == entry.run_id


def parse_key(key: str) -> tuple[str, Entry] | None:
    """The instance and entry an active-index key names (either layout), or None."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == ACTIVE:
        instance_id, sep, rest = parts[2].partition(SEP)
        entry = Entry.parse(rest) if sep else None
    elif len(parts) == 4 and parts[0] == ACTIVE:
        instance_id, entry = parts[2], Entry.parse(parts[3])
        if entry is not None:
            entry = entry._replace(legacy=_legacy(f"{ACTIVE}/{parts[1]}", instance_id, entry))
    else:
        return None
    return None if entry is None else (instance_id, entry)


def _legacy(prefix: str, instance_id: str, entry: Entry) -> bool:
    """Whether an entry found in the instance's own directory would be flat now."""
    return "/" not in entry_key(prefix, instance_id, entry.name)[len(prefix) + 1 :]
