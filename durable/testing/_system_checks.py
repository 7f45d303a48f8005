"""The whole-system simulation's invariants, checked as the store sees every write.

:class:`Ledger` watches each write that lands in the shared store, in order, and
keeps what it needs to judge the next one: which *epoch* of each instance is current
(a start, a reuse or a rerun begins one; a continue-as-new stays in it), which runs
have ended, which event each inbox message carries and for which epoch it was
written, and when each memo entry was written. A write that breaks an invariant is
reported at once, with the write's number, so the trace shows where it happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ContinuedAsNew,
    EventRaised,
    EventSent,
    ParentRef,
    TimerFired,
    TurnStarted,
    UpdateCompleted,
    UpdateRequested,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowStarted,
)
from durable._core._state import WorkflowStatus
from durable._log._active import Entry, parse_key
from durable._log._records import InboxMessage, TurnRecord
from durable.testing._system_programs import act

__all__ = ["RECORD_OVERHEAD", "Epoch", "Ledger", "Raise"]

RECORD_OVERHEAD = 2048  # bytes a turn record may hold beyond its events, however many runs
_PER_EVENT = 40  # and per event (the id of the message it came in, say)
_encode = msgspec.json.Encoder().encode

_record_decoder = msgspec.json.Decoder(TurnRecord)
_message_decoder = msgspec.json.Decoder(InboxMessage)
_ANSWERS = (ActivityCompleted, ActivityErrored, TimerFired, ChildWorkflowCompleted,
            ChildWorkflowErrored)  # fmt: skip


@dataclass
class Epoch:
    """One start of an instance (a start, reuse, rerun or rewind) and its continue-as-new
    runs."""

    instance_id: str
    number: int
    tag: str
    name: str
    started_at: int  # the write that began it
    parent: ParentRef | None
    status: str = WorkflowStatus.PENDING
    ended_at: int | None = None
    output: Any = None
    failure_type: str = ""
    answered: set[int] = field(default_factory=set)  # task ids answered in the current run
    updates: set[str] = field(default_factory=set)  # update ids completed (across CAN)
    step_base: int = 0  # its steps (memo keys) are this and above; lower ones are older runs'
    step: int = 0  # the driver's step when it began
    commits: int = 0  # records of it written so far
    rerun: bool = False  # it began with history kept from the run before
    gap: str = ""  # its first record did not follow the log's last (a broken log)
    erased_by: str = ""  # the process that deleted its log before it ended
    misled: bool = False  # it was given the result of another run's child (reported)
    born_gen: int = 0  # the code generation its oldest history was recorded under
    ended_gen: int | None = None  # the code generation when it ended
    origin: str = ""  # the run id its messages from outside are addressed to
    rewinds: tuple[str, ...] = ()  # the failed runs it rewinds (their children are its)
    completed: set[int] = field(default_factory=set)  # task ids of activities that returned
    kept: set[int] = field(default_factory=set)  # a rewind's: those of the run it rewinds
    writer: str = ""  # the process that wrote its first record

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


@dataclass
class Raise:
    """One ``raise_event`` of the driver, or one ``ctx.send_event`` of a workflow (its
    nonce a str, ``sender`` the sending instance): its data is unique in the simulation."""

    nonce: int | str
    instance_id: str
    name: str
    sender: str
    began: float  # write count when the call began (a send: its commit, plus its rank)
    acked: float | None = None  # write count when it returned (None: it failed)
    written_epoch: int | None = None  # the epoch its message is for (see Ledger._message)
    delivered: tuple[int, int] | None = None  # (epoch, write) of the commit applying it
    message_id: str = ""  # its inbox message, once written


class Ledger:
    """Every write to the shared store, judged against what came before it."""

    def __init__(self, trace: list[str]) -> None:
        self.trace = trace
        self.writes = 0
        self.violations: list[str] = []
        self.epochs: dict[str, list[Epoch]] = {}
        self.raises: dict[int | str, Raise] = {}
        self.resent: set[str] = set()  # sends a rerun made again (same data): not judged
        self.dropped_sends: set[str] = set()  # sent events a runtime dropped, by data
        self.log_deleted: dict[str, int] = {}  # instance -> the last write purging its log
        self.memo_written: dict[str, tuple[int, int]] = {}  # key -> (write, epoch number)
        self.reuse_limits: dict[str, frozenset[str]] = {}  # start tag -> what it may replace
        self._last_seq: dict[str, int] = {}
        self.runs: dict[str, int] = {}  # runs of each instance so far
        self._oversized: set[str] = set()
        self.inbox: dict[str, set[str]] = {}  # instance -> keys of the messages in its inbox
        self.indexed: dict[str, set[Entry]] = {}  # instance -> its active-index entries
        self.largest: dict[str, tuple[int, int]] = {}  # instance -> (bytes beyond events, runs)
        self.step = 0  # the driver's steps so far
        self.gen = 0  # code generations deployed so far
        self.unguarded: set[int] = set()  # the generations whose change has no patch

    def deployed(self, guarded: bool) -> None:
        """A new generation of workflow code runs from now on."""
        self.gen += 1
        if not guarded:
            self.unguarded.add(self.gen)

    def unguarded_since(self, epoch: Epoch) -> bool:
        """Whether code changed without a patch while the epoch's history was in use."""
        return any(g in self.unguarded for g in self.deploys_in(epoch))

    def deploys_in(self, epoch: Epoch) -> range:
        """The code generations deployed while the epoch's history was in use."""
        return range(
            epoch.born_gen + 1, (self.gen if epoch.ended_gen is None else epoch.ended_gen) + 1
        )

    def violate(self, message: str) -> None:
        line = f"VIOLATION at write {self.writes}: {message}"
        self.violations.append(line)
        self.trace.append(line)

    def current(self, instance_id: str) -> Epoch | None:
        epochs = self.epochs.get(instance_id)
        return epochs[-1] if epochs else None

    # -- writes ---------------------------------------------------------------------

    def wrote(self, process: str, key: str, data: bytes) -> None:
        """A put of ``data`` at ``key`` by ``process`` landed."""
        self.writes += 1
        parts = key.split("/")
        if parts[0] == "instances" and len(parts) == 4 and parts[2] == "log":
            self._record(process, parts[1], int(parts[3]), data)
        elif parts[0] == "instances" and len(parts) == 4 and parts[2] == "inbox":
            self.inbox.setdefault(parts[1], set()).add(key)
            self._message(parts[1], data)
        elif (found := parse_key(key)) is not None:
            self.indexed.setdefault(found[0], set()).add(found[1])
        elif parts[0] == "memo" and len(parts) >= 3:
            epoch = self.current(parts[1])
            if epoch is not None and parts[2].isdigit() and int(parts[2]) < epoch.step_base:
                epoch = None  # a late attempt of an earlier run: its memo is theirs
            self.memo_written[key] = (self.writes, epoch.number if epoch else -1)

    def deleted(self, process: str, keys: list[str]) -> None:
        """Objects at ``keys`` were deleted by ``process`` (one call)."""
        self.writes += 1
        erased: set[str] = set()
        for key in keys:
            parts = key.split("/")
            instance_id = parts[1] if len(parts) > 1 else ""
            epoch = self.current(instance_id)
            live = epoch is not None and not epoch.ended
            if parts[0] == "instances" and len(parts) == 4 and parts[2] == "log":
                if live and instance_id not in erased:
                    erased.add(instance_id)  # judged at the end: was its start acknowledged?
                    epoch.erased_by = process  # type: ignore[union-attr]
                    epoch.ended_at, epoch.status = self.writes, "ERASED"  # type: ignore[union-attr]
                self._last_seq.pop(instance_id, None)
                self.log_deleted[instance_id] = self.writes
            elif parts[0] == "memo" and len(parts) >= 3:
                written = self.memo_written.pop(key, None)
                if live and written is not None and written[1] == epoch.number:  # type: ignore[union-attr]
                    self.violate(f"{process} deleted memo {key!r} (written at write "
                                 f"{written[0]}) of run {epoch.tag!r}, which has not ended")  # type: ignore[union-attr]  # fmt: skip
            elif parts[0] == "instances" and len(parts) == 4 and parts[2] == "inbox":
                self.inbox.get(instance_id, set()).discard(key)
                self._message_deleted(process, instance_id, key)
            elif (found := parse_key(key)) is not None:
                self._unindexed(process, *found)
        if erased:
            for instance_id in erased:
                self.trace.append(f"  (the log of {instance_id} is gone)")

    def _unindexed(self, process: str, instance_id: str, name: Entry) -> None:
        """An index entry went: the instance must keep one while its run has not ended
        (recovery finds instances by the index alone)."""
        entries = self.indexed.get(instance_id, set())
        entries.discard(name)
        epoch = self.current(instance_id)
        if not entries and epoch is not None and not epoch.ended:
            self.violate(f"{process} deleted the last index entry of {instance_id!r} "
                         f"({name.name}) while run {epoch.tag!r} had not ended")  # fmt: skip

    def _size(
        self, process: str, instance_id: str, seq: int, record: TurnRecord, size: int
    ) -> None:
        """A turn record holds its events, the ids of messages still in the inbox, a
        watermark per instance that sent it events, and little else: its size beyond
        theirs stays under a bound that does not grow with the number of runs the
        instance has had (a new run must not carry the past of every run before it)."""
        runs = self.runs.get(instance_id, 0)
        events = sum(len(_encode(e)) + _PER_EVENT for e in (*record.events, *record.next_run))
        events += _PER_EVENT * len(self.inbox.get(instance_id, ()))
        # and the watermark of each instance that sent it events (one per sender)
        events += sum(len(c) + 3 for c in record.consumed if c.startswith("m"))
        if size - events > self.largest.get(instance_id, (0, 0))[0]:
            self.largest[instance_id] = (size - events, runs)
        if size - events > RECORD_OVERHEAD and instance_id not in self._oversized:
            self._oversized.add(instance_id)  # once per instance is enough
            self.violate(f"{process} wrote log/{seq} of {instance_id!r}: {size} bytes, "
                         f"{size - events} beyond its events' (after {runs} runs)")  # fmt: skip

    def _message_deleted(self, process: str, instance_id: str, key: str) -> None:
        for r in self.raises.values():  # few raises per simulation
            if r.nonce in self.resent:
                continue
            if r.instance_id == instance_id and r.message_id and key.endswith(f"/{r.message_id}"):
                epoch = self.current(instance_id)
                if (
                    r.delivered is None
                    and epoch is not None
                    and not epoch.ended
                    and r.written_epoch == epoch.number
                ):
                    self.violate(f"{process} deleted inbox message of event {r.nonce} for "
                                 f"{instance_id!r} before its run applied it")  # fmt: skip

    def _message(self, instance_id: str, data: bytes) -> None:
        try:
            message = _message_decoder.decode(data)
        except msgspec.DecodeError:
            return
        if isinstance(message.event, EventRaised):
            nonce = msgspec.json.decode(message.event.input)
            r = self.raises.get(nonce) if isinstance(nonce, int | str) else None
            if r is None:
                return
            epoch = self.current(instance_id)
            r.written_epoch = epoch.number if epoch is not None else None
            r.message_id = message.id
            if message.to:
                self._addressed(r, message.to)

    def _addressed(self, r: Raise, to: str) -> None:
        """A message names the start it is for: it must be one that was current while
        its raise was under way (from the call to the landing); it is then that
        start's, whatever runs when it lands (a start that ended before it landed
        drops it)."""
        epochs = self.epochs.get(r.instance_id, [])
        addressed = next((e for e in epochs if e.origin == to), None)
        began = max((e.number for e in epochs if e.started_at <= r.began), default=-1)
        if addressed is None or addressed.number < began:
            what = "no start of it" if addressed is None else f"epoch {addressed.number}"
            self.violate(f"the message of event {r.nonce} for {r.instance_id!r} is for "
                         f"{what}, not current while it was raised (epoch {began})")  # fmt: skip
            return
        r.written_epoch = addressed.number

    def _record(self, process: str, instance_id: str, seq: int, data: bytes) -> None:
        record = _record_decoder.decode(data)
        if record.purging:  # a purge's claim or mark, no turn: the instance reads as absent
            self.trace.append(f"w{self.writes} {process} purge mark {instance_id}/{seq}")
            self.log_deleted[instance_id] = self.writes  # it reads as absent from now on
            return
        last = self._last_seq.get(instance_id, -1)
        gap = (
            f"{process} wrote log/{seq} of {instance_id!r} after log/{last}"
            if seq != last + 1
            else ""
        )
        starts = bool(record.next_run) and not any(
            isinstance(e, ContinuedAsNew) for e in record.events
        )
        if gap and not starts:
            self.violate(gap)
        self._last_seq[instance_id] = max(seq, last)
        kinds = ",".join(type(e).__name__ for e in (*record.events, *record.next_run))
        self.trace.append(f"w{self.writes} {process} commit {instance_id}/{seq} "
                          f"{record.status} [{kinds}]")  # fmt: skip
        epoch = self.current(instance_id)
        can = any(isinstance(e, ContinuedAsNew) for e in record.events)
        if record.next_run:
            self.runs[instance_id] = self.runs.get(instance_id, 0) + 1
        self._size(process, instance_id, seq, record, len(data))
        if record.next_run and not can:
            replaced, epoch = epoch, self._new_epoch(instance_id, record)
            epoch.writer = process
            self._check_reuse(process, replaced, epoch, seq)
            epoch.gap = gap  # judged at the end: a start that withdrew is not acknowledged
            if not self.indexed.get(instance_id):
                self.violate(f"{process} began run {epoch.tag!r} of {instance_id!r} at "
                             f"log/{seq} with no index entry")  # fmt: skip
            if not epoch.rerun:  # a start with an event: delivered with it
                for event in record.next_run:
                    if isinstance(event, EventRaised):
                        self._started_with(process, epoch, event)
        if epoch is None:
            self.violate(f"{process} wrote log/{seq} of {instance_id!r}, which never started")
            return
        epoch.commits += 1
        self._sent(instance_id, record)
        for event in record.events:
            if isinstance(event, UpdateCompleted):
                self._update_completed(process, epoch, event, record)
            if isinstance(event, EventRaised):
                self._delivered(process, epoch, event)
            elif isinstance(event, _ANSWERS):
                if event.task_id in epoch.answered:
                    self.violate(f"{process} applied a second {type(event).__name__} for task "
                                 f"{event.task_id} of {instance_id!r} in one run")  # fmt: skip
                epoch.answered.add(event.task_id)
                if isinstance(event, ActivityCompleted):
                    epoch.completed.add(event.task_id)
                if isinstance(event, ChildWorkflowCompleted | ChildWorkflowErrored):
                    self._child_answer(process, epoch, event)
        if can:
            epoch.answered = set()  # (update ids stay: one runs once across continue-as-new)
        epoch.status = record.status
        if WorkflowStatus(record.status).is_terminal and not record.next_run:
            epoch.ended_at = self.writes
            epoch.ended_gen = self.gen
            for event in record.events:
                if isinstance(event, WorkflowCompleted):
                    epoch.output = msgspec.json.decode(event.result)
                elif isinstance(event, WorkflowErrored):
                    epoch.failure_type = event.failure.type
                    self.trace.append(f"  ({instance_id} failed: {event.failure.message[:300]})")

    def _check_reuse(self, process: str, replaced: Epoch | None, epoch: Epoch, seq: int) -> None:
        """A start allowed to replace only some ended statuses (an id-reuse policy)
        replaced a run that ended with one of them (or began the log anew)."""
        limit = self.reuse_limits.get(epoch.tag)
        if limit is None or seq == 0 or replaced is None or epoch.rerun:
            return
        if replaced.status not in limit:
            self.violate(f"{process} replaced run {replaced.tag!r} of {epoch.instance_id!r} "
                         f"({replaced.status}) by a start that may replace only "
                         f"{sorted(limit)}")  # fmt: skip

    def _new_epoch(self, instance_id: str, record: TurnRecord) -> Epoch:
        started = record.next_run[0]
        assert isinstance(started, WorkflowStarted)
        try:
            data = msgspec.json.decode(started.input)
        except msgspec.DecodeError:
            data = None
        tag = data.get("tag", "") if isinstance(data, dict) else ""
        epochs = self.epochs.setdefault(instance_id, [])
        previous = epochs[-1] if epochs else None
        if previous is not None and not previous.ended:
            self.violate(f"a new run of {instance_id!r} began while run {previous.tag!r} "
                         "had not ended")  # fmt: skip
        epoch = Epoch(instance_id, len(epochs), tag, started.name, self.writes, started.parent,
                      step_base=started.step_base, origin=started.origin_run,
                      rewinds=started.rewinds)  # fmt: skip
        if started.rewinds and previous is not None:
            # what the run it rewinds had done (each activity that returned) never runs
            # again, and what it keeps is not answered a second time
            epoch.kept = set(previous.completed)
            epoch.answered = {e.task_id for e in record.next_run if isinstance(e, _ANSWERS)}
        epoch.step = self.step
        # a rerun keeps turns of the run before; a start with an event holds just that
        rerun = any(isinstance(e, TurnStarted) for e in record.next_run)
        epoch.born_gen = previous.born_gen if rerun and previous is not None else self.gen
        epoch.rerun = rerun
        epochs.append(epoch)
        return epoch

    def _sent(self, instance_id: str, record: TurnRecord) -> None:
        """A committed turn sent events: each is raised by its sender, acknowledged by
        the commit; those of one turn in the order sent."""
        sends = [e for e in record.events if isinstance(e, EventSent)]
        for rank, event in enumerate(sends):
            nonce = msgspec.json.decode(event.input)
            if not isinstance(nonce, str):
                continue
            if nonce in self.raises:  # a rerun sends a step of the run it reruns again
                self.resent.add(nonce)
                continue
            at = self.writes + rank / (len(sends) + 1)
            self.raises[nonce] = Raise(nonce, event.instance_id, event.name, instance_id, at, at)

    def attempt_began(self, instance_id: str, task_id: int) -> None:
        """An activity attempt began: never one of a task that had completed in the run
        a rewind rewinds (a rewind runs again only what failed)."""
        epoch = self.current(instance_id)
        if epoch is not None and not epoch.ended and task_id in epoch.kept:
            self.violate(f"an attempt of task {task_id} of {instance_id!r} began in run "
                         f"{epoch.tag!r} (epoch {epoch.number}), a rewind of a run in which "
                         "it had completed")  # fmt: skip

    def dropped(self, sent: EventSent) -> None:
        """A runtime dropped a sent event: its receiver did not exist, or had ended."""
        nonce = msgspec.json.decode(sent.input)
        r = self.raises.get(nonce) if isinstance(nonce, str) else None
        if r is None:
            return
        self.dropped_sends.add(nonce)
        self.trace.append(f"  (event {r.nonce!r} for {r.instance_id!r} dropped)")
        epoch = self.current(r.instance_id)
        if (
            epoch is not None
            and not epoch.ended
            and epoch.started_at < r.began
            and self.log_deleted.get(r.instance_id, -1) < epoch.started_at
        ):
            self.violate(f"event {r.nonce!r} that {r.sender!r} sent to {r.instance_id!r} was "
                         f"dropped, though run {epoch.tag!r} ran there since before it was "
                         "sent")  # fmt: skip

    def check_sends_posted(self) -> None:
        """No event lost between instances: every event a committed turn sent to an
        instance that existed then (started, and no purge deleted its log since), and
        that no purge deleted later, reached its inbox, unless the sender was purged
        before (a purge does not post what a crash left unposted)."""
        for r in self.raises.values():
            if not isinstance(r.nonce, str) or r.nonce in self.resent or r.message_id:
                continue
            if r.nonce in self.dropped_sends:
                continue  # judged when it was dropped
            if self.log_deleted.get(r.sender, -1) > r.began:
                continue  # the sender was purged since: what it had not posted goes with it
            epochs = self.epochs.get(r.instance_id, [])
            latest = max((e.started_at for e in epochs if e.started_at < r.began), default=None)
            if latest is not None and self.log_deleted.get(r.instance_id, -1) < latest:
                self.violate(
                    f"event {r.nonce!r} that {r.sender!r} sent to {r.instance_id!r} "
                    f"(committed at write {int(r.began)}) never reached its inbox"
                )

    def _update_completed(
        self, process: str, epoch: Epoch, event: UpdateCompleted, record: TurnRecord
    ) -> None:
        """An update ran once in its start (across continue-as-new), and returned what its
        handler returns."""
        where = f"{epoch.instance_id!r} (run {epoch.tag!r}, epoch {epoch.number})"
        if event.update_id in epoch.updates:
            self.violate(f"{process} applied update {event.update_id} a second time, to {where}")
        epoch.updates.add(event.update_id)
        if event.failure is not None:
            return  # the run had no handler then (a workflow no runtime has, say)
        asked = [
            e for e in record.events
            if isinstance(e, UpdateRequested) and e.update_id == event.update_id
        ]  # fmt: skip
        if asked and bytes(event.result) != _encode(act(msgspec.json.decode(asked[0].input))):
            self.violate(f"update {event.update_id} of {where} returned {bytes(event.result)!r}")

    def _started_with(self, process: str, epoch: Epoch, event: EventRaised) -> None:
        """A start that came with an event (``start_with_event``): it is that start's."""
        nonce = msgspec.json.decode(event.input)
        r = self.raises.get(nonce) if isinstance(nonce, int) else None
        if r is not None and r.written_epoch is None:
            r.written_epoch = epoch.number
        self._delivered(process, epoch, event)

    def _delivered(self, process: str, epoch: Epoch, event: EventRaised) -> None:
        nonce = msgspec.json.decode(event.input)
        if nonce in self.resent:
            return
        r = self.raises.get(nonce) if isinstance(nonce, int | str) else None
        where = f"{epoch.instance_id!r} (run {epoch.tag!r}, epoch {epoch.number})"
        if r is None:
            self.violate(f"{process} applied an event {nonce!r} nobody raised, to {where}")
        elif r.delivered is not None:
            self.violate(f"{process} applied event {nonce} a second time, to {where} "
                         f"(first at write {r.delivered[1]})")  # fmt: skip
        elif r.instance_id != epoch.instance_id or r.written_epoch != epoch.number:
            self.violate(f"{process} applied event {nonce}, raised to {r.instance_id!r} "
                         f"epoch {r.written_epoch}, to {where}")  # fmt: skip
        if r is not None and r.delivered is None:
            r.delivered = (epoch.number, self.writes)

    def _child_answer(
        self, process: str, epoch: Epoch, event: ChildWorkflowCompleted | ChildWorkflowErrored
    ) -> None:
        """A parent's run may only take the result of a child run it started itself."""
        if isinstance(event, ChildWorkflowErrored) and event.failure.type.endswith("ExistsError"):
            return  # the id was taken by an unrelated instance: reported as such
        children = self.epochs.get(event.instance_id, [])
        call = (epoch.instance_id, event.task_id)  # which run: judged by time below
        mine = [
            c
            for c in children
            if c.parent is not None and (c.parent.instance_id, c.parent.task_id) == call and c.ended
        ]
        if not mine:
            self.violate(f"{process} gave {epoch.instance_id!r} a result for task "
                         f"{event.task_id} from {event.instance_id!r}, which never ended as "
                         "its child")  # fmt: skip
            return
        child = mine[-1]
        if child.parent is not None and child.parent.run_id in epoch.rewinds:
            return  # a child of a failed run this one rewinds: its result is this run's
        if child.started_at < epoch.started_at:
            epoch.misled = True
            how = "rerun" if epoch.rerun else "run"
            self.violate(f"{process} gave {how} {epoch.tag!r} of {epoch.instance_id!r} the "
                         f"result of child run {child.tag!r} of {event.instance_id!r}, started "
                         f"by an earlier run (write {child.started_at} < "
                         f"{epoch.started_at})")  # fmt: skip

    # -- at the end -----------------------------------------------------------------

    def check_event_order(self) -> None:
        """Events one sender raised to one run under one name arrive in the order sent,
        and none acknowledged before a later one was sent is skipped. An event applied
        to another run than the one it was raised for is judged (and reported) as it is
        applied, not here as well."""
        groups: dict[tuple[str, int | None, str, str], list[Raise]] = {}
        for r in self.raises.values():
            groups.setdefault((r.instance_id, r.written_epoch, r.name, r.sender), []).append(r)
        for (instance_id, epoch, name, sender), raises in groups.items():
            raises.sort(key=lambda r: r.began)
            before = len(self.violations)
            for later in raises:
                if len(self.violations) > before:
                    break  # one report per sender, run and name
                if later.delivered is None or later.delivered[0] != epoch:
                    continue
                for earlier in raises:
                    if earlier is later or earlier.acked is None or earlier.acked > later.began:
                        continue
                    if earlier.delivered is not None and earlier.delivered[0] != epoch:
                        continue
                    if earlier.delivered is None or earlier.delivered[1] > later.delivered[1]:
                        self.violate(
                            f"event {later.nonce} ({name!r} from {sender} to {instance_id!r} "
                            f"epoch {epoch}) was applied, but event {earlier.nonce}, "
                            f"acknowledged before it was sent, "
                            + ("never was" if earlier.delivered is None else "only after it")
                        )
