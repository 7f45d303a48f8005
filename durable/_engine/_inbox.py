"""Inboxes and wakeups: reading messages, ringing and answering bells, polling.

A message of ``start_with_event`` (its ``start`` set) is applied by the first run that
reads it while running, of whichever start: its caller asked for the instance to run
with the event. One that reaches the instance once its run has ended without applying
it (or once the instance is gone) starts the instance again with its event, in one
write that records the message as consumed (:meth:`_Inbox._start_waiting`): exactly
once, as a new run begins only right after the run read (or at ``log/0``, if none),
and every new run begins with the messages the run before consumed that are still in
the inbox (:func:`durable._log._instances.create_instance`). A plain message to an
ended run is dropped, as Durable Task does.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from durable._core._events import EventRaised
from durable._errors import (
    InstanceExistsError,
    InstanceNotFoundError,
    ObjectNotFoundError,
    StoreError,
)
from durable._log._instances import create_instance
from durable._log._reader import load_run, read_meta, read_record
from durable._log._records import (
    WAKEUPS,
    InboxMessage,
    decode_message,
    inbox_key,
    inbox_prefix,
    unreadable_key,
    wakeup_key,
    wakeup_prefix,
)

from ._base import _EngineBase, log
from ._instance import _ANY_RUN, Pending, Sent, _Instance


class _Inbox(_EngineBase):
    """Read what other processes and clients sent, and delete what was consumed."""

    async def _scan_inbox(self, inst: _Instance) -> None:
        """Queue the inbox messages the log has not consumed yet.

        A new run's consumed ids name only the old run's messages still in the inbox, so
        a scan that a new run began during reads again: what it read may be a message
        the old run consumed and deleted meanwhile."""
        items: list[Pending] = []
        reason = ""
        run_start = -1
        while run_start != inst.run_start:
            run_start = inst.run_start
            origin = inst.started.origin_run
            items, set_aside = await self._read_inbox(inst.id, inst.consumed, run_start, origin)
            reason = set_aside or reason
        await self._note_set_aside(inst, reason)
        self._hand_read(inst, items)

    async def _note_set_aside(self, inst: _Instance, reason: str) -> None:
        """Say in the instance's ``reason`` (``describe()``) that a message was set aside."""
        if reason:
            inst.reason = reason
            await self._write_meta(inst)

    async def _read_inbox(
        self, instance_id: str, consumed: set[str], run_start: int, origin: str
    ) -> tuple[list[Pending], str]:
        """The inbox messages not in ``consumed`` (what the run that began at ``run_start``
        has consumed), in the order they were sent, and why one was set aside (or "").
        Each is marked as read under that run: a turn of a later run reads the inbox
        again instead. One sent to another start than ``origin`` (the run's) comes as
        :class:`Sent`, for the run to consume and not apply. A store error propagates,
        for the caller to retry with nothing skipped; only a message that can never be
        decoded is set aside."""
        items: list[Pending] = []
        set_aside = ""
        for msg_id in await self.store.list(inbox_prefix(instance_id)):
            key = inbox_key(instance_id, msg_id)
            if msg_id in consumed:
                with contextlib.suppress(StoreError):  # a leftover is skipped again
                    await self.store.delete(key)
                continue
            try:
                data = await self.store.get(key)
            except ObjectNotFoundError:
                continue  # applied and deleted meanwhile
            try:
                message = decode_message(data, key)
            except StoreError as err:
                set_aside = await self._set_aside(instance_id, msg_id, data, err)
                continue
            for_run = message.to in ("", origin) or message.start is not None
            items.append((message.id, run_start, message.event if for_run else Sent(to=message.to)))
        return items, set_aside

    async def _set_aside(self, instance_id: str, msg_id: str, data: bytes, err: StoreError) -> str:
        """Move an undecodable inbox message out of the inbox, keeping its bytes for a
        look; returns what ``describe().reason`` says about it."""
        key = unreadable_key(instance_id, msg_id)
        await self.store.put(key, data)
        await self.store.delete(inbox_key(instance_id, msg_id))
        reason = f"inbox message {msg_id} could not be read and was set aside at {key!r}: {err}"
        log.error("instance %r: %s", instance_id, reason)
        return reason

    async def _delete_messages(self, instance_id: str, msg_ids: list[str]) -> None:
        for msg_id in msg_ids:
            try:
                await self.store.delete(inbox_key(instance_id, msg_id))
            except StoreError:
                pass  # consumed ids are remembered; a leftover is skipped on reload

    def _discard_messages(self, inst: _Instance, pending: list[Pending]) -> None:
        """Messages that reached an ended run: delete them, unless a new run began under
        the id meanwhile (they may be its messages; a reuse clears the old run's)."""
        ids = [msg_id for msg_id, _, _ in pending if msg_id is not None]
        if ids:
            self._spawn_guarded(self._delete_unless_new_run, inst.id, inst.seq, ids)

    async def _delete_unless_new_run(self, instance_id: str, seq: int, msg_ids: list[str]) -> None:
        try:
            after = await read_record(self.store, instance_id, seq + 1)
        except StoreError as err:
            if err.transient:
                raise  # retried after a backoff
            return  # unreadable: leave the messages be
        if after is None:  # (start_with_event's are left to the run they start)
            starting = await self._start_waiting(instance_id)
            await self._delete_messages(instance_id, [m for m in msg_ids if m not in starting])

    async def _start_waiting(self, instance_id: str) -> set[str]:
        """Start the instance again if it is not running and ``start_with_event``
        messages that no run applied wait in its inbox: one new run, with their events
        (the first one's workflow and input), right after the ended run (or at
        ``log/0``). Returns the ids of those found; raises a transient StoreError if
        another start took the seq (retried: that run reads them, or this looks again)."""
        found = await read_meta(self.store, instance_id)
        run = await load_run(self.store, instance_id, found[0] if found else None)
        waiting: list[InboxMessage] = []
        for msg_id in await self.store.list(inbox_prefix(instance_id)):
            if run is not None and msg_id in run.consumed:
                continue
            key = inbox_key(instance_id, msg_id)
            try:
                message = decode_message(await self.store.get(key), key)
            except (ObjectNotFoundError, StoreError):
                continue  # applied meanwhile, or set aside by the run that reads it
            if message.start is not None and isinstance(message.event, EventRaised):
                waiting.append(message)
        running = run is not None and not run.status.is_terminal
        if not waiting or running or not self.owns(instance_id):
            return {message.id for message in waiting}
        start = waiting[0].start
        assert start is not None
        try:
            created = await create_instance(
                self.index, self.clock.now(), instance_id, start.name, start.input,
                reuse=run is not None, after=run, memo=self.memo_store,
                run_id=self.ids.run_id(), version=start.version or self._newest_version(start.name),
                events=[m.event for m in waiting if isinstance(m.event, EventRaised)],
                consumed=[message.id for message in waiting],
            )  # fmt: skip
        except (InstanceExistsError, InstanceNotFoundError) as err:  # begun, or purged
            raise StoreError(f"{instance_id!r} began meanwhile: looking again",
                             key=inbox_prefix(instance_id), transient=True) from err  # fmt: skip
        log.info("%r started again with %d event(s) of start_with_event", instance_id, len(waiting))
        await self.announce_created(instance_id, created)
        return {message.id for message in waiting}

    async def nudge(self, instance_id: str) -> None:
        """Make sure an instance that exists in the store runs somewhere: load it here,
        or ring its owner's bell."""
        if not (self.owns(instance_id) and self.running):
            await self.store.put(wakeup_key(instance_id, self.partition(instance_id)), b"")
        elif instance_id not in self._instances:
            self._spawn_guarded(self.recover, instance_id)

    async def announce_message(
        self, instance_id: str, message: InboxMessage, run_start: int | None = None
    ) -> None:
        """A message this process just wrote to an inbox: apply it here, or ring the
        bell of the process that owns the instance's partition. ``run_start``: the run
        in memory here before the message was written (no run had consumed it then);
        None if none was (a turn reads the inbox for it)."""
        if self.owns(instance_id) and self.running:
            seen = _ANY_RUN if run_start is None else run_start
            self.deliver(instance_id, message.event, seen, message.id)
        else:
            await self.store.put(wakeup_key(instance_id, self.partition(instance_id)), b"")

    async def poll_wakeups(self, partitions: list[int] | None = None) -> None:
        """Pick up instances that other processes started or sent messages to: one
        listing per partition this process runs."""
        if partitions is None and self._leases is None:
            # every partition is ours: one listing finds those with a bell rung
            found = await self.store.list(WAKEUPS)
            partitions = [int(p) for p in found if p.isdigit() and int(p) < self._partitions]
        for partition in self.owned_partitions() if partitions is None else partitions:
            for instance_id in await self.store.list(wakeup_prefix(partition)):
                if not self.owns(instance_id):
                    break  # the partition was lost meanwhile
                try:
                    # cleared before the inbox is read: a message written from now on
                    # rings it again, and gets a read of its own
                    await self.store.delete(wakeup_key(instance_id, partition))
                    await self._answer_wakeup(instance_id)
                except StoreError as err:
                    log.warning("wakeup of %r not handled yet: %s", instance_id, err)
                    self._spawn_guarded(self._ring_again, instance_id, partition)

    async def _answer_wakeup(self, instance_id: str) -> None:
        """Someone rang for the instance: load it, or read its inbox if it is here."""
        await self.recover(instance_id)

    async def _ring_again(self, instance_id: str, partition: int) -> None:
        """A wakeup could not be answered: ring it again for the next poll."""
        await self.store.put(wakeup_key(instance_id, partition), b"")

    async def _poll_loop(self) -> None:
        interval = timedelta(seconds=self._poll_interval)
        while True:
            await self.clock.sleep_until(self.clock.now() + interval)
            self.busy_enter()
            try:
                await self.poll_wakeups()
            except StoreError as err:
                log.warning("polling for messages failed: %s", err)
            finally:
                self.busy_exit()
