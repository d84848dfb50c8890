"""Azure as Terraform, --weight-cache: the pool's storage account and private container for
the model's weights, and Storage Blob Data Contributor for the VMs' identity on that storage
account (which holds only this container, so the scope is the same). See
servestack.deployment.cache for the design, servestack.clouds.azure for the settings (shared
with components/azure_cache.py), and why this engine keeps shared keys on.

The account's name is the deployment's cache prefix and a digest of the subscription id
(storage account names are global), computed by Terraform's sha256() as the VMs compute it.
"""

from __future__ import annotations

from typing import Any

from servestack.clouds.azure import (
    AZURE_BLOB_CONTRIBUTOR_PATH,
    AZURE_CACHE_ACCOUNT,
    AZURE_PRINCIPAL_TYPE,
    azure_cache_role_name,
)
from servestack.deployment.model import ACCOUNT_DIGEST, Deployment
from servestack.terraform import Ref, expr, template

SUBSCRIPTION = "data.azurerm_client_config.current.subscription_id"
ACCOUNT = "azurerm_storage_account.weight_cache"


def cache_account_name(d: Deployment) -> Ref:
    if d.weight_cache is None:
        raise ValueError(f"deployment {d.candidate_id} has no weight cache")
    return template(d.weight_cache.prefix,
                    expr(f"substr(sha256({SUBSCRIPTION}), 0, {ACCOUNT_DIGEST})"))


def weight_cache(d: Deployment) -> dict[str, Any]:
    """The account, its container and the VMs' role on the container; nothing without one."""
    cache = d.weight_cache
    if cache is None:
        return {}
    return {
        "azurerm_storage_account": {"weight_cache": {
            "name": cache_account_name(d), "resource_group_name": expr(
                "azurerm_resource_group.rg.name"), "location": d.region,
            **AZURE_CACHE_ACCOUNT, "tags": d.tags}},
        "azurerm_storage_container": {"weight_cache": {
            "name": cache.container, "storage_account_id": expr(f"{ACCOUNT}.id"),
            "container_access_type": "private"}},
        "azurerm_role_assignment": {"weight_cache": {
            "name": azure_cache_role_name(d),
            "scope": expr(f"{ACCOUNT}.id"), "principal_type": AZURE_PRINCIPAL_TYPE,
            "principal_id": expr("azurerm_user_assigned_identity.vm.principal_id"),
            "role_definition_id": template("/subscriptions/", expr(SUBSCRIPTION),
                                           AZURE_BLOB_CONTRIBUTOR_PATH)}},
    }


def cache_ready(d: Deployment) -> list[str]:
    """What exists before the VMs boot when there is a cache."""
    return ["azurerm_role_assignment.weight_cache"] if d.weight_cache else []
