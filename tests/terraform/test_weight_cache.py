"""--weight-cache in the Terraform stacks: the bucket per cloud with its privacy settings, the
VMs' rights on exactly that bucket, and the VMs booting after both; AWS checked by `terraform
validate` against the real provider, GCP and Azure against their providers' argument names."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from servestack.terraform import render
from tests.fakes import (
    needs_terraform_aws,
    terraform_validate,
    unknown_arguments,
    weight_cache_deployment,
)

SCHEMAS = Path(__file__).parents[1] / "fixtures"


def built(cloud: str, cache: bool = True):
    return weight_cache_deployment(cloud, cache=cache)


def resources(cloud: str, cache: bool = True) -> dict:
    return render(built(cloud, cache=cache))["resource"]


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_no_cache_no_bucket(cloud):
    kinds = set(resources(cloud, cache=False))
    assert not kinds & {"aws_s3_bucket", "google_storage_bucket", "azurerm_storage_account"}


def test_aws_bucket_is_private_encrypted_unversioned_and_destroyable():
    found = resources("aws")
    bucket = found["aws_s3_bucket"]["weight_cache"]
    d = built("aws")
    assert bucket["bucket"] == (d.weight_cache.prefix +
                                "${substr(sha256(data.aws_caller_identity.current.account_id),"
                                " 0, 10)}")
    assert bucket["force_destroy"] is True
    block = found["aws_s3_bucket_public_access_block"]["weight_cache"]
    assert all(block[k] is True for k in ("block_public_acls", "block_public_policy",
                                          "ignore_public_acls", "restrict_public_buckets"))
    assert found["aws_s3_bucket_ownership_controls"]["weight_cache"]["rule"] == {
        "object_ownership": "BucketOwnerEnforced"}
    sse = found["aws_s3_bucket_server_side_encryption_configuration"]["weight_cache"]
    assert sse["rule"][0]["apply_server_side_encryption_by_default"] == {
        "sse_algorithm": "AES256"}
    assert found["aws_s3_bucket_versioning"]["weight_cache"]["versioning_configuration"] == {
        "status": "Disabled"}


def test_aws_role_may_touch_that_bucket_only():
    found = resources("aws")
    policy = json.loads(found["aws_iam_role_policy"]["weight_cache"]["policy"])
    arn = "${aws_s3_bucket.weight_cache.arn}"
    scopes = {tuple(s["Resource"]) for s in policy["Statement"]}
    assert scopes == {(arn,), (f"{arn}/*",)}
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                       "s3:AbortMultipartUpload"}
    assert found["aws_iam_role_policy"]["weight_cache"]["role"] == "${aws_iam_role.vm.id}"
    waits = found["aws_autoscaling_group"]["group"]["depends_on"]
    assert "aws_iam_role_policy.weight_cache" in waits


@needs_terraform_aws
def test_aws_cache_passes_terraform_validate(tmp_path):
    terraform_validate([render(built("aws"))], tmp_path)


def _bridged_arguments(resource) -> set[str]:
    """The arguments of a Pulumi resource bridged from the Terraform provider (pulumi_gcp is
    generated from hashicorp/google: the same names, snake_case)."""
    skip = {"self", "__self__", "resource_name", "opts", "__props__"}
    return set(inspect.signature(resource._internal_init).parameters) - skip


def test_gcp_bucket_is_private_regional_and_destroyable():
    import pulumi_gcp as gcp
    found = resources("gcp")
    bucket = found["google_storage_bucket"]["weight_cache"]
    d = built("gcp")
    assert bucket["name"] == d.weight_cache.prefix + "${substr(sha256(var.project), 0, 10)}"
    assert bucket["location"] == d.region.upper()
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["force_destroy"] is True
    assert bucket["soft_delete_policy"] == {"retention_duration_seconds": 0}
    assert set(bucket) <= _bridged_arguments(gcp.storage.Bucket)
    member = found["google_storage_bucket_iam_member"]["weight_cache"]
    assert set(member) <= _bridged_arguments(gcp.storage.BucketIAMMember)
    assert member == {"bucket": "${google_storage_bucket.weight_cache.name}",
                      "role": "roles/storage.objectAdmin",
                      "member": "serviceAccount:${google_service_account.vm.email}"}
    group = found["google_compute_region_instance_group_manager"]["group"]
    assert "google_storage_bucket_iam_member.weight_cache" in group["depends_on"]
    # no project-wide storage role: the bucket's own binding is the VMs' only access
    assert not any("storage" in body.get("role", "")
                   for body in found.get("google_project_iam_member", {}).values())


def test_azure_account_container_and_role_on_that_account_only():
    found = resources("azure")
    d = built("azure")
    account = found["azurerm_storage_account"]["weight_cache"]
    assert account["name"].startswith(d.weight_cache.prefix + "${substr(sha256(")
    assert account["min_tls_version"] == "TLS1_2"
    assert account["allow_nested_items_to_be_public"] is False
    assert account["https_traffic_only_enabled"] is True
    container = found["azurerm_storage_container"]["weight_cache"]
    assert container == {"name": "weights",
                         "storage_account_id": "${azurerm_storage_account.weight_cache.id}",
                         "container_access_type": "private"}
    role = found["azurerm_role_assignment"]["weight_cache"]
    assert role["scope"] == "${azurerm_storage_account.weight_cache.id}"
    assert role["principal_id"] == "${azurerm_user_assigned_identity.vm.principal_id}"
    assert role["role_definition_id"].endswith(
        "/roleDefinitions/ba92f5b4-2d11-453d-a403-e96b0029c9fe")  # Storage Blob Data Contributor
    sets = found.get("azurerm_linux_virtual_machine_scale_set") or \
        found["azurerm_orchestrated_virtual_machine_scale_set"]
    assert all("azurerm_role_assignment.weight_cache" in s["depends_on"] for s in sets.values())


# --- the GCP and Azure arguments against the providers' published schemas -------------------
# tests/fixtures/<provider>_provider_schema.json: the argument trees from the @cdktf/provider-
# google 16.12.1 (google 6.50.0) and @cdktf/provider-azurerm 14.23.1 (azurerm 4.55.0) packages'
# .jsii assemblies, the cache's resources included.

GOOGLE = json.loads((SCHEMAS / "google_provider_schema.json").read_text())["resources"]
AZURERM = json.loads((SCHEMAS / "azurerm_provider_schema.json").read_text())
PROVIDERS = {"gcp": ("google", GOOGLE), "azure": ("azurerm", AZURERM["resources"])}
CACHE_KINDS = {"gcp": {"google_storage_bucket", "google_storage_bucket_iam_member"},
               "azure": {"azurerm_storage_account", "azurerm_storage_container",
                         "azurerm_role_assignment"}}


@pytest.mark.parametrize("cloud", ["gcp", "azure"])
def test_cache_resources_use_only_arguments_the_provider_has(cloud):
    provider, schema = PROVIDERS[cloud]
    found = resources(cloud)
    kinds = {kind for kind in found if kind.startswith(f"{provider}_")}
    assert CACHE_KINDS[cloud] <= kinds
    assert kinds <= set(schema)  # a resource the fixture lacks would go unchecked
    for kind in CACHE_KINDS[cloud]:
        for body in found[kind].values():
            assert unknown_arguments(body, schema[kind], kind) == []


def test_azure_cache_sets_every_argument_azurerm_requires():
    found = resources("azure")
    for kind in CACHE_KINDS["azure"]:
        for body in found[kind].values():
            assert set(AZURERM["required"][kind]) <= set(body), kind


def test_the_container_names_its_account_by_id_not_by_the_deprecated_name():
    # azurerm 4.9.0 added storage_account_id (hashicorp/terraform-provider-azurerm#27733): the
    # container is then made through Resource Manager, not the account's data plane;
    # storage_account_name is deprecated and goes in 5.0.
    container = resources("azure")["azurerm_storage_container"]["weight_cache"]
    assert "storage_account_id" in container and "storage_account_name" not in container
    # azurerm 4.0 renamed enable_https_traffic_only to https_traffic_only_enabled
    account = resources("azure")["azurerm_storage_account"]["weight_cache"]
    assert "enable_https_traffic_only" not in account


def _pinned(cloud: str) -> tuple[int, int]:
    """The lowest (major, minor) the renderer's "~> X.Y" pin admits (it admits up to X+1)."""
    provider = PROVIDERS[cloud][0]
    pin = render(built(cloud))["terraform"]["required_providers"][provider]["version"]
    major, minor = pin.removeprefix("~> ").split(".")
    return int(major), int(minor)


def test_the_azurerm_pin_admits_only_releases_with_the_cache_arguments():
    low = _pinned("azure")
    assert low >= (4, 9)  # storage_account_id on azurerm_storage_container (#27733)
    assert low <= (4, 55) and low[0] == 4  # the schema checked (4.55.0) is one it admits


def test_the_google_pin_admits_the_cache_arguments():
    # The schema is google 6.50.0's; the pin is 7.x. google 7.0.0's upgrade guide changes one
    # google_storage_bucket argument (retention_policy.retention_period became a string) and
    # no google_storage_bucket_iam_member one: the cache sets neither.
    assert _pinned("gcp")[0] == 7
    assert "retention_policy" not in resources("gcp")["google_storage_bucket"]["weight_cache"]
