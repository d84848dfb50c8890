"""Azure as Terraform: a Standard public load balancer in front of a GPU VM scale set.

The same service components/azure.py builds: a resource group; the scale set's user-assigned
identity; a network security group on the subnet (the probe from `AzureLoadBalancer` and the
allowed client CIDRs on the service port, since a Standard balancer keeps the client's source
address; SSH from `ssh_cidrs`; an explicit deny-all below); a virtual network and subnet without
default outbound access; a static Standard public IP, the balancer with its frontend, backend
pool, HTTP probe, listener -> service port rule (own SNAT off) and an outbound rule for the
VMs' downloads, plus an SSH NAT rule when asked; a Key Vault with the token (write-only) and
the generated API key (terraform_data, secret `api-key`) that only the scale set's identity
may read, whenever the deployment keeps either; the scale set (Uniform, or Flexible for a
spot/on-demand priority mix, which only Flexible has), its VMs without public IPs; and with a
domain, Front Door Standard serving it over HTTPS (managed certificate) in front of the
balancer's public IP, the NSG then admitting only `AzureFrontDoor.Backend`, and the domain's
DNS records written in --dns-zone or listed in the `dns_records` output.

Rules, access policies and balancer parts are their own resources (azurerm_network_security_rule,
azurerm_key_vault_access_policy, azurerm_lb_*). Unlike the ARM API Pulumi uses, azurerm writes
the secret through Key Vault's data plane, so whoever runs Terraform gets an access policy too.
The subscription comes from ARM_SUBSCRIPTION_ID, as azurerm 4 requires. Every value comes from
the `Deployment`, and how Azure spells it from servestack.clouds.azure, shared with the Pulumi
component.

Names: every fixed name is the deployment's scope (service and stack) and a kind, so two
services, or two stacks of one service, share none in a subscription; the Key Vault's name,
global across Azure, ends in a random_string kept in the state (hashicorp/random, the second
required provider), and reaches the VMs through the bootstrap Terraform fills in; so does
the Front Door endpoint's name (its host name is global too). The scale set
rolls template changes through the group (Rolling upgrades) and is created after,
and destroyed before, the balancer's probe and rules.

With a replica_policy that autoscales: azurerm_monitor_autoscale_setting on the scale set
(bounded by var.min_replicas and var.max_replicas, rules on the metric the replicas publish;
the scale set ignores later changes to `instances`, which belong to the autoscaler), and
azurerm_role_assignment of Monitoring Metrics Publisher to the VMs' identity on the scale set.
With dynamic_ondemand_fallback, a second, regular-priority scale set (`fallback`) in the same
backend pool with its own autoscale setting. The rules and their reasons are in
servestack.clouds.azure (azure_autoscales), shared with the Pulumi component.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import yaml

from servestack.bootstrap import render_cloud_init
from servestack.clouds.azure import (
    AZURE_DNS_TTL,
    AZURE_EGRESS_PROTOCOL,
    AZURE_FLEX_FAULT_DOMAINS,
    AZURE_FRONT_DOOR_CERTIFICATE,
    AZURE_FRONT_DOOR_FORWARDING,
    AZURE_FRONT_DOOR_MIN_TLS,
    AZURE_FRONT_DOOR_PATTERNS,
    AZURE_FRONT_DOOR_PROBE_METHOD,
    AZURE_FRONT_DOOR_PROBE_SECONDS,
    AZURE_FRONT_DOOR_PROTOCOLS,
    AZURE_FRONT_DOOR_SAMPLING,
    AZURE_FRONT_DOOR_SKU,
    AZURE_FRONT_DOOR_TIMEOUT_SECONDS,
    AZURE_HEALTH_EXTENSION,
    AZURE_IDENTITY_TYPE,
    AZURE_IP_ALLOCATION,
    AZURE_IP_VERSION,
    AZURE_LOAD_DISTRIBUTION,
    AZURE_OS_DISK_CACHING,
    AZURE_OVERPROVISION,
    AZURE_PRINCIPAL_TYPE,
    AZURE_PROFILE,
    AZURE_REPAIR_ACTION,
    AZURE_ROLE_DEFINITION_PATH,
    AZURE_ROLLING_UPGRADE,
    AZURE_SECRET_CONTENT_TYPE,
    AZURE_SKU,
    AZURE_SKU_TIER,
    AZURE_SPOT_MAX_PRICE,
    AZURE_SPOT_RESTORE_TIMEOUT,
    AZURE_STATISTIC,
    AZURE_TIME_GRAIN,
    AZURE_UPGRADE_MODE,
    AZURE_VAULT_RETENTION_DAYS,
    AZURE_VAULT_SUFFIX_LENGTH,
    EGRESS,
    FRONTEND,
    POOL,
    RULE,
    SSH,
    AzureAutoscale,
    azure_autoscale_tags,
    azure_autoscales,
    azure_computer_name_prefix,
    azure_dns_name,
    azure_dns_records,
    azure_fallback,
    azure_fallback_computer_name_prefix,
    azure_flexible,
    azure_has_vault,
    azure_health_settings,
    azure_idle_timeout_minutes,
    azure_ipv4,
    azure_lb_name,
    azure_name,
    azure_priority,
    azure_probe,
    azure_repair_grace_period,
    azure_security_rules,
    azure_spot_restore,
    azure_upgrade_pause,
    azure_vault_prefix,
    azure_with_vault,
    azure_zone_balance,
)
from servestack.deployment.model import OUTPUT_DNS_RECORDS, Deployment
from servestack.sshkey import lock_only_ssh_key
from servestack.terraform import (
    TERRAFORM_VERSION,
    TOKEN_VAR,
    TOKEN_VERSION_VAR,
    Ref,
    api_key_resources,
    api_key_value,
    compact,
    escape,
    expr,
    merge,
    service_outputs,
    template,
)
from servestack.terraform.azure_cache import cache_ready, weight_cache

# (local name, requirement): the provider this renderer's arguments were checked against.
# Every argument used is in azurerm 4.26 and later (CHANGELOG-v4.md: value_wo 4.23.0, the
# Flexible scale set's upgrade_mode and rolling_upgrade_policy 4.26.0; the rest 3.x); 5.0
# removed deprecated fields, so the pin stays on 4.x.
PROVIDER = ("azurerm", {"source": "hashicorp/azurerm", "version": "~> 4.40"})
# The Key Vault's random name suffix (random_string: length, upper, special; 3.4.0 broke
# existing random_string state, fixed in 3.4.1).
RANDOM = ("random", {"source": "hashicorp/random", "version": "~> 3.6"})
# azurerm's Key Vault soft-delete behaviour (provider `features`, both true by default since
# azurerm 3.0, spelled out because the design depends on them): destroy purges the vault, so
# its name is free at once; a vault left soft-deleted under this stack's name (a destroy that
# deleted it but could not purge, e.g. without the purge permission) is recovered on the
# next apply instead of failing with "already exists in deleted state".
KEY_VAULT_FEATURES = {"purge_soft_delete_on_destroy": True,
                      "recover_soft_deleted_key_vaults": True}
# Stands for the Key Vault's name in the bootstrap until Terraform knows it (see custom_data).
VAULT_NAME_SLOT = "servestack-key-vault-name"

DEPLOYER_SECRET_PERMISSIONS = ["Get", "List", "Set", "Delete", "Purge", "Recover"]
RG = expr("azurerm_resource_group.rg.name")
PROFILE = "azurerm_cdn_frontdoor_profile.fd"
ENDPOINT = "azurerm_cdn_frontdoor_endpoint.fd"
DOMAIN = "azurerm_cdn_frontdoor_custom_domain.fd"
LB = expr("azurerm_lb.lb.id")


def render(d: Deployment) -> dict[str, Any]:
    body: dict[str, Any] = {
        "variable": {"ssh_public_key": {
            "type": "string", "nullable": False,
            "description": "ssh-rsa public key of the VMs' admin user (the default is a key "
                           "no one holds the private half of: no login)"}},
        "provider": {"azurerm": {"features": {"key_vault": KEY_VAULT_FEATURES}}},
        "data": {"azurerm_client_config": {"current": {}}},
        "resource": merge(base(d), firewall(d), network(d), load_balancer(d),
                          token(d), front_door(d), dns_records(d), scale_set(d),
                          fallback_scale_set(d), autoscaling(d), weight_cache(d)),
        "output": outputs(d),
    }
    if azure_has_vault(d) or d.tls is not None:  # random names: the vault's, the endpoint's
        body["terraform"] = {"required_version": TERRAFORM_VERSION,
                             "required_providers": dict([PROVIDER, RANDOM])}
    if azure_has_vault(d):
        body["locals"] = {"cloud_init": plain_cloud_init(d)}
    return body


def base(d: Deployment) -> dict[str, Any]:
    return {
        "azurerm_resource_group": {"rg": {"name": azure_name(d, "resource_group"),
                                          "location": d.region, "tags": d.tags}},
        "azurerm_user_assigned_identity": {"vm": {
            "name": azure_name(d, "identity"), "location": d.region, "resource_group_name": RG,
            "tags": d.tags}},
    }


def firewall(d: Deployment) -> dict[str, Any]:
    """The subnet's NSG and its rules (see mechanics.azure_security_rules)."""
    nsg = {"resource_group_name": RG,
           "network_security_group_name": expr("azurerm_network_security_group.vms.name")}
    return {"azurerm_network_security_group": {"vms": {
                "name": azure_name(d, "nsg"), "location": d.region, "resource_group_name": RG,
                "tags": d.tags}},
            "azurerm_network_security_rule": {kind: {**rule, **nsg} for kind, rule in
                                              azure_security_rules(d).items()}}


def network(d: Deployment) -> dict[str, Any]:
    return {
        "azurerm_virtual_network": {"vnet": {
            "name": azure_name(d, "vnet"), "location": d.region, "resource_group_name": RG,
            "address_space": [d.network.vnet], "tags": d.tags}},
        "azurerm_subnet": {"vms": {
            "name": azure_name(d, "subnet"), "resource_group_name": RG,
            "virtual_network_name": expr("azurerm_virtual_network.vnet.name"),
            "address_prefixes": [d.network.subnet],
            "default_outbound_access_enabled": False}},
        "azurerm_subnet_network_security_group_association": {"vms": {
            "subnet_id": expr("azurerm_subnet.vms.id"),
            "network_security_group_id": expr("azurerm_network_security_group.vms.id")}},
    }


def load_balancer(d: Deployment) -> dict[str, Any]:
    """Public IP -> listener rule -> backend pool probed on the health path; egress rule."""
    pool = expr("azurerm_lb_backend_address_pool.pool.id")
    parts: dict[str, Any] = {
        "azurerm_public_ip": {"lb": compact({
            "name": azure_name(d, "public_ip"), "location": d.region, "resource_group_name": RG,
            "allocation_method": AZURE_IP_ALLOCATION, "sku": AZURE_SKU,
            "sku_tier": AZURE_SKU_TIER, "ip_version": AZURE_IP_VERSION,
            "zones": list(d.zones) or None, "tags": d.tags})},
        "azurerm_lb": {"lb": {
            "name": azure_lb_name(d), "location": d.region, "resource_group_name": RG,
            "sku": AZURE_SKU, "sku_tier": AZURE_SKU_TIER,
            "frontend_ip_configuration": [{"name": FRONTEND, "public_ip_address_id":
                                           expr("azurerm_public_ip.lb.id")}],
            "tags": d.tags}},
        "azurerm_lb_backend_address_pool": {"pool": {"name": POOL, "loadbalancer_id": LB}},
        "azurerm_lb_probe": {"health": {**azure_probe(d.health), "loadbalancer_id": LB}},
        "azurerm_lb_rule": {"http": {
            "name": RULE, "loadbalancer_id": LB, "protocol": "Tcp",
            "frontend_port": d.listener_port, "backend_port": d.service_port,
            "frontend_ip_configuration_name": FRONTEND, "backend_address_pool_ids": [pool],
            "probe_id": expr("azurerm_lb_probe.health.id"),
            "idle_timeout_in_minutes": azure_idle_timeout_minutes(d.idle_timeout_seconds),
            "tcp_reset_enabled": True, "floating_ip_enabled": False,
            "disable_outbound_snat": True, "load_distribution": AZURE_LOAD_DISTRIBUTION}},
        "azurerm_lb_outbound_rule": {"egress": {
            "name": EGRESS, "loadbalancer_id": LB, "protocol": AZURE_EGRESS_PROTOCOL,
            "backend_address_pool_id": pool, "tcp_reset_enabled": True,
            "frontend_ip_configuration": [{"name": FRONTEND}]}},
    }
    if azure_ipv4(d.ssh_cidrs):
        first, last = d.ssh_nat_range
        parts["azurerm_lb_nat_rule"] = {"ssh": {
            "name": SSH, "resource_group_name": RG, "loadbalancer_id": LB, "protocol": "Tcp",
            "frontend_port_start": first, "frontend_port_end": last,
            "backend_port": d.ssh_port, "backend_address_pool_id": pool,
            "frontend_ip_configuration_name": FRONTEND}}
    return parts


def token(d: Deployment) -> dict[str, Any]:
    """The stack's Key Vault, whenever it keeps a secret: the VMs' identity may get secrets;
    the deployer may write them (see vault_secrets)."""
    if not azure_has_vault(d):
        return {}
    vault = expr("azurerm_key_vault.token.id")
    tenant = expr("data.azurerm_client_config.current.tenant_id")
    return {
        **api_key_resources(d),
        # Drawn once, kept in the state: the vault's name stays put across applies, and a new
        # stack (or this one after a destroy) draws a new one.
        "random_string": {"vault": {"length": AZURE_VAULT_SUFFIX_LENGTH, "upper": False,
                                    "special": False}},
        "azurerm_key_vault": {"token": {
            "name": template(azure_vault_prefix(d), expr("random_string.vault.result")),
            "location": d.region, "resource_group_name": RG,
            "tenant_id": tenant, "sku_name": "standard",
            "soft_delete_retention_days": AZURE_VAULT_RETENTION_DAYS,
            "tags": d.tags}},
        "azurerm_key_vault_access_policy": {
            "vms": {"key_vault_id": vault, "tenant_id": tenant,
                    "object_id": expr("azurerm_user_assigned_identity.vm.principal_id"),
                    "secret_permissions": ["Get"]},
            "deployer": {"key_vault_id": vault, "tenant_id": tenant,
                         "object_id": expr("data.azurerm_client_config.current.object_id"),
                         "secret_permissions": DEPLOYER_SECRET_PERMISSIONS}},
        "azurerm_key_vault_secret": vault_secrets(d, vault),
    }


def vault_secrets(d: Deployment, vault: Ref) -> dict[str, Any]:
    """The token (write-only, never in the state) and the API key, each when the deployment
    has it, written once the deployer's access policy exists."""
    common = {"key_vault_id": vault, "content_type": AZURE_SECRET_CONTENT_TYPE, "tags": d.tags,
              "depends_on": ["azurerm_key_vault_access_policy.deployer"]}
    found: dict[str, Any] = {}
    if d.secret is not None:
        found["hf_token"] = {"name": d.secret.name, **common,
                             "value_wo": expr(f"var.{TOKEN_VAR}"),
                             "value_wo_version": expr(f"var.{TOKEN_VERSION_VAR}")}
    if d.api_key is not None:
        # The key is in the state already (terraform_data, or the key stack's state read
        # here), so a plain value: a secret deleted by hand is written again at the next apply.
        found["api_key"] = {"name": d.api_key.name, **common, "value": expr(api_key_value(d))}
    return found


def front_door(d: Deployment) -> dict[str, Any]:
    """HTTPS on the domain: a Front Door Standard profile whose route serves the domain with a
    managed certificate, redirects HTTP to HTTPS, and forwards over HTTP to the balancer's
    public IP on the listener port (no cache block: nothing is cached)."""
    if d.tls is None:
        return {}
    profile = expr(f"{PROFILE}.id")
    domain = compact({
        "name": azure_name(d, "custom_domain"), "cdn_frontdoor_profile_id": profile,
        "host_name": d.tls.domain, "dns_zone_id": d.tls.dns_zone,
        "tls": {"certificate_type": AZURE_FRONT_DOOR_CERTIFICATE,
                "minimum_tls_version": AZURE_FRONT_DOOR_MIN_TLS}})
    return {
        # Drawn once, kept in the state: the endpoint's global host name never collides
        # with another stack's.
        "random_string": {"endpoint": {"length": AZURE_VAULT_SUFFIX_LENGTH, "upper": False,
                                       "special": False}},
        "azurerm_cdn_frontdoor_profile": {"fd": {
            "name": azure_name(d, "front_door"), "resource_group_name": RG,
            "sku_name": AZURE_FRONT_DOOR_SKU,
            "response_timeout_seconds": AZURE_FRONT_DOOR_TIMEOUT_SECONDS, "tags": d.tags}},
        "azurerm_cdn_frontdoor_endpoint": {"fd": {
            "name": template(azure_name(d, "endpoint"), expr("random_string.endpoint.result")),
            "cdn_frontdoor_profile_id": profile, "tags": d.tags}},
        "azurerm_cdn_frontdoor_origin_group": {"fd": {
            "name": azure_name(d, "origin_group"), "cdn_frontdoor_profile_id": profile,
            "session_affinity_enabled": False,
            "health_probe": {"protocol": "Http", "path": d.health.path,
                             "request_type": AZURE_FRONT_DOOR_PROBE_METHOD,
                             "interval_in_seconds": AZURE_FRONT_DOOR_PROBE_SECONDS},
            "load_balancing": AZURE_FRONT_DOOR_SAMPLING}},
        "azurerm_cdn_frontdoor_origin": {"fd": {
            "name": azure_name(d, "origin"),
            "cdn_frontdoor_origin_group_id": expr("azurerm_cdn_frontdoor_origin_group.fd.id"),
            "host_name": expr("azurerm_public_ip.lb.ip_address"),
            "http_port": d.listener_port, "https_port": d.tls.port,
            # HTTP to the origin: no certificate there to check
            "certificate_name_check_enabled": False, "enabled": True}},
        "azurerm_cdn_frontdoor_custom_domain": {"fd": domain},
        "azurerm_cdn_frontdoor_route": {"fd": {
            "name": azure_name(d, "route"), "cdn_frontdoor_endpoint_id": expr(f"{ENDPOINT}.id"),
            "cdn_frontdoor_origin_group_id": expr("azurerm_cdn_frontdoor_origin_group.fd.id"),
            "cdn_frontdoor_origin_ids": [expr("azurerm_cdn_frontdoor_origin.fd.id")],
            "cdn_frontdoor_custom_domain_ids": [expr(f"{DOMAIN}.id")],
            "supported_protocols": AZURE_FRONT_DOOR_PROTOCOLS, "https_redirect_enabled": True,
            "forwarding_protocol": AZURE_FRONT_DOOR_FORWARDING,
            "patterns_to_match": AZURE_FRONT_DOOR_PATTERNS,
            # the domain is the service's one address; Front Door's own host name serves nothing
            "link_to_default_domain": False, "enabled": True}},
        "azurerm_cdn_frontdoor_custom_domain_association": {"fd": {
            "cdn_frontdoor_custom_domain_id": expr(f"{DOMAIN}.id"),
            "cdn_frontdoor_route_ids": [expr("azurerm_cdn_frontdoor_route.fd.id")]}},
    }


def dns_records(d: Deployment) -> dict[str, Any]:
    """With --dns-zone, the domain's records in it: the `_dnsauth` TXT record that validates
    the managed certificate, and the CNAME to the endpoint, written once the route and the
    domain's association exist (azurerm's custom domain page: else validation fails)."""
    if d.tls is None or d.tls.dns_zone is None:
        return {}
    group, zone, name = azure_dns_name(d)
    where = {"zone_name": zone, "resource_group_name": group, "ttl": AZURE_DNS_TTL,
             "tags": d.tags}
    return {
        "azurerm_dns_txt_record": {"fd": {
            "name": f"_dnsauth.{name}", **where,
            "record": [{"value": expr(f"{DOMAIN}.validation_token")}]}},
        "azurerm_dns_cname_record": {"fd": {
            "name": name, **where, "record": expr(f"{ENDPOINT}.host_name"),
            "depends_on": ["azurerm_cdn_frontdoor_route.fd",
                           "azurerm_cdn_frontdoor_custom_domain_association.fd"]}},
    }


def image(d: Deployment) -> dict[str, Any]:
    """A marketplace image by reference; any image or gallery resource id as is."""
    if d.image.kind == "id":
        return {"source_image_id": d.image.exact()}
    return {"source_image_reference": d.image.marketplace()}


def ip_configuration(d: Deployment) -> dict[str, Any]:
    return {"name": "nic", "primary": True, "ip_configuration": [{
        "name": "ipconfig", "primary": True, "subnet_id": expr("azurerm_subnet.vms.id"),
        "load_balancer_backend_address_pool_ids": [
            expr("azurerm_lb_backend_address_pool.pool.id")]}]}


def spot_settings(d: Deployment) -> dict[str, Any]:
    price = {"max_bid_price": AZURE_SPOT_MAX_PRICE} if d.use_spot else {}
    return {**azure_priority(d), **price}


def health_extension(d: Deployment) -> dict[str, Any]:
    """Application Health extension (Flexible scale sets take their health from it)."""
    return {**AZURE_HEALTH_EXTENSION, "auto_upgrade_minor_version_enabled": True,
            "settings": json.dumps(azure_health_settings(d.health), sort_keys=True)}


def custom_data(d: Deployment) -> Ref:
    """The bootstrap, base64. With a Key Vault, its name is only known once random_string is
    drawn, so Terraform puts it in: the bootstrap (every file as text, see plain_cloud_init)
    is a local with the name's slot, and custom_data is that local with the name filled in,
    gzip'd (cloud-init unpacks gzip'd user data itself)."""
    if not azure_has_vault(d):
        return Ref(base64.b64encode(render_cloud_init(d).encode()).decode())
    return expr(f'base64gzip(replace(local.cloud_init, "{VAULT_NAME_SLOT}", '
                'azurerm_key_vault.token.name))')


def plain_cloud_init(d: Deployment) -> Ref:
    """The bootstrap with the vault name's slot, every file as text: the bootstrap gzips its
    larger files when it is long (AWS's user data limit), which would hide the slot."""
    text = render_cloud_init(azure_with_vault(d, VAULT_NAME_SLOT))
    document = yaml.safe_load(text)
    packed = [item for item in document.get("write_files", [])
              if item.get("encoding") == "gz+b64"]
    if not packed:
        return Ref(escape(text))
    for item in packed:
        del item["encoding"]
        item["content"] = gzip.decompress(base64.b64decode(item["content"])).decode()
    return Ref(escape("#cloud-config\n" + yaml.safe_dump(document, sort_keys=False,
                                                          width=1000)))


def rolling_upgrade(d: Deployment) -> dict[str, Any]:
    """Template changes roll through the group (see clouds.azure.AZURE_ROLLING_UPGRADE)."""
    return {"upgrade_mode": AZURE_UPGRADE_MODE, "rolling_upgrade_policy": {
        **AZURE_ROLLING_UPGRADE, "pause_time_between_batches": azure_upgrade_pause(d)}}


def dependencies(d: Deployment) -> list[str]:
    """What the scale set is created after and destroyed before. The balancer's rules: Azure
    refuses a health probe no rule uses, and refuses to delete a rule whose probe a scale set
    still uses (CannotRemoveRuleUsedByProbeUsedByVMSS, terraform-provider-azurerm #4398,
    #9076), and the VMs download the model through the outbound rule from their first boot.
    The secrets and their access policy: the VMs read them at boot."""
    found = ["azurerm_lb_probe.health", "azurerm_lb_rule.http", "azurerm_lb_outbound_rule.egress"]
    if azure_ipv4(d.ssh_cidrs):
        found.append("azurerm_lb_nat_rule.ssh")
    if d.secret is not None:
        found.append("azurerm_key_vault_secret.hf_token")
    if d.api_key is not None:
        found.append("azurerm_key_vault_secret.api_key")
    if azure_has_vault(d):
        found.append("azurerm_key_vault_access_policy.vms")
    return found + cache_ready(d)


def scale_set(d: Deployment) -> dict[str, Any]:
    """Uniform with the balancer's probe as repair signal; Flexible for a priority mix."""
    user = d.admin_user
    key = {"username": user, "public_key": expr("var.ssh_public_key")}
    common = {
        "name": azure_name(d, "scale_set"), "location": d.region, "resource_group_name": RG,
        "instances": expr("var.desired_replicas"), "zones": list(d.zones) or None,
        "zone_balance": azure_zone_balance(d),
        "identity": {"type": AZURE_IDENTITY_TYPE,
                     "identity_ids": [expr("azurerm_user_assigned_identity.vm.id")]},
        "os_disk": {"caching": AZURE_OS_DISK_CACHING, "storage_account_type": d.disk_type,
                    "disk_size_gb": d.disk_size_gb},
        "network_interface": [ip_configuration(d)],
        "automatic_instance_repair": {
            "enabled": True,
            "grace_period": azure_repair_grace_period(d.health.grace_period_seconds),
            "action": AZURE_REPAIR_ACTION},
        "tags": d.tags, **image(d), **spot_settings(d), **rolling_upgrade(d),
        "depends_on": dependencies(d),
        # An autoscaled group's size belongs to its autoscale setting: an apply must not set
        # it back to the deployed count.
        "lifecycle": {"ignore_changes": ["instances"]} if d.autoscaling else None,
    }
    if azure_flexible(d):
        # Rolling upgrades of a Flexible scale set take their health from the Application
        # Health extension (upgrade policies on Flexible scale sets are GA since November 2024,
        # Azure Compute Blog; azurerm 4.26.0 added upgrade_mode/rolling_upgrade_policy here).
        flexible = compact({
            **common, "sku_name": d.primary.instance_type,
            "platform_fault_domain_count": AZURE_FLEX_FAULT_DOMAINS,
            "single_placement_group": False,
            "priority_mix": {"base_regular_count": d.on_demand_base,
                             "regular_percentage_above_base": 0},
            "os_profile": {"custom_data": custom_data(d), "linux_configuration": {
                "admin_username": user, "computer_name_prefix": azure_computer_name_prefix(d),
                "disable_password_authentication": True, "provision_vm_agent": True,
                "admin_ssh_key": [key]}},
            "extension": [health_extension(d)]})
        return {"azurerm_orchestrated_virtual_machine_scale_set": {"group": flexible}}
    uniform = compact({
        **common, "sku": d.primary.instance_type,
        "admin_username": user, "admin_ssh_key": [key],
        "disable_password_authentication": True, "provision_vm_agent": True,
        "computer_name_prefix": azure_computer_name_prefix(d), "custom_data": custom_data(d),
        "overprovision": AZURE_OVERPROVISION,
        "health_probe_id": expr("azurerm_lb_probe.health.id"),
        "spot_restore": {"enabled": True, "timeout": AZURE_SPOT_RESTORE_TIMEOUT}
        if azure_spot_restore(d) else None})
    return {"azurerm_linux_virtual_machine_scale_set": {"group": uniform}}


def group_kind(d: Deployment) -> str:
    """The main scale set's resource type (Flexible only for a priority mix)."""
    return "azurerm_orchestrated_virtual_machine_scale_set" \
        if azure_flexible(d) else "azurerm_linux_virtual_machine_scale_set"


def fallback_scale_set(d: Deployment) -> dict[str, Any]:
    """dynamic_ondemand_fallback: the same VMs at regular priority (always a Uniform scale
    set: no priority mix), named apart, starting empty; its autoscale setting sizes it."""
    if not any(s.fallback for s in azure_autoscales(d)):
        return {}
    group = scale_set(azure_fallback(d))["azurerm_linux_virtual_machine_scale_set"]["group"]
    group.update(name=azure_name(d, "fallback_scale_set"), instances=0,
                 computer_name_prefix=azure_fallback_computer_name_prefix(d))
    return {"azurerm_linux_virtual_machine_scale_set": {"fallback": group}}


def autoscaling(d: Deployment) -> dict[str, Any]:
    """An autoscale setting per scale set, and the role that lets the VMs publish the metric
    to it (Monitoring Metrics Publisher on that scale set)."""
    main = f"{group_kind(d)}.group.id"
    settings, roles = {}, {}
    for setting in azure_autoscales(d):
        key = "fallback" if setting.fallback else "group"
        target = "azurerm_linux_virtual_machine_scale_set.fallback.id" if setting.fallback \
            else main
        settings[key] = {
            "name": setting.name, "resource_group_name": RG, "location": d.region,
            "target_resource_id": expr(target), "enabled": True,
            "profile": [autoscale_profile(d, setting, expr(main))],
            "tags": azure_autoscale_tags(d)}
        roles[f"metrics_{key}"] = {
            "scope": expr(target), "principal_type": AZURE_PRINCIPAL_TYPE,
            "principal_id": expr("azurerm_user_assigned_identity.vm.principal_id"),
            "role_definition_id": template(
                "/subscriptions/", expr("data.azurerm_client_config.current.subscription_id"),
                AZURE_ROLE_DEFINITION_PATH)}
    if not settings:
        return {}
    return {"azurerm_monitor_autoscale_setting": settings, "azurerm_role_assignment": roles}


def autoscale_profile(d: Deployment, setting: AzureAutoscale, metric_source: Ref
                      ) -> dict[str, Any]:
    """The bounds (the tfvars' replica counts; the fallback's less the on-demand base) and
    the rules."""
    if setting.fallback:
        base = d.on_demand_base
        capacity = {"minimum": 0, "maximum": expr(f"var.max_replicas - {base}"),
                    "default": expr(f"var.min_replicas - {base}")}
    else:
        capacity = {"minimum": expr("var.min_replicas"), "maximum": expr("var.max_replicas"),
                    "default": expr("var.desired_replicas")}
    return {"name": AZURE_PROFILE, "capacity": capacity, "rule": [{
        "metric_trigger": {
            "metric_name": setting.metric, "metric_namespace": setting.namespace,
            "metric_resource_id": metric_source, "time_grain": AZURE_TIME_GRAIN,
            "statistic": AZURE_STATISTIC, "time_window": rule.time_window,
            "time_aggregation": rule.time_aggregation, "operator": rule.operator,
            "threshold": rule.threshold},
        "scale_action": {"direction": rule.direction, "type": rule.type, "value": rule.value,
                         "cooldown": rule.cooldown}} for rule in setting.rules]}


def outputs(d: Deployment) -> dict[str, Any]:
    """The common outputs (with TLS the endpoint is https://domain), where the API key is
    kept (the secret's versionless ARM id), and without a DNS zone the records to create."""
    found = service_outputs(d, "azurerm_public_ip.lb.ip_address", f"{group_kind(d)}.group",
                            api_key_ref="azurerm_key_vault_secret.api_key"
                                        ".resource_versionless_id")
    if d.tls is not None and d.tls.dns_zone is None:
        found[OUTPUT_DNS_RECORDS] = {
            "value": azure_dns_records(d, expr(f"{ENDPOINT}.host_name"),
                                       expr(f"{DOMAIN}.validation_token")),
            "description": "the DNS records to create for the domain (its certificate and "
                           "its CNAME to Front Door)"}
    return found


def variable_values(d: Deployment) -> dict[str, Any]:
    """The VMs' SSH key: the lock-only key nobody can log in with (the Pulumi default too)."""
    return {"ssh_public_key": lock_only_ssh_key()}


# --- read-only probes (the deploy loop's engine uses these) ---
# Only the identity: no quota data source, no tag search, and a scale set without capacity
# fails `apply` itself, so there is no group size to watch.
PROBES = ("credentials_check",)


def identity_config() -> dict[str, Any]:
    """`credentials_check`: exports `identity`, the subscription and tenant of the credentials
    (data source azurerm_client_config; azurerm 4 takes the subscription from
    ARM_SUBSCRIPTION_ID and fails without a login or ARM_* credentials)."""
    local, requirement = PROVIDER
    me = "data.azurerm_client_config.me"
    return {
        "terraform": {"required_providers": {local: requirement}},
        "provider": {"azurerm": {"features": {}}},
        "data": {"azurerm_client_config": {"me": {}}},
        "output": {"identity": {"value": f"subscription ${{{me}.subscription_id}} (tenant "
                                         f"${{{me}.tenant_id}}, client ${{{me}.client_id}})"}},
    }
