"""`destroy`: every dirty stack of a service cleaned and verified, without a deploy loop."""

from __future__ import annotations

from servestack.deploy.destroy import destroy
from servestack.deploy.journal import Journal, RunStatus, StackState
from servestack.deploy.loop import Fallback
from tests.fakes import PLAN, Cloud, Crash, KillableJournal, ReplayEngine, SimClock, build, probes


def deployed(tmp_path, cloud: Cloud, clock: SimClock) -> Journal:
    journal = Journal.open(tmp_path, "mixtral")
    loop = Fallback(ReplayEngine(cloud, clock), journal, PLAN.candidates, build, clock=clock,
                    probe_factory=probes(cloud, clock))
    assert loop.run().status is RunStatus.DEPLOYED
    return journal


def test_nothing_recorded_as_dirty_needs_no_engine(tmp_path):
    journal = Journal.open(tmp_path, "mixtral")
    outcome = destroy(journal, None, clock=SimClock(), progress=print)
    assert (outcome.status, outcome.message, outcome.exit_code) == \
        (RunStatus.DESTROYED, "nothing to destroy", 0)


def test_the_live_stack_is_destroyed_verified_and_removed(tmp_path):
    cloud, clock = Cloud(), SimClock()
    journal = deployed(tmp_path, cloud, clock)
    stack = journal.live.stack
    engine, lines = ReplayEngine(cloud, clock), []
    outcome = destroy(Journal.open(tmp_path, "mixtral"), engine, clock=clock,
                      progress=lines.append)
    assert outcome.status is RunStatus.DESTROYED and outcome.exit_code == 0
    assert outcome.message == f"destroyed and verified: {stack}"
    assert [op for op, _ in engine.calls] == ["refresh", "destroy", "leftovers", "strays",
                                              "remove"]
    again = Journal.open(tmp_path, "mixtral")
    assert again.live is None and again.dirty_stacks() == []
    assert again.stacks[stack].state is StackState.CLEAN and cloud.holding() == set()
    assert lines == [f"cleaning {stack} left by an earlier run"]


def test_a_destroy_that_cannot_be_verified_exits_5_with_what_is_left(tmp_path):
    cloud, clock = Cloud(), SimClock()
    journal = deployed(tmp_path, cloud, clock)
    stack = journal.live.stack
    lines: list[str] = []
    outcome = destroy(Journal.open(tmp_path, "mixtral"),
                      ReplayEngine(cloud, clock, destroy_fails=(stack,)), clock=clock,
                      progress=lines.append)
    assert outcome.status is RunStatus.CLEANUP_FAILED and outcome.exit_code == 5
    assert "DependencyViolation" in outcome.message
    left = {x["name"] for x in outcome.to_json()["leftovers"]}
    assert left == {"sg", "template", "group"}
    assert Journal.open(tmp_path, "mixtral").stacks[stack].state is StackState.LEFT
    assert lines[-1].startswith("cleanup-failed: cleanup of")


def test_strays_found_by_tags_are_adopted_then_destroyed(tmp_path):
    cloud, clock = Cloud(), SimClock()
    journal = deployed(tmp_path, cloud, clock)
    cloud.untracked[journal.live.stack] = {"asg-untracked"}
    engine = ReplayEngine(cloud, clock)
    outcome = destroy(Journal.open(tmp_path, "mixtral"), engine, clock=clock, progress=print)
    assert outcome.status is RunStatus.DESTROYED and cloud.holding() == set()
    assert "adopt" in [op for op, _ in engine.calls]


def test_status_is_truthful_after_a_destroy_killed_at_every_journal_write(tmp_path):
    from servestack.cli.deploy import status_report

    kill_at, finished = 0, False
    while not finished:
        kill_at += 1
        cloud, clock = Cloud(), SimClock()
        folder = tmp_path / str(kill_at)
        cloud.untracked[deployed(folder, cloud, clock).live.stack] = {"asg-untracked"}
        journal = KillableJournal.open(folder, "mixtral")
        journal.kill_at = kill_at
        try:
            destroy(journal, ReplayEngine(cloud, clock), clock=clock, progress=print)
            finished = True
        except Crash:
            pass
        report = status_report(Journal.open(folder, "mixtral"), running=False)
        is_now = {s["name"]: s["is"] for s in report["stacks"]}
        assert report["outcome"] in ("destroying", "destroyed") and report["endpoint"] is None
        assert report["interrupted"] == (report["outcome"] == "destroying")
        for stack in cloud.holding():  # whatever still exists is shown as needing cleanup
            assert is_now[stack] == "dirty", (kill_at, stack)
        again = destroy(Journal.open(folder, "mixtral"), ReplayEngine(cloud, clock),
                        clock=clock, progress=print)
        assert again.status is RunStatus.DESTROYED and cloud.holding() == set()
        after = status_report(Journal.open(folder, "mixtral"), running=False)
        assert after["outcome"] == "destroyed" and after["dirty_stacks"] == []
        assert {s["is"] for s in after["stacks"]} == {"gone"}
    assert kill_at > 4  # the destroy writes the journal at each step
