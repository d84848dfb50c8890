"""The classification tables against the real error texts in tests/fixtures/errors/."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from servestack.deploy.failures import (
    Block,
    classify,
    not_ready_failure,
    quota_families,
    timeout_failure,
)
from servestack.planner import Candidate

FIXTURES = Path(__file__).parents[1] / "fixtures" / "errors"


def text(name: str) -> str:
    lines = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("# "))


def candidate(cloud: str, region: str, instance_type: str, *, zone: str | None = None,
              zones: tuple[str, ...] = (), accelerator: str = "A100-80GB", spot: bool = False
              ) -> Candidate:
    return Candidate(
        rank=1, id=f"{cloud}-{zone or region}-{instance_type}-{'spot' if spot else 'ondemand'}",
        cloud=cloud, region=region, zone=zone, zones=zones, instance_type=instance_type,
        accelerator=accelerator, accelerator_count=2, gpu_memory_gib=80, vcpus=24,
        memory_gib=340, use_spot=spot, price_per_hour=5.0, replicas=2,
        total_price_per_hour=10.0, preference=None, attached_gpu=None, source="test",
        price_date="2026-11-24")


AWS = candidate("aws", "us-east-1", "g5.12xlarge", zones=("use1-az1", "use1-az2"),
                accelerator="A10G")
AWS_SPOT = candidate("aws", "us-east-1", "g5.12xlarge", zone="use1-az4", zones=("use1-az4",),
                     accelerator="A10G", spot=True)
GCP = candidate("gcp", "us-central1", "a2-ultragpu-2g", zones=("us-central1-a", "us-central1-c"))
AZURE = candidate("azure", "eastus", "Standard_NC48ads_A100_v4")


@pytest.mark.parametrize("fixture,cloud,cls,code,action", [
    ("aws_insufficient_capacity", "aws", "capacity", "InsufficientInstanceCapacity", "block"),
    ("aws_asg_capacity_ice", "aws", "capacity", "InsufficientInstanceCapacity", "block"),
    ("aws_asg_capacity_timeout", "aws", "capacity", "AsgCapacityTimeout", "block"),
    ("aws_spot_no_capacity", "aws", "capacity", "InsufficientInstanceCapacity", "block"),
    ("aws_vcpu_limit", "aws", "quota", "VcpuLimitExceeded", "block"),
    ("aws_max_spot_count", "aws", "quota", "MaxSpotInstanceCountExceeded", "block"),
    ("aws_no_credentials", "aws", "credentials", "NoCredentials", "block"),
    ("aws_unauthorized", "aws", "permission", "UnauthorizedOperation", "block"),
    ("aws_throttled", "aws", "throttled", "RequestLimitExceeded", "retry"),
    ("aws_invalid_ami", "aws", "invalid-config", "InvalidParameter", "stop"),
    ("gcp_zone_exhausted", "gcp", "capacity", "ZONE_RESOURCE_POOL_EXHAUSTED", "block"),
    ("gcp_zone_exhausted_details", "gcp", "capacity", "ZONE_RESOURCE_POOL_EXHAUSTED", "block"),
    ("gcp_quota_region", "gcp", "quota", "QUOTA_EXCEEDED", "block"),
    ("gcp_quota_all_regions", "gcp", "quota", "GPUS_ALL_REGIONS", "block"),
    ("gcp_no_credentials", "gcp", "credentials", "NoCredentials", "block"),
    ("gcp_permission", "gcp", "permission", "PermissionDenied", "block"),
    ("gcp_rate_limit", "gcp", "throttled", "rateLimitExceeded", "retry"),
    ("gcp_backend_error", "gcp", "transient", "ServerError", "retry"),
    ("azure_sku_not_available", "azure", "capacity", "SkuNotAvailable", "block"),
    ("azure_allocation_failed", "azure", "capacity", "AllocationFailed", "block"),
    ("azure_overconstrained", "azure", "capacity", "OverconstrainedAllocationRequest", "block"),
    ("azure_quota", "azure", "quota", "OperationNotAllowed", "block"),
    ("azure_regional_quota", "azure", "quota", "OperationNotAllowed", "block"),
    ("azure_no_credentials", "azure", "credentials", "NoCredentials", "block"),
    ("azure_authorization_failed", "azure", "permission", "AuthorizationFailed", "block"),
    ("pulumi_program_error", "gcp", "invalid-config", "ProgramError", "stop"),
])
def test_every_fixture_is_classified(fixture, cloud, cls, code, action):
    c = {"aws": AWS, "gcp": GCP, "azure": AZURE}[cloud]
    failure = classify(cloud, [text(fixture)], c)
    assert (failure.error_class, failure.code, failure.action) == (cls, code, action)
    assert failure.message and failure.text


def test_aws_capacity_blocks_the_named_type_in_the_region():
    failure = classify("aws", [text("aws_asg_capacity_ice")], AWS,
                       ("g5.12xlarge", "g6e.12xlarge"), {"g6e.12xlarge": ("L40S", 4)})
    (block,) = failure.blocks
    assert block == Block("aws", "us-east-1", None, ("g5.12xlarge",), spot=False,
                          error_class="capacity", code="InsufficientInstanceCapacity")
    assert "sufficient g5.12xlarge capacity" in failure.message
    assert block.applies(AWS)  # AWS: one capacity pool per instance type and AZ
    assert not block.applies(replace(AWS, instance_type="g5.48xlarge", accelerator_count=8))
    assert not block.applies(replace(AWS, region="us-east-2"))
    assert block.label == "aws us-east-1 g5.12xlarge on-demand"


def test_gcp_and_azure_capacity_block_the_gpu_pool():
    (block,) = classify("azure", [text("azure_sku_not_available")], AZURE).blocks
    assert (block.accelerator, block.min_count, block.instance_types) == ("A100-80GB", 2, None)
    bigger = replace(AZURE, instance_type="Standard_NC96ads_A100_v4", accelerator_count=4)
    smaller = replace(AZURE, instance_type="Standard_NC24ads_A100_v4", accelerator_count=1)
    other = replace(AZURE, instance_type="Standard_ND96isr_H100_v5", accelerator="H100")
    assert block.applies(bigger) and not block.applies(smaller) and not block.applies(other)
    assert block.label == "azure eastus A100-80GB:2+ on-demand"


def test_aws_spot_capacity_blocks_the_types_spot_in_the_whole_region():
    # the spot group spread over the region's zones: every zone's spot candidate of those
    # types is the same group, and fails alike; on-demand and other types stay open
    (block,) = classify("aws", [text("aws_spot_no_capacity")], AWS_SPOT).blocks
    assert (block.zone, block.spot, block.region) == (None, True, AWS_SPOT.region)
    other_zone = replace(AWS_SPOT, zone="use1-az6", id="other-zone")
    assert block.applies(other_zone)
    assert not block.applies(replace(other_zone, use_spot=False))
    assert not block.applies(replace(other_zone, instance_type="p5.48xlarge"))
    pinned = replace(AWS_SPOT, zone="us-east-1b")
    (named,) = classify("aws", [text("aws_spot_no_capacity")], pinned).blocks
    assert named.zone == "us-east-1b"


def test_asg_timeout_without_a_type_blocks_every_type_tried():
    (block,) = classify("aws", [text("aws_asg_capacity_timeout")], AWS,
                        ("g5.12xlarge", "g6e.12xlarge")).blocks
    assert block.instance_types == ("g5.12xlarge", "g6e.12xlarge")


def test_gpu_pools_of_a_mixed_group():
    blocks = classify("gcp", [text("gcp_zone_exhausted")], GCP,
                      ("a2-ultragpu-2g", "a3-highgpu-2g", "x9-unknown"),
                      {"a3-highgpu-2g": ("H100", 2)}).blocks
    assert [(b.accelerator, b.min_count, b.instance_types) for b in blocks] == [
        ("A100-80GB", 2, None), ("H100", 2, None), (None, None, ("x9-unknown",))]
    assert {b.zone for b in blocks} == {"us-central1-a"}


def test_gcp_capacity_blocks_the_zone_it_names():
    (block,) = classify("gcp", [text("gcp_zone_exhausted")], GCP).blocks
    assert (block.region, block.zone, block.accelerator, block.min_count) == \
        ("us-central1", "us-central1-a", "A100-80GB", 2)


def test_gcp_zone_not_in_the_candidate_means_region():
    (block,) = classify("gcp", [text("gcp_zone_exhausted_details")], GCP).blocks
    assert block.zone is None  # us-central1-b is not one of the candidate's zones


def test_aws_vcpu_quota_blocks_the_whole_family_in_the_region():
    (block,) = classify("aws", [text("aws_vcpu_limit")], AWS).blocks
    assert block.family == "aws-G-ondemand" and block.region == "us-east-1"
    g6 = replace(AWS, instance_type="g6.48xlarge")
    p4 = replace(AWS, instance_type="p4d.24xlarge", accelerator="A100")
    assert block.applies(g6) and not block.applies(p4)
    assert not block.applies(replace(g6, use_spot=True))


def test_max_spot_count_blocks_spot_only():
    (block,) = classify("aws", [text("aws_max_spot_count")], AWS_SPOT).blocks
    assert block.spot is True and block.family == "aws-G-spot"
    assert not block.applies(AWS)


def test_gcp_gpus_all_regions_blocks_the_whole_cloud():
    (block,) = classify("gcp", [text("gcp_quota_all_regions")], GCP).blocks
    assert block == Block("gcp", error_class="quota", code="GPUS_ALL_REGIONS")
    assert block.applies(replace(GCP, region="europe-west4", instance_type="g2-standard-96"))


def test_gcp_regional_gpu_quota_blocks_that_gpu_in_that_region():
    (block,) = classify("gcp", [text("gcp_quota_region")], GCP).blocks
    assert (block.region, block.family) == ("us-central1", "NVIDIA_A100_80GB_GPUS")
    assert block.applies(replace(GCP, instance_type="a2-ultragpu-4g"))
    assert not block.applies(replace(GCP, instance_type="g2-standard-96", accelerator="L4"))
    assert not block.applies(replace(GCP, region="us-east4"))


def test_gcp_rate_limit_is_not_a_quota():
    failure = classify("gcp", [text("gcp_rate_limit")], GCP)
    assert failure.error_class == "throttled" and failure.blocks == ()
    assert failure.scope == "none (retried)"


def test_azure_regional_cores_quota_blocks_on_demand_in_the_region():
    (block,) = classify("azure", [text("azure_regional_quota")], AZURE).blocks
    assert (block.region, block.family, block.spot) == ("eastus", None, False)


def test_azure_family_quota_uses_the_tried_size_family():
    (block,) = classify("azure", [text("azure_quota")], AZURE).blocks
    assert block.family == "azure-ncadsa100v4"
    assert block.applies(replace(AZURE, instance_type="Standard_NC96ads_A100_v4"))
    assert not block.applies(replace(AZURE, instance_type="Standard_ND96asr_v4"))


@pytest.mark.parametrize("fixture,cloud", [("aws_no_credentials", "aws"),
                                           ("gcp_permission", "gcp"),
                                           ("azure_no_credentials", "azure")])
def test_credentials_and_permission_block_the_cloud(fixture, cloud):
    c = {"aws": AWS, "gcp": GCP, "azure": AZURE}[cloud]
    (block,) = classify(cloud, [text(fixture)], c).blocks
    assert block == Block(cloud, error_class=block.error_class, code=block.code)
    assert block.label == cloud


def test_capacity_wins_over_a_wrapping_invalid_template():
    wrapped = ('Code="InvalidTemplateDeployment" Message="The template deployment is not valid" '
               'Details=[{"code":"SkuNotAvailable","message":"The requested VM size for resource '
               "'Following SKUs have failed for Capacity Restrictions: Standard_NC48ads_A100_v4' "
               "is currently not available in location 'eastus'.\"}]")
    assert classify("azure", [wrapped], AZURE).error_class == "capacity"


def test_diagnostics_and_command_text_are_read_together():
    failure = classify("aws", ["error: update failed", text("aws_insufficient_capacity")], AWS)
    assert failure.error_class == "capacity"


def test_unknown_errors_block_the_candidate_and_keep_the_text():
    message = "error: something nobody has seen before happened to mixtral-gpu"
    failure = classify("aws", ["", message], AWS)
    assert (failure.error_class, failure.action) == ("unknown", "block")
    assert failure.message == message and message in failure.text
    (block,) = failure.blocks
    assert block.instance_types == ("g5.12xlarge",) and block.region == "us-east-1"


def test_timeout_and_not_ready_block_the_candidate():
    assert timeout_failure(GCP, 1200, []).blocks[0].applies(GCP)
    failure = not_ready_failure(GCP, "0 of 2 replicas answered")
    assert failure.error_class == "not-ready" and failure.blocks[0].applies(GCP)


def test_block_json_round_trip():
    block = classify("gcp", [text("gcp_zone_exhausted")], GCP).blocks[0]
    assert Block.from_json(block.to_json()) == block


def test_quota_families():
    assert quota_families(replace(GCP, use_spot=True))[0] == "PREEMPTIBLE_NVIDIA_A100_80GB_GPUS"
    assert quota_families(GCP)[1] == "A2_CPUS"
    assert quota_families(replace(AWS, instance_type="p5.48xlarge", use_spot=True)) == \
        ("aws-P5-spot",)
    assert quota_families(replace(AZURE, use_spot=True)) == ("azure-lowpriority",)


@pytest.mark.parametrize("text, code", [
    ("Error: No value for required variable\n\n  on main.tf.json line 1:\n"
     "The root module input variable \"hf_token\" is not set", "PulumiSetup"),
    ("Error: Error acquiring the state lock\n\nError message: resource temporarily unavailable\n"
     "Lock Info:\n  ID: 5c0e...", "StackLocked"),
])
def test_terraform_setup_errors_stop_the_run(text, code):
    failure = classify("aws", [text], AWS)
    assert (failure.error_class, failure.code, failure.action) == ("invalid-config", code, "stop")
