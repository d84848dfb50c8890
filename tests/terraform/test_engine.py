"""TerraformEngine against a stand-in `terraform` (a script that replays a JSON event stream),
and `servestack generate --format terraform`'s writer. The real CLI runs in test_render.py
(validate) and test_e2e.py (apply/destroy)."""

from __future__ import annotations

import json
import stat
import sys
import time
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from servestack.components import aws as pulumi_aws_probes

from servestack import planner
from servestack.deploy.failures import classify
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Choices, Deployment
from servestack.engine import Capabilities, Identity, Leftover, QuotaLimit, stack_ref
from servestack.inputs import load_inputs
from servestack.pulumi.preview import record
from servestack.terraform import aws as terraform_aws_probes
from servestack.terraform import renderer
from servestack.terraform.engine import TerraformEngine, TerraformMissing
from servestack.terraform.generate import MAIN_FILE, VARS_FILE, generate_terraform
from tests.fakes import FIXTURES, FROZEN_CATALOG

TOKEN = "hf_FAKEtokenMustNeverLeak0123456789"
ICE_TEXT = ("waiting for Auto Scaling Group (mixtral-1) capacity satisfied: scaling activity "
            "(0b1d): Failed: Could not launch On-Demand Instances. InsufficientInstanceCapacity "
            "- We currently do not have sufficient g6e.12xlarge capacity in the Availability "
            "Zone you requested (us-east-1a). Our system will be working on provisioning "
            "additional capacity. You can currently get g6e.12xlarge capacity by not specifying "
            "an Availability Zone in your request or choosing us-east-1b. Launching EC2 "
            "instance failed.")

# The stand-in: logs each call (argv, whether the token came through the environment), then
# replays the scenario's events for that subcommand. SIGINT ends a "sleep" like Terraform does.
FAKE = r'''#!PYTHON
import json, os, signal, sys, time
here = os.path.dirname(os.path.abspath(__file__))
scenario = json.load(open(os.path.join(here, "scenario.json")))
command = sys.argv[1]
with open(os.path.join(here, "calls.jsonl"), "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(),
                          "token": os.environ.get("TF_VAR_hf_token") == scenario.get("token")})
              + "\n")
if command == "init":
    os.makedirs(".terraform", exist_ok=True)
    print("Terraform has been successfully initialized!")
    sys.exit(0)
step = scenario.get(command, {"events": [], "code": 0})
def interrupted(*_):
    print(json.dumps({"@level": "error", "@message": "Error: execution halted",
                      "type": "diagnostic", "diagnostic": {"severity": "error",
                      "summary": "execution halted"}}), flush=True)
    sys.exit(1)
signal.signal(signal.SIGINT, interrupted)
for event in step["events"]:
    print(json.dumps(event), flush=True)
if step.get("state") is not None:
    open("terraform.tfstate", "w").write(json.dumps(step["state"]))
time.sleep(step.get("sleep", 0))
sys.exit(step.get("code", 0))
'''


@cache
def aws_candidates() -> list[planner.Candidate]:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    return list(planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                             planner.Options(cloud="aws", spot=False),
                             model=inputs.model).candidates)


@cache
def deployment() -> Deployment:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    return build_deployment(inputs.spec, aws_candidates()[0], aws_candidates(),
                            model=inputs.model)


class Fake:
    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        script = self.bin / "terraform"
        script.write_text(FAKE.replace("#!PYTHON", f"#!{sys.executable}"))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        self.binary = str(script)
        self.scenario({})

    def scenario(self, steps: dict) -> None:
        (self.bin / "scenario.json").write_text(json.dumps({"token": TOKEN, **steps}))

    def calls(self) -> list[dict]:
        log = self.bin / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() \
            else []


@pytest.fixture
def fake(tmp_path):
    return Fake(tmp_path)


def engine(fake: Fake, tmp_path: Path, token: str | None = TOKEN) -> TerraformEngine:
    return TerraformEngine(tmp_path / "work", secrets=token, binary=fake.binary,
                           plugin_dir=tmp_path / "plugins", interrupt_grace_s=5)


def event(kind: str, **fields) -> dict:
    return {"@level": "info", "@message": kind, "type": kind, **fields}


def hook(address: str, action: str = "create") -> dict:
    return {"resource": {"addr": address}, "action": action}


def test_up_writes_the_stack_and_reads_outputs(fake, tmp_path):
    d = deployment()
    fake.scenario({"apply": {"events": [
        event("apply_start", hook=hook("aws_lb.service")),
        event("apply_complete", hook=hook("aws_lb.service")),
        event("outputs", outputs={"endpoint": {"value": "http://lb:80", "sensitive": False}}),
    ], "state": {"values": {}}}})
    lines: list[str] = []
    ref = stack_ref(d.service, d.candidate_id)
    result = engine(fake, tmp_path).up(ref, d, timeout_s=60, on_progress=lines.append)
    assert result.ok and result.outputs == {"endpoint": "http://lb:80"}
    assert lines == ["create aws_lb.service"]
    directory = tmp_path / "work" / "stacks" / ref.name
    main = json.loads((directory / "main.tf.json").read_text())
    assert main["provider"]["aws"]["region"] == d.region
    assert json.loads((directory / "terraform.tfvars.json").read_text())["desired_replicas"] \
        == d.desired_replicas
    init, apply, output = fake.calls()  # output: the API key apply's events leave out
    assert output["argv"][:2] == ["output", "-json"]
    assert init["argv"][0] == "init" and f"-plugin-dir={tmp_path / 'plugins'}" in init["argv"]
    assert apply["argv"][:2] == ["apply", "-auto-approve"] and "-json" in apply["argv"]
    assert apply["token"] is True and apply["cwd"] == str(directory)
    assert not any(TOKEN in arg for call in fake.calls() for arg in call["argv"])
    assert TOKEN not in "".join(p.read_text() for p in directory.glob("*.json"))


API_KEY = "0123456789abcdefFAKEapiKeyMustNeverLeak"


def test_up_reads_the_sensitive_api_key_that_apply_leaves_out(fake, tmp_path):
    """apply's `outputs` event has no value for a sensitive output (Terraform 1.11 prints
    only `"sensitive": true`); `terraform output -json` has it: up returns it in memory."""
    d = deployment()
    assert d.api_key is not None
    listed = {"endpoint": {"value": "http://lb:80", "sensitive": False, "type": "string"},
              "api_key": {"value": API_KEY, "sensitive": True, "type": "string"}}
    fake.scenario({"apply": {"events": [
        event("outputs", outputs={"endpoint": {"value": "http://lb:80", "sensitive": False},
                                  "api_key": {"sensitive": True}}),
    ], "state": {"values": {}}}, "output": {"events": [listed]}})
    ref = stack_ref(d.service, d.candidate_id)
    result = engine(fake, tmp_path).up(ref, d, timeout_s=60)
    assert result.ok and result.outputs == {"endpoint": "http://lb:80", "api_key": API_KEY}
    assert engine(fake, tmp_path).outputs(ref, d)["api_key"] == API_KEY
    calls = fake.calls()
    assert calls[-1]["argv"][:2] == ["output", "-json"]
    assert not any(API_KEY in arg for call in calls for arg in call["argv"])
    assert API_KEY not in result.text
    directory = tmp_path / "work" / "stacks" / ref.name
    assert API_KEY not in "".join(p.read_text() for p in directory.glob("*.json"))


def test_up_without_an_api_key_asks_for_no_outputs(fake, tmp_path):
    d = replace(deployment(), api_key=None)
    fake.scenario({"apply": {"events": [event("outputs", outputs={
        "endpoint": {"value": "http://lb:80", "sensitive": False}})], "state": {"values": {}}}})
    result = engine(fake, tmp_path).up(stack_ref(d.service, d.candidate_id), d, timeout_s=60)
    assert result.ok and [c["argv"][0] for c in fake.calls()] == ["init", "apply"]


def test_a_failed_scaling_activity_is_a_capacity_failure(fake, tmp_path):
    d = deployment()
    fake.scenario({"apply": {"code": 1, "events": [
        event("apply_errored", hook=hook("aws_autoscaling_group.group")),
        {"@level": "error", "@message": f"Error: {ICE_TEXT}", "type": "diagnostic",
         "diagnostic": {"severity": "error", "summary": ICE_TEXT, "detail": "",
                        "address": "aws_autoscaling_group.group"}},
    ]}})
    result = engine(fake, tmp_path).up(stack_ref(d.service, d.candidate_id), d, timeout_s=60)
    assert not result.ok and result.failed_urns == ["aws_autoscaling_group.group"]
    assert result.diagnostics[0].urn == "aws_autoscaling_group.group"
    plan = planner.plan(*_plan_inputs(), planner.Options(cloud="aws", spot=False),
                        model=load_inputs(None, catalog_dir=FROZEN_CATALOG).model)
    failure = classify("aws", result.error_texts(), plan.candidates[0],
                       tuple(i.instance_type for i in d.instances))
    assert (failure.error_class, failure.code, failure.action) == \
        ("capacity", "InsufficientInstanceCapacity", "block")
    assert failure.blocks and failure.blocks[0].region == "us-east-1"
    assert "do not have sufficient g6e.12xlarge capacity" in failure.message


def _plan_inputs():
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    return inputs.spec, inputs.catalog, inputs.facts


def test_the_attempt_timeout_interrupts_terraform(fake, tmp_path):
    d = deployment()
    fake.scenario({"apply": {"events": [], "sleep": 30}})
    started = time.monotonic()
    result = engine(fake, tmp_path).up(stack_ref(d.service, d.candidate_id), d, timeout_s=1)
    assert time.monotonic() - started < 15
    assert result.timed_out and not result.ok
    assert "execution halted" in result.error_texts()[0]


def test_no_token_fails_before_running_terraform(fake, tmp_path):
    d = deployment()
    result = engine(fake, tmp_path, token=None).up(stack_ref(d.service, d.candidate_id), d,
                                                   timeout_s=60)
    assert not result.ok and "hf_token" in result.error_texts()[0]
    assert fake.calls() == []


def test_destroy_and_leftovers_read_the_state(fake, tmp_path):
    d = deployment()
    ref = stack_ref(d.service, d.candidate_id)
    tf = engine(fake, tmp_path)
    assert tf.destroy(ref, d).text == "no state" and tf.leftovers(ref, d) == []
    state = {"format_version": "1.0", "values": {"root_module": {"resources": [
        {"mode": "managed", "type": "aws_lb", "address": "aws_lb.service",
         "values": {"id": "arn:aws:elasticloadbalancing:lb/app/x/1"}},
        {"mode": "data", "type": "aws_vpc", "address": "data.aws_vpc.default", "values": {}}]}}}
    fake.scenario({"apply": {"events": [], "state": {"serial": 1}},
                   "show": {"events": [state]}, "destroy": {"events": [], "code": 0}})
    tf.up(ref, d, timeout_s=60)
    (left,) = tf.leftovers(ref, d)
    assert (left.type, left.name, left.id, left.where) == \
        ("aws_lb", "aws_lb.service", "arn:aws:elasticloadbalancing:lb/app/x/1", "state")
    assert not tf.remove(ref, d).ok and tf.stack_dir(ref).exists()
    destroy = tf.destroy(ref, d)
    assert destroy.ok and fake.calls()[-1]["argv"][:2] == ["destroy", "-auto-approve"]
    assert fake.calls()[-1]["token"] is True


def test_capabilities_are_the_engine_s_and_the_cloud_probes_together(fake, tmp_path):
    tf = engine(fake, tmp_path)
    assert tf.capabilities("aws") == Capabilities(quota_precheck=True, group_size=True,
                                                  cloud_sweep=True, adopt_strays=True,
                                                  credentials_check=True)
    assert tf.capabilities("gcp") == Capabilities(group_size=True, credentials_check=True)
    assert tf.capabilities("azure") == Capabilities(credentials_check=True)


def test_strays_are_imported_at_the_one_free_address_of_their_type(fake, tmp_path):
    d = deployment()
    ref = stack_ref(d.service, d.candidate_id)
    tf = engine(fake, tmp_path)
    state = {"format_version": "1.0", "values": {"root_module": {"resources": [
        {"mode": "managed", "type": "aws_lb", "address": "aws_lb.service", "values": {}}]}}}
    fake.scenario({"apply": {"events": [], "state": {"serial": 1}}, "show": {"events": [state]},
                   "import": {"events": [], "code": 0}})
    tf.up(ref, d, timeout_s=60)
    arns = ["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0b1d:"
            "autoScalingGroupName/mixtral-group",
            "arn:aws:ec2:us-east-1:123456789012:security-group/sg-0a1",
            "arn:aws:ec2:us-east-1:123456789012:security-group/sg-0b2"]
    found = terraform_aws_probes.sweep_found({"arns": arns, "instances": ["i-0abc"]})
    strays = [Leftover(x["type"], x["name"], x["id"], "cloud") for x in found]
    assert tf.adopt(ref, d, strays).ok
    imports = [c for c in fake.calls() if c["argv"][0] == "import"]
    # the group has one address; two security groups for two free addresses, and an ASG's
    # instance, have no single address: they stay for the report
    assert [c["argv"] for c in imports] == [
        ["import", "-input=false", "-no-color", "aws_autoscaling_group.group", "mixtral-group"]]
    assert imports[0]["token"] is True  # the configuration's required variable is set


def test_identity_through_a_probe_configuration(fake, tmp_path):
    tf = engine(fake, tmp_path)
    fake.scenario({"apply": {"events": [event("outputs", outputs={"identity": {
        "value": "account 123456789012 (arn:aws:iam::123456789012:user/ci)"}})]}})
    assert tf.identity("aws", timeout_s=30) == Identity(
        "aws", True, who="account 123456789012 (arn:aws:iam::123456789012:user/ci)")
    text = (FIXTURES / "aws_no_credentials.txt").read_text().split("\n", 1)[1]
    fake.scenario({"apply": {"code": 1, "events": [{
        "@level": "error", "type": "diagnostic",
        "diagnostic": {"severity": "error", "summary": "No valid credential sources found",
                       "detail": text}}]}})
    denied = tf.identity("aws", timeout_s=30)
    assert not denied.ok and denied.error.startswith("No valid credential sources found")
    fake.scenario({"apply": {"events": [], "sleep": 30}})
    start = time.monotonic()
    assert tf.identity("gcp", timeout_s=0.5) == Identity("gcp", False,
                                                         error="no answer within 0 s")
    assert time.monotonic() - start < 10
    assert list((tmp_path / "work" / "probes").iterdir()) == []  # thrown away


def test_probes_at_once_each_apply_in_their_own_folder(fake, tmp_path):
    """A hedged deploy's lanes check credentials at the same time: one probe's cleanup must
    not delete the folder another one is applying in."""
    from concurrent.futures import ThreadPoolExecutor

    tf = engine(fake, tmp_path)
    fake.scenario({"apply": {"events": [event("outputs", outputs={
        "identity": {"value": "account 123456789012"}})], "sleep": 1}})
    with ThreadPoolExecutor(2) as lanes:
        found = list(lanes.map(lambda _: tf.identity("aws", timeout_s=30), range(2)))
    assert [i.ok for i in found] == [True, True]
    folders = [c["cwd"] for c in fake.calls() if c["argv"][0] == "apply"]
    assert len(folders) == 2 and len(set(folders)) == 2
    assert list((tmp_path / "work" / "probes").iterdir()) == []  # both thrown away


def test_identity_configurations_read_each_cloud_s_caller():
    documents = {cloud: renderer(cloud).identity_config() for cloud in ("aws", "gcp", "azure")}
    assert list(documents["aws"]["data"]) == ["aws_caller_identity"]
    assert list(documents["gcp"]["data"]) == ["google_client_config",
                                              "google_client_openid_userinfo"]
    assert list(documents["azure"]["data"]) == ["azurerm_client_config"]
    for document in documents.values():
        assert set(document) == {"terraform", "provider", "data", "output"}
        assert "resource" not in document  # read-only: nothing is created


def test_quota_limits_and_group_size_through_probe_configurations(fake, tmp_path):
    d = deployment()
    tf = engine(fake, tmp_path)
    region = d.region
    family = terraform_aws_probes.quota_wanted([aws_candidates()[0]])[0][1]
    limits = {f"{region}|{family}": 64}
    fake.scenario({"apply": {"events": [event("outputs", outputs={
        "limits": {"value": limits}, "running": {"value": 2}})]}})
    assert tf.quota_limits("aws", [aws_candidates()[0]]) == [
        QuotaLimit("aws", region, family, "vcpus", 64.0)]
    assert tf.group_size(stack_ref(d.service, d.candidate_id), d) == 2
    assert not (tmp_path / "work" / "probes").exists() or \
        list((tmp_path / "work" / "probes").iterdir()) == []  # thrown away


def test_both_engines_count_the_same_aws_instances_as_capacity():
    """The drift that was: Pulumi counted `running`, Terraform `pending, running`. Both ask
    for the instances with the candidate's tags in GROUP_STATES now."""
    d = deployment()
    answers = {"aws:ec2/getInstances:getInstances": {
        "id": "x", "ids": [], "region": d.region, "instanceTags": {}, "privateIps": [],
        "publicIps": [], "ipv6Addresses": []}}
    (pulumi_call,) = record(pulumi_aws_probes.group_program(d, None),
                            invoke_answers=answers).invokes
    terraform_call = terraform_aws_probes.size_config(d, None, None)["data"]["aws_instances"][
        "group"]
    assert pulumi_call["args"]["instanceStateNames"] == \
        terraform_call["instance_state_names"] == ["pending", "running"]
    assert pulumi_call["args"]["instanceTags"] == terraform_call["instance_tags"]


def test_a_missing_terraform_is_one_clear_error(tmp_path):
    with pytest.raises(TerraformMissing, match="not installed"):
        TerraformEngine(tmp_path, binary="no-such-terraform-binary")


def test_generate_terraform_writes_both_files_without_secrets(tmp_path):
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="gcp"), model=inputs.model)
    options = {"rank": None, "pick": None, "stack": "demo", "stacks_dir": str(tmp_path),
               "choices": Choices(gcp_project="my-project")}
    first = generate_terraform(inputs, plan, **options)
    texts = {name: (tmp_path / "demo" / name).read_bytes() for name in (MAIN_FILE, VARS_FILE)}
    again = generate_terraform(inputs, plan, **options)
    assert first.path == again.path == tmp_path / "demo" / MAIN_FILE
    assert texts == {name: (tmp_path / "demo" / name).read_bytes()
                     for name in (MAIN_FILE, VARS_FILE)}
    values = json.loads(texts[VARS_FILE])
    assert values["project"] == "my-project" and "hf_token" not in values
    assert json.loads(texts[MAIN_FILE])["variable"]["hf_token"]["sensitive"] is True
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == sorted([
        ".gitignore", MAIN_FILE, VARS_FILE])  # the .gitignore keeps the state out of git
