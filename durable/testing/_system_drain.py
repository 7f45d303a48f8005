"""The end of a simulated run: faults off, every process up, every run that failed at a
mend step rewound, every run resumed and fed the events its program still needs until
all end, and for a run that never does, what it waits on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from durable._errors import DurableError
from durable._fleet._partitions import partition_of
from durable._log._reader import load_run
from durable._log._records import wakeup_key
from durable.testing._system_checks import Raise
from durable.testing._system_fleet import _RENEW, _DriverBase, _settle
from durable.testing._system_hangs import decode_lease, open_steps
from durable.testing._system_programs import event_names

if TYPE_CHECKING:
    import anyio.abc

_DRAIN_ROUNDS = 120


class _Drain(_DriverBase):
    """Bring the simulation to rest, and say why a run that never ends does not."""

    async def _drain(self, tg: anyio.abc.TaskGroup) -> None:
        """Faults off: bring every process up, resume and feed every run, let time pass
        until every run has ended (or report those that never do)."""
        sim = self.sim
        sim.faults_on = False
        sim.lease_outage.clear()
        sim.tick()  # every stalled call goes on
        self.note("drain: faults off")
        await _settle()  # the processes a last step stopped are down
        for _ in range(_DRAIN_ROUNDS):
            self._restart_the_down(tg)
            await _settle()
            if not self.in_flight:
                break
            self.clock.advance(_RENEW)
        await self._rewind_the_mending()
        fed: set[tuple[str, int]] = set()
        for round_ in range(_DRAIN_ROUNDS):
            self._restart_the_down(tg)  # as a supervisor would
            open_ = self._open_epochs()
            if not open_:
                return
            for instance_id, epoch in open_:
                if sim.ledger.epochs[instance_id][epoch].owed:
                    continue  # its parent's end closes it: no help
                if (instance_id, epoch) not in fed and round_ >= 2:
                    fed.add((instance_id, epoch))
                    await self._feed(instance_id)
            self.clock.advance(_RENEW)
            await _settle()
        for instance_id, number in self._open_epochs():
            stuck = sim.ledger.epochs[instance_id][number]
            why = await self._why_stuck(instance_id)
            owed = ", though its parent's run ended (it terminates its children)"
            sim.ledger.violate(
                f"{instance_id!r} run {stuck.tag!r} (epoch {number}"
                f"{', a rerun' if stuck.rerun else ''}) never ended{owed if stuck.owed else ''}: "
                f"status {stuck.status} after the drain; {why}"
            )

    async def _rewind_the_mending(self) -> None:
        """Rewind each root whose run failed at a mend step (its own or a child's): its
        tree runs on, rewound, children too, and ends in the drain, judged as any run."""
        ledger = self.sim.ledger
        for instance_id in self.roots:
            epoch = ledger.current(instance_id)
            if (
                epoch is None
                or epoch.status != "FAILED"
                or not epoch.failure_type.endswith(("Unmended", "WorkflowFailed"))
            ):
                continue
            began = ledger.writes
            self.note(f"drain: client: rewind {instance_id}")
            try:
                await self.client.rewind(instance_id, "drain")
            except DurableError as err:
                self.note(f"  -> {type(err).__name__}: {str(err)[:100]}")
                continue
            self.acked_starts.append((instance_id, epoch.tag, began))

    async def _why_stuck(self, instance_id: str) -> str:
        """What a run that never ended waits on, and what should have woken it: its
        open steps, its inbox, its wakeup, its partition's lease, its owner's memory."""
        ledger, objects = self.sim.ledger, self.inner._objects
        run = await load_run(self.inner, instance_id)
        waits = "no log" if run is None else open_steps(run.history, ledger)
        partition = partition_of(instance_id, self.partitions)
        unapplied = [
            k for k in ledger.inbox.get(instance_id, ())
            if run is None or k.rsplit("/", 1)[-1] not in run.consumed
        ]  # fmt: skip
        rung = wakeup_key(instance_id, partition) in objects
        lease = decode_lease(objects.get(f"leases/{partition:04d}", (b"",))[0])
        holder = self.processes.get(lease.owner) if lease is not None else None
        memory = ""
        if not any(p.runtime is not None for p in self.processes.values()):
            owner = "every runtime is down"
        elif lease is None or not lease.owner:
            owner = "its partition is not leased"
        elif holder is None or holder.runtime is None:
            owner = "its partition is leased to a process that is down"
        else:
            valid = self.clock.now() < lease.expires_at
            owner = f"its partition is leased{'' if valid else ' (expired)'}"
            engine = holder.runtime._engine
            inst = engine._instances.get(instance_id)
            memory = (", not in its owner's memory" if inst is None
                      else f", in its owner's memory ({inst.state.name.lower()})")  # fmt: skip
        inbox = "unapplied inbox messages" if unapplied else "no unapplied inbox message"
        return (f"waits on {waits}; {inbox}; wakeup {'rung' if rung else 'absent'}; "
                f"{owner}{memory}")  # fmt: skip

    def _open_epochs(self) -> list[tuple[str, int]]:
        found = []
        for instance_id, epochs in self.sim.ledger.epochs.items():
            epoch = epochs[-1]
            if epoch.ended:
                continue
            if instance_id in self.ghosts and instance_id not in self.terminate_acked:
                continue  # no runtime can run it: it waits, as it should (a terminate
                # that failed may never have been written; a cancel needs its code)
            found.append((instance_id, epoch.number))
        return found

    async def _feed(self, instance_id: str) -> None:
        """Resume the run and raise every event its program still needs."""
        epoch = self.sim.ledger.current(instance_id)
        assert epoch is not None
        await self._guard(lambda: self.op_control(self.client, "client", instance_id, "resume"))
        program = self.programs.get(epoch.tag, [])
        delivered = [
            r for r in self.sim.ledger.raises.values()
            if r.delivered is not None and r.delivered[0] == epoch.number
            and r.instance_id == instance_id
        ]  # fmt: skip
        needed = event_names(program)
        for r in delivered:
            if r.name in needed:
                needed.remove(r.name)
        for name in needed:
            self.nonces += 1
            r = Raise(self.nonces, instance_id, name, "client", self.sim.ledger.writes)
            self.sim.ledger.raises[r.nonce] = r
            self.note(f"drain: raise {name}={r.nonce} to {instance_id}")
            try:
                await self.client.get_handle(instance_id).raise_event(name, r.nonce)
                r.acked = self.sim.ledger.writes
            except DurableError as err:
                self.note(f"  -> {type(err).__name__}")
