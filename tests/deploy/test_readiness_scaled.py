"""An autoscaled group is healthy whatever size its autoscaler chose, as long as at least
min_replicas answer: above desired (scaled out), or between min and desired; below min it is
not. Through `wait_ready` alone and through the deploy loop with a scaled deployment."""

from __future__ import annotations

from dataclasses import replace

from servestack.deploy.loop import Fallback, Settings
from servestack.deploy.readiness import ANONYMOUS, ProbeAnswer, wait_ready
from servestack.deployment.model import Autoscaling
from tests.fakes import (
    GCP1,
    GCP2,
    PLAN,
    Cloud,
    KillableJournal,
    ReplayEngine,
    SimClock,
    Step,
    build,
    probes,
)


def _round_robin(replicas: int, named: bool = True):
    turn = iter(range(10**9))

    def probe() -> ProbeAnswer:
        name = f"replica-{next(turn) % replicas}" if named else None
        return ProbeAnswer(True, 200, name)

    return probe


def test_a_group_scaled_above_desired_is_ready():
    clock = SimClock()
    result = wait_ready(_round_robin(8), 2, deadline_s=600, clock=clock)
    assert result.ready and len(result.replicas) == 2 and result.elapsed_s == 0


def test_unnamed_answers_count_a_group_above_desired():
    clock = SimClock()
    result = wait_ready(_round_robin(8, named=False), 2, deadline_s=600, clock=clock,
                        instances=lambda: 8)
    assert result.ready and result.replicas == (ANONYMOUS, ANONYMOUS)


def test_unnamed_answers_with_fewer_vms_than_min_are_not_ready():
    clock = SimClock()
    result = wait_ready(_round_robin(1, named=False), 2, deadline_s=60, clock=clock,
                        interval_s=10, instances=lambda: 1)
    assert not result.ready and result.elapsed_s >= 50


def _scaled(candidate, pool):
    """The embedded Mixtral (min 2) as an autoscaled group of 2..8, desired 4."""
    return replace(build(candidate, pool), max_replicas=8, desired_replicas=4,
                   autoscaling=Autoscaling(metric="qps", target=2.0))


def _run(tmp_path, script, *, replicas: int, named: bool = True):
    cloud, clock = Cloud(), SimClock()
    engine = ReplayEngine(cloud, clock, script)
    journal = KillableJournal.open(tmp_path, "mixtral")
    loop = Fallback(engine, journal, PLAN.candidates, _scaled, clock=clock,
                    settings=Settings(max_attempts=2), progress=lambda line: None,
                    probe_factory=probes(cloud, clock, replicas, named))
    return loop.run(), journal


def test_loop_deploys_a_group_that_scaled_out(tmp_path):
    outcome, journal = _run(tmp_path, {GCP1: [Step("ok", running=8)]}, replicas=8)
    assert outcome.status == "deployed"
    assert journal.attempts[0].ready.startswith("2 of 2 replica(s) answered")


def test_loop_deploys_unnamed_replicas_of_a_group_that_scaled_out(tmp_path):
    outcome, journal = _run(tmp_path, {GCP1: [Step("ok", running=8)]}, replicas=8,
                            named=False)
    assert outcome.status == "deployed" and len(journal.attempts) == 1


def test_loop_takes_min_not_desired(tmp_path):
    """Three VMs of a desired four: at least min (2) answer, so the service is up."""
    outcome, journal = _run(tmp_path, {GCP1: [Step("ok", running=3)]}, replicas=3)
    assert outcome.status == "deployed" and len(journal.attempts) == 1


def test_loop_refuses_a_group_below_min(tmp_path):
    script = {GCP1: [Step("ok", running=1)], GCP2: [Step("ok", running=1)]}
    outcome, journal = _run(tmp_path, script, replicas=1, named=False)
    assert outcome.status != "deployed"
    assert "only 1 of 2 VM(s) running" in journal.attempts[0].message
