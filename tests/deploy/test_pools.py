"""The hedged deploy of a service over several pools (servestack.deploy.pools), with the replay
engine and the lockstep clock: lanes are threads, one runs at a time, in simulated time."""

from __future__ import annotations

import os

import pytest

from servestack.deploy import journal as journal_module
from servestack.deploy import service_journal as service_journal_module
from servestack.deploy.pools import HedgeSettings, pool_options
from servestack.deploy.service_journal import PoolState
from servestack.fsutil import write_atomic
from servestack.report import service_deploy_table
from tests.fakes import (
    PLAN,
    SERVICE,
    Crash,
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
    assert s.journal.pool(CENTRAL).state is PoolState.FAILED
    kept_stacks = {p.stack for p in s.journal.in_state(PoolState.KEPT)}
    assert set(s.cloud.fronts[f"{SERVICE}-front"]) == kept_stacks
    assert not any(s.cloud.state.get(name) for name, where in s.cloud.where.items()
                   if where[1] == "us-central1")
    assert s.cloud.violations == []
    report = outcome.to_json()
    assert [p["region"] for p in report["failed"]] == ["us-central1"]
    assert report["failed"][0]["attempts"][0]["outcome"] == "capacity"


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


def test_the_hedge_budget_default_is_the_placements_own_hourly_price(s):
    s.run(script=slow_hedge())
    placed = [s.journal.pool(CENTRAL), s.journal.pool(WEST4)]
    assert s.journal.settings["hedge_budget"] == round(sum(p.hourly for p in placed), 4)
    assert s.journal.settings["lanes"] == 3


class Killer:
    """Counts every journal write (the service's and every pool's) and kills the process
    right after the n-th reached the disk."""

    def __init__(self, monkeypatch, kill_at: int | None = None) -> None:
        self.writes, self.kill_at = 0, kill_at
        for module in (journal_module, service_journal_module):
            monkeypatch.setattr(module, "write_atomic", self.write)

    def write(self, path, text) -> None:
        write_atomic(path, text)
        self.writes += 1
        if self.kill_at is not None and self.writes == self.kill_at:
            raise Crash(f"killed after journal write {self.writes}")


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
    killer = Killer(monkeypatch)
    counting.run(script=slow_hedge())
    writes = killer.writes
    assert writes > 30
    for point in range(1, writes + 1):
        s = ServiceHarness(tmp_path / f"write-{point}")
        s.cloud.refuse.update(refused)
        script = slow_hedge()
        Killer(monkeypatch, kill_at=point)
        with pytest.raises(Crash):
            s.run(script=script)
        Killer(monkeypatch)
        s.run(script=script)
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
        script = slow_hedge()
        with pytest.raises(Crash):
            s.run(script=script, crash_at=point)
        s.run(script=script)
        check_converged(s, point)
        assert s.kept() == counting.kept(), point
