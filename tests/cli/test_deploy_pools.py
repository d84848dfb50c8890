"""`servestack deploy --max-pools N`, `status`, `endpoint`, `reconcile` and `destroy` of a
service over several pools, through the CLI, with the replay engine and the lockstep clock."""

from __future__ import annotations

import json

import pytest

from servestack.cli import deploy as deploy_cli
from tests.fakes import POOLS, PoolsWorld, ReplayEngine


@pytest.fixture
def world(monkeypatch, tmp_path) -> PoolsWorld:
    return PoolsWorld(monkeypatch, tmp_path)


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
    assert world.deploy_single_pool(monkeypatch) == 0
    capsys.readouterr()
    assert world.run("deploy", *POOLS) == 2
    assert "deployed in one pool" in capsys.readouterr().err


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
