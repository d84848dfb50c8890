"""Hedged deploy of a service over several pools: key stack, pools in parallel, front stack.

`deploy --max-pools N` (N above 1) deploys the service as servestack.service lays it out:

1. the key stack first (`Engine.up_shared`, journaled): its `api_key` output stays in memory,
   for the pools' readiness probes;
2. lanes bring pools up in parallel (`max_parallel` lanes; default: the placed pools plus one
   hedge). Lane i of the placement's m pools starts with placed pool i and its share of the
   replicas; lanes beyond m are *hedges*: each takes the next cheapest region nobody holds,
   with the largest placed share, only while the hedges' hourly price (replicas x $/h) stays
   within `hedge_budget` (default: 1.5x the placement's own hourly price, HEDGE_BUDGET_SHARE;
   0: no hedge).
   A lane runs the single-pool `Fallback` over its pool's candidates, with the pool's own
   journal; a pool whose candidates are all ruled out (capacity, quota...) is cleaned by it,
   and the lane moves to the next unclaimed pool (its replicas spill there). What one pool's
   run rules out for a whole cloud (credentials) is passed to the pools started after it.
   A lane tries a candidate of its region only while it is no dearer than the cheapest
   candidate still open in a region nobody holds (or the pool's best price plus the lanes'
   `group_premium`): the single-pool loop's global rank order, one level up. Past that, the
   lane lets its region go (its run pauses, cleaned, blocks and attempts kept: `open` again,
   not failed) and claims the cheapest open region in the same journal write, its replicas
   spilling there. A region let go and claimed again resumes its paused run, so what it
   ruled out stays ruled out; paused runs still open when the lanes end are closed.
3. pools are kept in the order they become ready until `needed` (min_replicas) replicas
   answer, each through its own endpoint with the key; the rest are released: lanes stop (a
   lane whose `up` still runs destroys its stack when it returns), ready pools beyond the
   need are cleaned with the same proof of cleanup as a failed candidate;
4. the front stack over the kept pools (`front` builds it from their deployments), and the
   readiness probe through the front's endpoint.

Invariants: each pool (cloud x region) is held by at most one lane, whose `Fallback` never has
two stacks dirty, so never two stacks of one pool are live; every stack created is kept or
cleaned with proof; the service journal (servestack.deploy.service_journal) is written before
each step, so a run killed anywhere resumes: claimed pools resume from their journals, the
decision once taken stands, releases finish, the key and front stacks are applied again
(both engines apply them idempotently).

Engine calls block, so lanes are threads (`ThreadRunner`); tests pass a runner that lets one
lane run at a time on a simulated clock (tests.fakes.Lockstep).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

from servestack.deploy.clock import Clock
from servestack.deploy.destroy import Cleaner
from servestack.deploy.failures import Block
from servestack.deploy.journal import Journal, RunStatus, StackEntry
from servestack.deploy.loop import (
    DEARER,
    RELEASED,
    Builder,
    Fallback,
    ProbeFactory,
    Settings,
    narrow,
)
from servestack.deploy.outcome import Ended
from servestack.deploy.readiness import wait_ready, with_api_key
from servestack.deploy.service_journal import PoolRecord, PoolState, ServiceJournal
from servestack.deployment.model import OUTPUT_API_KEY, OUTPUT_ENDPOINT, Deployment, ServiceStack
from servestack.engine import Engine, StackRef
from servestack.planner import Candidate

SHARED_TIMEOUT_S = 1200.0  # the key stack is instant; a front (Global Accelerator) takes minutes


class Runner(Protocol):
    """Runs the lanes and lets the orchestrator wait on what they record."""

    def spawn(self, name: str, work: Callable[[], None]) -> None: ...

    def notify(self) -> None: ...

    def wait(self, until: Callable[[], bool]) -> None:
        """Block until `until()` holds; re-raise what killed a lane."""
        ...

    def join(self) -> None: ...


class ThreadRunner:
    """One thread per lane. A lane's exception ends the wait and is raised in the caller."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.threads: list[threading.Thread] = []
        self.error: BaseException | None = None

    def spawn(self, name: str, work: Callable[[], None]) -> None:
        def body() -> None:
            try:
                work()
            except BaseException as exc:  # handed to the waiting thread, not lost
                with self.cond:
                    self.error = self.error or exc
            finally:
                self.notify()

        thread = threading.Thread(target=body, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def wait(self, until: Callable[[], bool]) -> None:
        with self.cond:
            # a timeout, so that Ctrl-C reaches the main thread while it waits
            while not (until() or self.error):
                self.cond.wait(timeout=1.0)
        self._raise()

    def join(self) -> None:
        self.wait(lambda: not any(t.is_alive() for t in self.threads))
        self.threads.clear()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error


@dataclass(frozen=True)
class PoolOption:
    """A pool the service may use: one region's candidates, in rank order."""

    cloud: str
    region: str
    candidates: tuple[Candidate, ...]

    @property
    def key(self) -> str:
        return f"{self.cloud}-{self.region}"

    @property
    def price_per_hour(self) -> float:
        return self.candidates[0].price_per_hour


def pool_options(candidates: Sequence[Candidate]) -> list[PoolOption]:
    """Every region's candidates, regions in the rank order of their best candidate."""
    regions: dict[tuple[str, str], list[Candidate]] = {}
    for c in candidates:
        regions.setdefault((c.cloud, c.region), []).append(c)
    return [PoolOption(cloud, region, tuple(found))
            for (cloud, region), found in regions.items()]


@dataclass
class HedgeSettings:
    max_parallel: int | None = None  # lanes; None: placed pools + 1
    hedge_budget: float | None = None  # USD/h for hedges; None: the placement's own $/h
    lane: Settings = field(default_factory=Settings)  # each pool's Fallback

    def lanes(self, placed: int, pools: int) -> int:
        wanted = self.max_parallel if self.max_parallel is not None else placed + 1
        return max(1, min(wanted, pools))

    def budget(self, placed: Sequence[PoolRecord]) -> float:
        if self.hedge_budget is not None:
            return self.hedge_budget
        return default_hedge_budget(sum(p.hourly for p in placed))


# The default hedge budget, as a multiple of the placement's own hourly price: room for one
# hedge pool of the largest share in a region up to half again as dear (regions of one cloud
# differ by 10-30 % for the same type; at 1x a hedge could only go where the price is the same
# or lower, which on AWS is almost never). It runs only while the deploy waits: a released
# hedge costs its minutes, not its hours.
HEDGE_BUDGET_SHARE = 1.5


def default_hedge_budget(placed_hourly: float) -> float:
    return round(placed_hourly * HEDGE_BUDGET_SHARE, 4)


@dataclass
class ServiceOutcome(Ended):
    status: RunStatus
    message: str
    journal: ServiceJournal
    pool_journals: dict[str, Journal]

    def to_json(self) -> dict[str, Any]:
        from servestack.report import service_deploy_json

        return service_deploy_json(self.status.value, self.exit_code, self.message,
                                   self.journal, self.pool_journals)


class PoolBuilder(Protocol):
    def __call__(self, share: int) -> Builder: ...


class FrontBuilder(Protocol):
    def __call__(self, pools: Sequence[Deployment]) -> ServiceStack: ...


@dataclass
class ServiceParts:
    """What the CLI (or a test) gives the service run: how to build a pool's deployment for
    a share of the replicas, the key stack (None: --no-api-key), the front over given pools."""

    build: PoolBuilder
    key: ServiceStack | None
    front: FrontBuilder
    front_name: str


class Service:
    """The pools of one service, their journals and the engine: what deploy, reconcile and
    destroy share."""

    release_late = True  # a pool ready after the kept pools were chosen is released

    def __init__(self, engine: Engine, journal: ServiceJournal, options: list[PoolOption],
                 parts: ServiceParts, *, clock: Clock, settings: HedgeSettings | None = None,
                 probe_factory: ProbeFactory | None = None,
                 progress: Callable[[str], None] | None = None,
                 runner: Runner | None = None) -> None:
        self.engine, self.journal, self.parts, self.clock = engine, journal, parts, clock
        self.options = {o.key: o for o in options}
        self.order = options
        self.settings = settings or HedgeSettings()
        self.probe_factory = probe_factory
        self.progress = progress or (lambda line: None)
        self.runner: Runner = runner or ThreadRunner()
        self.journals: dict[str, Journal] = {}
        self.api_key: str | None = None
        self.stop = threading.Event()
        self.fatal: ServiceOutcome | None = None

    # --- pools' journals --------------------------------------------------------------------

    def pool_journal(self, pool: PoolRecord) -> Journal:
        found = self.journals.get(pool.key)
        if found is None:
            path = self.journal.pool_path(pool)
            found = Journal.at(path, self.journal.service) if path else \
                Journal.memory(self.journal.service)
            self.journals[pool.key] = found
        return found

    def live_deployment(self, pool: PoolRecord) -> Deployment | None:
        j = self.pool_journal(pool)
        if j.live is None or j.live.stack not in j.stacks:
            return None
        return j.stacks[j.live.stack].deployment

    def known_blocks(self, pool: PoolRecord) -> tuple[Block, ...]:
        """What the other pools' runs ruled out (a cloud without credentials, say). Not the
        pool's own earlier blocks: a pool tried again after its run ended starts afresh (a
        pool let go for price resumes its paused run instead, blocks and all). Blocks of the
        pool's own region are its own too, even when another journal holds them: a pool
        started after this one was given them as known blocks."""
        return tuple(dict.fromkeys(b for key, j in list(self.journals.items())
                                   if key != pool.key for b in list(j.blocks)
                                   if (b.cloud, b.region) != (pool.cloud, pool.region)))

    def paused(self, pool: PoolRecord) -> bool:
        """Let go for price in this run: open, its run paused (still "running")."""
        return pool.state is PoolState.OPEN and \
            self.pool_journal(pool).status is RunStatus.RUNNING

    def open_price(self, pool: PoolRecord) -> float:
        """The $/h per replica of the pool's cheapest candidate still open: what a lane that
        claims it tries first (inf: nothing left)."""
        blocks = list(self.known_blocks(pool))
        if self.paused(pool):
            blocks += self.pool_journal(pool).blocks
        return min((c.price_per_hour for c in self.options[pool.key].candidates
                    if narrow(c, blocks) is not None), default=math.inf)

    def cheapest_open(self) -> tuple[float, PoolRecord | None]:
        """The open pool whose cheapest still-open candidate is cheapest, and that price.
        Pools in the order of their best price, so the walk ends at the first one whose best
        is dearer than what was found."""
        best: tuple[float, PoolRecord | None] = (math.inf, None)
        for pool in sorted(self.journal.in_state(PoolState.OPEN),
                           key=lambda p: self.options[p.key].price_per_hour):
            if self.options[pool.key].price_per_hour >= best[0]:
                break
            price = self.open_price(pool)
            if price < best[0]:
                best = (price, pool)
        return best

    def price_limit(self, pool: PoolRecord) -> float:
        """The dearest $/h per replica the pool's run may try now: the cheapest open
        candidate of a region nobody holds, or the pool's best plus `group_premium` (a
        spill over a few cents would cost a region's setup for nothing)."""
        own = self.options[pool.key].price_per_hour * (1 + self.settings.lane.group_premium)
        with self.journal.locked():
            elsewhere, _ = self.cheapest_open()
        return max(own, elsewhere)

    # --- the key ----------------------------------------------------------------------------

    def apply_key(self) -> ServiceOutcome | None:
        """Up the key stack (again: idempotent) and hold its key in memory."""
        record, stack = self.journal.key, self.parts.key
        if record is None or stack is None:
            return None
        with self.journal.change():
            record.state = "applying"
        result = self.engine.up_shared(stack, timeout_s=SHARED_TIMEOUT_S)
        if not result.ok:
            return self.finish(RunStatus.STOPPED, f"the key stack {stack.name} failed: "
                               f"{_first(result.error_texts())}")
        key = result.outputs.get(OUTPUT_API_KEY)
        self.api_key = str(key) if key else None
        with self.journal.change():
            record.state = "up"
        self.progress(f"key stack {stack.name}: up")
        return None

    # --- one pool -------------------------------------------------------------------------------

    def bring_up(self, pool: PoolRecord, stop: Callable[[], bool], *,
                 priced: bool = False) -> RunStatus:
        """Run the pool's Fallback (a fresh run, or the resumed one); record what came of it.
        `priced`: the run pauses once its next candidate is dearer than `price_limit`.
        Returns the pool run's status."""
        option = self.options[pool.key]
        journal = self.pool_journal(pool)
        loop = Fallback(self.engine, journal, list(option.candidates),
                        self.parts.build(pool.share), clock=self.clock,
                        settings=self.settings.lane, probe_factory=self.probe_factory,
                        progress=lambda line: self.progress(f"{pool.key}: {line}"),
                        api_key=self.api_key, stop=stop,
                        known_blocks=self.known_blocks(pool),
                        price_limit=partial(self.price_limit, pool) if priced else None)
        outcome = loop.run()
        with self.journal.change():
            self._record(pool, outcome.status, outcome.message, journal)
        self.runner.notify()
        return outcome.status

    def _record(self, pool: PoolRecord, status: RunStatus, message: str,
                journal: Journal) -> None:
        now = self.clock.now()
        if status is RunStatus.DEPLOYED and journal.live:
            live = journal.live
            pool.stack, pool.endpoint = live.stack, live.endpoint
            pool.price_per_hour = live.price_per_hour
            pool.ready_at = pool.ready_at or now
            if pool.state is not PoolState.KEPT:
                # in a deploy, once the kept pools are chosen, a late one is released
                late = self.release_late and self.journal.decided
                pool.state = PoolState.RELEASING if late else PoolState.READY
            return
        if status is RunStatus.RUNNING and DEARER in message:
            self.let_go(pool, message)
            return
        if status is RunStatus.STOPPED and RELEASED in message:
            if not journal.attempts:  # stopped before its first `up`: it cost nothing
                pool.state, pool.lane, pool.started_at = PoolState.OPEN, None, None
                return
            pool.state, pool.released_at, pool.reason = PoolState.RELEASED, now, "released"
            return
        pool.state, pool.reason = PoolState.FAILED, message
        if status in (RunStatus.STOPPED, RunStatus.CLEANUP_FAILED):
            self.fatal = ServiceOutcome(status, f"{pool.key}: {message}", self.journal,
                                        self.journals)
            self.stop.set()

    def let_go(self, pool: PoolRecord, why: str) -> None:
        """The pool's run paused for price (nothing of it is dirty): open again."""
        pool.state, pool.lane, pool.reason = PoolState.OPEN, None, why
        pool.price_per_hour = self.open_price(pool)

    def release(self, pool: PoolRecord, why: str) -> ServiceOutcome | None:
        """Clean a pool the service does not keep, with the proof of cleanup."""
        with self.journal.change():
            pool.state, pool.reason = PoolState.RELEASING, why
        journal = self.pool_journal(pool)
        if journal.dirty_stacks():
            self.progress(f"{pool.key}: releasing ({why})")
            journal.begin_destroy(self.clock.now())
            cleaner = Cleaner(self.engine, journal, self.clock, self.progress,
                              rounds=self.settings.lane.cleanup_rounds,
                              wait_s=self.settings.lane.cleanup_wait_s)
            failed = cleaner.clean_dirty()
            if failed:
                return self.finish(RunStatus.CLEANUP_FAILED, f"{pool.key}: {failed.message}")
            journal.finish(RunStatus.DESTROYED, self.clock.now(), f"released: {why}")
        with self.journal.change():
            pool.state, pool.released_at = PoolState.RELEASED, self.clock.now()
        return None

    def release_unkept(self) -> ServiceOutcome | None:
        """Every pool that may hold something and is not kept goes."""
        for pool in self.journal.in_state(PoolState.READY, PoolState.RELEASING,
                                          PoolState.CLAIMED):
            failed = self.release(pool, pool.reason if pool.state is PoolState.RELEASING
                                  and pool.reason else "not needed: the kept pools hold "
                                  "the replicas")
            if failed:
                return failed
        return None

    # --- the front ----------------------------------------------------------------------------

    def settle(self) -> ServiceOutcome | None:
        """Release what is not kept, then apply the front over what is: the last steps of a
        deploy and of every reconcile move."""
        return self.release_unkept() or self.apply_front()

    def apply_front(self) -> ServiceOutcome | None:
        """Up the front over the kept pools, then probe through it."""
        kept = self.journal.in_state(PoolState.KEPT)
        deployments = [d for p in kept if (d := self.live_deployment(p)) is not None]
        stack = self.parts.front(deployments)
        record = self.journal.front
        assert record is not None, "begin() records the front"
        with self.journal.change():
            record.state, record.pools = "applying", [d.stack for d in deployments]
        result = self.engine.up_shared(stack, timeout_s=SHARED_TIMEOUT_S)
        if not result.ok:
            return self.finish(RunStatus.STOPPED, f"the front stack {stack.name} failed "
                               f"({_first(result.error_texts())}); the kept pools stay up: "
                               "deploy again to apply the front")
        endpoint = str(result.outputs.get(OUTPUT_ENDPOINT) or "")
        with self.journal.change():
            record.state, record.endpoint = "up", endpoint
        self.progress(f"front {stack.name}: up at {endpoint} over "
                      f"{', '.join(p.key for p in kept)}")
        return self._probe_front(endpoint, deployments)

    def _probe_front(self, endpoint: str, pools: list[Deployment]) -> ServiceOutcome | None:
        if self.probe_factory is None or not pools or not endpoint:
            return None
        first = pools[0]
        keyed = replace(first, readiness=with_api_key(first.readiness, self.api_key))
        needed = self.journal.needed
        ready = wait_ready(self.probe_factory(endpoint, keyed), needed,
                           deadline_s=first.readiness.initial_delay_seconds, clock=self.clock,
                           interval_s=self.settings.lane.probe_interval_s)
        self.progress(f"front: {ready.summary()}")
        if ready.ready:
            return None
        return self.finish(RunStatus.STOPPED, f"the pools answer, but not through the front "
                           f"{endpoint}: {ready.summary()}; the pools and the front stay up "
                           "(servestack destroy removes them)")

    # --- destroy ----------------------------------------------------------------------------

    def destroy(self) -> ServiceOutcome:
        """`servestack destroy`: the front, then every pool (proof of cleanup), then the key."""
        j = self.journal
        for pool in j.pools:
            self.pool_journal(pool)
        with j.change():
            j.status, j.finished_at = RunStatus.DESTROYING, None
            j.message = "destroy in progress; if it is not running any more, run " \
                "`servestack destroy` again to finish it"
        gone: list[str] = []
        front = self._front_as_applied()
        if front is not None:
            failed = self._destroy_shared(j.front, front)
            if failed:
                return failed
            gone.append(front.name)
        for pool in j.pools:
            if pool.state.holding or self.pool_journal(pool).dirty_stacks():
                failed = self.release(pool, "destroyed")
                if failed:
                    return failed
                gone.append(pool.stack or pool.key)
        if j.key is not None and self.parts.key is not None and j.key.state != "absent":
            failed = self._destroy_shared(j.key, self.parts.key)
            if failed:
                return failed
            gone.append(self.parts.key.name)
        return self.finish(RunStatus.DESTROYED, "destroyed and verified: " +
                           (", ".join(gone) or "nothing was left"))

    def _front_as_applied(self) -> ServiceStack | None:
        """The front stack as it was last applied: over the pools it named."""
        record = self.journal.front
        if record is None or record.state == "absent":
            return None
        stacks = set(record.pools)
        deployments = [e.deployment for j in self.journals.values()
                       for e in j.stacks.values() if e.name in stacks]
        return self.parts.front(deployments)

    def _destroy_shared(self, record, stack: ServiceStack) -> ServiceOutcome | None:
        with self.journal.change():
            record.state = "destroying"
        result = self.engine.destroy_shared(stack)
        if not result.ok:
            return self.finish(RunStatus.CLEANUP_FAILED, f"{stack.name} could not be destroyed "
                               f"({_first(result.error_texts())}); run `servestack destroy` "
                               "again once the cause is fixed")
        with self.journal.change():
            record.state, record.endpoint = "absent", None
        self.progress(f"{stack.name}: destroyed")
        return None

    def finish(self, status: RunStatus, message: str) -> ServiceOutcome:
        self.journal.finish(status, self.clock.now(), message)
        self.progress(f"{status.value}: {message}")
        return ServiceOutcome(status, message, self.journal, self.journals)


class HedgedDeploy(Service):
    """`deploy` of a service over several pools."""

    def run(self, placed: Sequence[tuple[str, int]], needed: int) -> ServiceOutcome:
        """`placed`: the placement's pools (key, replicas) in order; `needed`: replicas that
        must answer (min_replicas)."""
        j = self.journal
        done = already_deployed_service(j)
        if done:
            return done
        if j.status is RunStatus.RUNNING:
            self.progress(f"resuming service run {j.run}")
            recorded = [(p.key, p.share) for p in j.pools[:int(j.settings["placed"])]]
            if recorded != list(placed) or j.needed != needed:
                self.progress("warning: the interrupted run goes on with its own placement "
                              f"({', '.join(f'{k}: {n}' for k, n in recorded)}; {j.needed} "
                              "replica(s) needed); the flags that change it take effect on "
                              "the next run (servestack destroy, then deploy)")
        else:
            self._begin(placed, needed)
        for pool in j.pools:  # open every journal: the known blocks come from all of them
            self.pool_journal(pool)
        failed = self.apply_key()
        if failed:
            return failed
        if not j.decided:
            failed = self._lanes()
            if failed:
                return failed
        self._close_paused()  # a run resumed after the decision
        failed = self.settle()
        if failed:
            return failed
        with j.change():
            j.ready_at = j.ready_at or self.clock.now()
        kept = j.in_state(PoolState.KEPT)
        return self.finish(RunStatus.DEPLOYED, f"{sum(p.share for p in kept)} replica(s) in "
                           f"{', '.join(p.key for p in kept)} behind "
                           f"{j.front.endpoint if j.front else '?'}")

    def _begin(self, placed: Sequence[tuple[str, int]], needed: int) -> None:
        shares = dict(placed)
        widest = max(shares.values())
        records = [PoolRecord(o.cloud, o.region, shares.get(o.key, widest), o.price_per_hour,
                              hedge=o.key not in shares) for o in self.order]
        records.sort(key=lambda p: p.hedge)  # placed first, in the placement's order
        placed_keys = list(shares)
        records[:len(shares)] = sorted(records[:len(shares)],
                                       key=lambda p: placed_keys.index(p.key))
        lanes = self.settings.lanes(len(shares), len(records))
        budget = self.settings.budget(records[:len(shares)])
        self.journal.begin(records, needed, {"lanes": lanes, "placed": len(shares),
                                             "hedge_budget": budget,
                                             "lane": self.settings.lane.to_json()},
                           self.parts.key.name if self.parts.key else None,
                           self.parts.front_name, self.clock.now())
        self.progress(f"service run {self.journal.run}: {needed} replica(s) over "
                      f"{len(shares)} placed pool(s), {lanes} lane(s), hedges up to "
                      f"${budget:.2f}/h")

    # --- lanes --------------------------------------------------------------------------------

    def _lanes(self) -> ServiceOutcome | None:
        j = self.journal
        lanes = int(j.settings["lanes"])
        self.stop.clear()
        done: set[int] = set()
        for n in range(lanes):
            self.runner.spawn(f"lane-{n}", partial(self._lane, n, done))
        self.runner.wait(lambda: self.fatal is not None or len(done) == lanes or
                         j.ready_replicas() >= j.needed)
        self._decide()
        self.stop.set()
        self.runner.join()
        self._close_paused()
        if self.fatal:
            failed = self.release_unkept()
            return failed or self.finish(self.fatal.status, self.fatal.message)
        if not j.in_state(PoolState.KEPT):
            failed = self.release_unkept()
            return failed or self.finish(RunStatus.EXHAUSTED, self._short_message())
        return None

    def _lane(self, n: int, done: set[int]) -> None:
        try:
            while not self.stop.is_set() and self.fatal is None:
                pool = self._claim(n)
                if pool is None:
                    return
                self.bring_up(pool, self.stop.is_set, priced=True)
        finally:
            done.add(n)
            self.runner.notify()

    def _claim(self, lane: int) -> PoolRecord | None:
        """The pool this lane holds (a resumed run), else the next one nobody holds."""
        j = self.journal
        with j.change():
            for pool in j.pools:
                if pool.lane == lane and pool.state is PoolState.CLAIMED:
                    return pool
            found = self._next_open(lane)
            if found is None:
                return None
            found.state, found.lane, found.started_at = PoolState.CLAIMED, lane, self.clock.now()
            hedge = self._in_flight() - found.share >= j.needed
        self.progress(f"lane {lane}: {found.key} ({found.share} replica(s), "
                      f"${found.price_per_hour:.2f}/h each){' as a hedge' if hedge else ''}")
        return found

    def let_go(self, pool: PoolRecord, why: str) -> None:
        """Open again, and the lane claims the cheapest open pool in the same write (this one
        again if another lane took the cheaper one meanwhile): a run killed in between
        resumes with the lane on the pool it moved to. The move replaces what the lane held
        with something cheaper, so neither the need nor the hedge budget holds it back."""
        lane = pool.lane
        super().let_go(pool, why)
        price, target = self.cheapest_open()
        if target is None or lane is None:
            return
        target.state, target.lane, target.started_at = PoolState.CLAIMED, lane, self.clock.now()
        self.progress(f"lane {lane}: {pool.key} let go (next ${pool.price_per_hour:.2f}/h), "
                      f"its {target.share} replica(s) to {target.key} "
                      f"(${price:.2f}/h each)")

    def _close_paused(self) -> None:
        """Pools let go for price and not claimed again: their paused runs end (nothing of
        them is dirty), so that a later run starts them afresh."""
        for pool in self.journal.in_state(PoolState.OPEN):
            journal = self.pool_journal(pool)
            if journal.status is RunStatus.RUNNING and not journal.dirty_stacks():
                journal.finish(RunStatus.STOPPED, self.clock.now(), pool.reason or DEARER)

    def _in_flight(self) -> int:
        """Replicas of the pools being brought up, ready or kept."""
        return sum(p.share for p in self.journal.in_state(PoolState.CLAIMED, PoolState.READY,
                                                          PoolState.KEPT))

    def _next_open(self, lane: int) -> PoolRecord | None:
        """While the pools in flight hold fewer replicas than needed, the next open pool
        (placed ones first: a failed pool's replicas spill to the next). Beyond that, only a
        hedge lane starts a pool, and only while the hedges' hourly price stays within the
        budget: a pool over it is not started."""
        j = self.journal
        open_pools = self._open_order()
        if not open_pools:
            return None
        if self._in_flight() < j.needed:
            return open_pools[0]
        placed = int(j.settings["placed"])
        if lane < placed:
            return None
        spent = sum(p.hourly for p in j.in_state(PoolState.CLAIMED, PoolState.READY)
                    if p.lane is not None and p.lane >= placed)
        pool = open_pools[0]
        if spent + pool.hourly <= float(j.settings["hedge_budget"]):
            return pool
        self.progress(f"lane {lane}: {pool.key} not started as a hedge: ${pool.hourly:.2f}/h "
                      f"on top of ${spent:.2f}/h would pass the hedge budget "
                      f"${float(j.settings['hedge_budget']):.2f}/h")
        return None

    def _open_order(self) -> list[PoolRecord]:
        """Open pools: placed ones not yet tried first (the placement's order), then the
        rest by their cheapest candidate still open (rank order for the untried ones; a pool
        let go for price at the price of what it has left)."""
        placed = int(self.journal.settings["placed"])
        first = [p for p in self.journal.pools[:placed]
                 if p.state is PoolState.OPEN and not self.paused(p)]
        rest = [p for p in self.journal.in_state(PoolState.OPEN) if p not in first]
        return first + sorted(rest, key=self.open_price)

    def _decide(self) -> None:
        """Keep ready pools in the order they became ready until the need is met."""
        j = self.journal
        with j.change():
            held = 0
            ready = sorted(j.in_state(PoolState.READY), key=lambda p: p.ready_at or 0)
            for pool in ready:
                if held >= j.needed:
                    pool.state, pool.reason = PoolState.RELEASING, "not needed: the kept " \
                        "pools hold the replicas"
                    continue
                pool.state, held = PoolState.KEPT, held + pool.share
            if held < j.needed:  # not enough: nothing is kept
                for pool in j.in_state(PoolState.KEPT):
                    pool.state, pool.reason = PoolState.RELEASING, "the service could not " \
                        "get the replicas it needs"
            j.decided = True
        self.progress(f"kept: {', '.join(p.key for p in j.in_state(PoolState.KEPT)) or 'none'}")

    def _short_message(self) -> str:
        failed = "; ".join(f"{p.key}: {p.reason}" for p in self.journal.in_state(
            PoolState.FAILED) if p.reason)
        return f"could not bring up {self.journal.needed} replica(s): {failed or 'no pool left'}"


def already_deployed_service(j: ServiceJournal) -> ServiceOutcome | None:
    """The outcome of a deploy that finds the service deployed already, else None."""
    if j.status is not RunStatus.DEPLOYED:
        return None
    return ServiceOutcome(RunStatus.DEPLOYED, "already deployed: "
                          f"{', '.join(p.key for p in j.in_state(PoolState.KEPT))} behind "
                          f"{j.front.endpoint if j.front else '?'} (servestack reconcile keeps "
                          "it at its size; servestack destroy first to redeploy)", j, {})


def _first(texts: list[str]) -> str:
    return (texts[0] if texts else "no error text").splitlines()[0][:300]


def entry_ref(entry: StackEntry) -> StackRef:
    return StackRef(entry.deployment.service, entry.candidate, entry.name)
