"""The driver's own verdicts on the runs, from what it did to them: every new run
reaches its owner (checked each step), and at the end every acknowledged start is in
the log and every run ended as its program and the outside operations allow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from durable._core._state import TERMINAL
from durable._fleet._partitions import partition_of
from durable._log._records import wakeup_key
from durable.testing._system_fleet import _DriverBase
from durable.testing._system_hangs import decode_lease
from durable.testing._system_programs import expected_mismatch, mends

if TYPE_CHECKING:
    from durable.testing._system_checks import Epoch

_ENDED = frozenset(status.value for status in TERMINAL)  # the statuses of an ended run


class _Verdicts(_DriverBase):
    """Judge each run against the outside operations the driver sent it."""

    def _check_announced(self) -> None:
        """Every new run reaches its owner: a run that has not begun (PENDING), whose
        partition has had one live holder since before the run was written, is in that
        holder's memory (or being loaded into it) or has its wakeup rung a few steps on
        (nothing else would ever load it, short of the lease moving). Not judged: a run
        whose holder let go of the partition since (a lapse: its recovery loads it
        again), or whose writer went down since (a child whose parent's process died
        before it rang the wakeup: the parent's next owner starts it again, and rings)."""
        objects, step = self.inner._objects, self.sim.step
        for partition in range(self.partitions):
            lease = decode_lease(objects.get(f"leases/{partition:04d}", (b"",))[0])
            holder = (lease.owner, lease.incarnation) if lease is not None else ("", "")
            if self._holders.get(partition, (None, 0))[0] != holder:
                self._holders[partition] = (holder, step)
        for instance_id, epochs in self.sim.ledger.epochs.items():
            epoch = epochs[-1]
            if epoch.commits > 1 or epoch.status != "PENDING" or instance_id in self._unannounced:
                continue  # (only a run that has no record but its first)
            if not self._acknowledged(instance_id, epoch):
                continue  # a start that failed (its wakeup, say) may wait for a lease move
            partition = partition_of(instance_id, self.partitions)
            (owner, incarnation), since = self._holders[partition]
            proc = self.processes.get(owner)
            if proc is None or proc.runtime is None or since >= epoch.step or step < epoch.step + 8:
                continue
            if proc.lapsed.get(partition, -1) >= epoch.step:
                continue  # let go of since (a lapse): its recovery loads the run again
            writer = self.processes.get(epoch.writer)
            if writer is not None and writer.down_at >= epoch.step:
                continue  # its writer died before it rang: the parent's next owner does
            leases = proc.runtime._leases
            if leases is None or leases.incarnation != incarnation or not leases.owns(partition):
                continue  # the holder named in the lease is gone, or the lease lapsed
            if wakeup_key(instance_id, partition) in objects:
                continue
            engine = proc.runtime._engine
            if instance_id in engine._instances or instance_id in engine._handovers:
                continue  # in memory, or being loaded (after a lapse let go of it, say)
            meta = objects.get(f"instances/{instance_id}/meta")
            if meta is not None and b'"reason"' in meta[0]:
                continue  # loaded, and parked: no worker here has its workflow
            self._unannounced.add(instance_id)
            self.sim.ledger.violate(
                f"{instance_id!r} run {epoch.tag!r} (epoch {epoch.number}) was never announced: "
                "PENDING, no wakeup, not in the memory of the process that has held its "
                "partition since before it began"
            )

    def _acknowledged(self, instance_id: str, epoch: Epoch) -> bool:
        """Whether the run began from a start that returned (a child's start is its
        parent's step: always)."""
        if instance_id in self.ghosts:
            return self.acked_ghosts.get(instance_id, epoch.started_at + 1) <= epoch.started_at
        if instance_id not in self.roots:
            return True
        epochs = self.sim.ledger.epochs[instance_id]
        for i, _, began in self.acked_starts:
            first = min((e.started_at for e in epochs if e.started_at >= began), default=None)
            if i == instance_id and first == epoch.started_at:
                return True  # the first run to begin after the start's call began
        return False

    # -- at the end -----------------------------------------------------------------

    def _final_checks(self) -> None:
        ledger = self.sim.ledger
        ledger.check_event_order()
        ledger.check_sends_posted()
        self.spans.check(ledger.violate)
        self.spans.check_ends(self._ended_runs(), self._told_otherwise_logs(), ledger.violate)
        for instance_id, tag, began in self.acked_starts:
            epochs = ledger.epochs.get(instance_id, [])
            if not any(e.started_at >= began for e in epochs):
                ledger.violate(f"acknowledged start of {instance_id!r} ({tag}) is not in the log")
            ours = min((e for e in epochs if e.started_at >= began), default=None,
                       key=lambda e: e.started_at)  # fmt: skip
            if ours is not None and ours.gap:
                ledger.violate(ours.gap)
            if ours is not None and ours.erased_by:  # a start withdrawn unacknowledged is not
                ledger.violate(f"{ours.erased_by} erased the log of {instance_id!r} while its "
                               f"run {ours.tag!r} (epoch {ours.number}) had not ended")  # fmt: skip
        raised = {r.nonce for r in ledger.raises.values()}
        failed_children = {  # children whose failure is explained: terminated, or their
            e.tag  # code changed without a patch under them
            for epochs in ledger.epochs.values()
            for e in epochs
            if e.status in ("TERMINATED", "CANCELED")
            or (e.failure_type.endswith("NonDeterminismError") and ledger.unguarded_since(e))
        }
        for instance_id, epochs in ledger.epochs.items():
            if instance_id in self.ghosts:
                continue
            for epoch in epochs:
                self._check_epoch(epoch, raised, failed_children)

    def _ended_runs(self) -> list[tuple[str, str]]:
        """``(instance id, status)`` of each start whose last run ended (not erased)."""
        return [
            (epoch.instance_id, epoch.status)
            for epochs in self.sim.ledger.epochs.values()
            for epoch in epochs
            if epoch.ended and epoch.status in _ENDED
        ]

    def _told_otherwise_logs(self) -> set[str]:
        """Instances a log record of which landed while its writer was told it had not."""
        return {key.split("/")[1] for key in self.sim.told_otherwise if "/log/" in key}

    def _bounded(self, epoch: Epoch) -> bool:
        """Whether the run's start (its own, or a continue-as-new chain's first run's)
        had an execution_timeout."""
        return epoch.tag in self.bounded

    def _parent_ended(self, epoch: Epoch) -> bool:
        """Whether a child run's parent may have ended it: a parent run that ends
        (returns, fails, is terminated or cancelled) terminates the children it still
        waits on (their default ``on_parent_close``), and a new run of the parent (a
        reuse, a rerun) ends an older run's child to take its id."""
        parent = epoch.parent
        epochs = self.sim.ledger.epochs.get(parent.instance_id, []) if parent else []
        return len(epochs) > 1 or any(e.status in _ENDED for e in epochs)

    def _check_epoch(self, epoch: Epoch, raised: set[int | str], failed_children: set[str]) -> None:
        ledger = self.sim.ledger
        program = self.programs.get(epoch.tag)
        where = f"{epoch.instance_id!r} run {epoch.tag!r} (epoch {epoch.number})"
        if program is None or not epoch.ended:
            return
        if epoch.erased_by:
            return  # judged with the acknowledged starts
        if epoch.status == "TERMINATED":
            if epoch.instance_id not in self.terminated and not self._parent_ended(epoch):
                ledger.violate(f"{where} was TERMINATED, but no one terminated it")
            return
        if epoch.status == "CANCELED":
            if epoch.instance_id not in self.cancelled and not self._parent_ended(epoch):
                ledger.violate(f"{where} was CANCELED, but no one cancelled it")
            return
        if epoch.status == "FAILED":
            if epoch.failure_type.endswith("NonDeterminismError") and ledger.unguarded_since(epoch):
                return  # code changed without a patch under its history: fails, visibly
            if epoch.failure_type == "durable.TimeoutError" and self._bounded(epoch):
                return  # its start's execution_timeout passed
            if epoch.failure_type.endswith(("Unmended", "WorkflowFailed")) and mends(program):
                return  # a mend step failed it (until a rewind)
            if not (any(s[0] == "raise" for s in program) and epoch.failure_type == "ValueError"):
                patched = " (its code changed under a patch)" if ledger.deploys_in(epoch) else ""
                ledger.violate(f"{where} FAILED ({epoch.failure_type}) though its program "
                               f"does not fail{patched}")  # fmt: skip
            return
        problem = expected_mismatch(program, epoch.tag, epoch.output, raised, failed_children)
        if problem is not None and not epoch.misled:  # (a misled run was reported already)
            ledger.violate(f"{where} returned what the reference does not allow: {problem}")
