"""`servestack check`: per cloud, valid credentials and whose, through the engine's probes."""

from __future__ import annotations

import json

import pytest

from servestack.cli import check
from servestack.cli.main import main
from servestack.engine import Capabilities
from tests.fakes import Cloud, ReplayEngine, SimClock


@pytest.fixture
def engines(monkeypatch):
    made: list[tuple[str, ReplayEngine]] = []

    def use(**engine_args):
        def make_engine(name: str) -> ReplayEngine:
            engine = ReplayEngine(Cloud(), SimClock(), **engine_args)
            made.append((name, engine))
            return engine

        monkeypatch.setattr(check, "make_engine", make_engine)
        return made

    return use


def test_every_cloud_is_asked_and_named(engines, capsys):
    made = engines(no_credentials={"gcp": "gcp_no_credentials"})
    assert main(["check", "--engine", "terraform"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "aws    enabled   test account of aws"
    assert out[1].startswith("gcp    disabled  Diagnostics: gcp:storage:Bucket (my-bucket): "
                             "error: google: could not find default credentials.")
    assert out[2] == "azure  enabled   test account of azure"
    ((name, engine),) = made
    assert name == "terraform" and engine.checked == ["aws", "gcp", "azure"]
    assert engine.calls == []  # read-only: no stack was touched


def test_no_cloud_with_credentials_exits_3(engines, capsys):
    engines(no_credentials={"azure": "azure_no_credentials"})
    assert main(["check", "--cloud", "azure", "--json"]) == 3
    (found,) = json.loads(capsys.readouterr().out)
    assert (found["cloud"], found["ok"]) == ("azure", False)
    assert "DefaultAzureCredential failed to retrieve a token" in found["error"]


def test_a_cloud_the_engine_cannot_ask_is_unknown_not_disabled(engines, capsys):
    engines(can=Capabilities())
    assert main(["check", "--cloud", "aws"]) == 3
    assert capsys.readouterr().out.startswith("aws    unknown   the pulumi engine cannot ask aws")


def test_a_bad_timeout_is_one_line(capsys):
    assert main(["check", "--timeout", "soon"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
