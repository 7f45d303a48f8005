"""The outside operations of the whole-system simulation, and the driver's choice of
the next ones: start (plain, with reuse, with an event), raise_event and bursts of it,
suspend, resume, terminate, cancel, an update, rerun, rewind, purge, sweep, a workflow
no runtime has, and a deploy of changed code that restarts every runtime."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from durable._core._events import ActivityScheduled, ChildWorkflowScheduled, TimerCreated
from durable._core._state import TERMINAL, WorkflowStatus
from durable._errors import DurableError
from durable._log._reader import load_run
from durable._log._retention import sweep_history
from durable.testing._system_checks import Raise
from durable.testing._system_fleet import _DriverBase
from durable.testing._system_programs import (
    EVENT_NAMES,
    TICK,
    Program,
    build_registry,
    mends,
    random_program,
    start_attributes,
)
from durable.testing._system_store import Crash

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from durable._client import Client


class _Operations(_DriverBase):
    """Choose and run the outside operations, each as a client would."""

    def _new_tag(self, program: Program) -> str:
        self.tags += 1
        tag = f"s{self.tags}"
        self.programs[tag] = program
        for index, step in enumerate(s for s in program if s[0] not in ("can", "raise")):
            if step[0] == "child":
                self.programs[f"{tag}/c{index}"] = step[1]
        return tag

    def _input(self, tag: str) -> dict[str, Any]:
        return {"tag": tag, "prog": self.programs[tag], "acc": []}

    async def op_start(self, client: Client, via: str) -> None:
        instance_id = f"r{len(self.roots)}"
        self.roots.append(instance_id)
        program = random_program(self.rng)
        tag = self._new_tag(program)
        version = self.rng.choice(["1", "2"])
        limit = None
        if self.rng.random() < 0.15:  # bounded: it may end FAILED with a TimeoutError
            limit = timedelta(seconds=self.rng.randint(5, 60))
            self.bounded.add(tag)
        began = self.sim.ledger.writes
        bound = f" within {limit.total_seconds():.0f}s" if limit else ""
        self.note(f"{via}: start {instance_id} {tag} v{version}{bound} {program}")
        await client.start(
            "prog", self._input(tag), instance_id=instance_id, version=version,
            execution_timeout=limit, search_attributes=start_attributes(len(self.roots)),
        )  # fmt: skip
        self.acked_starts.append((instance_id, tag, began))

    def _ended_root(self) -> str:
        """A root instance, most often one whose current run has ended (a reuse of it
        is accepted)."""
        ended = [i for i in self.roots if (e := self.sim.ledger.current(i)) and e.ended]
        return self.rng.choice(ended if ended and self.rng.random() < 0.8 else self.roots)

    async def op_reuse(self, client: Client, via: str, instance_id: str) -> None:
        """A start that replaces an ended instance: any, or (an id-reuse policy) only
        one that ended with the statuses given, which the ledger then checks."""
        program = random_program(self.rng)
        tag = self._new_tag(program)
        reuse: bool | frozenset[WorkflowStatus] = True
        if self.rng.random() < 0.3:
            reuse = frozenset(self.rng.sample(sorted(TERMINAL), self.rng.randint(1, 3)))
            self.sim.ledger.reuse_limits[tag] = frozenset(str(s) for s in reuse)
        began = self.sim.ledger.writes
        only = f" of {', '.join(sorted(reuse))}" if isinstance(reuse, frozenset) else ""
        self.note(f"{via}: start {instance_id} {tag} reuse{only} {program}")
        await client.start(
            "prog", self._input(tag), instance_id=instance_id, reuse=reuse,
            search_attributes=start_attributes(self.tags),
        )  # fmt: skip
        self.acked_starts.append((instance_id, tag, began))

    async def op_start_with_event(self, client: Client, via: str, instance_id: str) -> None:
        """Start the instance with an event, or give its running run the event."""
        program = random_program(self.rng)
        tag = self._new_tag(program)
        self.nonces += 1
        name = self.rng.choice(EVENT_NAMES)
        began = self.sim.ledger.writes
        r = Raise(self.nonces, instance_id, name, via, began, starts=True)
        self.sim.ledger.raises[r.nonce] = r
        self.note(f"{via}: start {instance_id} {tag} with {name}={r.nonce} {program}")
        await client.start_with_event(
            "prog", self._input(tag), instance_id=instance_id, event=name, data=r.nonce
        )
        r.acked = self.sim.ledger.writes
        if any(e.tag == tag for e in self.sim.ledger.epochs.get(instance_id, [])):
            self.acked_starts.append((instance_id, tag, began))

    async def op_update(self, client: Client, via: str, instance_id: str) -> None:
        """Ask for an update (sometimes one the validator refuses), and sometimes ask
        again with the same id, as a caller does after an unclear failure: at once, or
        much later (after the run continued as new, say)."""
        handle = client.get_handle(instance_id)
        earlier = self.asked_updates.setdefault(instance_id, [])
        if earlier and self.rng.random() < 0.2:
            update_id, value = self.rng.choice(earlier)
            self.note(f"{via}: update {update_id} bump({value}) of {instance_id}, asked again")
            await handle.start_update("bump", value, update_id=update_id)
            return
        self.updates += 1
        update_id = f"up{self.updates}"
        value = self.rng.choice([-1, self.rng.randrange(100)])
        again = self.rng.random() < 0.3
        self.note(f"{via}: update {update_id} bump({value}) of {instance_id}"
                  + (", then again" if again else ""))  # fmt: skip
        earlier.append((update_id, value))
        await handle.start_update("bump", value, update_id=update_id)
        if again:
            await handle.start_update("bump", value, update_id=update_id)

    async def op_ghost(self, client: Client, via: str) -> None:
        instance_id = f"g{len(self.ghosts)}"
        self.ghosts.append(instance_id)
        self.note(f"client: start {instance_id} of a workflow no runtime has")
        began = self.sim.ledger.writes
        await self.ghost_client.start("ghost", None, instance_id=instance_id)
        self.acked_ghosts[instance_id] = began

    async def op_raise(self, client: Client, via: str, instance_id: str) -> None:
        self.nonces += 1
        nonce = self.nonces
        name = self.rng.choice(EVENT_NAMES)
        r = Raise(nonce, instance_id, name, via, self.sim.ledger.writes)
        self.sim.ledger.raises[nonce] = r
        self.note(f"{via}: raise {name}={nonce} to {instance_id}")
        await client.get_handle(instance_id).raise_event(name, nonce)
        r.acked = self.sim.ledger.writes

    async def op_burst(self, client: Client, via: str, instance_id: str) -> None:
        """Raise many ticks to one instance, one after another (a loop's runs take them)."""
        count = self.rng.randint(3, 30)
        self.note(f"{via}: raise {count} {TICK}s to {instance_id}")
        for _ in range(count):
            self.nonces += 1
            r = Raise(self.nonces, instance_id, TICK, via, self.sim.ledger.writes)
            self.sim.ledger.raises[r.nonce] = r
            await client.get_handle(instance_id).raise_event(TICK, r.nonce)
            r.acked = self.sim.ledger.writes

    async def op_deploy(self) -> None:
        """Deploy changed workflow code: every runtime stops and starts again with it
        (the outside client gets it too). The change is guarded by a patch or not."""
        guarded = self.rng.random() < 0.5
        self.changes += (guarded,)
        self.registry = build_registry(self.harness, self.changes)
        self.client.registry = self.registry
        self.sim.ledger.deployed(guarded)
        self.sim.ledger.disrupted = self.sim.ledger.writes  # every runtime restarts
        how = "under a patch" if guarded else "unguarded"
        self.note(f"deploy code generation {len(self.changes)} ({how}): every runtime restarts")
        for proc in self.processes.values():
            if proc.running:
                proc.dead = True
                if proc.scope is not None:
                    proc.scope.cancel()

    async def op_control(self, client: Client, via: str, instance_id: str, what: str) -> None:
        self.note(f"{via}: {what} {instance_id}")
        handle = client.get_handle(instance_id)
        if what == "terminate":
            self.terminated.add(instance_id)
            await handle.terminate("simulated")
            self.terminate_acked.add(instance_id)
        elif what == "cancel":
            self.cancelled.add(instance_id)
            await handle.cancel("simulated")
        elif what == "suspend":
            await handle.suspend("simulated")
        else:
            await handle.resume("simulated")

    async def op_purge(self, client: Client, via: str, instance_id: str) -> None:
        """Purge an instance; half the time with its sub-workflows (recursive): an
        acknowledged start that took a child's id meanwhile must survive it."""
        recursive = self.rng.random() < 0.5
        self.note(f"{via}: purge {instance_id}" + (" recursive" if recursive else ""))
        deleted = await client.purge(instance_id, recursive=recursive)
        if recursive:
            self.note(f"  deleted {deleted}")

    async def op_rerun(self, client: Client, via: str, instance_id: str) -> None:
        run = await load_run(self.inner, instance_id)
        if run is None or not run.status.is_terminal:
            return
        steps: list[ActivityScheduled | TimerCreated | ChildWorkflowScheduled]
        steps = [e for e in run.history if isinstance(e, ChildWorkflowScheduled)]
        if not steps or self.rng.random() < 0.5:
            steps = [
                e for e in run.history
                if isinstance(e, ActivityScheduled | TimerCreated | ChildWorkflowScheduled)
            ]  # fmt: skip
        if not steps:
            return
        target = self.rng.choice(steps)
        began = self.sim.ledger.writes
        self.note(f"{via}: rerun {instance_id} from event {target.event_id}")
        await client.rerun(instance_id, target.event_id)
        tag = self.sim.ledger.current(instance_id)
        self.acked_starts.append((instance_id, tag.tag if tag else "?", began))

    async def op_rewind(self, client: Client, via: str) -> None:
        """Rewind a root, most often one whose run FAILED (any other is refused), at a
        mend step if one did."""
        failed = [i for i in self.roots if (e := self.sim.ledger.current(i)) and
                  e.status == "FAILED"]  # fmt: skip
        mending = [i for i in failed if mends(self.programs.get(self._tag_of(i), []))]
        pool = (mending or failed) if failed and self.rng.random() < 0.9 else self.roots
        instance_id = self.rng.choice(pool)
        began = self.sim.ledger.writes
        self.note(f"{via}: rewind {instance_id}")
        await client.rewind(instance_id, "simulated")
        self.acked_starts.append((instance_id, self._tag_of(instance_id) or "?", began))

    def _tag_of(self, instance_id: str) -> str:
        epoch = self.sim.ledger.current(instance_id)
        return epoch.tag if epoch is not None else ""

    async def op_sweep(self, client: Client, via: str) -> None:
        retention = timedelta(seconds=self.rng.choice([0, 5]))
        self.note(f"{via}: sweep (retention {retention.total_seconds():.0f}s)")
        await client.memo_store.sweep(self.clock.now(), retention)
        # and the histories: every hour of markers so far is past
        now = self.clock.now()
        index = await client._active()
        swept = await sweep_history(
            index, client.memo_store, range(self.partitions),
            before=now + timedelta(hours=2), now=now,
        )  # fmt: skip
        self.note(f"  history sweep deleted {swept}")

    async def _guard(self, what: Callable[[], Awaitable[None]]) -> None:
        """Run one operation; what it raises is its answer, not a failure (a crash of
        the runtime whose client it used kills only that runtime)."""
        try:
            await what()
        except Crash:
            self.note("  the call died with its runtime")
        except (DurableError, ValueError) as err:
            self.note(f"  -> {type(err).__name__}: {str(err)[:100]}")

    async def _background(self, what: Callable[[], Awaitable[None]]) -> None:
        """One outside operation, run alongside the steps that follow it."""
        try:
            await self._guard(what)
        finally:
            self.in_flight -= 1

    def _pick_operation(self) -> Callable[[], Awaitable[None]] | None:
        rng = self.rng
        client, via = self._client_for()
        known = self.roots + [
            i for i in self.sim.ledger.epochs if i not in self.roots and i not in self.ghosts
        ]
        roll = rng.random()
        if not self.roots or roll < 0.12:
            return lambda: self.op_start(client, via)
        if not self.config.outside_ops:
            return lambda: self.op_raise(client, via, rng.choice(known))
        if roll < 0.38:
            return lambda: self.op_raise(client, via, rng.choice(known))
        if roll < 0.41:
            return lambda: self.op_rewind(client, via)
        if roll < 0.45:
            return lambda: self.op_burst(client, via, rng.choice(known))
        if roll < 0.53:
            what = rng.choice(["suspend", "resume", "resume"])
            return lambda: self.op_control(client, via, rng.choice(known), what)
        if roll < 0.58:
            what = "terminate" if rng.random() < 0.6 else "cancel"
            return lambda: self.op_control(client, via, rng.choice(known + self.ghosts), what)
        if roll < 0.62:
            return lambda: self.op_reuse(client, via, self._ended_root())
        if roll < 0.65:
            return lambda: self.op_update(client, via, rng.choice(known))
        if roll < 0.68:
            return lambda: self.op_start_with_event(client, via, self._ended_root())
        if roll < 0.72:
            return lambda: self.op_rerun(client, via, rng.choice(self.roots))
        if roll < 0.75:
            return lambda: self.op_rewind(client, via)
        if roll < 0.81:
            return lambda: self.op_purge(client, via, rng.choice(self.roots + self.ghosts))
        if roll < 0.88:
            return lambda: self.op_sweep(client, via)
        if roll < 0.90:
            return lambda: self.op_ghost(client, via)
        if roll < 0.92:
            return self.op_deploy
        return None
