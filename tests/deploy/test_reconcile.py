"""`servestack reconcile` passes (servestack.deploy.reconcile) over a hedged deploy, with the
replay engine and the lockstep clock."""

from __future__ import annotations

import os

import pytest

from servestack.deploy.pools import pool_options
from servestack.deploy.service_journal import PoolState
from tests.fakes import PLAN, SERVICE, Crash, JournalKiller, ServiceHarness

OPTIONS = pool_options(PLAN.candidates)
CENTRAL, WEST4, EAST4 = (o.key for o in OPTIONS[:3])
FRONT = f"{SERVICE}-front"


@pytest.fixture
def s(tmp_path) -> ServiceHarness:
    s = ServiceHarness(tmp_path)
    s.run(settings=None)
    assert s.outcome.status == "deployed" and s.kept() == [CENTRAL, WEST4]
    return s


def stack_of(s: ServiceHarness, key: str) -> str:
    return s.journal.pool(key).stack


def test_a_service_at_its_size_is_left_alone(s):
    calls = len(s.engine.calls)
    outcome = s.reconcile()
    assert outcome.status == "deployed" and "nothing to do" in outcome.message
    assert s.kept() == [CENTRAL, WEST4]
    assert not [c for c in s.engine.calls[calls:] if c[0] in ("up", "destroy")]
    assert s.journal.passes == 1 and s.journal.reconcile == {}


def test_a_spot_interruption_moves_the_replicas_to_the_next_pool_and_back(s):
    central = stack_of(s, CENTRAL)
    s.cloud.running[central] = 0  # its one VM was taken back
    outcome = s.reconcile()
    assert outcome.status == "deployed", outcome.message
    assert s.kept() == [CENTRAL, WEST4, EAST4]
    spill = s.journal.pool(EAST4)
    assert spill.covers == CENTRAL and spill.share == 1
    assert set(s.cloud.fronts[FRONT]) == {central, stack_of(s, WEST4), spill.stack}
    # capacity returns: the group is full again, the spill pool goes
    s.cloud.running[central] = 1
    outcome = s.reconcile()
    assert s.kept() == [CENTRAL, WEST4], outcome.message
    assert s.journal.pool(EAST4).state is PoolState.RELEASED
    assert set(s.cloud.fronts[FRONT]) == {central, stack_of(s, WEST4)}
    assert not s.cloud.state.get(spill.stack) and s.cloud.violations == []


def test_a_cheaper_pool_that_had_no_capacity_is_tried_again_and_the_dearer_released(tmp_path):
    s = ServiceHarness(tmp_path)
    s.cloud.refuse.add("us-central1")
    s.run()
    assert sorted(s.kept()) == sorted([WEST4, EAST4])
    s.cloud.refuse.clear()
    east4 = stack_of(s, EAST4)
    outcome = s.reconcile()
    assert outcome.status == "deployed", outcome.message
    assert sorted(s.kept()) == sorted([CENTRAL, WEST4])
    assert s.journal.pool(EAST4).state is PoolState.RELEASED and not s.cloud.state.get(east4)
    assert set(s.cloud.fronts[FRONT]) == {stack_of(s, CENTRAL), stack_of(s, WEST4)}
    assert s.cloud.violations == []


def test_a_return_that_still_finds_no_capacity_changes_nothing(tmp_path):
    s = ServiceHarness(tmp_path)
    s.cloud.refuse.add("us-central1")
    s.run()
    outcome = s.reconcile()
    assert outcome.status == "deployed" and "could not be brought up" in outcome.message
    assert sorted(s.kept()) == sorted([WEST4, EAST4])
    assert s.journal.pool(CENTRAL).state is PoolState.FAILED




def spot_interruption(s: ServiceHarness) -> None:
    s.run()
    s.cloud.running[stack_of(s, CENTRAL)] = 0


def capacity_returns(s: ServiceHarness) -> None:
    s.cloud.refuse.add("us-central1")
    s.run()
    s.cloud.refuse.clear()


@pytest.mark.parametrize("before", [spot_interruption, capacity_returns])
def test_a_kill_during_a_reconcile_pass_is_finished_by_the_next(tmp_path, monkeypatch,
                                                                 before):
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    counting = ServiceHarness(tmp_path / "count")
    before(counting)
    killer = JournalKiller(monkeypatch)
    counting.reconcile()
    writes = killer.writes
    assert writes > 10
    for point in range(1, writes + 1):
        monkeypatch.undo()
        monkeypatch.setattr(os, "fsync", lambda fd: None)
        s = ServiceHarness(tmp_path / f"write-{point}")
        before(s)
        JournalKiller(monkeypatch, kill_at=point)
        with pytest.raises(Crash):
            s.reconcile()
        JournalKiller(monkeypatch)
        outcome = s.reconcile()
        assert outcome.status == "deployed", (point, outcome.message)
        assert sorted(s.kept()) == sorted(counting.kept()), point
        kept = s.stacks(PoolState.KEPT)
        assert set(s.cloud.fronts[FRONT]) == kept, point
        assert s.cloud.holding() == kept | {FRONT, f"{SERVICE}-key"}, point
        assert s.cloud.violations == [] and s.journal.reconcile == {}, point


def test_destroy_takes_the_front_then_the_pools_then_the_key(s):
    outcome = s.destroy()
    assert outcome.status == "destroyed", outcome.message
    assert s.cloud.holding() == set()
    order = [name for op, name in s.engine.calls if op in ("destroy_shared", "remove")]
    assert order[0] == FRONT and order[-1] == f"{SERVICE}-key"
    assert set(order[1:-1]) == {stack_of(s, CENTRAL), stack_of(s, WEST4)}
