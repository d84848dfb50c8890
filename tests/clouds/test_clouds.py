"""Each cloud module answers every question the cloud-independent code asks, within the limits
the cloud's API sets."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from servestack import clouds
from servestack.clouds.base import QuotaScope


@dataclass(frozen=True)
class Placed:
    """A candidate as the cloud rules read it (servestack.planner.Candidate's fields)."""

    cloud: str
    region: str
    instance_type: str
    accelerator: str
    accelerator_count: int
    use_spot: bool = False
    zone: str | None = None
    zones: tuple[str, ...] = ()
    attached_gpu: str | None = None


def test_the_registry_knows_the_three_clouds_and_refuses_others():
    assert clouds.NAMES == ("aws", "gcp", "azure")
    assert all(clouds.get(name).name == name for name in clouds.NAMES)
    with pytest.raises(KeyError, match="known: aws, gcp, azure"):
        clouds.get("oci")


@pytest.mark.parametrize("name", clouds.NAMES)
def test_every_skypilot_disk_tier_has_a_volume_type(name):
    schema = json.loads((Path(clouds.__file__).parents[1] / "spec_schema.json").read_text())
    tiers = set(_find(schema, "disk_tier")["enum"])
    assert tiers and set(clouds.get(name).disk_types) == tiers


def _find(node, key: str):
    """The first schema under a property called `key`."""
    if isinstance(node, dict):
        if key in node.get("properties", {}):
            return node["properties"][key]
        for value in node.values():
            found = _find(value, key)
            if found is not None:
                return found
    if isinstance(node, list):
        for value in node:
            found = _find(value, key)
            if found is not None:
                return found
    return None


@pytest.mark.parametrize(("name", "region", "good", "bad"), [
    ("aws", "us-east-1", "us-east-1a", "us-east-1-a"),
    ("gcp", "us-central1", "us-central1-a", "us-central1a"),
    ("azure", "eastus", "2", "4"),
])
def test_zone_shapes(name, region, good, bad):
    cloud = clouds.get(name)
    assert cloud.zone_matches(region, good)
    assert not cloud.zone_matches(region, bad)


def test_secret_names_fit_each_store_and_differ_per_service_and_candidate():
    aws, gcp, azure = (clouds.get(n) for n in clouds.NAMES)
    ssm = aws.secret_ref("mixtral", "aws-a").name
    assert ssm.startswith("/servestack/mixtral/") and len(ssm) <= 2048
    secret_id = gcp.secret_ref("mixtral", "gcp-a").name
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,255}", secret_id)
    # Key Vault names are global across Azure: each engine draws a random suffix for the
    # vault (tests/terraform/test_azure.py), so the reference names no vault
    assert azure.secret_ref("a-very-long-service-name", "azure-a").vault is None
    assert aws.secret_ref("mixtral", "aws-b").name != ssm
    assert gcp.secret_ref("other", "gcp-a").name != secret_id


def test_quota_families_name_the_buckets_each_cloud_counts():
    aws, gcp, azure = (clouds.get(n) for n in clouds.NAMES)
    assert aws.quota_families(Placed("aws", "us-east-1", "p5.48xlarge", "H100", 8,
                                     use_spot=True)) == ("aws-P5-spot",)
    assert aws.quota_families(Placed("aws", "us-east-1", "g6.48xlarge", "L4", 8)) == \
        ("aws-G-ondemand",)
    a2 = Placed("gcp", "us-central1", "a2-ultragpu-2g", "A100-80GB", 2, use_spot=True)
    assert gcp.quota_families(a2) == ("PREEMPTIBLE_NVIDIA_A100_80GB_GPUS", "A2_CPUS")
    n1 = Placed("gcp", "us-central1", "n1-standard-8", "T4", 4, attached_gpu="nvidia-tesla-t4")
    assert gcp.quota_families(n1)[0] == "NVIDIA_T4_GPUS"
    nd = Placed("azure", "eastus", "Standard_ND96asr_v4", "A100", 8)
    assert azure.quota_families(nd) == ("azure-ndasrv4",)
    assert azure.quota_families(Placed("azure", "eastus", "Standard_ND96asr_v4", "A100", 8,
                                       use_spot=True)) == ("azure-lowpriority",)


def test_quota_scope_reads_what_each_cloud_says():
    aws, gcp, azure = (clouds.get(n) for n in clouds.NAMES)
    spot_count = next(r for r in aws.failure_rules if r.code == "MaxSpotInstanceCountExceeded")
    g6 = Placed("aws", "us-east-1", "g6.48xlarge", "L4", 8)
    assert aws.quota_scope(spot_count, "Max spot instance count exceeded", g6) == \
        QuotaScope("us-east-1", "aws-G-spot", True)
    quota = next(r for r in gcp.failure_rules if r.code == "QUOTA_EXCEEDED")
    a2 = Placed("gcp", "us-central1", "a2-ultragpu-2g", "A100-80GB", 2)
    text = "Quota 'NVIDIA_A100_80GB_GPUS' exceeded. Limit: 0.0 in region us-east5."
    assert gcp.quota_scope(quota, text, a2) == QuotaScope("us-east5", "NVIDIA_A100_80GB_GPUS")
    assert gcp.quota_scope(quota, "Quota 'GPUS' exceeded. Limit: 4.0 globally.", a2) == \
        QuotaScope()
    cores = next(r for r in azure.failure_rules if r.error_class == "quota")
    nd = Placed("azure", "eastus", "Standard_ND96asr_v4", "A100", 8)
    assert azure.quota_scope(cores, "exceeding quota limits of Total Regional Cores", nd) == \
        QuotaScope("eastus", spot=False)


def test_gcp_capacity_errors_name_a_zone_the_candidate_can_do_without():
    gcp = clouds.get("gcp")
    a2 = Placed("gcp", "us-central1", "a2-ultragpu-2g", "A100-80GB", 2,
                zones=("us-central1-a", "us-central1-c"))
    text = "ZONE_RESOURCE_POOL_EXHAUSTED ... zones/us-central1-c/instances/x"
    assert gcp.zone_in_error(text, a2) == "us-central1-c"
    assert gcp.zone_in_error("zones/us-east1-b/...", a2) is None  # not one of its zones


def test_a_group_uses_the_zones_its_candidate_carries():
    azure = clouds.get("azure")
    nd = Placed("azure", "eastus", "Standard_ND96asr_v4", "A100", 8, zones=("1", "2", "3"))
    assert azure.zones_for(nd) == ("1", "2", "3")  # the catalog gave the region's zones
    assert azure.zones_for(Placed("azure", "eastus", "x", "A100", 1, zone="2")) == ("2",)


@pytest.mark.parametrize("name", clouds.NAMES)
def test_failure_rules_cover_every_class_the_loop_acts_on(name):
    classes = {r.error_class for r in clouds.get(name).failure_rules}
    assert {"capacity", "quota", "credentials", "permission", "throttled", "transient",
            "invalid-config"} <= classes


def test_aws_subnets_filter_by_zone_name_or_zone_id():
    from servestack.clouds.aws import is_zone_name, subnet_zone_filter

    assert is_zone_name("us-east-1a", "us-east-1") and not is_zone_name("use1-az1", "us-east-1")
    assert not is_zone_name("us-east-1a", "us-west-2")
    assert subnet_zone_filter("us-east-1", ("us-east-1a",)) == \
        {"name": "availability-zone", "values": ["us-east-1a"]}
    assert subnet_zone_filter("us-east-1", ("use1-az1", "use1-az2")) == \
        {"name": "availability-zone-id", "values": ["use1-az1", "use1-az2"]}
    with pytest.raises(ValueError, match="mix"):
        subnet_zone_filter("us-east-1", ("us-east-1a", "use1-az1"))


# --- AWS: the stack's network and TLS ------------------------------------------------------------

# The texts AWS and the AWS provider print when a region's network quota is used up (code,
# then message), as reported in hashicorp/terraform#6018, terraform-aws-modules/
# terraform-aws-vpc#429, redpanda-data/redpanda#14734, and CloudFormation's form (message only)
# in CloudSmith-Delivery-Troubleshooting/backend-infra-cdk#36 and eksctl-io/eksctl#1646.
AWS_NETWORK_QUOTA_TEXTS = {
    "VpcLimitExceeded": "Error: creating EC2 VPC: operation error EC2: CreateVpc, https "
                        "response error StatusCode: 400, RequestID: 9559ac7e, api error "
                        "VpcLimitExceeded: The maximum number of VPCs has been reached.",
    "AddressLimitExceeded": "Error: creating EC2 EIP: AddressLimitExceeded: The maximum number "
                            "of addresses has been reached.\n\tstatus code: 400, request id: "
                            "c50044a5-e721-4092-815b-4d45e8399ef8",
    "InternetGatewayLimitExceeded": "Resource handler returned message: \"The maximum number of "
                                    "internet gateways has been reached. (Service: Ec2, Status "
                                    "Code: 400, Request ID: fe23f9df)\"",
    "NatGatewayLimitExceeded": "Error: creating EC2 NAT Gateway: operation error EC2: "
                               "CreateNatGateway, https response error StatusCode: 400, api "
                               "error NatGatewayLimitExceeded: The maximum number of NAT "
                               "gateways has been reached.",
}


@pytest.mark.parametrize("code", sorted(AWS_NETWORK_QUOTA_TEXTS))
def test_aws_network_quota_moves_the_loop_to_another_region(code):
    from servestack.deploy.failures import classify
    from tests.fakes import PLAN

    c = next(p for p in PLAN.candidates if p.cloud == "aws")
    failure = classify("aws", [AWS_NETWORK_QUOTA_TEXTS[code]], c)
    assert (failure.error_class, failure.code, failure.action) == ("quota", code, "block")
    block, = failure.blocks
    # the whole region, whatever the GPU family or spot setting: its network is what ran out
    assert (block.cloud, block.region, block.family, block.spot) == ("aws", c.region, None, None)
    other = next(p for p in PLAN.candidates if p.cloud == "aws" and p.region != c.region)
    assert block.applies(c) and not block.applies(other)


def _aws_deployment():
    from tests.fakes import PLAN, build

    aws = [c for c in PLAN.candidates if c.cloud == "aws"]
    return build(aws[0], aws)


def test_aws_refuses_a_domain_without_its_hosted_zone():
    from dataclasses import replace

    from servestack.deployment.model import Tls
    from servestack.errors import UserError
    d = _aws_deployment()
    with pytest.raises(UserError, match="--dns-zone") as refused:
        clouds.get("aws").check(replace(d, tls=Tls("llm.example.com")))
    assert refused.value.exit_code == 2 and "Route 53 hosted zone" in str(refused.value)
    clouds.get("aws").check(replace(d, tls=Tls("llm.example.com", "Z0123456789ABCDEFGHIJ")))
    clouds.get("aws").check(d)  # no TLS: nothing to refuse


def test_aws_subnets_are_carved_from_the_stack_vpc_without_overlap():
    import ipaddress
    from dataclasses import replace

    from servestack.clouds.aws import subnet_cidr

    d = _aws_deployment()
    vpc = ipaddress.ip_network(d.network.vnet)
    blocks = [subnet_cidr(d, tier, i) for tier in ("public", "private") for i in range(8)]
    assert len(set(blocks)) == 16 and all(ipaddress.ip_network(b).subnet_of(vpc)
                                          for b in blocks)
    assert subnet_cidr(replace(d, ssh_cidrs=("192.0.2.1/32",)), "public", 0) == blocks[0]
    with pytest.raises(ValueError, match="room for 8"):
        subnet_cidr(d, "private", 8)
