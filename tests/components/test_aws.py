"""components/aws.py under Pulumi's mock runtime: the real inputs each AWS resource would get."""

from __future__ import annotations

import base64
import gc
import itertools
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cache

import pulumi
import pytest
import yaml

from servestack import clouds, planner
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Deployment
from servestack.inputs import load_inputs
from servestack.pulumi.preview import SECRET_MASK, Recording, preview_json, record
from servestack.terraform import render
from tests.fakes import FROZEN_CATALOG, name_tags
from tests.terraform.scaling_sim import Alarm, snake_keys
from tests.terraform.test_aws import (
    assert_fallback_followed_the_deficit,
    drive_fallback,
    scaled,
)

AWS_CLOUD = clouds.get("aws")

TOKEN = "hf_TESTtokenMustNeverLeak0123456789"
SERVICE = "servestack:aws:Service"
ASG = "aws:autoscaling/group:Group"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
SG = "aws:ec2/securityGroup:SecurityGroup"
TG = "aws:lb/targetGroup:TargetGroup"
ALB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
PARAMETER = "aws:ssm/parameter:Parameter"
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/rolePolicy:RolePolicy"
PROFILE = "aws:iam/instanceProfile:InstanceProfile"


@cache
def _planned(spot: bool) -> Deployment:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="aws", spot=spot), model=inputs.model)
    return build_deployment(inputs.spec, plan.candidates[0], plan.candidates, model=inputs.model)


def on_demand() -> Deployment:
    d = _planned(False)
    assert not d.use_spot and len(d.zones) >= 2 and len(d.instances) >= 2
    return d


def spot() -> Deployment:
    d = _planned(True)
    assert d.use_spot and d.zones == () and len(d.instances) >= 2  # every zone that sells them
    return d


def single(d: Deployment) -> Deployment:
    """One instance type, one replica."""
    return replace(d, instances=d.instances[:1], min_replicas=1, max_replicas=1,
                   desired_replicas=1, on_demand_base=0)


def run(d: Deployment, token: str | None = TOKEN, region: str | None = None) -> Recording:
    from servestack.components.aws import Service

    def program() -> None:
        service = Service("svc", d, hf_token=pulumi.Output.secret(token) if token else None)
        pulumi.export("endpoint", service.endpoint)
        pulumi.export("groupName", service.group_name)
        pulumi.export("groupId", service.group_id)

    return record(program, config={"aws:region": region or d.region})


@cache
def recorded(kind: str) -> Recording:
    return run({"on_demand": on_demand, "spot": spot}[kind]())


@contextmanager
def expect_failure(match: str) -> Iterator[None]:
    """The program must fail with `match`; then drop the runtime's failed futures here and now.

    Left to the garbage collector, they are logged at a random later point, and CPython 3.11's
    traceback carets re-enter the `ast` module, which breaks any `ast.parse` running then
    ("AST constructor recursion depth mismatch" in pytest's own reporting).
    """
    asyncio_log = logging.getLogger("asyncio")
    with pytest.raises(Exception, match=match):
        yield
    level = asyncio_log.level
    asyncio_log.setLevel(logging.CRITICAL)
    try:
        gc.collect()
    finally:
        asyncio_log.setLevel(level)


def user_data(rec: Recording) -> str:
    return base64.b64decode(rec.one(LT).inputs["userData"]).decode()


def groups(rec: Recording) -> tuple[dict, dict]:
    by_name = {r.name: r.inputs for r in rec.of_type(SG)}
    return by_name["svc-fw-alb"], by_name["svc-fw-vm"]


# --- firewall ---------------------------------------------------------------------------------

def test_alb_security_group_opens_only_the_listener_port_to_allowed_cidrs():
    d = replace(on_demand(), allow_cidrs=("198.51.100.0/24", "203.0.113.7/32"))
    alb, _ = groups(run(d))
    assert alb["ingress"] == [{"protocol": "tcp", "fromPort": d.listener_port,
                               "toPort": d.listener_port, "description": "clients to the listener",
                               "cidrBlocks": ["198.51.100.0/24", "203.0.113.7/32"]}]
    egress, = alb["egress"]
    assert (egress["protocol"], egress["fromPort"], egress["toPort"]) == \
        ("tcp", d.service_port, d.service_port)
    assert egress["cidrBlocks"] == ["172.31.0.0/16"]  # the default VPC's CIDR (canned)


def test_instances_take_the_service_port_only_from_the_alb_and_no_ssh_by_default():
    rec = recorded("on_demand")
    d = on_demand()
    _, vm = groups(rec)
    rule, = vm["ingress"]
    assert (rule["protocol"], rule["fromPort"], rule["toPort"]) == \
        ("tcp", d.service_port, d.service_port)
    assert rule["securityGroups"] == ["svc-fw-alb-id"]
    assert "cidrBlocks" not in rule
    assert vm["egress"] == [{"protocol": "-1", "fromPort": 0, "toPort": 0,
                             "cidrBlocks": ["0.0.0.0/0"],
                             "description": "model and package downloads"}]
    assert rec.one(LT).inputs["vpcSecurityGroupIds"] == ["svc-fw-vm-id"]


def test_ssh_opens_port_22_to_the_given_cidrs_only():
    d = replace(on_demand(), ssh_cidrs=("192.0.2.10/32", "2001:db8::/64"))
    _, vm = groups(run(d))
    ssh = [r for r in vm["ingress"] if r["fromPort"] == 22]
    assert ssh == [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "description": "SSH",
                    "cidrBlocks": ["192.0.2.10/32"], "ipv6CidrBlocks": ["2001:db8::/64"]}]
    assert len(vm["ingress"]) == 2


# --- load balancer ----------------------------------------------------------------------------

def test_alb_target_group_and_listener():
    rec = recorded("on_demand")
    d = on_demand()
    alb = rec.one(ALB).inputs
    assert alb["loadBalancerType"] == "application"
    assert alb["internal"] is False
    assert alb["idleTimeout"] == d.idle_timeout_seconds == 900
    assert alb["dropInvalidHeaderFields"] is True
    assert alb["securityGroups"] == ["svc-fw-alb-id"]
    tg = rec.one(TG).inputs
    assert (tg["port"], tg["protocol"], tg["targetType"]) == (d.service_port, "HTTP", "instance")
    assert tg["vpcId"] == "vpc-0preview"
    assert tg["healthCheck"] == {
        "enabled": True, "protocol": "HTTP", "path": "/health", "port": str(d.service_port),
        "interval": 10, "timeout": 5, "healthyThreshold": 2, "unhealthyThreshold": 3,
        "matcher": "200"}
    listener = rec.one(LISTENER).inputs
    assert (listener["port"], listener["protocol"]) == (80, "HTTP")
    assert listener["defaultActions"] == [{"type": "forward",
                                          "targetGroupArn": f"arn:preview:{TG}:svc-tg"}]
    assert listener["loadBalancerArn"] == f"arn:preview:{ALB}:svc-alb"


def test_target_group_drains_for_as_long_as_a_stream_may_idle():
    d = on_demand()
    assert recorded("on_demand").one(TG).inputs["deregistrationDelay"] == \
        d.idle_timeout_seconds == 900
    assert run(replace(d, idle_timeout_seconds=300)).one(TG).inputs["deregistrationDelay"] == 300


def test_health_check_follows_the_deployment():
    d = on_demand()
    health = replace(d.health, path="/ready", interval_seconds=15, timeout_seconds=7,
                     healthy_threshold=4, unhealthy_threshold=5, grace_period_seconds=600)
    rec = run(replace(d, health=health, idle_timeout_seconds=300))
    check = rec.one(TG).inputs["healthCheck"]
    assert (check["path"], check["interval"], check["timeout"]) == ("/ready", 15, 7)
    assert (check["healthyThreshold"], check["unhealthyThreshold"]) == (4, 5)
    assert rec.one(ASG).inputs["healthCheckGracePeriod"] == 600
    assert rec.one(ALB).inputs["idleTimeout"] == 300


# --- network ----------------------------------------------------------------------------------

def _subnet_zone_filters(rec: Recording,
                         by: str = "availability-zone-id") -> list[list[str] | None]:
    """Per subnet lookup, the zones it filters on with `by` (None: the whole region)."""
    calls = [i for i in rec.invokes if i["token"] == "aws:ec2/getSubnets:getSubnets"]
    found = []
    for call in calls:
        filters = {f["name"]: f["values"] for f in call["args"]["filters"]}
        assert filters.pop("vpc-id") == ["vpc-0preview"]
        assert filters.pop("default-for-az") == ["true"]
        assert set(filters) <= {by}
        found.append(filters.get(by))
    return found


def test_multi_zone_group_and_alb_use_the_deployment_zone_ids():
    rec = recorded("on_demand")
    d = on_demand()
    assert _subnet_zone_filters(rec) == [list(d.zones)]  # one lookup serves both
    assert [i["args"] for i in rec.invokes if i["token"] == "aws:ec2/getVpc:getVpc"] == \
        [{"default": True}]
    ids = ["subnet-0preview-a", "subnet-0preview-b", "subnet-0preview-c"]
    assert rec.one(ASG).inputs["vpcZoneIdentifiers"] == ids
    assert rec.one(ALB).inputs["subnets"] == ids


OFFERINGS = "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings"
# EC2's answer for a region where the types sell in three zones (one listed per type).
OFFERED = {OFFERINGS: {"id": "us-east-1", "locations": ["use1-az4", "use1-az1", "use1-az4",
                                                        "use1-az6"],
                       "instanceTypes": [], "locationTypes": []}}


def test_spot_group_spans_every_zone_that_sells_its_types_while_the_alb_spans_the_region():
    d = spot()
    rec = record(lambda: _service(d), config={"aws:region": d.region}, invoke_answers=OFFERED)
    lookup, = [i["args"] for i in rec.invokes if i["token"] == OFFERINGS]
    assert lookup == {"locationType": "availability-zone-id", "filters": [
        {"name": "instance-type", "values": [i.instance_type for i in d.instances]}]}
    filters = _subnet_zone_filters(rec)
    assert sorted(filters, key=str) == sorted([["use1-az1", "use1-az4", "use1-az6"], None],
                                              key=str)
    assert len(rec.one(ASG).inputs["vpcZoneIdentifiers"]) > 1


def _service(d: Deployment) -> None:
    from servestack.components.aws import Service

    Service("svc", d)


def test_zone_name_keeps_the_group_in_the_subnet_the_account_names_so():
    d = replace(spot(), zones=(f"{spot().region}a",))  # pinned by a spec's `zone: us-east-1a`
    filters = _subnet_zone_filters(run(d), by="availability-zone")
    assert sorted(filters, key=str) == sorted([list(d.zones), None], key=str)


def test_alb_needs_two_subnets_in_the_region():
    from servestack.components.aws import Service

    d = spot()
    with expect_failure("fewer than 2 default subnets"):
        record(lambda: Service("svc", d), config={"aws:region": d.region},
               invoke_answers={"aws:ec2/getSubnets:getSubnets": {"ids": ["subnet-only"]}})


# --- instance group ---------------------------------------------------------------------------

def test_on_demand_group_with_several_types_keeps_rank_order():
    rec = recorded("on_demand")
    d = on_demand()
    asg = rec.one(ASG).inputs
    assert (asg["minSize"], asg["maxSize"], asg["desiredCapacity"]) == \
        (d.min_replicas, d.max_replicas, d.desired_replicas) == (2, 2, 2)
    assert asg["healthCheckType"] == "ELB"
    assert asg["healthCheckGracePeriod"] == d.health.grace_period_seconds == 1200
    assert asg["capacityRebalance"] is False
    assert asg["waitForCapacityTimeout"] == "15m"
    assert asg["targetGroupArns"] == [f"arn:preview:{TG}:svc-tg"]
    policy = asg["mixedInstancesPolicy"]
    assert [o["instanceType"] for o in policy["launchTemplate"]["overrides"]] == \
        [i.instance_type for i in d.instances]
    assert policy["launchTemplate"]["launchTemplateSpecification"]["launchTemplateId"] == \
        "svc-group-lt-id"
    assert policy["instancesDistribution"] == {
        "onDemandAllocationStrategy": "prioritized", "onDemandBaseCapacity": 0,
        "onDemandPercentageAboveBaseCapacity": 100}


def test_spot_group_distribution():
    rec = recorded("spot")
    d = spot()
    asg = rec.one(ASG).inputs
    assert asg["capacityRebalance"] is True
    overrides = asg["mixedInstancesPolicy"]["launchTemplate"]["overrides"]
    assert [o["instanceType"] for o in overrides] == [i.instance_type for i in d.instances]
    assert len(overrides) == len(d.instances) >= 2
    assert asg["mixedInstancesPolicy"]["instancesDistribution"] == {
        "onDemandAllocationStrategy": "prioritized", "onDemandBaseCapacity": 0,
        "onDemandPercentageAboveBaseCapacity": 0,
        "spotAllocationStrategy": "capacity-optimized-prioritized"}


def test_three_spot_replicas_with_an_on_demand_base():
    d = replace(spot(), min_replicas=3, max_replicas=3, desired_replicas=3, on_demand_base=1)
    asg = run(d).one(ASG).inputs
    assert (asg["minSize"], asg["maxSize"], asg["desiredCapacity"]) == (3, 3, 3)
    distribution = asg["mixedInstancesPolicy"]["instancesDistribution"]
    assert distribution["onDemandBaseCapacity"] == 1
    assert distribution["onDemandPercentageAboveBaseCapacity"] == 0


def test_one_type_one_replica_on_demand():
    d = single(on_demand())
    rec = run(d)
    asg = rec.one(ASG).inputs
    assert (asg["minSize"], asg["maxSize"], asg["desiredCapacity"]) == (1, 1, 1)
    assert asg["mixedInstancesPolicy"]["launchTemplate"]["overrides"] == \
        [{"instanceType": d.primary.instance_type}]
    assert rec.one(LT).inputs["instanceType"] == d.primary.instance_type


def test_template_change_rolls_new_instances_in_before_old_ones_leave():
    d = on_demand()
    asg = recorded("on_demand").one(ASG).inputs
    assert asg["instanceRefresh"] == {"strategy": "Rolling", "preferences": {
        "minHealthyPercentage": 100, "maxHealthyPercentage": 200,
        "instanceWarmup": str(d.health.grace_period_seconds), "skipMatching": True}}
    # the group tracks the template's version number (a new version is a change of the group)
    spec = asg["mixedInstancesPolicy"]["launchTemplate"]["launchTemplateSpecification"]
    assert spec["launchTemplateId"] == "svc-group-lt-id" and spec["version"] != "$Latest"
    assert recorded("on_demand").one(LT).inputs["updateDefaultVersion"] is True


def test_group_tags_propagate_to_instances():
    d = on_demand()
    tags = recorded("on_demand").one(ASG).inputs["tags"]
    assert all(t["propagateAtLaunch"] is True for t in tags)
    by_key = {t["key"]: t["value"] for t in tags}
    assert by_key["servestack-service"] == d.service
    assert by_key["servestack-candidate"] == d.candidate_id
    assert by_key["managed-by"] == "servestack"


def test_launch_template_imdsv2_encrypted_root_volume_and_dlami():
    rec = recorded("on_demand")
    d = on_demand()
    lt = rec.one(LT).inputs
    assert lt["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                     "httpPutResponseHopLimit": 1}
    assert lt["blockDeviceMappings"] == [{"deviceName": "/dev/sda1", "ebs": {
        "volumeSize": d.disk_size_gb, "volumeType": "gp3", "encrypted": "true",
        "deleteOnTermination": "true"}}]
    assert lt["imageId"] == "ami-0preview0000000000"
    assert lt["instanceType"] == d.primary.instance_type
    assert lt["tagSpecifications"][0]["resourceType"] == "volume"
    assert lt["tagSpecifications"][0]["tags"]["servestack-candidate"] == d.candidate_id
    ami, = [i["args"] for i in rec.invokes if i["token"] == "aws:ec2/getAmi:getAmi"]
    assert ami["owners"] == ["amazon"] and ami["mostRecent"] is True
    name, = [f["values"] for f in ami["filters"] if f["name"] == "name"]
    assert name == ["Deep Learning OSS Nvidia Driver AMI GPU PyTorch * (Ubuntu 22.04) *"]


def test_disk_size_and_image_override():
    d = replace(on_demand(), disk_size_gb=512, image=AWS_CLOUD.image_ref("ami-0123456789abcdef0"))
    rec = run(d)
    lt = rec.one(LT).inputs
    assert lt["imageId"] == "ami-0123456789abcdef0"
    assert lt["blockDeviceMappings"][0]["ebs"]["volumeSize"] == 512
    ami, = [i["args"] for i in rec.invokes if i["token"] == "aws:ec2/getAmi:getAmi"]
    assert ami["filters"] == [{"name": "image-id", "values": ["ami-0123456789abcdef0"]}]


def test_io2_disk_gets_provisioned_iops():
    d = replace(on_demand(), disk_type="io2", disk_size_gb=20,
                disk_iops=AWS_CLOUD.disk_iops("io2", 20))
    lt = run(d).one(LT).inputs
    ebs = lt["blockDeviceMappings"][0]["ebs"]
    assert (ebs["volumeType"], ebs["iops"], ebs["encrypted"]) == ("io2", 10000, "true")


def test_user_data_is_cloud_config_with_tensor_parallel_size():
    for kind, d in (("on_demand", on_demand()), ("spot", spot())):
        text = user_data(recorded(kind))
        assert text.startswith("#cloud-config\n"), kind
        assert isinstance(yaml.safe_load(text), dict), kind
        assert re.search(rf"^\s*SERVESTACK_TP\w*={d.tensor_parallel_size}$", text, re.M), kind
        assert re.search(rf"^\s*SERVESTACK_SECRET_NAME={d.secret.name}$", text, re.M), kind


# --- token ------------------------------------------------------------------------------------

def test_token_goes_to_an_ssm_secure_string_and_nowhere_else():
    for kind in ("on_demand", "spot"):
        rec = recorded(kind)
        everything = json.dumps({"preview": preview_json(rec), "invokes": rec.invokes})
        assert TOKEN not in everything
        assert TOKEN not in user_data(rec)
        parameter = rec.one(PARAMETER).inputs
        assert parameter["value"] == SECRET_MASK
        assert parameter["type"] == "SecureString"
        assert parameter["keyId"] == "alias/aws/ssm"
        assert parameter["name"].startswith("/servestack/mixtral/")
        assert parameter["name"].endswith("/hf-token")


def test_instance_role_reads_only_the_token_parameter():
    rec = recorded("on_demand")
    trust = json.loads(rec.one(ROLE).inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    statements = json.loads(rec.one(POLICY).inputs["policy"])["Statement"]
    assert {s["Action"] for s in statements} == {"ssm:GetParameter", "kms:Decrypt"}
    assert all(s["Effect"] == "Allow" for s in statements)
    read, = [s for s in statements if s["Action"] == "ssm:GetParameter"]
    name = rec.one(PARAMETER).inputs["name"]
    assert read["Resource"] == f"arn:aws:ssm:us-east-1:123456789012:parameter{name}"
    decrypt, = [s for s in statements if s["Action"] == "kms:Decrypt"]
    assert decrypt["Condition"]["StringEquals"] == {"kms:ViaService":
                                                    "ssm.us-east-1.amazonaws.com"}
    assert decrypt["Condition"]["ForAnyValue:StringEquals"] == \
        {"kms:ResourceAliases": "alias/aws/ssm"}
    profile = rec.one(PROFILE)
    assert profile.inputs["role"] == "svc-vm-role"
    assert rec.one(LT).inputs["iamInstanceProfile"] == \
        {"arn": f"arn:preview:{PROFILE}:svc-vm-profile"}


def test_no_secret_means_no_parameter_and_no_instance_role():
    rec = run(replace(on_demand(), secret=None))
    for token in (PARAMETER, ROLE, POLICY, PROFILE):
        assert rec.of_type(token) == []
    assert "iamInstanceProfile" not in rec.one(LT).inputs
    assert TOKEN not in json.dumps(preview_json(rec))


def test_secret_without_token_still_grants_read_but_creates_no_parameter():
    rec = run(on_demand(), token=None)
    assert rec.of_type(PARAMETER) == []
    assert len(rec.of_type(POLICY)) == 1


# --- tree, outputs, region --------------------------------------------------------------------

def test_every_resource_has_a_parent_inside_the_service_tree():
    for kind in ("on_demand", "spot"):
        rec = recorded(kind)
        by_urn = {r.urn: r for r in rec.resources}
        service = rec.one(SERVICE)
        assert "pulumi:pulumi:Stack" in service.parent
        components = {r.type for r in rec.resources if not r.custom}
        assert components >= {"servestack:aws:Firewall", "servestack:aws:LoadBalancer",
                              "servestack:aws:InstanceGroup", "servestack:aws:TokenSecret",
                              "servestack:aws:InstanceRole"}
        for r in rec.resources:
            if r is service:
                continue
            node = r
            while node is not service:
                assert node.parent in by_urn, f"{r.name}: parent {node.parent} outside the tree"
                node = by_urn[node.parent]
            if r.custom:
                assert not by_urn[r.parent].custom  # custom resources hang off components


def test_outputs():
    rec = recorded("on_demand")
    assert rec.outputs == {"endpoint": "http://svc-alb.preview.invalid:80",
                           "groupName": "svc-group-asg", "groupId": "svc-group-asg-id"}


def test_every_taggable_resource_carries_the_deployment_tags():
    d = on_demand()
    rec = recorded("on_demand")
    for token in (SG, ALB, TG, LISTENER, LT, PARAMETER, ROLE, PROFILE):
        for r in rec.of_type(token):
            assert r.inputs["tags"]["servestack-candidate"] == d.candidate_id, r.name
            assert r.inputs["tags"]["servestack-stack"] == d.stack, r.name


def test_probes_tell_two_stacks_of_one_candidate_apart():
    from servestack.components.aws import group_program, sweep_program

    answers = {"aws:ec2/getInstances:getInstances": {
        "id": "x", "ids": [], "region": "us-east-1", "instanceTags": {}, "privateIps": [],
        "publicIps": [], "ipv6Addresses": []},
        "aws:resourcegroupstaggingapi/getResources:getResources": {
            "id": "x", "region": "us-east-1", "resourceTagMappingLists": []}}
    for stack in ("blue", "green"):
        d = replace(on_demand(), stack=stack)
        wanted = {"servestack-service": d.service, "servestack-candidate": d.candidate_id,
                  "servestack-stack": stack}
        size, = record(group_program(d, None), invoke_answers=answers).invokes
        assert size["args"]["instanceTags"] == wanted
        tagging, live = record(sweep_program(d, []), invoke_answers=answers).invokes
        assert {f["key"]: f["values"] for f in tagging["args"]["tagFilters"]} == \
            {k: [v] for k, v in wanted.items()}
        assert live["args"]["instanceTags"] == wanted


def test_region_must_match_the_provider_region():
    for d in (on_demand(), replace(on_demand(), secret=None)):
        with expect_failure("aws:region is us-west-2"):
            run(d, region="us-west-2")


def _fixed_names(inputs: dict) -> set[str]:
    """The names a resource's inputs fix: `name`, `namePrefix` and every Name tag (a tags map,
    or the group's tag list)."""
    found = {inputs[k] for k in ("name", "namePrefix") if k in inputs}
    return found | name_tags(inputs)


def test_two_services_and_two_stacks_share_no_physical_name():
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="aws", spot=False), model=inputs.model)
    names = {}
    for service in ("mixtral", "other"):
        for stack in ("blue", "green"):
            d = build_deployment(inputs.spec, plan.candidates[0], plan.candidates,
                                 model=inputs.model, service_name=service, stack=stack)
            rec = run(d)
            # what AWS names from a prefix, plus a unique suffix, starts with the scope
            for token in (SG, LT, ASG, ROLE, PROFILE):
                for r in rec.of_type(token):
                    assert r.inputs["namePrefix"].startswith(f"{d.scope}-"), r.name
            names[service, stack] = set().union(*(_fixed_names(r.inputs)
                                                  for r in rec.resources if r.custom))
    for one, other in itertools.combinations(names, 2):
        assert names[one] and not names[one] & names[other], (one, other)


def test_alb_and_target_group_names_leave_room_for_the_random_suffix():
    from servestack.components.aws import Service

    d = replace(on_demand(), service="a-twenty-char-servic")
    rec = record(lambda: Service(d.service, d), config={"aws:region": d.region})
    for token in (ALB, TG):
        name = rec.one(token).name
        assert len(name) + len("-1234567") <= 32, name


def test_program_reads_the_token_from_stack_config_as_a_secret():
    from servestack.pulumi.program import main

    d = spot()
    rec = record(main, config={"servestack:deployment": json.dumps(d.to_config()),
                               "servestack:hfToken": TOKEN, "aws:region": d.region},
                 secret_keys=["servestack:hfToken"])
    assert TOKEN not in json.dumps({"preview": preview_json(rec), "invokes": rec.invokes})
    assert rec.one(PARAMETER).inputs["value"] == SECRET_MASK
    assert rec.outputs["endpoint"] == f"http://{d.service}-alb.preview.invalid:80"
    assert rec.outputs["instance_group_name"] == rec.one(ASG).name


# --- autoscaling, spot spread, on-demand fallback (issue 11) ---------------------------------

SCALING = "aws:autoscaling/policy:Policy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def recorded_scaled(metric: str | None = None, secrets: bool = True,
                    **changes) -> tuple[Deployment, Recording, dict[str, list[str]]]:
    """The scaled spec's deployment recorded, and each resource's ignore_changes as the
    engine receives them (the mock monitor's RegisterResource request)."""
    from pulumi.runtime import mocks as pulumi_mocks

    d = replace(scaled(metric, secrets=secrets), **changes)
    ignored: dict[str, list[str]] = {}
    original = pulumi_mocks.MockMonitor.RegisterResource

    def register(self, request):
        ignored[request.name] = list(request.ignoreChanges)
        return original(self, request)

    pulumi_mocks.MockMonitor.RegisterResource = register
    try:
        rec = run(d, token=TOKEN if secrets else None)
    finally:
        pulumi_mocks.MockMonitor.RegisterResource = original
    return d, rec, ignored


def by_name(rec: Recording, token: str) -> dict[str, dict]:
    return {r.name: r.inputs for r in rec.of_type(token)}


def test_scaled_group_is_bounded_and_pulumi_up_leaves_its_desired_capacity_alone():
    d, rec, ignored = recorded_scaled()
    asg = by_name(rec, ASG)["svc-group-asg"]
    assert (asg["minSize"], asg["maxSize"], asg["desiredCapacity"]) == (1, 3, 1)
    assert ignored["svc-group-asg"] == ["desiredCapacity"]
    assert asg["defaultInstanceWarmup"] == 120
    assert asg["enabledMetrics"] == ["GroupDesiredCapacity", "GroupInServiceInstances"]
    assert asg["metricsGranularity"] == "1Minute"
    assert asg["capacityRebalance"] is True
    fixed = run(on_demand())  # no replica_policy: nothing scales, nothing is ignored
    assert fixed.of_type(SCALING) == [] and fixed.of_type(ALARM) == []
    assert "enabledMetrics" not in fixed.one(ASG).inputs


def test_qps_scales_out_on_alb_requests_per_target_per_minute():
    _, rec, _ = recorded_scaled()
    policy = by_name(rec, SCALING)["svc-scale-scale-out"]
    assert policy["autoscalingGroupName"] == "svc-group-asg"
    assert (policy["policyType"], policy["estimatedInstanceWarmup"]) == \
        ("TargetTrackingScaling", 120)
    config = policy["targetTrackingConfiguration"]
    assert (config["targetValue"], config["disableScaleIn"]) == (150, True)  # 2.5/s per VM
    assert config["predefinedMetricSpecification"]["predefinedMetricType"] == \
        "ALBRequestCountPerTarget"
    # the label joins the ALB's and target group's arn_suffix outputs, which the offline
    # mock leaves unknown (the Terraform test checks the joined expression)
    assert config["predefinedMetricSpecification"]["resourceLabel"] == \
        "[unknown until deployed]"


def test_vllm_gauge_scales_out_on_the_replicas_metric_per_group():
    _, rec, _ = recorded_scaled("vllm-waiting")
    config = by_name(rec, SCALING)["svc-scale-scale-out"]["targetTrackingConfiguration"]
    assert config["targetValue"] == 5
    assert config["customizedMetricSpecification"] == {
        "metricName": "requests_waiting", "namespace": "Servestack/vLLM", "statistic": "Average",
        "metricDimensions": [{"name": "AutoScalingGroupName", "value": "svc-group-asg"}]}
    alarm = by_name(rec, ALARM)["svc-scale-scale-in-alarm"]
    gauge, = [q for q in alarm["metricQueries"] if q["id"] == "gauge"]
    assert gauge["metric"]["dimensions"] == {"AutoScalingGroupName": "svc-group-asg"}


def test_replicas_that_ship_a_gauge_may_put_that_namespace_only_and_read_their_tags():
    for secrets in (True, False):
        _, rec, _ = recorded_scaled("vllm-kv-cache", secrets=secrets)
        template = rec.one(LT).inputs
        assert template["metadataOptions"]["instanceMetadataTags"] == "enabled"
        assert template["iamInstanceProfile"] == {"arn": f"arn:preview:{PROFILE}:svc-vm-profile"}
        policies = by_name(rec, POLICY)
        statement, = json.loads(policies["svc-vm-put-metrics"]["policy"])["Statement"]
        assert statement["Action"] == "cloudwatch:PutMetricData"
        assert statement["Condition"] == {
            "StringEquals": {"cloudwatch:namespace": "Servestack/vLLM"}}
        assert ("svc-vm-read-token" in policies) is secrets
    _, qps, _ = recorded_scaled()
    assert "instanceMetadataTags" not in qps.one(LT).inputs["metadataOptions"]
    assert "svc-vm-put-metrics" not in {r.name for r in qps.resources}


def test_spot_plan_keeps_its_base_on_demand_and_the_fallback_group_is_on_demand_only():
    d, rec, ignored = recorded_scaled()
    groups = by_name(rec, ASG)
    spot_group, od = groups["svc-group-asg"], groups["svc-od-asg"]
    distribution = spot_group["mixedInstancesPolicy"]["instancesDistribution"]
    assert (distribution["onDemandBaseCapacity"],
            distribution["onDemandPercentageAboveBaseCapacity"]) == (1, 0)
    assert od["mixedInstancesPolicy"]["instancesDistribution"] == {
        "onDemandAllocationStrategy": "prioritized", "onDemandBaseCapacity": 0,
        "onDemandPercentageAboveBaseCapacity": 100}
    assert (od["minSize"], od["maxSize"], od["desiredCapacity"]) == (0, 2, 0)
    assert ignored["svc-od-asg"] == ["desiredCapacity"]
    assert od["waitForCapacityTimeout"] == "0"
    for same in ("targetGroupArns", "vpcZoneIdentifiers", "healthCheckType",
                 "healthCheckGracePeriod", "instanceRefresh", "tags"):
        assert od[same] == spot_group[same], same
    assert od["mixedInstancesPolicy"]["launchTemplate"]["overrides"] == \
        spot_group["mixedInstancesPolicy"]["launchTemplate"]["overrides"]


def scaled_by(rec: Recording, group: str) -> list[tuple[Alarm, dict]]:
    """(alarm, policy) pairs, with Terraform's argument names, whose policy scales `group`."""
    policies = {f"arn:preview:{SCALING}:{r.name}": snake_keys(r.inputs)
                for r in rec.of_type(SCALING) if r.inputs["autoscalingGroupName"] == group}
    return [(Alarm(snake_keys(r.inputs)), policies[r.inputs["alarmActions"][0]])
            for r in rec.of_type(ALARM) if r.inputs["alarmActions"][0] in policies]


def test_fallback_group_follows_the_spot_deficit_up_and_back_to_zero():
    d, rec, _ = recorded_scaled()
    rules = scaled_by(rec, "svc-od-asg")
    assert len(rules) == 2
    high = by_name(rec, ASG)["svc-od-asg"]["maxSize"]
    assert_fallback_followed_the_deficit(drive_fallback(rules, high, group="svc-group-asg"))


def test_both_engines_build_the_same_alarms_and_policies():
    d, rec, _ = recorded_scaled("vllm-waiting")
    resources = render(d)["resource"]
    pulumi_names = {"svc-scale-scale-in-alarm": "scale_in",
                    "svc-od-short-alarm": "fallback_short", "svc-od-back-alarm": "fallback_back"}
    for name, inputs in by_name(rec, ALARM).items():
        ours, theirs = snake_keys(inputs), resources["aws_cloudwatch_metric_alarm"][
            pulumi_names[name]]
        for key in ("comparison_operator", "threshold", "evaluation_periods",
                    "datapoints_to_alarm", "treat_missing_data"):
            assert ours[key] == theirs[key], (name, key)
        assert ours["name"] == theirs["alarm_name"]
        assert [q.get("expression") for q in ours["metric_query"]] == \
            [q.get("expression") for q in theirs["metric_query"]]
    for name, inputs in by_name(rec, SCALING).items():
        ours = snake_keys(inputs)
        theirs, = [p for p in resources["aws_autoscaling_policy"].values()
                   if p["name"] == ours["name"]]
        assert ours.get("step_adjustment") == theirs.get("step_adjustment"), name
        assert ours.get("adjustment_type") == theirs.get("adjustment_type"), name
