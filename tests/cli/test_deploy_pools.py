"""`servestack deploy --max-pools N`, `status`, `endpoint`, `reconcile` and `destroy` of a
service over several pools, through the CLI, with the replay engine and the lockstep clock."""

from __future__ import annotations

import json

import pytest

from servestack.cli import deploy as deploy_cli
from servestack.cli.main import main
from tests.fakes import FROZEN_CATALOG, Cloud, Lockstep, ReplayEngine, probes

FRONT = ("--front", "route53", "--domain", "mixtral.example.com", "--hosted-zone-id",
         "Z0123456789ABCDEFGHIJ")
POOLS = ("--max-pools", "2", "--spread", *FRONT)


class World:
    """One cloud and one clock shared by every command of a test."""

    def __init__(self, monkeypatch, tmp_path) -> None:
        self.cloud, self.clock = Cloud(), Lockstep()
        self.state = tmp_path / "state"
        self.engines: list[ReplayEngine] = []
        monkeypatch.setattr(deploy_cli, "make_engine", self.make_engine)
        monkeypatch.setattr(deploy_cli, "make_clock", lambda: self.clock)
        monkeypatch.setattr(deploy_cli, "make_runner", lambda: self.clock)
        monkeypatch.setattr(deploy_cli, "make_probe_factory",
                            lambda: probes(self.cloud, self.clock))
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))  # the per-user locks
        # the embedded example's secret, read from the environment by deploy and reconcile
        monkeypatch.setenv("HF_TOKEN", "hf_stand_in_for_the_deploy_tests")

    def make_engine(self, state, service, project=None, secrets=None):
        engine = ReplayEngine(self.cloud, self.clock, per_pool=True)
        self.engines.append(engine)
        return engine

    def run(self, *argv: str) -> int:
        plans = ["--catalog-dir", FROZEN_CATALOG] if argv[0] == "deploy" else []
        return main([*argv, "--state-dir", str(self.state), *plans])


@pytest.fixture
def world(monkeypatch, tmp_path) -> World:
    return World(monkeypatch, tmp_path)


def test_deploy_over_two_pools_then_status_endpoint_and_destroy(world, capsys):
    assert world.run("deploy", *POOLS, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "deployed" and report["exit_code"] == 0
    assert [(p["cloud"], p["region"], p["replicas"]) for p in report["kept"]] == [
        ("gcp", "us-central1", 1), ("gcp", "europe-west4", 1)]
    assert report["endpoint"] == "http://mixtral-front.front.example"
    assert report["hedge_cost_usd"] >= 0 and report["time_to_ready_s"] > 0
    assert world.run("status") == 0
    out = capsys.readouterr().out
    assert "over several pools: deployed" in out and "us-central1" in out
    assert world.run("endpoint", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["endpoint"] == "http://mixtral-front.front.example"
    assert "sk-" not in json.dumps(info)  # the key itself is never printed
    assert len(info["pools"]) == 2
    assert world.run("deploy", *POOLS) == 0  # already deployed: nothing to do
    assert "already deployed" in capsys.readouterr().out
    assert world.run("destroy", "--yes") == 0
    assert "destroyed and verified" in capsys.readouterr().out
    assert world.cloud.holding() == set() and world.cloud.violations == []


def test_the_table_names_the_pools_and_the_hedge_cost(world, capsys):
    assert world.run("deploy", *POOLS, "--max-parallel", "3") == 0
    out = capsys.readouterr().out
    assert "DEPLOYED (exit 0)" in out and "Hedge cost: $" in out
    assert "Endpoint: http://mixtral-front.front.example" in out


@pytest.mark.parametrize("flag", [("--max-parallel", "2"), ("--hedge-budget", "10")])
def test_hedge_flags_need_several_pools(world, capsys, flag):
    assert world.run("deploy", *flag) == 2
    err = capsys.readouterr().err
    assert "needs --max-pools above 1" in err and len(err.strip().splitlines()) == 1


def test_a_negative_hedge_budget_is_refused(world, capsys):
    assert world.run("deploy", *POOLS, "--hedge-budget", "-1") == 2
    assert "must be 0 or more" in capsys.readouterr().err


def test_a_single_pool_service_is_not_redeployed_over_pools(world, monkeypatch, capsys):
    from tests.fakes import SimClock

    single = SimClock()
    monkeypatch.setattr(deploy_cli, "make_clock", lambda: single)
    monkeypatch.setattr(deploy_cli, "make_engine",
                        lambda *a, **k: ReplayEngine(world.cloud, single))
    monkeypatch.setattr(deploy_cli, "make_probe_factory", lambda: probes(world.cloud, single))
    assert world.run("deploy") == 0
    capsys.readouterr()
    assert world.run("deploy", *POOLS) == 2
    assert "deployed in one pool" in capsys.readouterr().err


def test_reconcile_moves_a_short_pools_replicas_and_reports(world, capsys):
    assert world.run("deploy", *POOLS, "--json") == 0
    central = json.loads(capsys.readouterr().out)["kept"][0]["stack"]
    world.cloud.running[central] = 0  # a spot interruption
    assert world.run("reconcile", "mixtral", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [p["region"] for p in report["kept"]] == ["us-central1", "europe-west4", "us-east4"]
    assert "moved to gcp-us-east4" in report["message"]
    world.cloud.running[central] = 1
    assert world.run("reconcile", "--watch", "--interval", "5m", "--passes", "2") == 0
    first, second = capsys.readouterr().out.split("DEPLOYED (exit 0): ")[1:]
    assert first.startswith("gcp-us-central1 is full again: released gcp-us-east4")
    assert second.startswith("nothing to do")  # a report per pass
    assert world.clock.sleeps.count(300.0) == 1  # one interval between the two passes


def test_reconcile_of_an_unknown_service_names_the_known_ones(world, capsys):
    assert world.run("deploy", *POOLS) == 0
    capsys.readouterr()
    assert world.run("reconcile", "llama") == 2
    err = capsys.readouterr().err
    assert "services known: mixtral" in err and len(err.strip().splitlines()) == 1


def test_reconcile_flags_need_watch(world, capsys):
    assert world.run("reconcile", "mixtral", "--interval", "5m") == 2
    assert "needs --watch" in capsys.readouterr().err


def test_several_pools_on_gcp_without_a_front_is_one_line(world, capsys):
    assert world.run("deploy", "--max-pools", "2", "--spread") == 2
    err = capsys.readouterr().err
    assert "need a front" in err and len(err.strip().splitlines()) == 1
    assert world.run("deploy", "--max-pools", "0") == 2
    assert "argument --max-pools: must be at least 1" in capsys.readouterr().err


def test_pools_start_where_the_last_deploy_found_room(world, monkeypatch, capsys):
    """A single-pool run found no capacity in us-central1 (journal blocks; nothing left
    dirty): the service over pools is placed without that region."""
    from tests.fakes import GCP1, SimClock, Step

    single = SimClock()
    script = {GCP1: [Step("fail", "gcp_zone_exhausted_details", 40)]}
    monkeypatch.setattr(deploy_cli, "make_clock", lambda: single)
    monkeypatch.setattr(deploy_cli, "make_engine",
                        lambda *a, **k: ReplayEngine(world.cloud, single, script))
    assert world.run("deploy", "--json", "--max-attempts", "1") == 3
    monkeypatch.setattr(deploy_cli, "make_clock", lambda: world.clock)
    monkeypatch.setattr(deploy_cli, "make_engine", world.make_engine)
    capsys.readouterr()
    assert world.run("deploy", *POOLS, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert "us-central1" not in [p["region"] for p in report["kept"]]
    assert len(report["kept"]) == 2
