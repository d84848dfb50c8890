"""`servestack reconcile` through the CLI: passes over a service deployed over several
pools, --watch, one-line errors, the exit code of an interrupted watch."""

from __future__ import annotations

import json

import pytest

from servestack.deploy.service_journal import PoolState, ServiceJournal
from tests.fakes import POOLS, PoolsWorld


@pytest.fixture
def world(monkeypatch, tmp_path) -> PoolsWorld:
    return PoolsWorld(monkeypatch, tmp_path)


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


def test_reconcile_of_a_single_pool_service_is_refused(world, monkeypatch, capsys):
    assert world.deploy_single_pool(monkeypatch) == 0
    capsys.readouterr()
    assert world.run("reconcile") == 2
    assert "deployed in one pool" in capsys.readouterr().err


def test_ctrl_c_between_watch_passes_exits_130_with_the_pass_journaled(world, monkeypatch,
                                                                       capsys):
    assert world.run("deploy", *POOLS) == 0

    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(world.clock, "sleep", interrupted)
    assert world.run("reconcile", "--watch") == 130
    assert "interrupted" in capsys.readouterr().err
    journal = ServiceJournal.at(world.state / "mixtral" / "service.json", "mixtral")
    assert journal.passes == 1 and journal.reconcile == {}  # the pass ended before
    assert [p.region for p in journal.in_state(PoolState.KEPT)] == ["us-central1",
                                                                    "europe-west4"]


def test_reconcile_of_an_unfinished_deploy_says_to_deploy_again(world, capsys):
    from tests.fakes import PLAN

    world.cloud.refuse.update(c.region for c in PLAN.candidates)  # no capacity anywhere
    assert world.run("deploy", *POOLS, "--max-parallel", "1", "--max-attempts", "1") == 3
    capsys.readouterr()
    assert world.run("reconcile") == 2
    err = capsys.readouterr().err
    assert "exhausted, not deployed" in err and len(err.strip().splitlines()) == 1
