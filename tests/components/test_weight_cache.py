"""--weight-cache in the Pulumi components, under Pulumi's mock runtime: each cloud's bucket
with its privacy settings and the VMs' rights on exactly that bucket."""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import replace
from functools import cache

import pulumi

from servestack import clouds
from servestack.bootstrap import USER_DATA_LIMIT, render_cloud_init
from servestack.deployment.model import Autoscaling, Deployment
from servestack.pulumi.preview import Recording, record
from tests.fakes import weight_cache_deployment

ACCOUNT = "123456789012"  # the mocks' AWS account (servestack.pulumi.preview CANNED_INVOKES)
SUBSCRIPTION = "00000000-0000-0000-0000-000000000003"  # and Azure subscription
PROJECT = "my-project"


def run(d: Deployment, config: dict | None = None) -> Recording:
    def program() -> None:
        from importlib import import_module
        service = import_module(f"servestack.components.{d.cloud}").Service("svc", d)
        pulumi.export("endpoint", service.endpoint)

    return record(program, config=config)


@cache
def recorded(cloud: str, with_cache: bool = True) -> Recording:
    d = weight_cache_deployment(cloud, cache=with_cache, gcp_project=PROJECT)
    return run(d, {"aws:region": d.region} if cloud == "aws" else None)


def test_aws_bucket_and_its_settings():
    rec = recorded("aws")
    d = weight_cache_deployment("aws", gcp_project=PROJECT)
    bucket = rec.one("aws:s3/bucket:Bucket").inputs
    assert bucket["bucket"] == d.weight_cache.bucket(ACCOUNT)
    assert bucket["forceDestroy"] is True
    block = rec.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy",
                                          "ignorePublicAcls", "restrictPublicBuckets"))
    owner = rec.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert owner["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    sse = rec.one("aws:s3/bucketServerSideEncryptionConfiguration:"
                  "BucketServerSideEncryptionConfiguration").inputs
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    versioning = rec.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"] == {"status": "Disabled"}


def test_aws_role_policy_names_that_bucket_only():
    rec = recorded("aws")
    policies = [r for r in rec.of_type("aws:iam/rolePolicy:RolePolicy")
                if r.inputs.get("name") == "weight-cache"]
    assert len(policies) == 1
    document = json.loads(policies[0].inputs["policy"])
    arn = "arn:preview:aws:s3/bucket:Bucket:svc-cache-bucket"  # the mock's ARN of the bucket
    assert {tuple(s["Resource"]) for s in document["Statement"]} == {(arn,), (f"{arn}/*",)}
    role = rec.one("aws:iam/role:Role")
    assert policies[0].inputs["role"] == f"{role.name}-id"


def test_gcp_bucket_and_the_vms_binding_on_it():
    rec = recorded("gcp")
    d = weight_cache_deployment("gcp", gcp_project=PROJECT)
    bucket = rec.one("gcp:storage/bucket:Bucket").inputs
    assert bucket["name"] == d.weight_cache.bucket(PROJECT)
    assert bucket["location"] == d.region.upper()
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["forceDestroy"] is True
    assert bucket["softDeletePolicy"] == {"retentionDurationSeconds": 0}
    # One binding, on this bucket; its member is the VMs' account's `member` output, which
    # the mocks leave unknown (the Terraform test sees the reference itself).
    member = rec.one("gcp:storage/bucketIAMMember:BucketIAMMember").inputs
    assert member["role"] == "roles/storage.objectAdmin"
    assert member["bucket"] == bucket["name"]
    assert not rec.of_type("gcp:storage/bucketIAMBinding:BucketIAMBinding")


def test_azure_account_without_shared_keys_and_the_identitys_role_on_it():
    rec = recorded("azure")
    d = weight_cache_deployment("azure", gcp_project=PROJECT)
    account = rec.one("azure-native:storage:StorageAccount").inputs
    assert account["accountName"] == d.weight_cache.bucket(SUBSCRIPTION)
    assert account["allowSharedKeyAccess"] is False
    assert account["allowBlobPublicAccess"] is False
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["enableHttpsTrafficOnly"] is True
    container = rec.one("azure-native:storage:BlobContainer").inputs
    assert container["containerName"] == "weights" and container["publicAccess"] == "None"
    roles = [r for r in rec.of_type("azure-native:authorization:RoleAssignment")
             if r.inputs["roleDefinitionId"].endswith("ba92f5b4-2d11-453d-a403-e96b0029c9fe")]
    assert len(roles) == 1
    assert roles[0].inputs["scope"] == "svc-cache-account-id"  # the account's id, no wider
    assert roles[0].inputs["principalType"] == "ServicePrincipal"  # the VMs' managed identity


def test_no_flag_no_bucket():
    for cloud, kind in (("aws", "aws:s3/bucket:Bucket"), ("gcp", "gcp:storage/bucket:Bucket"),
                        ("azure", "azure-native:storage:StorageAccount")):
        assert recorded(cloud, with_cache=False).of_type(kind) == []


def test_aws_cache_beside_a_vllm_metric_is_built_and_its_user_data_fits():
    # once refused together (they did not fit as text); gzip'd, they use under 3/4 of 16 KiB
    d = replace(weight_cache_deployment("aws", gcp_project=PROJECT), min_replicas=1,
                max_replicas=3, autoscaling=Autoscaling("vllm-kv-cache", 70.0))
    clouds.get("aws").check(d)
    rec = run(d, {"aws:region": d.region})
    assert rec.one("aws:s3/bucket:Bucket").inputs["bucket"] == d.weight_cache.bucket(ACCOUNT)
    sent = base64.b64decode(rec.one("aws:ec2/launchTemplate:LaunchTemplate").inputs["userData"])
    assert gzip.decompress(sent).decode() == render_cloud_init(d)
    assert len(sent) <= USER_DATA_LIMIT * 3 // 4
