"""`servestack endpoint`, the lines that say what stays open by the user's choice, and a
generated stack file's choices carried into `servestack deploy STACK`."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from servestack.cli import deploy as deploy_cli
from servestack.cli.endpoint import endpoint_info, key_command
from servestack.cli.main import main
from servestack.deploy.journal import Journal
from servestack.deployment.build import build_deployment
from servestack.deployment.model import OUTPUT_API_KEY, OUTPUT_API_KEY_REF, Choices
from servestack.report import security_notes
from tests.cli.test_deploy import World
from tests.fakes import FROZEN_CATALOG, INPUTS, PLAN, ReplayEngine, build

KEY = "sk-FAKEendpointKeyMustNeverShow0123"
AWS = next(c for c in PLAN.candidates if c.cloud == "aws")
GCP = next(c for c in PLAN.candidates if c.cloud == "gcp")
AZURE = next(c for c in PLAN.candidates if c.cloud == "azure")
# what each cloud's stacks export as api_key_secret (both engines alike)
REFS = {"aws": "/servestack/mixtral/ff9578a8/api-key",
        "gcp": "projects/my-proj/secrets/servestack-mixtral-ab12cd34-api-key",
        "azure": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/"
                 "mixtralab12cd34ef/secrets/api-key"}


class OutputsEngine(ReplayEngine):
    """The replay engine with the stack outputs a real engine reads, the key among them."""

    def outputs(self, stack, deployment) -> dict:
        self.calls.append(("outputs", stack.name))
        return {"endpoint": f"http://{stack.name}.lb.example", OUTPUT_API_KEY: KEY,
                OUTPUT_API_KEY_REF: REFS[deployment.cloud]}


@pytest.fixture
def world(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in")
    world = World(monkeypatch, tmp_path)

    def make_engine(state, service, project=None, secrets=None):
        engine = OutputsEngine(world.cloud, world.clock)
        world.engines.append(engine)
        return engine

    monkeypatch.setattr(deploy_cli, "make_engine", make_engine)
    return world


def test_endpoint_prints_the_url_and_the_command_never_the_key(world, capsys):
    assert world.run("deploy", "--cloud", "aws") == 0
    capsys.readouterr()
    assert world.run("endpoint", "mixtral") == 0
    out, err = capsys.readouterr()
    assert KEY not in out + err
    live = Journal.open(world.state, "mixtral").live
    assert f"Service mixtral: http://{live.stack}.lb.example ({live.candidate})" in out
    command = ("aws ssm get-parameter --region us-east-1 --name "
               "/servestack/mixtral/ff9578a8/api-key --with-decryption --query Parameter.Value "
               "--output text")
    assert f"  KEY=$({command})" in out
    assert f'curl -H "Authorization: Bearer $KEY" http://{live.stack}.lb.example/v1/models' \
        in out
    assert ("outputs", live.stack) in world.engines[-1].calls  # read through the engine
    assert world.run("endpoint", "mixtral", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert KEY not in json.dumps(info)
    assert info["api_key"] == {"secret": REFS["aws"], "command": command}
    assert info["endpoint"] == f"http://{live.stack}.lb.example"
    assert any(line.startswith("no --domain") for line in info["open"])


def test_endpoint_of_a_service_that_is_not_live(world, capsys):
    assert world.run("deploy", "--cloud", "aws", "--max-attempts", "1",
                     "--ready-replicas", "9") != 0  # never ready: nothing live
    capsys.readouterr()
    assert world.run("endpoint", "mixtral") == 2
    assert "mixtral is not live" in capsys.readouterr().err


@pytest.mark.parametrize("candidate,expected", [
    (GCP, ["gcloud", "secrets", "versions", "access", "latest",
           "--secret=servestack-mixtral-ab12cd34-api-key", "--project=my-proj"]),
    (AZURE, ["az", "keyvault", "secret", "show", "--vault-name", "mixtralab12cd34ef",
             "--name", "api-key", "--query", "value", "-o", "tsv"]),
])
def test_the_key_command_per_cloud(candidate, expected):
    d = build(candidate, PLAN.candidates)
    assert shlex.split(key_command(d, REFS[d.cloud])) == expected


def test_azure_terraform_ref_and_a_gcp_bare_secret_id():
    azure = build(AZURE, PLAN.candidates)
    url = "https://mixtralab12cd34ef.vault.azure.net/secrets/api-key"
    assert "--vault-name mixtralab12cd34ef --name api-key" in key_command(azure, url)
    gcp = replace(build(GCP, PLAN.candidates), gcp_project="other-proj")
    assert key_command(gcp, "servestack-x-api-key") == \
        "gcloud secrets versions access latest --secret=servestack-x-api-key --project=other-proj"


def test_without_a_key_the_example_has_no_header():
    d = replace(build(AWS, PLAN.candidates), api_key=None)
    info = endpoint_info(d, {"endpoint": "http://lb.example:80"})
    assert info["api_key"] is None and info["example"] == "curl http://lb.example:80/v1/models"
    assert info["open"][0].startswith("--no-api-key: anyone who can reach the endpoint")


def test_security_notes_name_each_open_choice():
    d = build(AWS, PLAN.candidates)
    assert [n.split(":")[0] for n in security_notes(d)] == ["no --domain", "--allow-cidr 0.0.0.0/0"]
    assert "the API key and every prompt" in security_notes(d)[0]
    closed = build_deployment(INPUTS.spec, AWS, PLAN.candidates, model=INPUTS.model,
                              choices=Choices(allow_cidrs=("203.0.113.0/24",),
                                              domain="api.example.com", dns_zone="Z0123456789"))
    assert security_notes(closed) == []
    opened = replace(closed, api_key=None, ssh_cidrs=("0.0.0.0/0",))
    assert security_notes(opened) == [
        "--no-api-key: anyone who can reach the endpoint (203.0.113.0/24) can call the model, "
        "no key asked",
        "--ssh-cidr 0.0.0.0/0: SSH to the VMs is open to the whole internet"]


def test_generate_and_deploy_say_what_stays_open_and_deploy_keeps_the_choices(
        world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--cloud", "aws", "--catalog-dir", FROZEN_CATALOG, "--stack", "prod",
             "--no-api-key", "--ssh-cidr", "198.51.100.0/24",
             "--allow-cidr", "203.0.113.0/24"]
    assert main(["generate", *flags]) == 0
    out = capsys.readouterr().out
    assert "Open by your choice: --no-api-key: anyone who can reach the endpoint " \
           "(203.0.113.0/24) can call the model" in out
    assert "Open by your choice: no --domain: every prompt and answer travels over plain " \
           "HTTP" in out
    assert "Open by your choice: --ssh-cidr 198.51.100.0/24: SSH to the VMs is open to these " \
           "ranges" in out
    assert "--allow-cidr 0.0.0.0/0" not in out and "API key: generated" not in out
    # `deploy STACK` with no flags: the stack file's choices, not the defaults
    assert world.run("deploy", "prod", "--json", "--stacks-dir", str(tmp_path / "stacks")) == 0
    err = capsys.readouterr().err
    assert "servestack: open by your choice: --no-api-key" in err
    journal = Journal.open(world.state, "mixtral")
    d = journal.stacks[journal.live.stack].deployment
    assert d.api_key is None and d.tls is None
    assert d.ssh_cidrs == ("198.51.100.0/24",) and d.allow_cidrs == ("203.0.113.0/24",)


def test_a_generated_domain_and_key_carry_into_deploy(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--cloud", "aws", "--catalog-dir", FROZEN_CATALOG,
                 "--stack", "prod", "--domain", "api.example.com",
                 "--dns-zone", "Z0123456789ABCDEFGHIJ"]) == 0
    out = capsys.readouterr().out
    assert "API key: generated at the first apply and kept in the SSM parameter" in out
    assert "no --domain" not in out
    assert world.run("deploy", "prod", "--json", "--stacks-dir", str(tmp_path / "stacks")) == 0
    err = capsys.readouterr().err
    assert "no --domain" not in err and "--no-api-key" not in err
    journal = Journal.open(world.state, "mixtral")
    d = journal.stacks[journal.live.stack].deployment
    assert d.api_key is not None and d.api_key.name.endswith("/api-key")
    assert d.tls is not None and d.tls.domain == "api.example.com"
    assert d.tls.dns_zone == "Z0123456789ABCDEFGHIJ"


def test_a_generated_scaling_signal_carries_into_deploy(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = (Path(__file__).parents[2] / "servestack/examples/mixtral.yaml").read_text()
    spec = spec.replace("    min_replicas: 2\n", "    min_replicas: 2\n    max_replicas: 4\n"
                        "    target_qps_per_replica: 2.5\n")
    (tmp_path / "serve.yaml").write_text(spec)
    assert main(["generate", str(tmp_path / "serve.yaml"), "--cloud", "aws", "--catalog-dir",
                 FROZEN_CATALOG, "--stack", "prod", "--scale-metric", "vllm-waiting",
                 "--scale-target", "7"]) == 0
    capsys.readouterr()
    assert world.run("deploy", "prod", "--json", "--stacks-dir", str(tmp_path / "stacks")) == 0
    journal = Journal.open(world.state, "mixtral")
    scaling = journal.stacks[journal.live.stack].deployment.autoscaling
    assert (scaling.metric, scaling.target) == ("vllm-waiting", 7.0)
