"""Azure: its facts (zones, quotas, error texts, images, disks, Key Vault names, Front Door
and DNS for a domain) and the spellings that the Pulumi component (components/azure.py) and
the Terraform renderer (terraform/azure.py) share.

The dicts use the argument names both engines share where the two agree. No SDK imports.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any

from servestack.clouds.base import Cloud, Offered, QuotaScope, Rule, digest, rule
from servestack.deployment.model import (
    WORLD,
    Deployment,
    HealthCheck,
    ImageRef,
    NetworkPlan,
    SecretRef,
)
from servestack.errors import UserError

ADMIN_USER = "servestack"
# Azure VMs have no public IPs: SSH goes through an inbound NAT rule on the balancer, one
# frontend port per VM from this range, forwarded to the SSH port.
SSH_NAT_PORTS = (50000, 50099)
IMAGE_ID_PREFIXES = ("/subscriptions/", "/CommunityGalleries/", "/SharedGalleries/")
# Fixed choices both engines spell alike (their argument names differ, the values do not).
AZURE_SKU, AZURE_SKU_TIER = "Standard", "Regional"  # public IP and load balancer
AZURE_IP_ALLOCATION, AZURE_IP_VERSION = "Static", "IPv4"  # the frontend keeps its address
AZURE_LOAD_DISTRIBUTION = "Default"  # 5-tuple hash: a client's streams spread over replicas
AZURE_EGRESS_PROTOCOL = "All"
# Template changes (image, bootstrap, size) reach running VMs by rolling upgrades, gated by the
# health probe (Uniform) or the Application Health extension (Flexible).
AZURE_UPGRADE_MODE = "Rolling"
AZURE_OVERPROVISION = False  # extra GPU VMs would each load the model, then be deleted
AZURE_FLEX_FAULT_DOMAINS = 1  # Flexible orchestration: max spreading across fault domains
AZURE_IDENTITY_TYPE = "UserAssigned"  # the VMs read the token with their group's identity
AZURE_REPAIR_ACTION = "Replace"
AZURE_OS_DISK_CACHING = "ReadWrite"
AZURE_SECRET_CONTENT_TYPE = "text/plain"
# Front Door Standard: the HTTPS front of a service with a domain (the Standard load balancer
# is L4 and terminates no TLS). Front Door serves the domain with a certificate it manages
# itself (validated by the `_dnsauth` TXT record, renewed by Azure), at TLS 1.2 or later, and
# reaches the balancer's public IP over plain HTTP on the listener port.
AZURE_FRONT_DOOR_SKU = "Standard_AzureFrontDoor"
AZURE_FRONT_DOOR_CERTIFICATE = "ManagedCertificate"
AZURE_FRONT_DOOR_MIN_TLS = "TLS12"
# The only source the clients' rule admits with TLS on: Front Door's backend addresses, so no
# client reaches the balancer around it (learn.microsoft.com/azure/frontdoor/origin-security).
AZURE_FRONT_DOOR_TAG = "AzureFrontDoor.Backend"
# Front Door's origin response timeout, at its maximum (16-240 s; azurerm's
# response_timeout_seconds, azure-native's origin_response_timeout_seconds). Microsoft's limits
# page (includes/front-door-limits.md): it is the wait for the origin's first packet; after
# that Front Door allows an idle gap between packets (30 s there, not configurable), and a
# chunked response is a 200 from its first chunk. So a streamed completion, which sends tokens
# as they are made, can run as long as the balancer's 900 s; a completion without `stream`
# whose answer takes longer than 240 s to start fails at Front Door (503), not at the balancer.
AZURE_FRONT_DOOR_TIMEOUT_SECONDS = 240
# Front Door probes the origin from each of its edge sites, so its probe runs at the portal's
# default interval (100 s), not the balancer's 10 s: the balancer's probe is what takes a
# replica out of rotation; Front Door's only sees the balancer as a whole. GET, since vLLM's
# /health answers HEAD with 405.
AZURE_FRONT_DOOR_PROBE_SECONDS = 100
AZURE_FRONT_DOOR_PROBE_METHOD = "GET"
# Origin group sampling, at Azure's defaults (azurerm requires the block).
AZURE_FRONT_DOOR_SAMPLING = {"sample_size": 4, "successful_samples_required": 3,
                             "additional_latency_in_milliseconds": 50}
AZURE_FRONT_DOOR_PATTERNS = ["/*"]
AZURE_FRONT_DOOR_PROTOCOLS = ["Http", "Https"]  # both: HTTP is redirected to HTTPS
AZURE_FRONT_DOOR_FORWARDING = "HttpOnly"  # to the balancer, which has no certificate
AZURE_DNS_TTL = 3600
# Without --dns-zone, the output listing the records the user creates: [{name, type, value}]
# (GCP's output of the same name and shape).
# A DNS zone's resource id, as --dns-zone takes it (the zone must be in the subscription the
# stack deploys to: both engines write its records with the stack's credentials).
AZURE_DNS_ZONE_ID = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/(?P<group>[^/]+)/providers/Microsoft\.Network/"
    r"dnszones/(?P<zone>[^/]+)", re.IGNORECASE)

RULES = (
    rule("capacity", "SkuNotAvailable", r"SkuNotAvailable|Capacity Restrictions"),
    rule("capacity", "AllocationFailed",
         r"\bAllocationFailed|ZonalAllocationFailed|do not have sufficient capacity for the "
         r"requested VM size"),
    rule("capacity", "OverconstrainedAllocationRequest",
         r"Overconstrained(?:Zonal)?AllocationRequest"),
    rule("quota", "OperationNotAllowed",
         r"exceeding approved .{0,60}? quota|exceeding quota limits of Core"
         r"|OperationNotAllowed.{0,400}?quota|\bQuotaExceeded\b"),
    rule("credentials", "NoCredentials",
         r"DefaultAzureCredential failed|run 'az login'|AADSTS\d+|InvalidAuthenticationToken"
         r"|ExpiredAuthenticationToken|ClientAuthenticationError"
         r"|failed to (?:load|acquire) (?:credentials|token)"),
    rule("permission", "AuthorizationFailed",
         r"AuthorizationFailed|does not have authorization to perform action"
         r"|ReadOnlyDisabledSubscription|SubscriptionNotFound|MissingSubscriptionRegistration"
         r"|RequestDisallowedByPolicy"),
    rule("throttled", "TooManyRequests",
         r"TooManyRequests|SubscriptionRequestsThrottled|Status=429"),
    rule("transient", "ServerError",
         r"InternalServerError|\bServiceUnavailable|RetryableError|GatewayTimeout"
         r"|Status=50[0234]\b"),
    rule("invalid-config", "InvalidParameter",
         r"\bInvalidParameter\b|InvalidTemplate|\bBadRequest\b|PropertyChangeNotAllowed"
         r"|InvalidResourceName"),
)


class Azure(Cloud):
    name = "azure"
    title = "Azure"
    zone_shape = r"^[1-3]$"  # logical zones are numbered per subscription
    disk_types = {"low": "Standard_LRS", "medium": "StandardSSD_LRS", "high": "Premium_LRS",
                  "ultra": "Premium_LRS", "best": "Premium_LRS", "none": "StandardSSD_LRS"}
    # Ubuntu 22.04 HPC: NVIDIA data-center driver, CUDA, no marketplace plan, Gen2 (which the
    # A100/H100 sizes require). The A10 "NVads A10 v5" sizes need NVIDIA's GRID driver
    # instead: give those an image with `image_id`.
    default_image = ImageRef(kind="lookup", publisher="microsoft-dsvm", offer="ubuntu-hpc",
                             sku="2204", version="latest")
    network = NetworkPlan(vnet="10.50.0.0/16", subnet="10.50.0.0/24")
    metrics_namespace = "servestack/vllm"
    balancer_counts_requests = False  # a Standard LB is L4: bytes, packets, SYNs
    # The scale set fails the apply itself when it gets no capacity: no extra wait.
    capacity_timeout = None
    admin_user = ADMIN_USER
    ssh_nat_ports = SSH_NAT_PORTS
    failure_rules = RULES

    def image_ref(self, image_id: str | None) -> ImageRef:
        """A marketplace URN publisher:offer:sku:version, or an image/gallery resource id."""
        if not image_id:
            return self.default_image
        if image_id.startswith(IMAGE_ID_PREFIXES):
            return ImageRef(kind="id", id=image_id)
        parts = image_id.split(":")
        if len(parts) != 4 or not all(parts):
            raise UserError(f"Azure image_id {image_id!r}: expected publisher:offer:sku:version "
                            "or an image, gallery or community gallery resource id")
        publisher, offer, sku, version = parts
        return ImageRef(kind="lookup", publisher=publisher, offer=offer, sku=sku,
                        version=version)

    cache_scheme = "az"
    cache_packages = ("azure-storage-blob>=12.19", "azure-identity>=1.15")

    def cache_prefix(self, scope: str) -> str:
        """A storage account's name is 3-24 lowercase letters and digits, global across Azure:
        "sswc" and a digest of the scope (14 characters), the subscription's 10 after them."""
        return f"sswc{digest(scope, 10)}"

    def cache_container(self) -> str | None:
        return AZURE_CACHE_CONTAINER

    def secret_ref(self, service: str, stack: str) -> SecretRef:
        """A secret in the stack's own Key Vault. The vault's name is global across all of
        Azure, so each engine names it with a random suffix it keeps in its state
        (`azure_vault_prefix`); the VMs learn it from the bootstrap each engine renders."""
        return SecretRef(self.name, "key-vault", "hf-token")

    def api_key_ref(self, service: str, stack: str) -> SecretRef:
        """The generated API key: a second secret in the stack's own Key Vault."""
        return SecretRef(self.name, "key-vault", "api-key")

    def stack_config(self, d: Deployment) -> dict[str, str]:
        return {"azure-native:location": d.region}

    def check(self, d: Deployment) -> None:
        """A domain: its DNS zone must be an Azure DNS zone's resource id with the domain
        strictly inside it (the apex takes no CNAME), and the clients cannot be limited to
        CIDRs: behind Front Door the balancer sees Front Door's addresses, not theirs. And the
        on-demand fallback scale set follows the replicas' published load (azure_autoscales):
        a fixed-size spot group publishes none, so it has nothing to follow."""
        if d.dynamic_ondemand_fallback and d.autoscaling is None:
            raise UserError("Azure: replica_policy.dynamic_ondemand_fallback needs an "
                            "autoscaling policy (min_replicas < max_replicas and "
                            "target_qps_per_replica): its on-demand scale set follows the "
                            "spot replicas' load, which a fixed-size group does not publish")
        if d.tls is None:
            return
        if azure_ipv4(d.allow_cidrs) != [WORLD]:
            raise UserError("Azure with --domain: clients reach the service through Front "
                            "Door, so --allow-cidr cannot limit them (the NSG admits Front "
                            "Door only); leave --allow-cidr out, the API key guards the endpoint")
        if d.tls.dns_zone is not None:
            azure_dns_name(d)

    def quota_families(self, c: Offered) -> tuple[str, ...]:
        """Spot VMs draw from one low-priority core quota; on-demand from the size family's."""
        if c.use_spot:
            return ("azure-lowpriority",)
        name = c.instance_type.lower().removeprefix("standard_")
        name = re.sub(r"^([a-z]+)\d+", r"\1", name)
        return ("azure-" + name.replace("_", ""),)

    def quota_scope(self, found: Rule, text: str, c: Offered) -> QuotaScope:
        # the regional total of on-demand cores, whatever the family
        if re.search(r"Total Regional Cores", text, re.IGNORECASE):
            return QuotaScope(c.region, spot=False)
        return super().quota_scope(found, text, c)


CLOUD = Azure()
AZURE_CACHE_CONTAINER = "weights"  # the cache's one container in its storage account


# Names of the balancer's parts (one of each), as the rules reference them.
FRONTEND, POOL, PROBE, RULE, EGRESS, SSH = "frontend", "backend", "health", "http", "egress", "ssh"
# Priorities of the NSG rules (100..4096 allowed); the deny-all sits below all of them.
AZURE_PRIORITY = {"probe": 100, "clients": 110, "ssh": 120, "deny": 4096}
# Automatic repairs: grace period between 10 and 90 minutes (AutomaticRepairsPolicy docstring,
# "minimum ... PT10M ... maximum ... PT90M"); the deployment's seconds are clamped into it.
AZURE_REPAIR_GRACE_MINUTES = (10, 90)
# Load balancing rule idle timeout: "between 4 and 30 minutes" (LoadBalancingRule docstring).
AZURE_IDLE_TIMEOUT_MINUTES = (4, 30)
AZURE_PROBE_MIN_INTERVAL = 5  # Probe docstring: "the minimum value is 5"
AZURE_SPOT_RESTORE_TIMEOUT = "PT1H"  # how long Azure keeps trying to restore evicted spot VMs
AZURE_SPOT_MAX_PRICE = -1  # pay up to the on-demand price: evicted for capacity, never price
AZURE_VAULT_RETENTION_DAYS = 7  # Key Vault soft delete: the minimum, the name frees up sooner
# Rolling upgrades of a GPU group. A batch is at most 20% of the group (Azure allows 5-100%;
# below five replicas that is one VM), so the others keep serving while a batch's VMs are
# recreated and load the model. Before each batch Azure checks that at most
# `max_unhealthy_instance_percent` of the group is unhealthy: with one to three replicas a
# single VM being upgraded or still loading the model is 33-100%, so anything lower would stop
# every upgrade of a small group. After each batch it stops when more than 20% of the upgraded
# VMs are unhealthy (a bad template stops after its first batch), having waited the pause,
# which is the readiness delay: the time a VM needs to load the model.
# No max surge (new VMs first, old ones deleted after, no capacity dip), left at Azure's
# default: it needs the subscription feature Microsoft.Compute/MaxSurgeRollingUpgrade
# registered (Azure's "Rolling upgrades with MaxSurge" page), and a deploy must not fail on a
# subscription without it; so a one-replica service is down while its VM is upgraded.
AZURE_ROLLING_UPGRADE = {"max_batch_instance_percent": 20,
                         "max_unhealthy_instance_percent": 100,
                         "max_unhealthy_upgraded_instance_percent": 20}


def azure_flexible(d: Deployment) -> bool:
    """Spot above on-demand replicas needs Azure's priority mix, which only Flexible
    orchestration has; every other split is a Uniform scale set."""
    return d.use_spot and d.on_demand_base > 0


def azure_priority(d: Deployment) -> dict[str, str]:
    """The VMs' priority. An evicted spot VM is deleted, not deallocated: a deallocated one
    keeps its disk (billed) and its place in the count, a deleted one is replaced by the
    scale set, and the bootstrap reloads the model."""
    if not d.use_spot:
        return {"priority": "Regular"}
    return {"priority": "Spot", "eviction_policy": "Delete"}


def azure_spot_restore(d: Deployment) -> bool:
    """Let Azure restore evicted spot VMs when capacity returns (the rebalancing the spot
    split asks for). Uniform scale sets only: Terraform's Flexible scale set resource
    (azurerm_orchestrated_virtual_machine_scale_set) has no spot_restore argument, so both
    engines leave it off there."""
    return d.use_spot and d.capacity_rebalance and not azure_flexible(d)


def azure_ipv4(cidrs: tuple[str, ...]) -> list[str]:
    """The IPv4 CIDRs: the frontend is IPv4 only, and one rule cannot mix the families."""
    return sorted(c for c in cidrs if ":" not in c)


# Each fixed name is the deployment's scope (service + digest of the stack: lowercase letters,
# digits and dashes, at most 27 characters) and a kind, well within Azure's rules
# (learn.microsoft.com .../resource-name-rules): resource groups 1-90, virtual networks,
# subnets, NSGs, public IPs and load balancers 1-80, user-assigned identities 3-128, Linux
# scale sets 1-64 and their computer name prefix 1-58 (azurerm's check; the VMs append six
# characters to it, Linux host names take 64).
AZURE_NAME_KINDS = {"resource_group": "rg", "identity": "id", "nsg": "nsg", "vnet": "vnet",
                    "subnet": "vms", "public_ip": "ip", "lb": "lb", "scale_set": "vmss",
                    "front_door": "fd", "origin_group": "origins", "origin": "balancer",
                    "route": "https", "custom_domain": "domain", "endpoint": "ep",
                    "fallback_scale_set": "vmss-od", "autoscale": "autoscale",
                    "fallback_autoscale": "autoscale-od"}
# Front Door endpoints: 2-46 letters, digits and dashes (azurerm's FrontDoorEndpointName). The
# endpoint's host name (<name>-<hash>.z01.azurefd.net) is global, so its name is the scope's
# `endpoint` name plus a random suffix each engine draws once and keeps in its state, as the
# Key Vault's: Terraform's random_string, azure-native's autonaming.
AZURE_ENDPOINT_NAME_LENGTH = 46
# Key Vault names: 3-24 characters, letters, digits and dashes, starting with a letter, global
# across all tenants. A soft-deleted vault keeps its name for the retention period, so the
# name ends in a random suffix each engine draws once and keeps in its state: Terraform's
# random_string, azure-native's autonaming (the resource's name plus 8 random hex digits).
AZURE_VAULT_NAME_LENGTH = 24
AZURE_VAULT_SUFFIX_LENGTH = 8


def azure_name(d: Deployment, kind: str) -> str:
    """The fixed name of one of the deployment's resources (a key of AZURE_NAME_KINDS)."""
    return f"{d.scope}-{AZURE_NAME_KINDS[kind]}"


def azure_dns_name(d: Deployment) -> tuple[str, str, str]:
    """The DNS zone's resource group and name, and the domain's name relative to the zone
    (refused unless the domain lies strictly inside the zone)."""
    tls = d.tls
    zone_id = tls.dns_zone if tls else None
    found = AZURE_DNS_ZONE_ID.fullmatch(zone_id or "")
    if tls is None or found is None:
        raise UserError(f"Azure --dns-zone {zone_id!r}: expected a DNS zone's resource id, "
                        "/subscriptions/<id>/resourceGroups/<group>/providers/"
                        "Microsoft.Network/dnszones/<zone>")
    zone, domain = found["zone"].lower().rstrip("."), tls.domain.lower().rstrip(".")
    if not domain.endswith("." + zone):
        raise UserError(f"Azure --domain {tls.domain}: not a name inside DNS zone {zone} "
                        "(and the zone's apex cannot be a CNAME to Front Door)")
    return found["group"], zone, domain.removesuffix("." + zone)


def azure_dns_records(d: Deployment, endpoint_host: Any, token: Any) -> list[dict[str, Any]]:
    """The records that put the domain on Front Door: the `_dnsauth` TXT record that proves
    the domain for its managed certificate, and the domain's CNAME to the endpoint. Names are
    fully qualified here (what the user creates without --dns-zone)."""
    domain = d.tls.domain if d.tls else ""
    return [{"name": f"_dnsauth.{domain}", "type": "TXT", "value": token},
            {"name": domain, "type": "CNAME", "value": endpoint_host}]


def azure_has_vault(d: Deployment) -> bool:
    """The stack's Key Vault exists whenever it keeps a secret: the token, the API key, or
    both."""
    return d.secret is not None or d.api_key is not None


def azure_with_vault(d: Deployment, vault: str) -> Deployment:
    """The deployment with the vault's name in every secret it keeps there, as the bootstrap
    renders it (the VMs learn the name from it, whichever secret they fetch)."""
    secret = replace(d.secret, vault=vault) if d.secret else None
    api_key = replace(d.api_key, vault=vault) if d.api_key else None
    return replace(d, secret=secret, api_key=api_key)


def azure_lb_name(d: Deployment) -> str:
    return azure_name(d, "lb")


def azure_computer_name_prefix(d: Deployment) -> str:
    return d.scope


def azure_vault_prefix(d: Deployment) -> str:
    """The Key Vault name before its random suffix: the service's letters and digits and the
    scope's stack digest (the service starts with a letter, as vault names must)."""
    room = AZURE_VAULT_NAME_LENGTH - AZURE_VAULT_SUFFIX_LENGTH - 6
    service = re.sub(r"[^a-z0-9]", "", d.service)[:room]
    return service + d.scope[-6:]


def azure_idle_timeout_minutes(seconds: int) -> int:
    low, high = AZURE_IDLE_TIMEOUT_MINUTES
    return max(low, min(high, math.ceil(seconds / 60)))


def azure_upgrade_pause(d: Deployment) -> str:
    """ISO 8601 minutes between rolling upgrade batches: the readiness delay, so the next
    batch starts once the previous one has loaded the model."""
    return f"PT{math.ceil(d.health.grace_period_seconds / 60)}M"


def azure_repair_grace_period(seconds: int) -> str:
    """ISO 8601 minutes, clamped into Azure's 10..90 minute range."""
    low, high = AZURE_REPAIR_GRACE_MINUTES
    return f"PT{max(low, min(high, math.ceil(seconds / 60)))}M"


def azure_security_rules(d: Deployment) -> dict[str, dict[str, Any]]:
    """The subnet's NSG rules by kind: the probe (from the `AzureLoadBalancer` tag) and the
    clients on the service port (a Standard balancer keeps the client's source address and
    rewrites the destination to the backend port; with TLS the only client is Front Door),
    SSH if asked, and a deny-all that shadows Azure's default inbound allows."""
    rules = {"probe": _nsg_rule("probe", d.health.port, ["AzureLoadBalancer"],
                                "load balancer health probe")}
    if d.tls is not None:
        # The balancer forwards Front Door's connections with their source kept, so on the
        # service port (as every client rule) only Front Door's addresses are let in.
        rules["clients"] = _nsg_rule("clients", d.service_port, [AZURE_FRONT_DOOR_TAG],
                                     "Front Door only, where HTTPS ends (no bypass)")
    elif azure_ipv4(d.allow_cidrs):
        rules["clients"] = _nsg_rule("clients", d.service_port, azure_ipv4(d.allow_cidrs),
                                     "clients via the load balancer (source IP is preserved)")
    if azure_ipv4(d.ssh_cidrs):
        rules["ssh"] = _nsg_rule("ssh", d.ssh_port, azure_ipv4(d.ssh_cidrs),
                                 "SSH via the balancer's NAT rule")
    rules["deny"] = {**_nsg_rule("deny", "*", ["*"], "shadow Azure's default inbound allows",
                                 access="Deny", protocol="*"), "name": "deny-all-inbound"}
    return rules


def _nsg_rule(kind: str, port: int | str, sources: list[str], why: str, access: str = "Allow",
              protocol: str = "Tcp") -> dict[str, Any]:
    source = ({"source_address_prefix": sources[0]} if len(sources) == 1
              else {"source_address_prefixes": sources})
    return {"name": f"{access.lower()}-{kind}", "priority": AZURE_PRIORITY[kind],
            "direction": "Inbound", "access": access, "protocol": protocol,
            "source_port_range": "*", "destination_address_prefix": "*",
            "destination_port_range": str(port), "description": why, **source}


def azure_probe(h: HealthCheck) -> dict[str, Any]:
    """HTTP 200 on the health path. Azure has one threshold for both directions (out after N
    failures, back after N successes), so it takes the unhealthy threshold; there is no probe
    timeout setting. `number_of_probes` is the older name of the same count."""
    return {"name": PROBE, "protocol": "Http", "port": h.port, "request_path": h.path,
            "interval_in_seconds": max(AZURE_PROBE_MIN_INTERVAL, h.interval_seconds),
            "probe_threshold": h.unhealthy_threshold, "number_of_probes": h.unhealthy_threshold}


# The Application Health extension a Flexible scale set takes its health from.
AZURE_HEALTH_EXTENSION: dict[str, Any] = {
    "name": "health", "publisher": "Microsoft.ManagedServices",
    "type": "ApplicationHealthLinux", "type_handler_version": "1.0"}


def azure_health_settings(h: HealthCheck) -> dict[str, Any]:
    """The extension probes what the balancer probes (binary health states)."""
    return {"protocol": "http", "port": h.port, "requestPath": h.path,
            "intervalInSeconds": max(AZURE_PROBE_MIN_INTERVAL, h.interval_seconds),
            "numberOfProbes": h.unhealthy_threshold}


# --- autoscaling and the on-demand fallback (replica_policy) ---------------------------------
#
# Azure Monitor autoscale (Microsoft.Insights/autoscaleSettings) sizes the scale set between
# the deployment's min and max replicas. Its signal is a custom metric every replica publishes
# to the scale set (namespace `metrics_namespace`, one series per VM, dimension "instance",
# every 60 s: servestack/bootstrap/metrics.py), averaged over the replicas. For "qps" that is
# vLLM's own request rate: a Standard load balancer is a layer-4 balancer whose metrics are
# bytes, packets, SYNs and health-probe status, never HTTP requests, and a SYN count is not a
# request count (one connection carries many requests, a stream holds one for minutes).
#
# Azure's rules are steps, not SkyServe's proportional ceil(load / target):
# - Scale out: a ladder of rules on the same average (the per-replica load r x target means the
#   service needs ceil(n x r) replicas, i.e. n x (r - 1) more): above the target add one; above
#   1.5x, 2x and 3x the target add 50%, 100%, 200% of the current count. Azure scales out when
#   any scale-out rule holds and takes the rule that yields the most instances ("Understand
#   autoscale settings", autoscale evaluation), so each step adds at most what the load already
#   asks for; what a step leaves short, the next evaluation after the cooldown adds. The
#   cooldown is the model-load time (the readiness delay) plus the upscale delay: new VMs
#   publish nothing until vLLM serves, so the next step is judged on a window of data from
#   after they serve, not on load that the ones still loading will take.
# - Scale in: one replica when the average over the downscale delay is below the target. Azure
#   skips or shrinks a scale-in whose projected average (value x n / (n - 1)) would cross a
#   scale-out threshold ("Flapping in Autoscale"), so a replica goes only when
#   ceil(load / target) <= n - 1: SkyServe's rule. One replica per downscale delay (scale-in
#   rules must all hold, so there is no scale-in ladder; the cooldown equals the window so the
#   next decision sees only data from after the last one).
AZURE_TIME_GRAIN = "PT1M"  # the shipper publishes every 60 s
AZURE_WINDOW_MINUTES = (5, 720)  # MetricTrigger.time_window: "between 12 hours and 5 minutes"
AZURE_COOLDOWN_MINUTES = (1, 7 * 24 * 60)  # ScaleAction.cooldown: "between 1 week and 1 minute"
AZURE_MAX_RULES = 10  # AutoscaleProfile.rules: "A maximum of 10 rules can be specified"
AZURE_AUTOSCALE_TAGS = 15  # an autoscale setting takes at most 15 tags (AutoscaleSetting.tags)
AZURE_STATISTIC = "Average"  # how the replicas' series combine: the per-replica average
AZURE_PROFILE = "load"
# (multiple of the target, scale action type, value)
AZURE_SCALE_OUT_LADDER = ((1.0, "ChangeCount", 1), (1.5, "PercentChangeCount", 50),
                          (2.0, "PercentChangeCount", 100), (3.0, "PercentChangeCount", 200))
# The fallback's steps: (multiple of the target, stand-ins added); see _fallback_rules.
AZURE_FALLBACK_LADDER = ((1.0, 1), (3.0, 2), (5.0, 4))
AZURE_FALLBACK_RELEASE = 0.8  # a stand-in leaves below this share of the target
# Built-in role "Monitoring Metrics Publisher" (Azure built-in roles, Monitor): lets the VMs'
# identity post custom metrics to the scale set it is assigned on.
AZURE_METRICS_PUBLISHER_ROLE = "3913510d-42f4-4e42-8a64-420c390055eb"
AZURE_PRINCIPAL_TYPE = "ServicePrincipal"  # a managed identity; spares a directory lookup


@dataclass(frozen=True, slots=True)
class AzureScaleRule:
    """One autoscale rule: the metric trigger's comparison and window, and the action."""

    direction: str  # "Increase" | "Decrease"
    operator: str  # "GreaterThan" | "LessThan"
    threshold: float
    time_aggregation: str  # how the window's minutes combine: "Average" | "Minimum"
    time_window: str
    cooldown: str
    type: str  # "ChangeCount" | "PercentChangeCount"
    value: int


@dataclass(frozen=True, slots=True)
class AzureAutoscale:
    """One autoscale setting. `fallback`: it sizes the on-demand fallback scale set (its rules
    still read the spot scale set's metric); else the main scale set."""

    name: str
    fallback: bool
    minimum: int
    maximum: int
    default: int
    metric: str
    namespace: str
    rules: tuple[AzureScaleRule, ...]


def azure_minutes(seconds: float, bounds: tuple[int, int]) -> str:
    """ISO 8601 whole minutes (rounded up), clamped into Azure's range for the field."""
    low, high = bounds
    return f"PT{max(low, min(high, math.ceil(seconds / 60)))}M"


def azure_autoscales(d: Deployment) -> tuple[AzureAutoscale, ...]:
    """The deployment's autoscale settings: none for a fixed group; the main scale set's;
    and the on-demand fallback's with dynamic_ondemand_fallback."""
    scaling = d.autoscaling
    if scaling is None:
        return ()
    metric = CLOUD.shipped_metric(d)
    assert metric is not None  # Azure's balancer counts no requests: every metric is shipped
    main = AzureAutoscale(azure_name(d, "autoscale"), False, d.min_replicas, d.max_replicas,
                          d.desired_replicas, metric, CLOUD.metrics_namespace, _main_rules(d))
    if not d.dynamic_ondemand_fallback:
        return (main,)
    spot_floor = d.min_replicas - d.on_demand_base
    fallback = AzureAutoscale(azure_name(d, "fallback_autoscale"), True, 0,
                              d.max_replicas - d.on_demand_base, spot_floor, metric,
                              CLOUD.metrics_namespace, _fallback_rules(d))
    return (main, fallback)


def _main_rules(d: Deployment) -> tuple[AzureScaleRule, ...]:
    scaling = d.autoscaling
    assert scaling is not None
    up, down = scaling.upscale_delay_seconds, scaling.downscale_delay_seconds
    warm_up = up + d.health.grace_period_seconds
    out = tuple(AzureScaleRule("Increase", "GreaterThan", scaling.target * ratio, "Average",
                               azure_minutes(up, AZURE_WINDOW_MINUTES),
                               azure_minutes(warm_up, AZURE_COOLDOWN_MINUTES), kind, value)
                for ratio, kind, value in AZURE_SCALE_OUT_LADDER)
    scale_in = AzureScaleRule("Decrease", "LessThan", scaling.target, "Average",
                              azure_minutes(down, AZURE_WINDOW_MINUTES),
                              azure_minutes(down, AZURE_COOLDOWN_MINUTES), "ChangeCount", 1)
    return (*out, scale_in)


# The on-demand fallback (SkyServe's dynamic_ondemand_fallback). Azure has no native on-demand
# fallback for spot VMs (Spot Priority Mix keeps a fixed on-demand share), and it publishes no
# metric of how many VMs a scale set is missing against its target that a rule could compare
# with the number of stand-ins. So the stand-ins are a second, regular-priority scale set in the
# same backend pool, sized by its own autoscale setting from the spot scale set's per-replica
# load (the balancer spreads requests evenly, so that is every replica's load):
# - while no spot replica publishes at all (every spot VM evicted, or the first model load),
#   Azure uses the setting's default capacity: the spot floor, min_replicas - on-demand base;
# - out: when the load stayed above the target for the whole of upscale delay + model load +
#   upscale delay ("Minimum" over the window): the spot set's own rules had their turn and
#   their VMs had time to serve, so what is still short is spot capacity. A minimum above
#   (k + 1) x target over n >= 1 serving replicas means at least k x n >= k replicas are
#   missing, so the ladder adds 1, 2 or 4 stand-ins (counts, not percentages: the set starts
#   empty) and never more than are missing. Cooldown: the model load plus the upscale delay,
#   so the next step is judged on data from after the stand-ins serve;
# - in: one VM when the average stays below AZURE_FALLBACK_RELEASE x the target for the
#   upscale delay, which is shorter than the spot set's downscale window: when spot capacity
#   returns, the stand-ins leave first, and the spot set's own rule then adds spot VMs for any
#   load still above the target. The margin stands in for Azure's flapping estimate, which
#   needs the count of replicas sharing the load: removing one of n raises each one's load by
#   n / (n - 1), at most 1.25x from five replicas up, so below 0.8x the target a stand-in can
#   leave without pushing the others over it; with fewer replicas it may, and the out rule
#   brings it back after its window.
# Limits: it reacts to load left unserved, not to a count of missing spot VMs, so a load that
# the remaining replicas can carry gets no stand-in; stand-ins arrive after the long window,
# not at the moment of eviction; Azure documents its flapping estimate for a metric of the
# scaled resource itself, not for this cross-resource rule.
def _fallback_rules(d: Deployment) -> tuple[AzureScaleRule, ...]:
    scaling = d.autoscaling
    assert scaling is not None
    up, load = scaling.upscale_delay_seconds, d.health.grace_period_seconds
    out = tuple(AzureScaleRule("Increase", "GreaterThan", scaling.target * ratio, "Minimum",
                               azure_minutes(up + load + up, AZURE_WINDOW_MINUTES),
                               azure_minutes(load + up, AZURE_COOLDOWN_MINUTES), "ChangeCount",
                               count)
                for ratio, count in AZURE_FALLBACK_LADDER)
    scale_in = AzureScaleRule("Decrease", "LessThan", scaling.target * AZURE_FALLBACK_RELEASE,
                              "Average", azure_minutes(up, AZURE_WINDOW_MINUTES),
                              azure_minutes(up, AZURE_COOLDOWN_MINUTES), "ChangeCount", 1)
    return (*out, scale_in)


def azure_fallback(d: Deployment) -> Deployment:
    """The on-demand fallback scale set's deployment: the same VMs at regular priority,
    starting empty (its autoscale setting sizes it)."""
    return replace(d, use_spot=False, on_demand_base=0, capacity_rebalance=False,
                   desired_replicas=0, dynamic_ondemand_fallback=False)


def azure_has_fallback(d: Deployment) -> bool:
    return any(a.fallback for a in azure_autoscales(d))


def azure_fallback_computer_name_prefix(d: Deployment) -> str:
    return f"{d.scope}-od"


def azure_zone_balance(d: Deployment) -> bool | None:
    """Best-effort zone spreading (False: Azure places VMs in whichever of the zones has
    capacity, which spot needs); Azure takes the setting only with more than one zone."""
    return False if len(d.zones) > 1 else None


def azure_autoscale_tags(d: Deployment) -> dict[str, str]:
    """The deployment's tags within an autoscale setting's 15: servestack's own first (the
    sweep finds resources by them), then the spec's labels in name order."""
    own = {k: v for k, v in d.tags.items() if k not in d.labels}
    room = AZURE_AUTOSCALE_TAGS - len(own)
    return {**own, **dict(sorted(d.labels.items())[:room])}


def azure_role_assignment_name(d: Deployment, fallback: bool) -> str:
    """A role assignment's name is a GUID: derived from the scope and the scale set, so it is
    stable across applies and differs per stack."""
    kind = "fallback_scale_set" if fallback else "scale_set"
    return str(uuid.uuid5(uuid.NAMESPACE_URL,
                          f"servestack:{azure_name(d, kind)}:{AZURE_METRICS_PUBLISHER_ROLE}"))


AZURE_ROLE_DEFINITION_PATH = \
    f"/providers/Microsoft.Authorization/roleDefinitions/{AZURE_METRICS_PUBLISHER_ROLE}"


def azure_role_definition(subscription: str) -> str:
    """The role's definition id in the subscription (what a role assignment names)."""
    return f"/subscriptions/{subscription}{AZURE_ROLE_DEFINITION_PATH}"


# --- --weight-cache (servestack.deployment.cache): the storage account, as both engines
# spell it. No public blob access, TLS 1.2, HTTPS only, Azure AD first; a private container;
# the VMs' identity gets Storage Blob Data Contributor on that container only. Shared key
# access is off where the engine can create the account without it (azure-native works through
# ARM only); azurerm reads the account's data plane with the keys while it creates it (it fails
# with KeyBasedAuthenticationNotPermitted otherwise: terraform-provider-azurerm #25218, #27752),
# so the Terraform stack keeps them on, and the VMs still use their identity only.
AZURE_CACHE_ACCOUNT = {"account_tier": "Standard", "account_replication_type": "LRS",
                       "account_kind": "StorageV2", "min_tls_version": "TLS1_2",
                       "https_traffic_only_enabled": True,
                       "allow_nested_items_to_be_public": False}
AZURE_CACHE_SKU = "Standard_LRS"
# Storage Blob Data Contributor, a built-in role (learn.microsoft.com/azure/
# role-based-access-control/built-in-roles/storage).
AZURE_BLOB_CONTRIBUTOR_ROLE = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
AZURE_BLOB_CONTRIBUTOR_PATH = \
    f"/providers/Microsoft.Authorization/roleDefinitions/{AZURE_BLOB_CONTRIBUTOR_ROLE}"


def azure_cache_role_name(d: Deployment) -> str:
    """The cache role assignment's GUID: stable across applies, different per stack."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL,
                          f"servestack:{d.scope}-weight-cache:"
                          f"{AZURE_BLOB_CONTRIBUTOR_ROLE}"))
