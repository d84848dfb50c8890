"""The hedged deploy of a service over several pools (servestack.deploy.pools), with the replay
engine and the lockstep clock: lanes are threads, one runs at a time, in simulated time."""

from __future__ import annotations

import os

import pytest

from servestack.deploy.journal import Journal
from servestack.deploy.loop import DEARER
from servestack.deploy.pools import HedgeSettings, pool_options
from servestack.deploy.service_journal import PoolState
from servestack.report import service_deploy_table
from tests.fakes import (
    PLAN,
    SERVICE,
    Crash,
    JournalKiller,
    ServiceHarness,
    Step,
)

OPTIONS = pool_options(PLAN.candidates)
CENTRAL, WEST4, EAST4 = (o.key for o in OPTIONS[:3])


@pytest.fixture
def s(tmp_path) -> ServiceHarness:
    return ServiceHarness(tmp_path)


def test_two_pools_in_parallel_behind_a_front(s):
    outcome = s.run(settings=HedgeSettings(max_parallel=2))
    assert outcome.status == "deployed", outcome.message
    assert s.kept() == [CENTRAL, WEST4]
    front = s.cloud.fronts[f"{SERVICE}-front"]
    assert sorted(front) == sorted(p.stack for p in s.journal.in_state(PoolState.KEPT))
    assert s.cloud.violations == []


def test_a_region_without_capacity_spills_its_replicas_to_the_next_pool(s):
    s.cloud.refuse.add("us-central1")
    outcome = s.run(settings=HedgeSettings(max_parallel=2))
    assert outcome.status == "deployed", outcome.message
    assert sorted(s.kept()) == sorted([WEST4, EAST4])
    # its cheap type had no room and its next ($8.00/h) is dearer than us-east4's: let go
    # for price (open again, not failed), its run ended once the lanes were done
    central = s.journal.pool(CENTRAL)
    assert central.state is PoolState.OPEN and DEARER in central.reason
    journal = outcome.pool_journals[CENTRAL]
    assert [a.outcome for a in journal.attempts] == ["capacity"]
    assert journal.status == "stopped"
    kept_stacks = {p.stack for p in s.journal.in_state(PoolState.KEPT)}
    assert set(s.cloud.fronts[f"{SERVICE}-front"]) == kept_stacks
    assert not any(s.cloud.state.get(name) for name, where in s.cloud.where.items()
                   if where[1] == "us-central1")
    assert s.cloud.violations == []


def slow_hedge() -> dict:
    """The hedge's `up` takes 15 minutes: the placed pools are ready first."""
    return {OPTIONS[2].candidates[0].id: [Step(seconds=900)]}


def test_a_hedge_lane_is_released_once_the_placed_pools_answer_and_its_cost_reported(s):
    outcome = s.run(script=slow_hedge())
    assert outcome.status == "deployed", outcome.message
    assert s.kept() == [CENTRAL, WEST4]
    hedge = s.journal.pool(EAST4)
    assert hedge.state is PoolState.RELEASED and hedge.lane == 2
    assert not s.cloud.state.get(hedge_stack(s))  # destroyed when its `up` returned
    report = outcome.to_json()
    (released,) = report["released"]
    assert released["region"] == "us-east4" and released["live_s"] > 900
    expected = round(released["hourly_usd"] * released["live_s"] / 3600, 4)
    assert released["cost_usd"] == expected and report["hedge_cost_usd"] == expected
    assert report["time_to_ready_s"] > 600
    assert [(p["region"], p["replicas"]) for p in report["kept"]] == [
        ("us-central1", 1), ("europe-west4", 1)]
    assert "Hedge cost: $" in service_deploy_table(report)
    assert s.cloud.violations == []


def hedge_stack(s) -> str:
    return f"{SERVICE}-{OPTIONS[2].candidates[0].id}"


def test_a_hedge_over_the_budget_is_not_started(s):
    outcome = s.run(settings=HedgeSettings(hedge_budget=5.0))
    assert outcome.status == "deployed"
    assert s.journal.pool(EAST4).state is PoolState.OPEN
    assert not [c for c in s.engine.calls if c == ("up", hedge_stack(s))]
    assert any("not started as a hedge" in line for line in s.lines)


def test_the_hedge_budget_default_is_half_again_the_placements_own_hourly_price(s):
    s.run(script=slow_hedge())
    placed = [s.journal.pool(CENTRAL), s.journal.pool(WEST4)]
    assert s.journal.settings["hedge_budget"] == round(1.5 * sum(p.hourly for p in placed), 4)
    assert s.journal.settings["lanes"] == 3




def check_converged(s: ServiceHarness, point) -> None:
    assert s.outcome.status == "deployed", (point, s.outcome.message)
    assert s.cloud.violations == [], point
    kept = s.journal.in_state(PoolState.KEPT)
    assert sum(p.share for p in kept) >= PLAN.replicas, point
    kept_stacks = {p.stack for p in kept}
    shared = {f"{SERVICE}-key", f"{SERVICE}-front"}
    assert s.cloud.holding() == kept_stacks | shared, point  # nothing orphaned
    assert set(s.cloud.fronts[f"{SERVICE}-front"]) == kept_stacks, point
    regions = [p.region for p in kept]
    assert len(regions) == len(set(regions)), point


@pytest.mark.parametrize("refused", [(), ("us-central1",)], ids=["hedge-released", "spill"])
def test_a_kill_after_any_journal_write_resumes_to_the_same_service(tmp_path, monkeypatch,
                                                                     no_fsync, refused):
    """Every path: a slow hedge released when its `up` returns; or a region without capacity
    whose replicas the hedge then holds. Kill after every write of every journal, resume."""
    counting = ServiceHarness(tmp_path / "count")
    counting.cloud.refuse.update(refused)
    killer = JournalKiller(monkeypatch)
    counting.run(script=slow_hedge())
    writes = killer.writes
    assert writes > 30
    for point in range(1, writes + 1):
        s = ServiceHarness(tmp_path / f"write-{point}")
        s.cloud.refuse.update(refused)
        JournalKiller(monkeypatch, kill_at=point)
        with pytest.raises(Crash):
            s.run(script=slow_hedge())
        JournalKiller(monkeypatch)
        # the same world after the kill: us-east4 is still slow (a script shared by both runs
        # would have spent its slow step before the kill, and which pool answers first is
        # then a matter of timing, not of resuming)
        s.run(script=slow_hedge())
        check_converged(s, point)
        assert s.kept() == counting.kept(), point


@pytest.fixture
def no_fsync(monkeypatch):
    """Dozens of runs: skip the disk flush (atomicity is tested in test_journal.py)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def test_the_thread_runner_gives_the_same_service(tmp_path):
    """The production runner: lanes in real threads (a plain simulated clock; the order in
    which they run is the scheduler's), the same invariants."""
    from servestack.deploy.layout import service_journal_path
    from servestack.deploy.pools import HedgedDeploy, ThreadRunner
    from servestack.deploy.service_journal import ServiceJournal
    from servestack.placement import place
    from tests.fakes import Cloud, ReplayEngine, SimClock, probes, service_parts

    cloud, clock = Cloud(), SimClock()
    engine = ReplayEngine(cloud, clock, per_pool=True)
    journal = ServiceJournal.at(service_journal_path(tmp_path, SERVICE), SERVICE)
    deploy = HedgedDeploy(engine, journal, OPTIONS, service_parts(), clock=clock,
                          settings=HedgeSettings(max_parallel=2),
                          probe_factory=probes(cloud, clock), runner=ThreadRunner())
    pools = place(PLAN, PLAN.replicas, max_pools=2, spread=True)
    outcome = deploy.run([(f"{p.cloud}-{p.region}", p.replicas) for p in pools], PLAN.replicas)
    assert outcome.status == "deployed", outcome.message
    kept = {p.stack for p in journal.in_state(PoolState.KEPT)}
    assert len(kept) == 2 and cloud.violations == []
    assert cloud.holding() == kept | {f"{SERVICE}-key", f"{SERVICE}-front"}


@pytest.mark.parametrize("refused", [(), ("us-central1",)], ids=["hedge-released", "spill"])
def test_a_kill_during_any_engine_call_resumes_to_the_same_service(tmp_path, no_fsync,
                                                                   refused):
    counting = ServiceHarness(tmp_path / "count")
    counting.cloud.refuse.update(refused)
    counting.run(script=slow_hedge())
    # the calls a kill can interrupt (readings such as group_size are not)
    points = [n for n, (op, _) in enumerate(counting.engine.calls, 1)
              if op not in ("group_size", "outputs")]
    assert len(points) >= 10
    for point in points:
        s = ServiceHarness(tmp_path / f"call-{point}")
        s.cloud.refuse.update(refused)
        with pytest.raises(Crash):
            s.run(script=slow_hedge(), crash_at=point)
        s.run(script=slow_hedge())  # the same world after the kill: us-east4 still slow
        check_converged(s, point)
        assert s.kept() == counting.kept(), point


# --- a lane walks its region only while no region nobody holds is cheaper --------------------

def cid(key: str, n: int = 0) -> str:
    """The id of the n-th candidate of a pool."""
    return next(o for o in OPTIONS if o.key == key).candidates[n].id


def no_room(*ids: str) -> dict:
    """`up` of each of these candidates fails for capacity (once each)."""
    fixture = {"gcp": "gcp_zone_exhausted_details", "azure": "azure_allocation_failed"}
    return {i: [Step("fail", fixture[i.split("-")[0]], 40)] for i in ids}


def ups(s: ServiceHarness) -> list[str]:
    return [name for op, name in s.engine.calls if op == "up"]


def test_a_region_whose_cheap_type_has_no_room_spills_to_the_next_regions_cheap_type(s):
    """us-central1's $5.89/h A100 host has no room; its next type ($8.00/h) is dearer than
    Azure eastus's $7.35/h A100 host, which nobody holds: the lane goes there."""
    outcome = s.run(script=no_room(cid(CENTRAL)) | slow_hedge())
    assert outcome.status == "deployed", outcome.message
    assert f"{SERVICE}-{cid(CENTRAL, 1)}" not in ups(s)  # never its own dear type
    assert sorted(s.kept()) == sorted([WEST4, "azure-eastus"])
    central = s.journal.pool(CENTRAL)
    assert central.state is PoolState.OPEN and DEARER in central.reason
    (attempt,) = outcome.pool_journals[CENTRAL].attempts
    # nor in the group of its cheap type: capped at the cheapest open region's price
    assert (attempt.outcome, attempt.instance_types) == ("capacity", ["a2-ultragpu-2g"])
    eastus = s.journal.pool("azure-eastus")
    assert eastus.lane == 0 and eastus.share == 1  # lane 0 moved there, its one replica
    assert any("gcp-us-central1 let go" in line and "to azure-eastus" in line
               for line in s.lines)
    assert s.cloud.violations == []
    report = outcome.to_json()  # the report names the region tried and let go, with its try
    [let_go] = report["let_go"]
    assert (let_go["cloud"], let_go["region"]) == ("gcp", "us-central1")
    assert [a["outcome"] for a in let_go["attempts"]] == ["capacity"]
    assert "let go" in service_deploy_table(report)


def reclaim_world() -> dict:
    """One lane. us-central1's and every cheaper region's cheap types have no room (us-east4
    none for its two cheapest), so after us-central1 is let go, europe-west4 answers and the
    rest are let go in turn, us-central1 is again the cheapest open pool at $8.00/h."""
    azure = [cid(key) for key in ("azure-eastus", "azure-eastus2", "azure-westus2",
                                  "azure-westus3")]
    return no_room(cid(CENTRAL), cid(EAST4), cid(EAST4, 1), *azure)


def test_a_region_let_go_for_price_is_claimed_again_with_its_blocks_kept(s):
    outcome = s.run(settings=HedgeSettings(max_parallel=1), script=reclaim_world())
    assert outcome.status == "deployed", outcome.message
    assert sorted(s.kept()) == sorted([CENTRAL, WEST4])
    journal = outcome.pool_journals[CENTRAL]
    # the same run resumed: its no-room A100 host not tried again, its next type answered
    assert journal.run == 1
    assert [(a.candidate, a.outcome) for a in journal.attempts] == [
        (cid(CENTRAL), "capacity"), (cid(CENTRAL, 1), "deployed")]
    assert any(b.error_class == "capacity" for b in journal.blocks)
    assert ups(s).count(f"{SERVICE}-{cid(CENTRAL)}") == 1
    # the pools let go on the way are open again, their runs closed, nothing of them held
    let_go = [p for p in s.journal.in_state(PoolState.OPEN) if DEARER in p.reason]
    assert {p.key for p in let_go} >= {EAST4, "azure-eastus"}
    for pool in let_go:
        assert outcome.pool_journals[pool.key].status == "stopped"
        assert not outcome.pool_journals[pool.key].dirty_stacks()
    assert s.cloud.holding() == {s.journal.pool(CENTRAL).stack, s.journal.pool(WEST4).stack,
                                 f"{SERVICE}-key", f"{SERVICE}-front"}
    assert s.cloud.violations == []


def test_a_kill_after_any_journal_write_of_a_let_go_and_reclaim_resumes(tmp_path, monkeypatch,
                                                                         no_fsync):
    """Regions let go for price, one claimed again: killed after every write, resumed."""
    settings = HedgeSettings(max_parallel=1)
    counting = ServiceHarness(tmp_path / "count")
    killer = JournalKiller(monkeypatch)
    counting.run(settings=settings, script=reclaim_world())
    writes = killer.writes
    assert writes > 30
    for point in range(1, writes + 1):
        s = ServiceHarness(tmp_path / f"write-{point}")
        JournalKiller(monkeypatch, kill_at=point)
        with pytest.raises(Crash):
            s.run(settings=settings, script=reclaim_world())
        JournalKiller(monkeypatch)
        s.run(settings=settings, script=reclaim_world())
        check_converged(s, point)
        assert s.kept() == counting.kept(), point
        # claimed again, us-central1 goes on with its next type: its no-room host is tried
        # only before it was let go (twice when the kill came before its block was written;
        # a kill during an attempt tries that candidate again)
        central = Journal.at(s.journal.pool_path(s.journal.pool(CENTRAL)), SERVICE)
        tried = [a.candidate for a in central.attempts]
        cheap = tried.index(cid(CENTRAL, 1))
        assert set(tried[:cheap]) == {cid(CENTRAL)}, point
        assert set(tried[cheap:]) == {cid(CENTRAL, 1)}, point
        assert central.run == 1, point
