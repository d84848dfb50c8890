"""`servestack reconcile`: one pass that keeps a service over several pools at its replicas.

A pass observes each kept pool: its group's VMs that got capacity (`Engine.group_size`, where
the engine can count them for the cloud) against the pool's replicas, else how many replicas
answer through the pool's endpoint with the key. Spot interruptions and VMs that never came
both show as a pool below its size. Then at most one move, in this order:

1. *back*: a pool added earlier for a short pool's replicas (`covers`) is released once that
   pool is full again;
2. *spill*: the replicas the short pools lack are placed (servestack.placement.place, with the
   kept regions' candidates and those found full this pass left out) and that pool is brought
   up as the deploy does (the pool's own journal and `Fallback`), kept, and named by the front;
3. *return*: a pool that failed, was released or was let go for price, cheaper per
   replica than the dearest kept pool, is tried again with that pool's replicas; once it
   answers, the dearer pool is released.

Replicas a short pool lacks that a pool added for it already holds are not placed again.
Whenever the kept pools change, the front is re-applied over them. The pass is journaled
(`ServiceJournal.reconcile` holds the move in progress before its first step), so a pass
killed anywhere is finished by the next one, which then ends (the pass after observes
afresh); the front stack is re-applied idempotently, the key read from the key stack's
outputs. Passes are idempotent: a service at its size does nothing.
"""

from __future__ import annotations

from dataclasses import replace

from servestack.deploy.journal import RunStatus
from servestack.deploy.loop import DEARER
from servestack.deploy.pools import Service, ServiceOutcome
from servestack.deploy.readiness import wait_ready, with_api_key
from servestack.deploy.service_journal import PoolRecord, PoolState
from servestack.deployment.model import OUTPUT_API_KEY
from servestack.engine import StackRef
from servestack.errors import UserError
from servestack.placement import Capacity, place
from servestack.planner import Plan

BACK, SPILL, RETURN = "back", "spill", "return"


class Reconcile(Service):
    """One reconcile pass (`run`) over the service the journal records."""

    release_late = False  # a pool a pass brings up is wanted
    plan: Plan | None = None  # the plan the spill places from

    def run(self, plan: Plan) -> ServiceOutcome:
        j = self.journal
        self.plan = plan
        if j.status is not RunStatus.DEPLOYED:
            raise UserError(f"{j.service} is {j.status.value}, not deployed: run `servestack "
                            "deploy` (again) to finish or redo it before reconciling")
        for pool in j.pools:
            self.pool_journal(pool)
        if not j.reconcile:
            with j.change():
                j.reconcile = {"pass": j.passes + 1, "started_at": self.clock.now()}
        self._read_key()
        if self.journal.reconcile.get("move"):  # a killed pass's move: finish it, then end
            moved: str | ServiceOutcome | None = self._complete(
                "finished the move an interrupted pass began")
        else:
            moved = self._move()
        if isinstance(moved, ServiceOutcome):
            return moved
        return self._end(moved or "nothing to do: every kept pool is at its size")

    # --- the key --------------------------------------------------------------------------

    def _read_key(self) -> None:
        """The key for the probes: the key stack's outputs, else applied again."""
        stack = self.parts.key
        if stack is None:
            return
        key = self.engine.shared_outputs(stack).get(OUTPUT_API_KEY)
        if key:
            self.api_key = str(key)
        else:
            self.apply_key()

    # --- observing --------------------------------------------------------------------------

    def running(self, pool: PoolRecord) -> int:
        """The pool's replicas that are there: VMs with capacity, else answering replicas."""
        d = self.live_deployment(pool)
        if d is None:
            return 0
        ref = StackRef(d.service, d.candidate_id, d.stack)
        if self.engine.capabilities(d.cloud).group_size:
            count = self.engine.group_size(ref, d)
            if count is not None:
                return count
        if self.probe_factory is None or not pool.endpoint:
            return pool.share
        keyed = replace(d, readiness=with_api_key(d.readiness, self.api_key))
        ready = wait_ready(self.probe_factory(pool.endpoint, keyed), pool.share,
                           deadline_s=self.settings.lane.probe_interval_s, clock=self.clock,
                           interval_s=self.settings.lane.probe_interval_s)
        return len(ready.replicas)

    def _short(self) -> dict[str, int]:
        """Kept pools below their size, and by how many replicas."""
        short = {}
        for pool in self.journal.in_state(PoolState.KEPT):
            running = self.running(pool)
            if running < pool.share:
                short[pool.key] = pool.share - running
                self.progress(f"{pool.key}: {running} of {pool.share} replica(s) there")
        return short

    # --- moves --------------------------------------------------------------------------------

    def _move(self) -> str | ServiceOutcome | None:
        short = self._short()
        back = self._back(short)
        if back:
            return back
        uncovered = self._uncovered(short)
        if uncovered:
            return self._spill(uncovered)
        return None if short else self._return()

    def _uncovered(self, short: dict[str, int]) -> dict[str, int]:
        """What the short pools lack beyond what pools added for them already hold."""
        left = dict(short)
        for pool in self.journal.in_state(PoolState.KEPT):
            if pool.covers in left:
                left[pool.covers] -= pool.share
        return {key: n for key, n in left.items() if n > 0}

    def _back(self, short: dict[str, int]) -> str | ServiceOutcome | None:
        """A pool that holds a short pool's replicas goes once that pool is full again."""
        for pool in self.journal.in_state(PoolState.KEPT):
            covered = pool.covers
            if covered and covered not in short and self._kept(covered):
                self._begin_move(BACK, None, pool.key)
                return self._complete(f"{covered} is full again: released {pool.key}")
        return None

    def _spill(self, short: dict[str, int]) -> str | ServiceOutcome:
        """The missing replicas to the cheapest pool that is not kept and not found full."""
        missing = sum(short.values())
        covers = max(short, key=lambda key: short[key])
        without: set[str] = set()
        for kept in self.journal.in_state(PoolState.KEPT):
            without.update(self._candidate_ids(kept.key))
        assert self.plan is not None
        while True:
            try:
                (target, *_) = place(self.plan, missing, 1, capacity=Capacity(
                    without=frozenset(without)))
            except UserError as exc:  # no pool left
                return f"{missing} replica(s) short in {', '.join(short)}, and no pool " \
                       f"can take them ({exc})"
            key = f"{target.cloud}-{target.region}"
            self._begin_move(SPILL, key, None, share=missing, covers=covers)
            outcome = self._complete(f"{missing} replica(s) of {', '.join(short)} moved to "
                                     f"{key}")
            if isinstance(outcome, ServiceOutcome) or self._kept(key):
                return outcome
            without.update(self._candidate_ids(key))

    def _return(self) -> str | ServiceOutcome | None:
        """A cheaper pool that failed or was released is tried again for the dearest."""
        kept = self.journal.in_state(PoolState.KEPT)
        if not kept:
            return None
        dearest = max(kept, key=lambda p: p.price_per_hour)
        regions = {p.key for p in kept}
        for pool in self.journal.in_state(PoolState.FAILED, PoolState.RELEASED) + \
                self._let_go():
            if pool.key not in regions and pool.key in self.options and \
                    self.options[pool.key].price_per_hour < dearest.price_per_hour:
                self._begin_move(RETURN, pool.key, dearest.key, share=dearest.share)
                return self._complete(f"{pool.key} has capacity again: it holds "
                                      f"{dearest.key}'s {dearest.share} replica(s)")
        return None

    def _let_go(self) -> list[PoolRecord]:
        """Pools the deploy let go for price (their cheap types had no room, a cheaper region
        was open): as worth trying again as a failed one."""
        return [p for p in self.journal.in_state(PoolState.OPEN) if DEARER in p.reason]

    def _begin_move(self, kind: str, add: str | None, release: str | None, *,
                    share: int = 0, covers: str | None = None) -> None:
        """Record the move, and claim the pool it brings up (`share` replicas, for `covers`),
        in one write: a pass killed after it finishes the move."""
        with self.journal.change():
            self.journal.reconcile.update(move=kind, add=add, release=release)
            if add:
                pool = self._record_for(add)
                pool.share, pool.covers, pool.reason = share, covers, ""
                pool.state, pool.started_at = PoolState.CLAIMED, self.clock.now()
                pool.ready_at = pool.released_at = None
        self.progress(f"reconcile: {kind}" + (f", up {add}" if add else "") +
                      (f", then release {release}" if release else ""))

    def _complete(self, done: str) -> str | ServiceOutcome:
        """Up the move's pool (if any), keep it, release the one it replaces, front."""
        move = self.journal.reconcile
        add, release = move.get("add"), move.get("release")
        if add:
            pool = self.journal.pool(add)
            if pool.state is PoolState.CLAIMED:
                self.bring_up(pool, lambda: False)
            if pool.state is PoolState.READY:
                with self.journal.change():
                    pool.state = PoolState.KEPT
            if pool.state is not PoolState.KEPT:
                self._clear_move()
                return f"{add} could not be brought up: {pool.reason}"
        if release and (self._kept(release) or
                        self.journal.pool(release).state is PoolState.RELEASING):
            failed = self.release(self.journal.pool(release), done)
            if failed:
                return failed
        failed = self.settle()
        if failed:
            return failed
        self._clear_move()
        return done

    def _clear_move(self) -> None:
        with self.journal.change():
            for name in ("move", "add", "release"):
                self.journal.reconcile.pop(name, None)

    def _end(self, message: str) -> ServiceOutcome:
        j = self.journal
        with j.change():
            j.passes, j.reconcile = j.passes + 1, {}
        self.progress(f"reconcile pass {j.passes}: {message}")
        kept = ", ".join(f"{p.key} ({p.share})" for p in j.in_state(PoolState.KEPT))
        return self.finish(RunStatus.DEPLOYED, f"{message}; kept: {kept}")

    # --- records --------------------------------------------------------------------------

    def _kept(self, key: str) -> bool:
        return any(p.key == key for p in self.journal.in_state(PoolState.KEPT))

    def _candidate_ids(self, key: str) -> set[str]:
        option = self.options.get(key)
        return {c.id for c in option.candidates} if option else set()

    def _record_for(self, key: str) -> PoolRecord:
        """The pool's record (a new one for a region the deploy did not list)."""
        found = [p for p in self.journal.pools if p.key == key]
        if found:
            return found[0]
        option = self.options[key]
        pool = PoolRecord(option.cloud, option.region, 0, option.price_per_hour, hedge=True)
        self.journal.pools.append(pool)
        return pool
