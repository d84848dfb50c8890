"""The fallback loop through the engine interface, with a double that replays real error texts
(tests.fakes.ReplayEngine) on a simulated clock."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from servestack.deploy.failures import Block
from servestack.deploy.loop import Fallback, Settings, narrow
from servestack.engine import ANY, Capabilities, QuotaLimit
from tests.fakes import (
    AZ1,
    GCP1,
    GCP2,
    GCP3,
    PLAN,
    C,
    Cloud,
    Crash,
    KillableJournal,
    ReplayEngine,
    SimClock,
    Step,
    build,
    probes,
)


@dataclass
class Harness:
    tmp: Path
    cloud: Cloud = field(default_factory=Cloud)
    clock: SimClock = field(default_factory=SimClock)
    lines: list[str] = field(default_factory=list)

    def run(self, script=None, *, settings=None, named=True, replicas=2, kill_at_save=None,
            **engine_args):
        self.engine = ReplayEngine(self.cloud, self.clock, script, **engine_args)
        self.journal = KillableJournal.open(self.tmp, "mixtral")
        self.journal.kill_at = kill_at_save
        loop = Fallback(self.engine, self.journal, PLAN.candidates, build, clock=self.clock,
                        settings=settings or Settings(), progress=self.lines.append,
                        probe_factory=probes(self.cloud, self.clock, replicas, named))
        self.outcome = loop.run()
        return self.outcome

    def tried(self) -> list[str]:
        return [a.candidate for a in self.journal.attempts]


@pytest.fixture
def h(tmp_path) -> Harness:
    return Harness(tmp_path)


def test_first_candidates_out_of_capacity_then_deployed(h):
    script = {GCP1: [Step("fail", "gcp_zone_exhausted", 40),
                     Step("fail", "gcp_zone_exhausted", 40)],
              GCP2: [Step("fail", "gcp_zone_exhausted_details", 40)]}
    # the second us-central1 failure names zone a again, though only zone c was left:
    # the zone cannot be narrowed further, so the region is blocked for that type
    script[GCP1][1] = Step("fail", "gcp_zone_exhausted_details", 40)
    outcome = h.run(script)
    assert outcome.status == "deployed" and outcome.exit_code == 0
    assert h.tried() == [GCP1, GCP1, GCP2, GCP3]
    first, second = h.journal.attempts[:2]
    assert first.zones == ["us-central1-a", "us-central1-c"]
    assert second.zones == ["us-central1-c"]  # narrowed: zone a ruled out, zone c tried
    assert first.scope == "gcp us-central1-a zone A100-80GB:2+ on-demand"
    assert first.cleanup == "clean" and first.error_class == "capacity"
    assert h.journal.live.candidate == GCP3 and h.cloud.holding() == {h.journal.live.stack}
    assert h.cloud.violations == []
    report = outcome.to_json()
    assert report["endpoint"].startswith("http://mixtral-gcp-us-east4") and report["exit_code"] == 0
    assert [a["outcome"] for a in report["attempts"]] == ["capacity"] * 3 + ["deployed"]
    assert report["attempts"][-1]["ready"].startswith("2 of 2 replica(s) answered")


def test_a_region_without_quota_rules_out_that_gpu_family_there(h):
    a2_4g = next(c for c in PLAN.candidates
                 if c.instance_type == "a2-ultragpu-4g" and c.region == "us-central1")
    g2 = next(c for c in PLAN.candidates
              if c.instance_type == "g2-standard-96" and c.region == "us-central1")
    script = {GCP1: [Step("fail", "gcp_quota_region", 20)]}
    h.run(script, settings=Settings(max_attempts=2))
    (block,) = h.journal.blocks
    assert block.family == "NVIDIA_A100_80GB_GPUS" and block.region == "us-central1"
    assert narrow(a2_4g, h.journal.blocks) is None
    assert narrow(g2, h.journal.blocks) is g2


def test_one_cloud_without_credentials_is_skipped_entirely(h):
    script = {g: [Step("fail", "gcp_zone_exhausted_details", 30)] for g in (GCP1, GCP2, GCP3)}
    script[AZ1] = [Step("fail", "azure_no_credentials", 5)]
    outcome = h.run(script)
    assert outcome.status == "deployed"
    tried_clouds = [C[i].cloud for i in h.tried()]
    assert tried_clouds.count("azure") == 1  # the other Azure candidates were never tried
    assert Block("azure", error_class="credentials", code="NoCredentials") in h.journal.blocks
    assert C[h.journal.live.candidate].cloud == "gcp"


def test_a_hung_attempt_hits_the_timeout_and_is_cleaned(h):
    script = {GCP1: [Step("hang")]}
    start = h.clock.now()
    outcome = h.run(script, settings=Settings(attempt_timeout_s=1200))
    first = h.journal.attempts[0]
    assert first.error_class == "timeout" and first.code == "AttemptTimeout"
    assert first.cleanup == "clean" and first.duration_s >= 1200
    assert outcome.status == "deployed" and h.tried()[1] == GCP2
    assert h.clock.now() - start < 1200 + 3600  # simulated, not slept
    assert ("destroy", first.stack) in h.engine.calls


def test_untracked_group_found_by_tags_is_imported_and_destroyed(h):
    script = {GCP1: [Step("fail", "aws_asg_capacity_timeout", 600, strays=("asg-untracked",))]}
    h.run(script, settings=Settings(max_attempts=2))
    ops = [op for op, name in h.engine.calls if name == h.journal.attempts[0].stack]
    assert ops == ["up", "refresh", "destroy", "leftovers", "strays", "adopt", "destroy",
                   "leftovers", "strays", "remove"]
    assert h.journal.attempts[0].cleanup == "clean"
    assert h.cloud.violations == []


def test_what_an_engine_cannot_do_for_a_cloud_is_skipped_not_called(h):
    aws = [c for c in PLAN.candidates if c.cloud == "aws"]
    limits = [QuotaLimit("aws", c.region, "aws-G-ondemand", "vcpus", 0.0) for c in aws]
    script = {GCP1: [Step("fail", "gcp_zone_exhausted_details", 40, strays=("asg",))]}
    outcome = h.run(script, limits=limits, can=Capabilities(), settings=Settings(max_attempts=2))
    assert outcome.status == "deployed"
    assert not any(b.code == "QuotaPrecheck" for b in h.journal.blocks)
    assert {op for op, _ in h.engine.calls}.isdisjoint({"strays", "adopt", "group_size"})


def test_strays_the_engine_cannot_adopt_are_reported_not_imported(h):
    script = {GCP1: [Step("fail", "gcp_zone_exhausted_details", 40, strays=("asg",))]}
    outcome = h.run(script, can=Capabilities(cloud_sweep=True))
    assert outcome.status == "cleanup-failed" and outcome.exit_code == 5
    assert [x["name"] for x in outcome.to_json()["leftovers"]] == ["asg"]
    assert "adopt" not in {op for op, _ in h.engine.calls}
    # in no state, so no destroy removes it: the message names it for deleting by hand
    assert "delete them by hand: aws:autoscaling/group:Group asg" in outcome.message
    assert "run `servestack destroy`" not in outcome.message


def test_a_destroy_that_fails_stops_and_reports_what_is_left(h):
    stack = f"mixtral-{GCP1}"
    script = {GCP1: [Step("fail", "gcp_zone_exhausted", 40)]}
    outcome = h.run(script, destroy_fails=(stack,))
    assert outcome.status == "cleanup-failed" and outcome.exit_code == 5
    assert h.tried() == [GCP1]  # nothing else was started on top of the leftovers
    report = outcome.to_json()
    assert {x["name"] for x in report["leftovers"]} == {"sg", "template"}
    assert "DependencyViolation" in report["message"] and "sg" in report["message"]
    assert h.journal.stacks[stack].state == "left"
    assert h.clock.sleeps == [30, 60, 120]  # three destroy rounds with backoff


def test_leftovers_of_an_earlier_run_are_cleaned_before_anything_else(h):
    stack = f"mixtral-{GCP1}"
    h.run({GCP1: [Step("fail", "gcp_zone_exhausted", 40)]}, destroy_fails=(stack,))
    assert h.outcome.status == "cleanup-failed"
    outcome = h.run()  # the dependency is gone now: destroy works
    assert outcome.status == "deployed"
    assert h.engine.calls[:2] == [("refresh", stack), ("destroy", stack)]
    assert h.engine.calls[2:5] == [("leftovers", stack), ("strays", stack), ("remove", stack)]
    assert h.journal.run == 2 and h.journal.blocks == []  # a new run: capacity may be back
    assert h.journal.live.stack == stack and h.cloud.violations == []


def test_throttling_retries_the_same_candidate_with_backoff(h):
    script = {GCP1: [Step("fail", "gcp_rate_limit", 10), Step("fail", "gcp_backend_error", 10)]}
    outcome = h.run(script)
    assert outcome.status == "deployed" and h.tried() == [GCP1, GCP1, GCP1]
    assert [a.outcome for a in h.journal.attempts] == ["retry", "retry", "deployed"]
    assert h.clock.sleeps[:2] == [30, 60]
    assert not any(op == "destroy" for op, _ in h.engine.calls)  # same stack, kept


def test_retries_run_out_then_the_candidate_is_blocked(h):
    script = {GCP1: [Step("fail", "gcp_rate_limit", 10)] * 4}
    h.run(script, settings=Settings(retries=3, max_attempts=5))
    assert h.tried() == [GCP1] * 4 + [GCP2]
    assert h.journal.attempts[3].scope.startswith("gcp us-central1 a2-ultragpu-2g")


def test_invalid_configuration_stops_after_cleanup(h):
    outcome = h.run({GCP1: [Step("fail", "pulumi_program_error", 15)]})
    assert outcome.status == "stopped" and outcome.exit_code == 4
    assert h.tried() == [GCP1] and h.journal.attempts[0].cleanup == "clean"
    assert "invalid-config" in outcome.message and h.cloud.holding() == set()


def test_a_group_without_any_vm_is_a_capacity_failure_found_early(h):
    script = {GCP1: [Step("ok", seconds=120, running=0)]}
    outcome = h.run(script)
    first = h.journal.attempts[0]
    assert (first.error_class, first.code) == ("capacity", "NoInstances")
    assert "no VM of the group exists" in first.message
    assert first.duration_s < 120 + 300 + 200 + 400  # grace + one check + cleanup, not 1200
    assert outcome.status == "deployed" and h.tried() == [GCP1, GCP2]
    assert ("group_size", f"mixtral-{GCP1}") in h.engine.calls


def test_too_few_vms_at_the_deadline_is_capacity_not_a_model_problem(h):
    script = {GCP1: [Step("ok", running=1)], GCP2: [Step("ok", running=1)]}
    outcome = h.run(script)
    assert [a.code for a in h.journal.attempts[:2]] == ["NoInstances", "NoInstances"]
    assert "only 1 of 2 VM(s) running" in h.journal.attempts[0].message
    assert outcome.status == "deployed"  # two of these do not stop the run; not-ready would


def test_up_but_never_ready_twice_stops(h):
    settings = Settings(not_ready_limit=2)
    outcome = h.run(ready_in=10**9, settings=settings)
    assert outcome.status == "stopped" and h.tried() == [GCP1, GCP2]
    assert all(a.error_class == "not-ready" for a in h.journal.attempts)
    assert "0 of 2 replica(s) answered" in h.journal.attempts[0].message
    assert "HTTP 503" in h.journal.attempts[0].message
    assert h.cloud.holding() == set()


def test_one_unnamed_replica_is_not_two(h):
    script = {GCP1: [Step("ok", running=None)]}  # answers without the header, group unknown
    outcome = h.run(script, named=False, settings=Settings(max_attempts=1))
    assert outcome.status == "exhausted"
    assert "1 of 2 replica(s) answered" in h.journal.attempts[0].message
    h2 = Harness(h.tmp / "relaxed")
    assert h2.run(script, named=False, settings=Settings(ready_replicas=1)).status == "deployed"


def test_unnamed_answers_count_the_running_group(h):
    """A spec's own run command does not name replicas: all probes OK + 2 VMs running = 2."""
    outcome = h.run({GCP1: [Step("ok", running=2)]}, named=False)
    assert outcome.status == "deployed"
    assert "2 of 2 replica(s) answered" in h.journal.attempts[0].ready


def test_quota_precheck_rules_out_candidates_before_any_attempt(h):
    aws = [c for c in PLAN.candidates if c.cloud == "aws"]
    limits = [QuotaLimit("aws", c.region, "aws-G-ondemand", "vcpus", 0.0) for c in aws]
    h.run(limits=limits, settings=Settings(max_attempts=1))
    blocked = [c for c in aws if narrow(c, h.journal.blocks) is None]
    assert blocked and all(c.instance_type.startswith("g") for c in blocked)
    assert all(b.code == "QuotaPrecheck" for b in h.journal.blocks)


def test_gcp_quota_precheck_regional_and_global(h):
    gcp = [c for c in PLAN.candidates if c.cloud == "gcp"]
    limits = [QuotaLimit("gcp", "us-central1", "NVIDIA_A100_80GB_GPUS", "gpus", 0.0),
              QuotaLimit("gcp", ANY, "NVIDIA_A100_80GB_GPUS", "gpus", 16.0),
              QuotaLimit("gcp", ANY, "NVIDIA_L4_GPUS", "gpus", 8.0)]
    h.run(limits=limits, settings=Settings(max_attempts=1))
    blocked = {c.id for c in gcp if narrow(c, h.journal.blocks) is None}
    assert GCP1 in blocked and GCP2 not in blocked  # 0 in us-central1, 16 >= 2 x 2 elsewhere
    l4 = [c for c in gcp if c.accelerator == "L4"]
    assert l4 and all(c.id in blocked for c in l4)  # 8 L4s < 2 replicas x 8
    h2 = Harness(h.tmp / "global")
    h2.run(limits=[QuotaLimit("gcp", ANY, ANY, "gpus", 0.0)], settings=Settings(max_attempts=1))
    assert all(narrow(c, h2.journal.blocks) is None for c in gcp)
    assert C[h2.tried()[0]].cloud == "azure"


def test_max_attempts_ends_the_run_as_exhausted(h):
    script = {g: [Step("fail", "gcp_zone_exhausted_details", 30)] for g in (GCP1, GCP2)}
    outcome = h.run(script, settings=Settings(max_attempts=2))
    assert outcome.status == "exhausted" and outcome.exit_code == 3
    assert "--max-attempts 2" in outcome.message and h.cloud.holding() == set()


def test_everything_ruled_out_is_exhausted(h):
    script = {GCP1: [Step("fail", "gcp_quota_all_regions", 5)],
              AZ1: [Step("fail", "azure_authorization_failed", 5)],
              next(c.id for c in PLAN.candidates if c.cloud == "aws"):
                  [Step("fail", "aws_no_credentials", 5)]}
    outcome = h.run(script)
    assert outcome.status == "exhausted" and len(h.tried()) == 3
    assert h.journal.blocks == [Block("gcp", error_class="quota", code="GPUS_ALL_REGIONS"),
                                Block("azure", error_class="permission",
                                      code="AuthorizationFailed"),
                                Block("aws", error_class="credentials", code="NoCredentials")]


def test_a_deployed_service_is_not_deployed_twice(h):
    h.run()
    calls = len(h.engine.calls)
    outcome = h.run()
    assert outcome.status == "deployed" and "already deployed" in outcome.message
    assert h.engine.calls == [] and calls > 0


def test_crash_mid_run_then_resume(h):
    script = {GCP1: [Step("fail", "gcp_zone_exhausted_details", 40)]}
    with pytest.raises(Crash):
        h.run(script, crash_at=7)  # GCP1: up refresh destroy leftovers strays remove; GCP2 up
    assert h.journal.status == "running"
    assert [s.name for s in h.journal.dirty_stacks()] == [f"mixtral-{GCP2}"]
    outcome = h.run()
    assert outcome.status == "deployed"
    assert [a.outcome for a in h.journal.attempts] == ["capacity", "interrupted", "deployed"]
    assert h.tried() == [GCP1, GCP2, GCP2]
    assert h.engine.calls[:3] == [("refresh", f"mixtral-{GCP2}"), ("destroy", f"mixtral-{GCP2}"),
                                  ("leftovers", f"mixtral-{GCP2}")]
    assert h.cloud.violations == [] and len(h.cloud.holding()) == 1


def script_for_every_path() -> dict:
    return {GCP1: [Step("fail", "gcp_rate_limit", 10), Step("hang")],
            GCP2: [Step("fail", "gcp_zone_exhausted_details", 40, strays=("asg",))]}


def total_calls(tmp_path) -> int:
    h = Harness(tmp_path / "count")
    h.run(script_for_every_path())
    assert h.outcome.status == "deployed"
    return len(h.engine.calls)


@pytest.fixture
def no_fsync(monkeypatch):
    """Dozens of runs below: skip the disk flush (atomicity is tested in test_journal.py)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def test_a_kill_at_any_point_resumes_to_one_live_candidate(tmp_path, no_fsync):
    """Kill the run at every engine call in turn; the resumed run must converge."""
    for point in range(1, total_calls(tmp_path) + 1):
        h = Harness(tmp_path / f"kill-{point}")
        try:
            h.run(script_for_every_path(), crash_at=point)
        except Crash:
            h.run(h.engine.script)
        assert h.outcome.status == "deployed", (point, h.outcome.message)
        assert h.cloud.violations == [], point
        assert h.cloud.holding() == {h.journal.live.stack}, point
        assert h.journal.dirty_stacks() == [h.journal.stacks[h.journal.live.stack]], point


def test_a_kill_after_any_journal_write_resumes_to_one_live_candidate(tmp_path, no_fsync):
    counting = Harness(tmp_path / "count")
    counting.run(script_for_every_path())
    writes = counting.journal.saves
    assert writes > 20
    for point in range(1, writes + 1):
        h = Harness(tmp_path / f"write-{point}")
        try:
            h.run(script_for_every_path(), kill_at_save=point)
        except Crash:
            h.run(h.engine.script)
        assert h.outcome.status == "deployed", (point, h.outcome.message)
        assert h.cloud.violations == [], point
        assert h.cloud.holding() == {h.journal.live.stack}, point


def test_progress_lines_name_the_attempt_and_state(h):
    h.run({GCP1: [Step("fail", "gcp_zone_exhausted_details", 40)]})
    text = "\n".join(h.lines)
    assert f"[1] {GCP1} (GCP (us-central1), a2-ultragpu-2g): up" in text
    assert "[1]     create security group" in text
    assert "[1] capacity (ZONE_RESOURCE_POOL_EXHAUSTED)" in text
    assert "[2] up at http://" in text and "deployed:" in text


def test_http_probe_sends_the_spec_probe_with_timeouts():
    import json as jsonlib
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from servestack.deploy.readiness import http_probe, probe_url

    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"path": self.path, "type": self.headers["Content-Type"],
                         "body": jsonlib.loads(body)})
            self.send_response(200 if len(seen) > 1 else 503)
            self.send_header("X-Servestack-Replica", "vm-1")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    try:
        deployment = build(PLAN.candidates[0], PLAN.candidates)
        url = probe_url(f"127.0.0.1:{server.server_port}", deployment.readiness.path)
        first = http_probe(url, deployment.readiness)
        second = http_probe(url, deployment.readiness)
    finally:
        server.shutdown()
    assert (first.ok, first.status, first.error) == (False, 503, "HTTP 503")
    assert (second.ok, second.replica) == (True, "vm-1")
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["type"] == "application/json"
    assert seen[0]["body"]["max_tokens"] == 1
    refused = http_probe("http://127.0.0.1:9/", deployment.readiness)
    assert not refused.ok and refused.error.startswith("ConnectionError")
