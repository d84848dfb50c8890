"""Azure, --weight-cache: the pool's storage account and private container for the model's
weights, and Storage Blob Data Contributor for the VMs' identity on that account only
(servestack.deployment.cache; the settings are servestack.clouds.azure's, shared with
servestack/terraform/azure_cache.py). azure-native works through ARM alone, so shared key
access is off here: the VMs use their managed identity.

The account's name is the deployment's cache prefix and a digest of the subscription id
(storage account names are global), as the VMs derive it at boot.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_azure_native as azure
from servestack.components import TYPE_PREFIX

from servestack.clouds.azure import (
    AZURE_BLOB_CONTRIBUTOR_PATH,
    AZURE_CACHE_SKU,
    AZURE_PRINCIPAL_TYPE,
    azure_cache_role_name,
)
from servestack.deployment.model import Deployment


@dataclass
class WeightCacheArgs:
    deployment: Deployment
    resource_group: pulumi.Input[str]
    principal_id: pulumi.Input[str]  # the VMs' user-assigned identity
    subscription_id: pulumi.Input[str]


class WeightCache(pulumi.ComponentResource):
    """The storage account (no public blob access, TLS 1.2, HTTPS only, no shared keys), its
    private container and the VMs' role on the account."""

    def __init__(self, name: str, args: WeightCacheArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:azure:WeightCache", name, None, opts)
        d, cache = args.deployment, args.deployment.weight_cache
        if cache is None or cache.container is None:
            raise ValueError(f"deployment {d.candidate_id} has no weight cache container")
        child = pulumi.ResourceOptions(parent=self)
        subscription = pulumi.Output.from_input(args.subscription_id)
        self.account = azure.storage.StorageAccount(
            f"{name}-account", account_name=subscription.apply(cache.bucket),
            resource_group_name=args.resource_group, location=d.region,
            kind=azure.storage.Kind.STORAGE_V2,
            sku=azure.storage.SkuArgs(name=AZURE_CACHE_SKU),
            minimum_tls_version=azure.storage.MinimumTlsVersion.TLS1_2,
            enable_https_traffic_only=True, allow_blob_public_access=False,
            allow_shared_key_access=False, default_to_o_auth_authentication=True,
            tags=d.tags, opts=child)
        self.container = azure.storage.BlobContainer(
            f"{name}-container", account_name=self.account.name,
            container_name=cache.container, resource_group_name=args.resource_group,
            public_access=azure.storage.PublicAccess.NONE, opts=child)
        self.access = azure.authorization.RoleAssignment(
            f"{name}-access", role_assignment_name=azure_cache_role_name(d),
            scope=self.account.id, principal_id=args.principal_id,
            principal_type=AZURE_PRINCIPAL_TYPE,
            role_definition_id=subscription.apply(
                lambda s: f"/subscriptions/{s}{AZURE_BLOB_CONTRIBUTOR_PATH}"),
            opts=child)
        self.register_outputs({"account": self.account.name})
