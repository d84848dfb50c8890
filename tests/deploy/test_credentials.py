"""Credentials checked per cloud before the first stack, and what a failed `up` that created
nothing leaves: the replay engine answers with the clouds' real no-credential error texts
(fixtures/errors/<cloud>_no_credentials.txt)."""

from __future__ import annotations

from servestack.deploy.destroy import destroy
from servestack.deploy.failures import Block
from servestack.deploy.journal import Journal, RunStatus, StackState
from servestack.deploy.loop import Fallback, Settings
from servestack.engine import Capabilities
from tests.fakes import PLAN, C, Cloud, Crash, ReplayEngine, SimClock, Step, build, probes

NONE = {cloud: f"{cloud}_no_credentials" for cloud in ("aws", "gcp", "azure")}
# what the engines can do, without the credentials check: how a deploy ran before it existed
UNCHECKED = Capabilities(quota_precheck=True, group_size=True, cloud_sweep=True,
                         adopt_strays=True)


def deploy(tmp_path, engine: ReplayEngine, clock: SimClock, cloud: Cloud, **settings):
    journal = Journal.open(tmp_path, "mixtral")
    loop = Fallback(engine, journal, PLAN.candidates, build, clock=clock,
                    settings=Settings(**settings), probe_factory=probes(cloud, clock))
    return loop.run()


def test_without_any_credentials_a_deploy_ends_in_seconds(tmp_path):
    cloud, clock = Cloud(), SimClock()
    engine = ReplayEngine(cloud, clock, no_credentials=NONE)
    start = clock.now()
    outcome = deploy(tmp_path, engine, clock, cloud)
    assert (outcome.status, outcome.exit_code) == (RunStatus.EXHAUSTED, 3)
    assert outcome.message.startswith("no cloud has credentials (gcp: ")
    assert "No valid credential sources found" in outcome.message  # the provider's own words
    assert engine.calls == [] and clock.now() - start < 30  # no stack was ever started
    report = outcome.to_json()
    assert report["attempts"] == [] and report["leftovers"] == []
    assert {(b["cloud"], b["error_class"]) for b in report["blocked"]} == {
        ("aws", "credentials"), ("gcp", "credentials"), ("azure", "credentials")}


def test_a_cloud_without_credentials_is_ruled_out_before_any_attempt(tmp_path):
    cloud, clock = Cloud(), SimClock()
    engine = ReplayEngine(cloud, clock, no_credentials={"gcp": "gcp_no_credentials"})
    outcome = deploy(tmp_path, engine, clock, cloud)
    assert outcome.status is RunStatus.DEPLOYED
    journal = outcome.journal
    assert {C[a.candidate].cloud for a in journal.attempts} == {"azure"}  # GCP ranks first
    assert journal.blocks[0] == Block("gcp", error_class="credentials", code="CredentialsCheck")
    assert sorted(engine.checked) == ["aws", "azure", "gcp"]


def test_a_failed_up_that_created_nothing_cleans_up_to_clean(tmp_path):
    """The root cause of exit 5 after minutes: without credentials the search by tags fails
    too, and a failed search was a leftover that three cleanup rounds (30 + 60 + 120 s)
    could never clear. An `up` that created nothing needs no search."""
    cloud, clock = Cloud(), SimClock()
    engine = ReplayEngine(cloud, clock, no_credentials=NONE, can=UNCHECKED)
    outcome = deploy(tmp_path, engine, clock, cloud)
    assert (outcome.status, outcome.exit_code) == (RunStatus.EXHAUSTED, 3)
    journal = outcome.journal
    assert [a.error_class for a in journal.attempts] == ["credentials"] * 3  # one per cloud
    assert [a.cleanup for a in journal.attempts] == ["clean"] * 3
    assert all(s.state is StackState.CLEAN and s.untouched for s in journal.stacks.values())
    assert "strays" not in {op for op, _ in engine.calls} and clock.sleeps == []


def test_destroy_without_credentials_clears_a_stack_whose_up_created_nothing(tmp_path):
    cloud, clock = Cloud(), SimClock()
    killed = ReplayEngine(cloud, clock, no_credentials=NONE, can=UNCHECKED, crash_at=2)
    try:
        deploy(tmp_path, killed, clock, cloud)  # killed in the first cleanup's refresh
    except Crash:
        pass
    (entry,) = Journal.open(tmp_path, "mixtral").dirty_stacks()
    assert entry.untouched
    engine = ReplayEngine(cloud, clock, no_credentials=NONE, can=UNCHECKED)
    outcome = destroy(Journal.open(tmp_path, "mixtral"), engine, clock=clock, progress=print)
    assert (outcome.status, outcome.exit_code) == (RunStatus.DESTROYED, 0)
    assert Journal.open(tmp_path, "mixtral").dirty_stacks() == []


def test_a_stack_that_created_something_is_not_called_clean_when_the_search_fails(tmp_path):
    cloud, clock = Cloud(), SimClock()
    first = PLAN.candidates[0].id
    outcome = deploy(tmp_path, ReplayEngine(cloud, clock, {first: [Step(
        "fail", "gcp_zone_exhausted_details", 40)]}), clock, cloud, max_attempts=1)
    assert outcome.status is RunStatus.EXHAUSTED
    cloud.untracked[f"mixtral-{first}"] = {"vm-still-booting"}  # then the login expired
    journal = Journal.open(tmp_path, "mixtral")
    journal.stacks[f"mixtral-{first}"].state = StackState.LEFT
    outcome = destroy(journal, ReplayEngine(cloud, clock, no_credentials=NONE), clock=clock,
                      progress=print)
    assert (outcome.status, outcome.exit_code) == (RunStatus.CLEANUP_FAILED, 5)
    assert "tag search failed" in outcome.message and "could not find default" in outcome.message
    assert "searches again once that works" in outcome.message
