"""`servestack deploy / status / destroy` through the CLI, with the replay engine."""

from __future__ import annotations

import argparse
import json

import pytest

from servestack.cli import deploy as deploy_cli
from servestack.cli import options
from servestack.cli.main import main
from servestack.cli.options import DeployRequest
from servestack.deploy.journal import Journal
from servestack.deploy.lock import ServiceLock
from servestack.deploy.loop import Fallback
from servestack.deployment.model import Choices
from servestack.inputs import load_inputs
from servestack.pulumi.generate import generate
from tests.fakes import (
    FROZEN_CATALOG,
    GCP1,
    GCP2,
    PLAN,
    Cloud,
    ReplayEngine,
    SimClock,
    Step,
    build,
    probes,
)


def parser() -> argparse.ArgumentParser:
    top = options.Parser(prog="servestack")
    deploy_cli.register(top.add_subparsers(dest="command", required=True))
    return top


def deploy_request(*argv: str) -> DeployRequest:
    return options.deploy_request(parser().parse_args(["deploy", *argv]))


class World:
    """One cloud and one clock shared by every command of a test."""

    def __init__(self, monkeypatch, tmp_path, script=None, **engine_args) -> None:
        self.cloud, self.clock = Cloud(), SimClock()
        self.script, self.engine_args = script or {}, engine_args
        self.state = tmp_path / "state"
        self.engines: list[ReplayEngine] = []
        monkeypatch.setattr(deploy_cli, "make_engine", self.make_engine)
        monkeypatch.setattr(deploy_cli, "make_clock", lambda: self.clock)
        monkeypatch.setattr(deploy_cli, "make_probe_factory",
                            lambda: probes(self.cloud, self.clock))
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))  # the per-user locks

    def make_engine(self, state, service, project=None, secrets=None):
        engine = ReplayEngine(self.cloud, self.clock, self.script, **self.engine_args)
        self.engines.append(engine)
        return engine

    def run(self, *argv: str) -> int:
        plans = ["--catalog-dir", FROZEN_CATALOG] if argv[0] == "deploy" else []
        return main([*argv, "--state-dir", str(self.state), *plans])


def test_defaults_and_options():
    request = deploy_request()
    assert (request.target, request.max_attempts, request.attempt_timeout_s,
            request.state.engine, request.report) == (None, None, 1200.0, "pulumi", None)
    request = deploy_request("spec.yaml", "--max-attempts", "3", "--attempt-timeout", "1h30m",
                             "--cloud", "gcp", "--spot")
    assert (request.target, request.max_attempts, request.attempt_timeout_s, request.plan.cloud,
            request.plan.spot) == ("spec.yaml", 3, 5400, "gcp", True)
    assert deploy_request("--engine", "terraform").state.engine == "terraform"


def test_an_unknown_engine_is_one_line(capsys):
    assert main(["deploy", "--engine", "ansible"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("servestack: error: argument --engine: invalid choice: 'ansible'")
    assert len(err.splitlines()) == 1


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["deploy", "--help"])
    out = capsys.readouterr().out
    for line in ("0    deployed", "3    exhausted", "4    stopped", "5    cleanup failed",
                 "6    locked"):
        assert line in out


@pytest.fixture(autouse=True)
def hf_token(monkeypatch):
    """The embedded example declares the secret HF_TOKEN: deploy wants a value for it (from
    the deployer's environment; tests/test_secrets.py covers its absence)."""
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in_for_the_deploy_tests")


def test_no_pulumi_cli_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "x")
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    code = main(["deploy", "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "Pulumi CLI is not installed" in err and "get.pulumi.com" in err
    assert len(err.strip().splitlines()) == 1


def test_deploy_walks_to_a_ready_candidate_and_reports(world_factory, tmp_path, capsys):
    world = world_factory({GCP1: [Step("fail", "gcp_zone_exhausted_details", 40)]})
    report_file = tmp_path / "out" / "report.json"
    assert world.run("deploy", "--report", str(report_file)) == 0
    out, err = capsys.readouterr()
    assert "DEPLOYED (exit 0)" in out and "Endpoint: http://" in out
    assert "CANDIDATE" in out and "ZONE_RESOURCE_POOL_EXHAUSTED" in out
    assert f"[1] {GCP1}" in err and "deployed:" in err
    report = json.loads(report_file.read_text())
    assert report["outcome"] == "deployed" and report["candidate"] == GCP2
    first = report["attempts"][0]
    assert {k: first[k] for k in ("candidate", "cloud", "region", "outcome", "error_class",
                                  "cleanup")} == {
        "candidate": GCP1, "cloud": "gcp", "region": "us-central1", "outcome": "capacity",
        "error_class": "capacity", "cleanup": "clean"}
    assert first["scope"] == "gcp us-central1 A100-80GB:2+ on-demand"
    assert first["duration_s"] > 0 and report["attempts"][1]["endpoint"] == report["endpoint"]


def test_deploy_json_and_exhausted_exit_code(world_factory, capsys):
    world = world_factory({GCP1: [Step("fail", "gcp_zone_exhausted_details", 40)]})
    assert world.run("deploy", "--json", "--max-attempts", "1") == 3
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "exhausted" and report["exit_code"] == 3
    assert report["endpoint"] is None and len(report["attempts"]) == 1


def test_deploy_a_generated_stack_starts_with_its_candidate(world_factory, tmp_path, capsys):
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    chosen = PLAN.candidates[5]
    generate(inputs, PLAN, rank=None, pick=chosen.id, stack="prod", stacks_dir=str(tmp_path),
             choices=Choices(allow_cidrs=("203.0.113.0/24",)))
    world = world_factory()
    assert world.run("deploy", "prod", "--stacks-dir", str(tmp_path), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["attempts"][0]["candidate"] == chosen.id
    journal = Journal.open(world.state, "mixtral")
    deployment = journal.stacks[journal.live.stack].deployment
    assert deployment.allow_cidrs == ("203.0.113.0/24",)  # the stack file's choices are kept


def test_an_unknown_target_is_a_user_error(world_factory, capsys):
    world = world_factory()
    assert world.run("deploy", "no-such-stack") == 2
    assert "neither a spec file nor a stack" in capsys.readouterr().err


def test_status_then_destroy(world_factory, capsys):
    world = world_factory()
    assert world.run("deploy") == 0
    capsys.readouterr()
    assert world.run("status") == 0
    out = capsys.readouterr().out
    assert "Service mixtral: deployed" in out and f"Live: {GCP1} at http://" in out
    assert world.run("status", "mixtral", "--json") == 0
    assert json.loads(capsys.readouterr().out)["dirty_stacks"] == [
        {"name": f"mixtral-{GCP1}", "state": "live"}]
    assert world.run("destroy", "--yes") == 0
    assert "destroyed and verified" in capsys.readouterr().out
    assert world.cloud.holding() == set()
    assert world.run("status") == 0
    assert "Service mixtral: destroyed" in capsys.readouterr().out
    assert world.run("deploy") == 0  # a destroyed service can be deployed again


def test_destroy_needs_yes_when_not_at_a_terminal(world_factory, capsys, monkeypatch):
    world = world_factory()
    assert world.run("deploy") == 0
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert world.run("destroy") == 2
    assert "--yes" in capsys.readouterr().err and world.cloud.holding()


def test_destroy_that_fails_exits_5(world_factory, capsys):
    world = world_factory(destroy_fails=(f"mixtral-{GCP1}",))
    assert world.run("deploy") == 0
    assert world.run("destroy", "--yes") == 5
    assert "cleanup of" in capsys.readouterr().out


def test_status_without_any_deploy(world_factory, capsys):
    world = world_factory()
    assert world.run("status") == 2
    assert "no deploy recorded" in capsys.readouterr().err


def test_a_second_concurrent_deploy_is_refused(world_factory, capsys):
    world = world_factory()
    with ServiceLock("mixtral"):
        assert world.run("deploy") == 6
    assert "another deploy or destroy of 'mixtral' is running" in capsys.readouterr().err


def test_an_interrupted_deploy_resumes(world_factory, capsys):
    # GCP1: up refresh destroy leftovers strays remove; killed in GCP2's up
    world = world_factory({GCP1: [Step("fail", "gcp_zone_exhausted_details", 40)]}, crash_at=7)
    with pytest.raises(BaseException, match="killed"):
        world.run("deploy")
    world.engine_args = {}
    assert world.run("status") == 0
    assert "Service mixtral: running" in capsys.readouterr().out
    assert world.run("deploy", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [a["outcome"] for a in report["attempts"]] == ["capacity", "interrupted", "deployed"]
    assert world.cloud.violations == []


@pytest.fixture
def world_factory(monkeypatch, tmp_path):
    def make(script=None, **engine_args) -> World:
        return World(monkeypatch, tmp_path, script, **engine_args)

    return make


def test_sigterm_stops_like_ctrl_c_and_the_next_deploy_resumes(world_factory, capsys):
    import signal

    before = signal.getsignal(signal.SIGTERM)
    world = world_factory({GCP1: [Step("sigterm")]})
    assert world.run("deploy") == 130
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert Journal.open(world.state, "mixtral").status == "running"
    assert world.run("deploy") == 0 and world.cloud.violations == []


def test_status_after_an_interrupted_destroy_says_what_is_really_there(world_factory, capsys):
    world = world_factory()
    journal = Journal.open(world.state, "mixtral")
    Fallback(ReplayEngine(world.cloud, world.clock), journal, PLAN.candidates, build,
             clock=world.clock, probe_factory=probes(world.cloud, world.clock)).run()
    stack, candidate = journal.live.stack, journal.live.candidate
    journal.begin_destroy(world.clock.now())  # the destroy's first write, then it was killed
    assert world.run("status") == 0
    out = capsys.readouterr().out
    assert out.startswith("Service mixtral: destroying, interrupted (no servestack command")
    assert f"Needs cleanup: {stack} (cleaning)" in out and "Live:" not in out
    with ServiceLock("mixtral"):  # a destroy is running right now
        assert world.run("status", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "destroying" and report["interrupted"] is False
    assert report["stacks"] == [{"name": stack, "candidate": candidate, "state": "cleaning",
                                 "is": "dirty"}]
