"""components/aws.py under Pulumi's mock runtime: the real inputs each AWS resource would get."""

from __future__ import annotations

import base64
import gc
import gzip
import itertools
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
from pathlib import Path

import pulumi
import pytest
import yaml

from servestack import clouds, planner
from servestack.bootstrap import USER_DATA_LIMIT
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Deployment, Tls
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
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
IGW = "aws:ec2/internetGateway:InternetGateway"
EIP = "aws:ec2/eip:Eip"
NAT = "aws:ec2/natGateway:NatGateway"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ROUTE = "aws:ec2/route:Route"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
CERT = "aws:acm/certificate:Certificate"
VALIDATION = "aws:acm/certificateValidation:CertificateValidation"
RECORD = "aws:route53/record:Record"
API_KEY = "pulumi-python:dynamic:Resource"
ZONES = "aws:index/getAvailabilityZones:getAvailabilityZones"
# What the region's AZ lookup answers (a real `pulumi up` asks EC2); the deployment's own
# zone is excluded by the lookup itself, so the answer holds only others.
OTHER_ZONES = {ZONES: {"id": "us-east-1", "names": ["us-east-1c", "us-east-1d"],
                       "zoneIds": ["use1-az4", "use1-az6"], "groupNames": ["us-east-1"]}}


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
    # every zone the plan offers the group's types on spot in (build.py fixes them at plan time)
    assert d.use_spot and len(d.zones) >= 2 and len(d.instances) >= 2
    return d


def one_zone() -> Deployment:
    """The spot group held to one zone (the plan offers its types in that zone only)."""
    return replace(spot(), zones=spot().zones[:1])


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

    return record(program, config={"aws:region": region or d.region}, invoke_answers=OTHER_ZONES)


@cache
def recorded(kind: str) -> Recording:
    return run({"on_demand": on_demand, "spot": spot, "one_zone": one_zone}[kind]())


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


def sent_user_data(rec: Recording) -> bytes:
    """The launch template's user data as EC2 gets it (base64 removed): gzip'd."""
    return base64.b64decode(rec.one(LT).inputs["userData"])


def user_data(rec: Recording) -> str:
    return gzip.decompress(sent_user_data(rec)).decode()


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
    assert egress["cidrBlocks"] == [d.network.vnet] == ["10.20.0.0/16"]  # the stack's VPC


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
    nic, = rec.one(LT).inputs["networkInterfaces"]
    assert nic["securityGroups"] == ["svc-fw-vm-id"] and "vpcSecurityGroupIds" not in \
        rec.one(LT).inputs


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
    assert tg["vpcId"] == "svc-net-vpc-id"
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

def _tier(rec: Recording, tier: str) -> list:
    """The tier's subnets in index order (the mocks record them in completion order)."""
    found = [r for r in rec.of_type(SUBNET) if f"-{tier}-" in r.name]
    return sorted(found, key=lambda r: int(r.name.rsplit("-", 1)[1]))


def _subnets(rec: Recording, tier: str) -> list[dict]:
    return [r.inputs for r in _tier(rec, tier)]


def _subnet_ids(rec: Recording, tier: str) -> list[str]:
    return [f"{r.name}-id" for r in _tier(rec, tier)]  # the mocks' ids: name + "-id"


def test_each_stack_gets_its_own_vpc_with_subnets_carved_from_it():
    rec = recorded("on_demand")
    d = on_demand()
    vpc = rec.one(VPC).inputs
    assert vpc["cidrBlock"] == d.network.vnet == "10.20.0.0/16"
    assert vpc["enableDnsSupport"] is True and vpc["enableDnsHostnames"] is True
    public, private = _subnets(rec, "public"), _subnets(rec, "private")
    # one public and one private subnet per deployment zone, by zone ID, /20 each, no overlap
    assert [s["availabilityZoneId"] for s in public] == \
        [s["availabilityZoneId"] for s in private] == list(d.zones)
    cidrs = [s["cidrBlock"] for s in public + private]
    assert cidrs[0] == "10.20.0.0/20" and private[0]["cidrBlock"] == "10.20.128.0/20"
    assert len(set(cidrs)) == len(cidrs) and all(c.endswith("/20") for c in cidrs)
    assert all(s["vpcId"] == "svc-net-vpc-id" and s["mapPublicIpOnLaunch"] is False
               for s in public + private)
    assert not any(i["token"] == ZONES for i in rec.invokes)  # two zones or more: no lookup
    # the VPC's default security group keeps no rule
    default, = rec.of_type("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert "ingress" not in default.inputs and "egress" not in default.inputs


def test_gpu_vms_sit_in_private_subnets_without_a_public_address():
    rec = recorded("on_demand")
    lt, asg = rec.one(LT).inputs, rec.one(ASG).inputs
    nic, = lt["networkInterfaces"]
    assert nic["associatePublicIpAddress"] == "false" and nic["deviceIndex"] == 0
    assert asg["vpcZoneIdentifiers"] == _subnet_ids(rec, "private")
    assert rec.one(ALB).inputs["subnets"] == _subnet_ids(rec, "public")


def test_spot_group_spans_the_planned_zones_in_private_subnets_and_looks_nothing_up():
    """The plan fixes a spot group's zones (every zone it offers the types on spot): one
    private subnet each, by zone ID, and no deploy-time offerings lookup."""
    d = spot()
    rec = recorded("spot")
    private = _subnets(rec, "private")
    assert [s["availabilityZoneId"] for s in private] == list(d.zones)
    assert len(rec.one(ASG).inputs["vpcZoneIdentifiers"]) == len(d.zones) >= 2
    assert not [i for i in rec.invokes if "InstanceTypeOfferings" in i["token"]]
    # the on-demand fallback group stands in for spot VMs in those same private subnets
    scaled_d, scaled_rec, _ = recorded_scaled()
    private = {f"{r.name}-id" for r in scaled_rec.of_type(SUBNET) if "-private-" in r.name}
    assert len(private) == len(scaled_d.zones) >= 2
    assert set(by_name(scaled_rec, ASG)["svc-od-asg"]["vpcZoneIdentifiers"]) == private


def _routes(rec: Recording) -> dict[str, dict]:
    return {r.name: r.inputs for r in rec.of_type(ROUTE)}


def test_private_subnets_reach_the_internet_through_one_nat_gateway():
    rec = recorded("on_demand")
    d = on_demand()
    nat, eip = rec.one(NAT), rec.one(EIP)  # one, whatever the number of zones
    assert eip.inputs["domain"] == "vpc"
    assert nat.inputs["allocationId"] == "svc-net-nat-ip-id"
    assert nat.inputs["subnetId"] == "svc-net-public-0-id"
    assert nat.inputs["connectivityType"] == "public"
    routes = _routes(rec)
    assert routes["svc-net-private-default"] == {
        "routeTableId": "svc-net-private-rt-id", "destinationCidrBlock": "0.0.0.0/0",
        "natGatewayId": "svc-net-nat-id"}
    assert routes["svc-net-public-default"] == {
        "routeTableId": "svc-net-public-rt-id", "destinationCidrBlock": "0.0.0.0/0",
        "gatewayId": "svc-net-igw-id"}
    links = {r.inputs["subnetId"]: r.inputs["routeTableId"] for r in rec.of_type(ASSOCIATION)}
    for i in range(len(d.zones)):
        assert links[f"svc-net-private-{i}-id"] == "svc-net-private-rt-id"
        assert links[f"svc-net-public-{i}-id"] == "svc-net-public-rt-id"
    assert rec.one(IGW).inputs["vpcId"] == "svc-net-vpc-id"


def test_pinned_zone_adds_a_second_az_for_the_alb_only():
    rec = recorded("one_zone")
    d = one_zone()
    lookup, = [i["args"] for i in rec.invokes if i["token"] == ZONES]
    assert lookup["state"] == "available"
    assert lookup["filters"] == [{"name": "zone-type", "values": ["availability-zone"]}]
    assert lookup["excludeZoneIds"] == list(d.zones)
    public, private = _subnets(rec, "public"), _subnets(rec, "private")
    assert [s["availabilityZoneId"] for s in public] == [*d.zones, "use1-az4"]
    assert [s["availabilityZoneId"] for s in private] == list(d.zones)
    assert len(rec.one(ALB).inputs["subnets"]) == 2
    assert len(rec.one(ASG).inputs["vpcZoneIdentifiers"]) == 1


def test_zone_name_pins_subnets_by_name_and_excludes_it_by_name():
    d = replace(spot(), zones=(f"{spot().region}a",))  # pinned by a spec's `zone: us-east-1a`
    rec = run(d)
    lookup, = [i["args"] for i in rec.invokes if i["token"] == ZONES]
    assert lookup["excludeNames"] == [f"{d.region}a"] and "excludeZoneIds" not in lookup
    public = _subnets(rec, "public")
    assert [s["availabilityZone"] for s in public] == [f"{d.region}a", "us-east-1c"]
    assert all("availabilityZoneId" not in s for s in public)


def test_alb_needs_a_second_az_in_the_region():
    from servestack.components.aws import Service

    d = one_zone()
    with expect_failure("other available AZs"):
        record(lambda: Service("svc", d), config={"aws:region": d.region},
               invoke_answers={ZONES: {"id": d.region, "names": [], "zoneIds": []}})


def test_ssh_puts_the_vms_in_public_subnets_with_addresses_and_no_nat():
    d = replace(on_demand(), ssh_cidrs=("192.0.2.10/32",))
    rec = run(d)
    nic, = rec.one(LT).inputs["networkInterfaces"]
    assert nic["associatePublicIpAddress"] == "true"
    assert rec.one(ASG).inputs["vpcZoneIdentifiers"] == _subnet_ids(rec, "public")
    assert _subnets(rec, "private") == [] and rec.of_type(NAT) == rec.of_type(EIP) == []


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


def test_launch_template_user_data_is_the_golden_document_gzipped():
    # tests/bootstrap/golden/mixtral-aws.yaml is on_demand()'s bootstrap
    golden = (Path(__file__).parents[1] / "bootstrap" / "golden" / "mixtral-aws.yaml").read_text()
    sent = sent_user_data(recorded("on_demand"))
    assert sent[:2] == b"\x1f\x8b" and sent[4:8] == bytes(4)  # gzip, no time in its header
    assert gzip.decompress(sent).decode() == golden
    assert len(sent) <= USER_DATA_LIMIT < len(golden.encode())  # the bytes sent are checked


# --- token ------------------------------------------------------------------------------------

def test_token_goes_to_an_ssm_secure_string_and_nowhere_else():
    for kind in ("on_demand", "spot"):
        rec = recorded(kind)
        everything = json.dumps({"preview": preview_json(rec), "invokes": rec.invokes})
        assert TOKEN not in everything
        assert TOKEN not in user_data(rec)
        parameter = _parameter(rec, "token")
        assert parameter["value"] == SECRET_MASK
        assert parameter["type"] == "SecureString"
        assert parameter["keyId"] == "alias/aws/ssm"
        assert parameter["name"].startswith("/servestack/mixtral/")
        assert parameter["name"].endswith("/hf-token")


def _parameter(rec: Recording, which: str) -> dict:
    """The SSM parameter of the token ("token") or of the API key ("api-key")."""
    return next(r.inputs for r in rec.of_type(PARAMETER) if r.name.endswith(f"-{which}-param"))


def test_instance_role_reads_only_the_stack_parameters():
    rec = recorded("on_demand")
    trust = json.loads(rec.one(ROLE).inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    statements = json.loads(rec.one(POLICY).inputs["policy"])["Statement"]
    assert {s["Action"] for s in statements} == {"ssm:GetParameter", "kms:Decrypt"}
    assert all(s["Effect"] == "Allow" for s in statements)
    read, = [s for s in statements if s["Action"] == "ssm:GetParameter"]
    names = [_parameter(rec, "token")["name"], _parameter(rec, "api-key")["name"]]
    assert read["Resource"] == [f"arn:aws:ssm:us-east-1:123456789012:parameter{n}"
                                for n in names]
    decrypt, = [s for s in statements if s["Action"] == "kms:Decrypt"]
    assert decrypt["Condition"]["StringEquals"] == {"kms:ViaService":
                                                    "ssm.us-east-1.amazonaws.com"}
    assert decrypt["Condition"]["ForAnyValue:StringEquals"] == \
        {"kms:ResourceAliases": "alias/aws/ssm"}
    profile = rec.one(PROFILE)
    assert profile.inputs["role"] == "svc-vm-role"
    assert rec.one(LT).inputs["iamInstanceProfile"] == \
        {"arn": f"arn:preview:{PROFILE}:svc-vm-profile"}


def test_instance_role_has_session_manager_instead_of_an_open_ssh_port():
    rec = recorded("on_demand")
    attachment = rec.one(ATTACHMENT).inputs
    assert attachment == {"role": "svc-vm-role",
                          "policyArn": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}
    _, vm = groups(rec)
    assert [r["fromPort"] for r in vm["ingress"]] == [on_demand().service_port]


def test_no_secret_and_no_key_means_no_parameter_but_still_session_manager():
    rec = run(replace(on_demand(), secret=None, api_key=None))
    assert rec.of_type(PARAMETER) == rec.of_type(POLICY) == rec.of_type(API_KEY) == []
    assert len(rec.of_type(ROLE)) == len(rec.of_type(ATTACHMENT)) == 1
    assert rec.one(LT).inputs["iamInstanceProfile"] == \
        {"arn": f"arn:preview:{PROFILE}:svc-vm-profile"}
    assert TOKEN not in json.dumps(preview_json(rec))


def test_secret_without_token_still_grants_read_but_creates_no_parameter():
    rec = run(replace(on_demand(), api_key=None), token=None)
    assert rec.of_type(PARAMETER) == []
    assert len(rec.of_type(POLICY)) == 1


# --- API key ----------------------------------------------------------------------------------

def test_api_key_is_drawn_once_and_kept_as_a_secure_string_the_vms_may_read():
    rec = recorded("on_demand")
    d = on_demand()
    key = rec.one(API_KEY)
    assert key.name == "svc-api-key-value"
    parameter = _parameter(rec, "api-key")
    assert parameter["name"] == d.api_key.name and parameter["name"].endswith("/api-key")
    assert (parameter["type"], parameter["keyId"]) == ("SecureString", "alias/aws/ssm")
    assert parameter["value"] == SECRET_MASK
    assert parameter["tags"]["servestack-stack"] == d.stack


def test_service_exposes_the_key_as_a_secret_and_where_it_is_kept():
    from servestack.components import build_service

    d = on_demand()

    def program() -> None:
        outputs = build_service("svc", d, hf_token=pulumi.Output.secret(TOKEN))
        pulumi.export("api_key", outputs.api_key)
        pulumi.export("api_key_ref", outputs.api_key_ref)

    rec = record(program, config={"aws:region": d.region})
    assert rec.outputs == {"api_key": SECRET_MASK, "api_key_ref": d.api_key.name}


def test_no_api_key_means_no_key_no_parameter_and_no_read_grant_on_it():
    from servestack.components import build_service

    d = replace(on_demand(), api_key=None)
    rec = run(d)
    assert rec.of_type(API_KEY) == [] and [r.name for r in rec.of_type(PARAMETER)] == \
        ["svc-token-param"]
    read, = [s for s in json.loads(rec.one(POLICY).inputs["policy"])["Statement"]
             if s["Action"] == "ssm:GetParameter"]
    assert read["Resource"] == [f"arn:aws:ssm:us-east-1:123456789012:parameter{d.secret.name}"]
    seen = {}
    record(lambda: seen.update(vars(build_service("svc", d))), config={"aws:region": d.region})
    assert seen["api_key"] is None and seen["api_key_ref"] is None


# --- TLS --------------------------------------------------------------------------------------

DOMAIN, HOSTED_ZONE = "llm.example.com", "Z0123456789ABCDEFGHIJ"


@cache
def tls_recording() -> Recording:
    return run(replace(on_demand(), tls=Tls(DOMAIN, HOSTED_ZONE)))


def _listeners(rec: Recording) -> dict[str, dict]:
    return {r.name: r.inputs for r in rec.of_type(LISTENER)}


def test_tls_certificate_is_validated_through_the_hosted_zone():
    rec = tls_recording()
    cert = rec.one(CERT).inputs
    assert (cert["domainName"], cert["validationMethod"]) == (DOMAIN, "DNS")
    records = {r.name: r.inputs for r in rec.of_type(RECORD)}
    validation = records["svc-tls-validation"]
    assert validation["zoneId"] == HOSTED_ZONE and validation["allowOverwrite"] is True
    assert validation["ttl"] == 60
    checked = rec.one(VALIDATION).inputs
    assert checked["certificateArn"] == f"arn:preview:{CERT}:svc-tls-cert"


def test_tls_https_listener_forwards_and_http_redirects():
    rec = tls_recording()
    listeners = _listeners(rec)
    https, http = listeners["svc-tls-https"], listeners["svc-http"]
    assert (https["port"], https["protocol"]) == (443, "HTTPS")
    assert https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"
    assert https["defaultActions"] == [{"type": "forward",
                                        "targetGroupArn": f"arn:preview:{TG}:svc-tg"}]
    assert https["loadBalancerArn"] == f"arn:preview:{ALB}:svc-alb"
    assert (http["port"], http["protocol"]) == (80, "HTTP")
    assert http["defaultActions"] == [{"type": "redirect", "redirect": {
        "port": "443", "protocol": "HTTPS", "statusCode": "HTTP_301"}}]


def test_tls_domain_is_an_alias_of_the_alb_and_the_endpoint():
    rec = tls_recording()
    alias = next(r.inputs for r in rec.of_type(RECORD) if r.name == "svc-tls-alias")
    assert (alias["zoneId"], alias["name"], alias["type"]) == (HOSTED_ZONE, DOMAIN, "A")
    target, = alias["aliases"]
    assert target["name"] == "svc-alb.preview.invalid" and target["evaluateTargetHealth"] is True
    assert rec.outputs["endpoint"] == f"https://{DOMAIN}"


def test_tls_opens_443_and_80_to_the_allowed_clients_only():
    d = replace(on_demand(), tls=Tls(DOMAIN, HOSTED_ZONE), allow_cidrs=("198.51.100.0/24",))
    alb, _ = groups(run(d))
    assert [(r["fromPort"], r["toPort"], r["cidrBlocks"]) for r in alb["ingress"]] == \
        [(80, 80, ["198.51.100.0/24"]), (443, 443, ["198.51.100.0/24"])]


def test_without_tls_no_certificate_no_record_and_one_plain_listener():
    rec = recorded("on_demand")
    assert rec.of_type(CERT) == rec.of_type(RECORD) == rec.of_type(VALIDATION) == []
    assert list(_listeners(rec)) == ["svc-http"]


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
                              "servestack:aws:InstanceRole", "servestack:aws:Network",
                              "servestack:aws:ApiKeySecret"}
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
    for token in (SG, ALB, TG, LISTENER, LT, PARAMETER, ROLE, PROFILE, VPC, SUBNET, IGW, EIP,
                  NAT, ROUTE_TABLE):
        assert rec.of_type(token), token
        for r in rec.of_type(token):
            assert r.inputs["tags"]["servestack-candidate"] == d.candidate_id, r.name
            assert r.inputs["tags"]["servestack-stack"] == d.stack, r.name


def test_probes_tell_two_stacks_of_one_candidate_apart():
    from servestack.components.aws import group_program, sweep_program

    answers = {"aws:ec2/getInstances:getInstances": {
        "id": "x", "ids": [], "region": "us-east-1", "instanceTags": {}, "privateIps": [],
        "publicIps": [], "ipv6Addresses": []},
        "aws:resourcegroupstaggingapi/getResources:getResources": {
            "id": "x", "region": "us-east-1", "resourceTagMappingLists": []},
        "aws:ec2/getNatGateways:getNatGateways": {"id": "x", "ids": [], "region": "us-east-1"}}
    for stack in ("blue", "green"):
        d = replace(on_demand(), stack=stack)
        wanted = {"servestack-service": d.service, "servestack-candidate": d.candidate_id,
                  "servestack-stack": stack}
        size, = record(group_program(d, None), invoke_answers=answers).invokes
        assert size["args"]["instanceTags"] == wanted
        tagging, live, nats = record(sweep_program(d, []), invoke_answers=answers).invokes
        assert {f["key"]: f["values"] for f in tagging["args"]["tagFilters"]} == \
            {k: [v] for k, v in wanted.items()}
        assert live["args"]["instanceTags"] == wanted
        # a deleted NAT gateway keeps its tags for a while: only live ones are asked for
        assert nats["args"]["tags"] == wanted
        assert nats["args"]["filters"] == [{"name": "state", "values": ["pending", "available"]}]


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
                 secret_keys=["servestack:hfToken"], invoke_answers=OTHER_ZONES)
    assert TOKEN not in json.dumps({"preview": preview_json(rec), "invokes": rec.invokes})
    assert _parameter(rec, "token")["value"] == SECRET_MASK
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
        # one role for everything: it reads the API key always, the token only when given
        read, = [st for st in json.loads(policies["svc-vm-read-secrets"]["policy"])["Statement"]
                 if st["Action"] == "ssm:GetParameter"]
        assert any(arn.endswith("/hf-token") for arn in read["Resource"]) is secrets
        assert any(arn.endswith("/api-key") for arn in read["Resource"])
        assert len(rec.of_type(ROLE)) == 1 and len(rec.of_type(ATTACHMENT)) == 1
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
