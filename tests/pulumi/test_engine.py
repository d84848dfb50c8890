"""PulumiEngine through the real Automation API, against a stand-in `pulumi` executable.

No Pulumi CLI can be installed on the build machines, so these tests put a small fake `pulumi`
on PATH. It answers the commands the Automation API runs (stack select/init, config set-all,
up/refresh/destroy with an --event-log file, stack output/history/export/rm, import) from a
JSON state file, and writes engine events the way the CLI does, so the engine's event
collection, per-attempt timeout, leftover checks and stray import run for real. The read-only
sweep and quota programs run under Pulumi's mock runtime (servestack.pulumi.preview.record).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
from servestack.components import aws as aws_probes
from servestack.components import azure as azure_probes
from servestack.components import gcp as gcp_probes

from servestack.deploy.failures import classify
from servestack.deployment.build import build_deployment
from servestack.engine import (
    Capabilities,
    Identity,
    Leftover,
    QuotaLimit,
    stack_name,
    stack_ref,
)
from servestack.pulumi.engine import PulumiEngine, PulumiMissing
from servestack.pulumi.preview import record
from tests.fakes import FIXTURES, INPUTS, PLAN

FAKE_PULUMI = r'''
import json, os, signal, sys, time
HOME = os.environ["FAKE_PULUMI_DIR"]
STATE = os.path.join(HOME, "state.json")
SCENARIO = json.load(open(os.path.join(HOME, "scenario.json")))

def load():
    return json.load(open(STATE)) if os.path.exists(STATE) else {"stacks": {}, "calls": []}

def save(state):
    json.dump(state, open(STATE, "w"), indent=1)

def opt(args, name):
    return args[args.index(name) + 1] if name in args else None

def events(path, items):
    if path is None:
        return
    with open(path, "a") as log:
        for n, item in enumerate(items):
            log.write(json.dumps({"sequence": n, "timestamp": 0, **item}) + "\n")

def history(state, name):
    print(json.dumps([{"kind": "update", "startTime": "2026-11-24T10:00:00.000Z",
                       "endTime": "2026-11-24T10:01:00.000Z", "message": "",
                       "environment": {}, "config": {}, "result": "succeeded",
                       "resourceChanges": {}}]))

def done(code, args):
    if "--event-log" in args:  # the CLI ends every event log with a cancel event
        events(opt(args, "--event-log"), [{"cancelEvent": {}}])
    sys.exit(code)

args = sys.argv[1:]
if args and args[0] == "--non-interactive":
    args = args[1:]
state = load()
state["calls"].append(args)
save(state)
stack = opt(args, "--stack")
if args[:1] == ["version"]:
    print("v3.200.0"); sys.exit(0)
if args[:2] == ["stack", "select"]:
    if stack not in state["stacks"]:
        sys.stderr.write(f"error: no stack named '{stack}' found\n"); sys.exit(255)
    sys.exit(0)
if args[:2] == ["stack", "init"]:
    state["stacks"][args[2]] = {"config": {}, "secrets": [], "resources": [], "pending": []}
    save(state); sys.exit(0)
if args[:2] == ["config", "set-all"]:
    entry = state["stacks"][stack]
    for flag, pair in zip(args[4::2], args[5::2]):
        key, value = pair.split("=", 1)
        entry["config"][key] = value
        if flag == "--secret":
            entry["secrets"].append(key)
    save(state); sys.exit(0)
if args[:1] == ["up"]:
    plan = SCENARIO.get(stack, SCENARIO.get("*", {}))
    log = opt(args, "--event-log")
    urn = f"urn:pulumi:{stack}::servestack::servestack:gpu:Group::mixtral-gpu"
    meta = {"op": "create", "urn": urn, "type": "servestack:gpu:Group", "provider": ""}
    events(log, [{"resourcePreEvent": {"metadata": meta}}])
    for made in plan.get("creates", []):  # custom resources: they have a provider
        events(log, [{"resourcePreEvent": {"metadata": {
            "op": "create", "urn": f"urn:pulumi:{stack}::servestack::{made['type']}::x",
            "type": made["type"], "provider": "urn:pulumi:provider::default"}}}])
    state["stacks"][stack]["resources"] += plan.get("creates", [])
    save(state)
    if plan.get("up") == "hang":
        def cancel(*_):
            print("error: update canceled"); done(255, args)
        signal.signal(signal.SIGINT, cancel)
        time.sleep(30); sys.exit(0)
    if plan.get("up") == "fail":
        events(log, [{"diagnosticEvent": {"message": plan["diagnostic"], "color": "never",
                                          "severity": "error", "urn": urn}},
                     {"resOpFailedEvent": {"metadata": meta, "status": 1, "steps": 1}}])
        print("Updating (" + stack + ")\n error: update failed"); done(255, args)
    state["stacks"][stack]["outputs"] = plan.get("outputs", {})
    save(state); print("Updating (" + stack + ")"); done(0, args)
if args[:2] == ["stack", "output"]:  # secret outputs masked unless --show-secrets
    outputs = dict(state["stacks"][stack].get("outputs", {}))
    if "--show-secrets" not in args:
        outputs.update({k: "[secret]" for k in SCENARIO.get("secret_outputs", [])
                        if k in outputs})
    print(json.dumps(outputs)); sys.exit(0)
if args[:2] == ["stack", "history"]:
    history(state, stack); sys.exit(0)
if args[:1] == ["refresh"]:
    entry = state["stacks"][stack]
    if entry["pending"] and "--clear-pending-creates" not in args:
        print("error: interrupted operations: pending creates need --clear-pending-creates")
        done(255, args)
    entry["pending"] = []
    save(state); done(0, args)
if args[:1] == ["destroy"]:
    state["stacks"][stack]["resources"] = []
    save(state); done(0, args)
if args[:2] == ["stack", "export"]:
    entry = state["stacks"][stack]
    print(json.dumps({"version": 3, "deployment": {"resources": entry["resources"],
          "pending_operations": [{"resource": r, "type": "creating"} for r in entry["pending"]]}}))
    sys.exit(0)
if args[:2] == ["stack", "rm"]:
    name = [a for a in args[2:] if not a.startswith("--")][0]
    state["stacks"].pop(name, None); save(state); sys.exit(0)
if args[:1] == ["import"]:
    imported = json.load(open(opt(args, "--file")))["resources"]
    state["stacks"][stack]["imported"] = imported
    save(state); sys.exit(0)
sys.stderr.write("fake pulumi: unsupported " + " ".join(args) + "\n"); sys.exit(2)
'''

GCP = PLAN.candidates[0]
AWS = next(c for c in PLAN.candidates if c.cloud == "aws")
AZURE = next(c for c in PLAN.candidates if c.cloud == "azure")


def deployment_for(candidate):
    return build_deployment(INPUTS.spec, candidate, PLAN.candidates, model=INPUTS.model)


class FakeCli:
    def __init__(self, root: Path, monkeypatch) -> None:
        self.root = root
        bin_dir = root / "bin"
        bin_dir.mkdir(parents=True)
        script = bin_dir / "pulumi"
        script.write_text(f"#!{sys.executable} -SE\n" + textwrap.dedent(FAKE_PULUMI))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_PULUMI_DIR", str(root))
        monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "test")
        self.scenario({})

    def scenario(self, data: dict) -> None:
        (self.root / "scenario.json").write_text(json.dumps(data))

    @property
    def state(self) -> dict:
        return json.loads((self.root / "state.json").read_text())

    def stack(self, name: str) -> dict:
        return self.state["stacks"][name]

    def seed(self, name: str, **fields) -> None:
        state = self.state
        state["stacks"][name].update(fields)
        (self.root / "state.json").write_text(json.dumps(state))


@pytest.fixture
def cli(tmp_path, monkeypatch) -> FakeCli:
    return FakeCli(tmp_path / "fake", monkeypatch)


@pytest.fixture
def engine(cli, tmp_path) -> PulumiEngine:
    return PulumiEngine(tmp_path / "work", secrets="HF_TOKEN=hf_secret_value\n",
                        interrupt_grace_s=5)


def test_no_cli_is_a_clear_user_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "x")
    with pytest.raises(PulumiMissing) as info:
        PulumiEngine(tmp_path / "work")
    message = str(info.value)
    assert "Pulumi CLI is not installed" in message and "get.pulumi.com" in message
    assert "servestack preview STACK --offline" in message and info.value.exit_code == 2


def test_the_local_backend_needs_a_passphrase(tmp_path, monkeypatch):
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    with pytest.raises(Exception, match="PULUMI_CONFIG_PASSPHRASE"):
        PulumiEngine(tmp_path / "work")


def test_backend_from_the_environment(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://bucket/servestack")
    assert PulumiEngine(tmp_path / "w").backend_url == "s3://bucket/servestack"
    assert PulumiEngine(tmp_path / "w", "gs://other").backend_url == "gs://other"


def test_a_failed_up_is_read_from_the_engine_events(cli, engine):
    text = (FIXTURES / "gcp_zone_exhausted.txt").read_text().split("\n", 1)[1]
    cli.scenario({"*": {"up": "fail", "diagnostic": text, "creates": [{"type": "t"}]}})
    ref = stack_ref("mixtral", GCP.id)
    lines: list[str] = []
    result = engine.up(ref, deployment_for(GCP), timeout_s=60, on_progress=lines.append)
    assert not result.ok and not result.timed_out
    assert result.diagnostics[0].severity == "error"
    assert result.diagnostics[0].urn.endswith("::mixtral-gpu")
    assert result.failed_urns == [result.diagnostics[0].urn]
    assert "code: 255" in result.text
    assert classify("gcp", result.error_texts(), GCP).error_class == "capacity"
    assert lines == ["create servestack:gpu:Group mixtral-gpu", "create t x"]
    assert result.created_any  # "t" has a provider: a cloud resource's create began
    config = cli.stack(ref.name)
    assert config["config"]["gcp:region"] == "us-central1"
    assert json.loads(config["config"]["servestack:deployment"])["candidate_id"] == GCP.id
    assert config["secrets"] == []  # the secrets reach the inline program in memory only
    assert not any("hf_secret_value" in arg for call in cli.state["calls"] for arg in call)


def test_a_successful_up_returns_the_outputs(cli, engine):
    cli.scenario({"*": {"up": "ok", "outputs": {"endpoint": "http://lb.example:80"}}})
    result = engine.up(stack_ref("mixtral", AWS.id), deployment_for(AWS), timeout_s=60)
    assert result.ok and result.outputs["endpoint"] == "http://lb.example:80"
    assert cli.stack(stack_name("mixtral", AWS.id))["config"]["aws:region"] == AWS.region


API_KEY = "sk-FAKEapiKeyMustNeverLeak0123456789"


def test_the_api_key_output_comes_back_in_memory_only(cli, engine):
    """The readiness probe needs the key: `up` and `outputs` give it in plain text (the
    Automation API reads the outputs with --show-secrets), on no command line, and `up`
    prints no outputs of its own."""
    outputs = {"endpoint": "http://lb.example:80", "api_key": API_KEY,
               "api_key_secret": "/servestack/mixtral/abc/api-key"}
    cli.scenario({"*": {"up": "ok", "outputs": outputs}, "secret_outputs": ["api_key"]})
    d = deployment_for(AWS)
    ref = stack_ref("mixtral", AWS.id)
    result = engine.up(ref, d, timeout_s=60)
    assert result.ok and result.outputs == outputs
    assert engine.outputs(ref, d) == outputs
    up = next(call for call in cli.state["calls"] if call[:1] == ["up"])
    assert "--suppress-outputs" in up and "--show-secrets" not in up
    assert not any(API_KEY in arg for call in cli.state["calls"] for arg in call)
    assert API_KEY not in result.text


def test_a_hung_up_is_interrupted_at_the_timeout(cli, engine):
    cli.scenario({"*": {"up": "hang"}})
    start = time.monotonic()
    result = engine.up(stack_ref("mixtral", AZURE.id), deployment_for(AZURE), timeout_s=0.5)
    assert result.timed_out and not result.ok
    assert "update canceled" in result.text
    assert time.monotonic() - start < 10


def test_cleanup_calls_and_leftovers(cli, engine):
    ref = stack_ref("mixtral", GCP.id)
    deployment = deployment_for(GCP)
    cli.scenario({"*": {"up": "fail", "diagnostic": "error: boom"}})
    engine.up(ref, deployment, timeout_s=60)
    group = {"type": "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager",
             "urn": f"urn:pulumi:{ref.name}::servestack::gcp:x::mixtral-mig", "id": "mig-1",
             "custom": True}
    component = {"type": "servestack:gcp:Service", "urn": "urn:service"}  # logical only
    provider = {"type": "pulumi:providers:gcp", "urn": "urn:provider", "custom": True}
    cli.seed(ref.name, resources=[{"type": "pulumi:pulumi:Stack", "urn": "urn:stack"},
                                  component, provider, group],
             pending=[{"type": "gcp:compute/healthCheck:HealthCheck", "custom": True,
                       "urn": f"urn:pulumi:{ref.name}::servestack::gcp:x::mixtral-hc"}])
    assert engine.refresh(ref, deployment).ok  # retried with --clear-pending-creates
    refreshes = [c for c in cli.state["calls"] if c[:1] == ["refresh"]]
    assert "--clear-pending-creates" in refreshes[-1]
    cli.scenario({f"servestack-{ref.name}-sweep": {"up": "ok", "outputs": {"found": [
        {"type": "gcp:compute/instance:Instance", "name": "mixtral-abcd",
         "id": "projects/p/zones/us-central1-a/instances/mixtral-abcd"}]}}})
    assert engine.leftovers(ref, deployment) == [
        Leftover(group["type"], "mixtral-mig", "mig-1", "state")]
    left = engine.strays(ref, deployment)
    assert left == [Leftover("gcp:compute/instance:Instance", "mixtral-abcd",
                             "projects/p/zones/us-central1-a/instances/mixtral-abcd", "cloud")]
    removals = [c for c in cli.state["calls"] if c[:2] == ["stack", "rm"]]
    assert removals and "--force" in removals[-1]  # the read-only sweep stack is thrown away
    assert engine.destroy(ref, deployment).ok
    assert engine.adopt(ref, deployment, left).ok
    (imported,) = cli.stack(ref.name)["imported"]
    assert imported == {"type": "gcp:compute/instance:Instance", "name": "stray-mixtral-abcd",
                        "id": "projects/p/zones/us-central1-a/instances/mixtral-abcd"}
    (call,) = [c for c in cli.state["calls"] if c[:1] == ["import"]]
    assert "--protect=false" in call and "--generate-code=false" in call
    assert engine.remove(ref, deployment).ok
    assert ref.name not in cli.state["stacks"]
    assert engine.remove(ref, deployment).ok  # removing twice is fine


def test_an_up_that_created_nothing_says_so(cli, engine):
    """Only servestack's component was registered (no provider): nothing in the cloud."""
    text = (FIXTURES / "aws_no_credentials.txt").read_text().split("\n", 1)[1]
    cli.scenario({"*": {"up": "fail", "diagnostic": text}})
    result = engine.up(stack_ref("mixtral", AWS.id), deployment_for(AWS), timeout_s=60)
    assert not result.ok and result.created_any is False
    assert classify("aws", result.error_texts(), AWS).error_class == "credentials"
    cli.scenario({"*": {"up": "fail", "diagnostic": "error: boom",
                        "creates": [{"type": "aws:ec2/securityGroup:SecurityGroup"}]}})
    assert engine.up(stack_ref("mixtral", AWS.id), deployment_for(AWS), timeout_s=60).created_any


def test_identity_and_a_failed_sweep_through_probe_stacks(cli, engine):
    text = (FIXTURES / "gcp_no_credentials.txt").read_text().split("\n", 1)[1]
    cli.scenario({"servestack-identity-aws": {"up": "ok", "outputs": {
                      "identity": "account 123456789012 (arn:aws:iam::123456789012:user/ci)"}},
                  "servestack-identity-gcp": {"up": "fail", "diagnostic": text}})
    assert engine.identity("aws", timeout_s=30) == Identity(
        "aws", True, who="account 123456789012 (arn:aws:iam::123456789012:user/ci)")
    denied = engine.identity("gcp", timeout_s=30)
    assert not denied.ok and "could not find default credentials" in denied.error
    assert "servestack-identity-gcp" not in cli.state["stacks"]  # thrown away
    ref = stack_ref("mixtral", GCP.id)
    cli.scenario({f"servestack-{ref.name}-sweep": {"up": "fail", "diagnostic": text}})
    (failed,) = engine.strays(ref, deployment_for(GCP))
    assert not failed.adoptable and "could not find default credentials" in failed.name


def test_identity_probes_read_each_cloud_s_caller():
    programs = {"aws": aws_probes, "gcp": gcp_probes, "azure": azure_probes}
    answers = {"aws:index/getCallerIdentity:getCallerIdentity": {
                   "accountId": "123456789012", "arn": "arn:aws:iam::123456789012:user/ci",
                   "id": "123456789012", "userId": "AIDA"},
               "gcp:organizations/getClientConfig:getClientConfig": {
                   "project": "my-project", "accessToken": "t", "id": "x", "region": "",
                   "zone": "", "defaultLabels": {}},
               "gcp:organizations/getClientOpenIdUserInfo:getClientOpenIdUserInfo": {
                   "email": "ci@my-project.iam.gserviceaccount.com", "id": "x"},
               "azure-native:authorization:getClientConfig": {
                   "clientId": "c1", "objectId": "o1", "subscriptionId": "s1", "tenantId": "t1"}}
    found = {}
    for cloud, module in programs.items():
        config, program = module.identity_probe()
        found[cloud] = record(program, config=config, invoke_answers=answers).outputs["identity"]
    assert found == {
        "aws": "account 123456789012 (arn:aws:iam::123456789012:user/ci)",
        "gcp": "project my-project (ci@my-project.iam.gserviceaccount.com)",
        "azure": "subscription s1 (tenant t1, client c1)"}


def test_group_size_reads_the_group_through_a_probe_stack(cli, engine):
    ref = stack_ref("mixtral", GCP.id)
    cli.scenario({"*": {"up": "ok", "outputs": {"endpoint": "http://x",
                                                "instance_group_name": "mixtral-mig-1"}},
                  f"servestack-{ref.name}-size": {"up": "ok", "outputs": {"running": 0}}})
    deployment = deployment_for(GCP)
    assert engine.up(ref, deployment, timeout_s=60).ok
    assert engine.group_size(ref, deployment) == 0
    assert f"servestack-{ref.name}-size" not in cli.state["stacks"]  # thrown away


def test_capabilities_are_the_engine_s_and_the_cloud_probes_together(cli, engine):
    assert engine.capabilities("aws") == engine.capabilities("gcp") == Capabilities(
        quota_precheck=True, group_size=True, cloud_sweep=True, adopt_strays=True,
        credentials_check=True)
    assert engine.capabilities("azure") == Capabilities(cloud_sweep=True, adopt_strays=True,
                                                        credentials_check=True)


def test_quota_limits_read_one_probe_stack_per_cloud(cli, engine):
    aws = [c for c in PLAN.candidates if c.cloud == "aws"]
    family = aws_probes.quota_wanted(aws)[0][1]
    region = aws_probes.quota_wanted(aws)[0][0]
    cli.scenario({"servestack-quota-aws": {"up": "ok", "outputs": {"limits": {
        f"{region}|{family}": 96, f"{region}|aws-P-spot": None}}}})
    assert engine.quota_limits("aws", aws) == [QuotaLimit("aws", region, family, "vcpus", 96.0)]
    assert "servestack-quota-aws" not in cli.state["stacks"]  # thrown away


def test_group_program_counts_running_vms():
    gcp_answers = {"gcp:compute/getRegionInstanceGroup:getRegionInstanceGroup": {
        "id": "x", "name": "mig", "project": "p", "region": "us-central1", "selfLink": "s",
        "size": 2, "namedPorts": [], "instances": [
            {"instance": "i-1", "status": "RUNNING", "namedPorts": []},
            {"instance": "i-2", "status": "STAGING", "namedPorts": []},
            {"instance": "i-3", "status": "TERMINATED", "namedPorts": []}]}}
    recording = record(gcp_probes.group_program(deployment_for(GCP), "mig"),
                       invoke_answers=gcp_answers)
    assert recording.outputs["running"] == 2  # STAGING got capacity; TERMINATED is gone
    (call,) = recording.invokes
    assert call["args"]["name"] == "mig" and call["args"]["region"] == "us-central1"
    aws_answers = {"aws:ec2/getInstances:getInstances": {
        "id": "x", "ids": ["i-1", "i-2"], "region": AWS.region, "instanceTags": {},
        "privateIps": [], "publicIps": [], "ipv6Addresses": []}}
    recording = record(aws_probes.group_program(deployment_for(AWS), None),
                       invoke_answers=aws_answers)
    assert recording.outputs["running"] == 2
    assert recording.invokes[0]["args"]["instanceStateNames"] == ["pending", "running"]


# --- the read-only programs under the mock runtime ---------------------------------------------

def test_aws_sweep_program_finds_tagged_resources():
    deployment = deployment_for(AWS)
    sweep_program = aws_probes.sweep_program
    arn = ("arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:1a2b:"
           "autoScalingGroupName/mixtral-gpu-2025")
    answers = {"aws:resourcegroupstaggingapi/getResources:getResources": {
        "id": "x", "region": AWS.region, "resourceTagMappingLists": [
            {"resourceArn": arn, "tags": {}, "complianceDetails": []},
            {"resourceArn": "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc",
             "tags": {}, "complianceDetails": []},
            {"resourceArn": "arn:aws:ec2:us-east-1:123456789012:security-group/sg-0123abcd",
             "tags": {}, "complianceDetails": []}]},
        "aws:ec2/getInstances:getInstances": {"id": "x", "ids": ["i-0abc"], "region": AWS.region,
                                              "instanceTags": {}, "privateIps": [],
                                              "publicIps": [], "ipv6Addresses": []},
        # a live NAT gateway is found by its own lookup (a deleted one keeps its tags)
        "aws:ec2/getNatGateways:getNatGateways": {"id": "x", "ids": ["nat-0def"],
                                                  "region": AWS.region, "tags": {}}}
    recording = record(sweep_program(deployment, []), invoke_answers=answers)
    tagging = next(i for i in recording.invokes if "getResources" in i["token"])
    assert {f["key"]: f["values"] for f in tagging["args"]["tagFilters"]} == {
        "servestack-service": [deployment.service], "servestack-candidate": [AWS.id],
        "servestack-stack": [deployment.stack]}
    assert recording.outputs["found"] == [
        {"type": "aws:autoscaling/group:Group", "name": "mixtral-gpu-2025",
         "id": "mixtral-gpu-2025"},
        {"type": "aws:ec2/securityGroup:SecurityGroup", "name": "sg-0123abcd",
         "id": "sg-0123abcd"},
        {"type": "aws:ec2/instance:Instance", "name": "i-0abc", "id": "i-0abc"},
        {"type": "aws:ec2/natGateway:NatGateway", "name": "nat-0def", "id": "nat-0def"}]


def test_gcp_sweep_program_searches_labels():
    deployment = replace(deployment_for(GCP), gcp_project="demo")
    sweep_program = gcp_probes.sweep_program
    answers = {"gcp:cloudasset/getSearchAllResources:getSearchAllResources": {
        "id": "x", "scope": "projects/demo", "results": [
            {"assetType": "compute.googleapis.com/Instance",
             "name": "//compute.googleapis.com/projects/demo/zones/us-central1-a/instances/vm-1",
             "displayName": "vm-1", "labels": {}, "location": "us-central1-a",
             "networkTags": [], "project": "projects/1", "folders": [], "kmsKeys": [],
             "organization": "", "parentAssetType": "", "parentFullResourceName": "",
             "state": "RUNNING", "description": "", "createTime": "", "updateTime": ""}]}}
    recording = record(sweep_program(deployment, []), invoke_answers=answers)
    (search,) = [i for i in recording.invokes if "cloudasset" in i["token"]]
    assert search["args"] == {"scope": "projects/demo",
                              "query": f"labels.servestack-candidate={GCP.id}"}
    assert recording.outputs["found"] == [{"type": "gcp:compute/instance:Instance",
                                           "name": "vm-1",
                                           "id": "projects/demo/zones/us-central1-a/instances/"
                                                 "vm-1"}]


def test_azure_sweep_checks_the_resource_groups_the_stack_had():
    deployment = deployment_for(AZURE)
    sweep_program = azure_probes.sweep_program
    assert sweep_program(deployment, []) is None  # nothing known to look for
    group = {"type": "azure-native:resources:ResourceGroup", "id": "/subscriptions/s/"
             "resourceGroups/mixtral-rg", "outputs": {"name": "mixtral-rg"}}
    answers = {"azure-native:resources:getResourceGroup": {
        "id": group["id"], "location": "eastus", "name": "mixtral-rg", "type": "x",
        "properties": {"provisioningState": "Succeeded"}, "azureApiVersion": "2024-03-01"}}
    recording = record(sweep_program(deployment, [group]), invoke_answers=answers)
    assert recording.outputs["found"] == [{"type": "azure-native:resources:ResourceGroup",
                                           "name": "mixtral-rg", "id": group["id"]}]


def test_aws_quota_program_reads_service_quotas():
    wanted = [("us-east-1", "aws-G-ondemand"), ("us-west-2", "aws-P-spot")]
    answers = {"aws:servicequotas/getServiceQuota:getServiceQuota": {
        "id": "x", "adjustable": True, "arn": "arn", "defaultValue": 0, "globalQuota": False,
        "quotaCode": "L", "quotaName": "n", "region": "us-east-1", "serviceCode": "ec2",
        "serviceName": "EC2", "usageMetrics": [], "value": 96}}
    config, program = aws_probes.quota_probe(wanted, None)
    assert config == {"aws:region": "us-east-1"}
    recording = record(program, invoke_answers=answers)
    codes = [(i["args"]["quotaCode"], i["args"]["region"]) for i in recording.invokes]
    assert codes == [("L-DB2E81BA", "us-east-1"), ("L-7212CCBC", "us-west-2")]
    assert recording.outputs["limits"] == {"us-east-1|aws-G-ondemand": 96,
                                           "us-west-2|aws-P-spot": 96}


def test_gcp_quota_program_reads_cloud_quotas():
    assert gcp_probes.quota_id("NVIDIA_A100_80GB_GPUS") == \
        "NVIDIA-A100-80GB-GPUS-per-project-region"
    regional = {"id": "x", "dimensions": ["region"], "quotaId": "q", "parent": "p",
                "service": "compute.googleapis.com", "dimensionsInfos": [
                    {"applicableLocations": ["us-central1"], "dimensions": {"region":
                                                                            "us-central1"},
                     "details": [{"value": "0", "rolloutInfos": []}]},
                    {"applicableLocations": ["us-east4"], "dimensions": {},
                     "details": [{"value": "16", "rolloutInfos": []}]}]}
    config, program = gcp_probes.quota_probe([("us-central1", "NVIDIA_A100_80GB_GPUS")], "demo")
    assert config == {"gcp:region": "us-central1", "gcp:project": "demo"}
    recording = record(program,
                       invoke_answers={"gcp:cloudquota/getSQuotaInfo:getSQuotaInfo": regional})
    ids = [i["args"]["quotaId"] for i in recording.invokes]
    assert ids == ["GPUS-ALL-REGIONS-per-project", "NVIDIA-A100-80GB-GPUS-per-project-region"]
    assert recording.invokes[0]["args"]["parent"] == "projects/demo/locations/global"
    assert recording.outputs["limits"] == {"*|*": 16,
                                           "us-central1|NVIDIA_A100_80GB_GPUS": 0,
                                           "*|NVIDIA_A100_80GB_GPUS": 16}


def test_outputs_of_a_missing_stack_are_none_and_create_nothing(cli, engine):
    ref = stack_ref("mixtral", GCP.id)
    assert engine.outputs(ref, deployment_for(GCP)) == {}
    assert ref.name not in cli.state["stacks"]


# --- a service over several pools: the key and front stacks ----------------------------------


def test_the_key_stack_goes_up_with_its_role_and_the_key_stays_in_memory(cli, engine):
    from tests.fakes import service_parts

    key = service_parts().key
    cli.scenario({key.name: {"up": "ok", "outputs": {"api_key": API_KEY}},
                  "secret_outputs": ["api_key"]})
    result = engine.up_shared(key, timeout_s=60)
    assert result.ok and result.outputs == {"api_key": API_KEY}
    assert cli.stack(key.name)["config"] == {"servestack:role": "key",
                                             "servestack:service": "mixtral"}
    up = next(call for call in cli.state["calls"] if call[:1] == ["up"])
    assert "--suppress-outputs" in up and up[up.index("--stack") + 1] == key.name
    assert not any(API_KEY in arg for call in cli.state["calls"] for arg in call)
    assert engine.shared_outputs(key) == {"api_key": API_KEY}


def test_the_front_stack_carries_its_plan_and_is_destroyed_and_removed(cli, engine):
    from servestack.front.model import FrontPlan
    from tests.fakes import pool_builder, service_parts

    pools = [pool_builder(1)(c, PLAN.candidates) for c in (GCP, AZURE)]
    front = service_parts().front(pools)
    cli.scenario({front.name: {"up": "ok", "outputs": {"endpoint": "http://mixtral.example.com"}}})
    assert engine.up_shared(front, timeout_s=60).outputs == {
        "endpoint": "http://mixtral.example.com"}
    config = cli.stack(front.name)["config"]
    assert (config["servestack:role"], config["aws:region"]) == ("front", "us-east-1")
    plan = FrontPlan.from_config(json.loads(config["servestack:front"]))
    assert plan == front.front and [p.stack for p in plan.pools] == [d.stack for d in pools]
    assert engine.destroy_shared(front).ok
    assert [c[:1] for c in cli.state["calls"] if c[:1] == ["destroy"]] == [["destroy"]]
    assert front.name not in cli.state["stacks"] and engine.shared_outputs(front) == {}
    again = engine.destroy_shared(front)  # nothing left: no failure, and no new stack
    assert again.ok and front.name not in cli.state["stacks"]


def test_a_failed_shared_up_keeps_the_engine_s_diagnostics(cli, engine):
    from tests.fakes import service_parts

    key = service_parts().key
    cli.scenario({key.name: {"up": "fail", "diagnostic": "error: passphrase must be set"}})
    result = engine.up_shared(key, timeout_s=60)
    assert not result.ok and result.error_texts()[0] == "error: passphrase must be set"
