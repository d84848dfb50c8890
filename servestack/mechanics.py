"""How each cloud spells the Deployment's decisions, written once for both engines.

The Pulumi components (components/<cloud>.py) and the Terraform renderers
(servestack/terraform/<cloud>.py) read every decision from the `Deployment`. What is left is
how a cloud's API expresses it: clamping a value into the range the API accepts, the names of
sub-resources, the spot/on-demand settings behind the spot split, labels a cloud accepts. Both
engines must do that identically, so it lives here and nowhere else.

The dicts use the argument names both engines share (the Pulumi SDKs' Python names are the
Terraform providers' argument names for these blocks): a Terraform renderer puts them in its
JSON as they are, a Pulumi component passes them as keyword arguments to the SDK's Args class.
No SDK imports.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from servestack.deployment import WORLD, Deployment, HealthCheck, InstanceChoice

# --- AWS --------------------------------------------------------------------------------------

ALL_PROTOCOLS = "-1"  # security group rules: every protocol
# IMDSv2 only (session tokens), one hop: a container on the VM cannot reach the metadata service.
AWS_METADATA_OPTIONS = {"http_endpoint": "enabled", "http_tokens": "required",
                        "http_put_response_hop_limit": 1}


def aws_health_check(h: HealthCheck) -> dict[str, Any]:
    """The target group's health check: HTTP 200 on the health path and port."""
    return {"enabled": True, "protocol": "HTTP", "path": h.path, "port": str(h.port),
            "interval": h.interval_seconds, "timeout": h.timeout_seconds,
            "healthy_threshold": h.healthy_threshold,
            "unhealthy_threshold": h.unhealthy_threshold, "matcher": "200"}


def aws_root_ebs(d: Deployment) -> dict[str, Any]:
    """The root volume: the deployment's size, type and IOPS, encrypted, gone with the VM."""
    ebs = {"volume_size": d.disk_size_gb, "volume_type": d.disk_type, "encrypted": "true",
           "delete_on_termination": "true"}
    return {**ebs, "iops": d.disk_iops} if d.disk_iops is not None else ebs


def aws_distribution(d: Deployment) -> dict[str, Any]:
    """The spot split as an ASG instances distribution; types are tried in rank order."""
    if not d.use_spot:
        return {"on_demand_allocation_strategy": "prioritized", "on_demand_base_capacity": 0,
                "on_demand_percentage_above_base_capacity": 100}
    return {"on_demand_allocation_strategy": "prioritized",
            "on_demand_base_capacity": d.on_demand_base,
            "on_demand_percentage_above_base_capacity": 0,
            "spot_allocation_strategy": "capacity-optimized-prioritized"}


# --- GCP --------------------------------------------------------------------------------------

GCP_CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GCP_SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
GCP_NAMED_PORT = "http"  # the MIG's name for the service port; the backend service targets it
GCP_LB_TIER = "STANDARD"  # a regional load balancer gains nothing from Premium's global anycast
GCP_MAX_AUTOHEAL_DELAY = 3600  # API range of initial_delay_sec
GCP_MAX_DRAINING = 3600  # API range of connection_draining_timeout_sec
GCP_DEFAULT_ZONE_COUNT = 3  # a regional MIG without explicit zones spreads over 3 of them
GCP_MAX_CIDRS_PER_RULE = 10  # Cloud Armor: src_ip_ranges per rule
GCP_DEFAULT_RULE_PRIORITY = 2147483647
# The MIG spreads over its zones but creates VMs where the GPUs are available; the instance
# flexibility policy also requires BALANCED (or ANY / ANY_SINGLE_ZONE).
GCP_TARGET_SHAPE = "BALANCED"


def gcp_labels(tags: dict[str, str]) -> dict[str, str]:
    """Tags as GCP labels: lowercase letters, digits, `_` and `-`, keys start with a letter,
    both at most 63 characters, at most 64 labels."""
    labels: dict[str, str] = {}
    for key, value in tags.items():
        clean_key = re.sub(r"[^a-z0-9_-]", "-", str(key).lower())
        if not clean_key or not clean_key[0].isalpha():
            clean_key = f"l-{clean_key}"
        labels[clean_key[:63]] = re.sub(r"[^a-z0-9_-]", "-", str(value).lower())[:63]
    return dict(list(labels.items())[:64])


def gcp_network_tag(d: Deployment) -> str:
    """The network tag on the VMs; firewall rules target it."""
    return f"servestack-{d.service}"[:63].rstrip("-")


def gcp_service_account_id(d: Deployment) -> str:
    """6-30 characters, unique per candidate so two stacks in one project do not collide."""
    digest = hashlib.sha256(d.candidate_id.encode()).hexdigest()[:6]
    return f"ss-{d.service[:17].rstrip('-')}-{digest}"


def gcp_flexible_choices(d: Deployment) -> list[InstanceChoice]:
    """The ranked machine types one template can serve: N1 hosts only with the primary's GPU
    type attached (the template carries `guest_accelerators`), bundled types with each other."""
    return [c for c in d.instances if c.attached_gpu == d.primary.attached_gpu]


def gcp_needs_gvnic(d: Deployment) -> bool:
    """A3 machine types only boot with gVNIC; the other GPU families accept the default."""
    return any(c.instance_type.startswith("a3-") for c in gcp_flexible_choices(d))


def gcp_scheduling(spot: bool) -> dict[str, Any]:
    """GPU VMs cannot live-migrate, so host maintenance stops them (TERMINATE).

    Spot: DELETE on preemption rather than STOP. A stopped spot VM stays in its zone until
    capacity returns there (and its disk keeps billing); a deleted one is recreated by the MIG
    in whichever of the group's zones has spot capacity, and the bootstrap reloads the model.
    """
    if spot:
        return {"provisioning_model": "SPOT", "preemptible": True, "automatic_restart": False,
                "on_host_maintenance": "TERMINATE", "instance_termination_action": "DELETE"}
    return {"provisioning_model": "STANDARD", "preemptible": False, "automatic_restart": True,
            "on_host_maintenance": "TERMINATE"}


def gcp_versions(d: Deployment) -> dict[str, int | None]:
    """The MIG's versions, one instance template each, on-demand first, with the fixed number
    of VMs each runs (None: the rest of the target size). On-demand alone, spot alone, or with
    a spot split the on-demand version pinned to `on_demand_base` and spot above it."""
    if not d.use_spot:
        return {"ondemand": None}
    if d.on_demand_base:
        return {"ondemand": d.on_demand_base, "spot": None}
    return {"spot": None}


def gcp_update_policy(d: Deployment) -> dict[str, Any]:
    """New VMs come up before old ones go (no capacity dip while a model loads); a regional MIG
    needs a fixed surge of 0 or at least its zone count. Proactive redistribution is off:
    the BALANCED target shape does not support it."""
    return {"type": "PROACTIVE", "minimal_action": "REPLACE", "replacement_method": "SUBSTITUTE",
            "max_surge_fixed": len(d.zones) or GCP_DEFAULT_ZONE_COUNT,
            "max_unavailable_fixed": 0, "instance_redistribution_type": "NONE"}


def gcp_autoheal_delay(d: Deployment) -> int:
    return min(d.health.grace_period_seconds, GCP_MAX_AUTOHEAL_DELAY)


def gcp_draining_seconds(d: Deployment) -> int:
    """Draining lets in-flight streamed completions finish, within the API's range."""
    return min(d.idle_timeout_seconds, GCP_MAX_DRAINING)


def gcp_client_rules(d: Deployment) -> list[dict[str, Any]] | None:
    """Cloud Armor rules: allow `allow_cidrs` (10 per rule), deny everyone else. None when the
    service is open to all (no policy then)."""
    if not d.allow_cidrs or WORLD in d.allow_cidrs:
        return None
    cidrs = list(d.allow_cidrs)
    chunks = [cidrs[i:i + GCP_MAX_CIDRS_PER_RULE]
              for i in range(0, len(cidrs), GCP_MAX_CIDRS_PER_RULE)]
    rules = [_armor_rule(1000 + i, "allow", chunk, "allowed client CIDRs")
             for i, chunk in enumerate(chunks)]
    return rules + [_armor_rule(GCP_DEFAULT_RULE_PRIORITY, "deny(403)", ["*"], "everyone else")]


def _armor_rule(priority: int, action: str, ranges: list[str], why: str) -> dict[str, Any]:
    return {"priority": priority, "action": action, "description": why,
            "match": {"versioned_expr": "SRC_IPS_V1", "config": {"src_ip_ranges": ranges}}}


# --- Azure ------------------------------------------------------------------------------------

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


def azure_lb_name(d: Deployment) -> str:
    return f"{d.service}-lb"


def azure_computer_name_prefix(d: Deployment) -> str:
    return d.service[:15].rstrip("-")


def azure_idle_timeout_minutes(seconds: int) -> int:
    low, high = AZURE_IDLE_TIMEOUT_MINUTES
    return max(low, min(high, math.ceil(seconds / 60)))


def azure_repair_grace_period(seconds: int) -> str:
    """ISO 8601 minutes, clamped into Azure's 10..90 minute range."""
    low, high = AZURE_REPAIR_GRACE_MINUTES
    return f"PT{max(low, min(high, math.ceil(seconds / 60)))}M"


def azure_security_rules(d: Deployment) -> dict[str, dict[str, Any]]:
    """The subnet's NSG rules by kind: the probe (from the `AzureLoadBalancer` tag) and the
    clients on the service port (a Standard balancer keeps the client's source address and
    rewrites the destination to the backend port), SSH if asked, and a deny-all that shadows
    Azure's default inbound allows."""
    rules = {"probe": _nsg_rule("probe", d.health.port, ["AzureLoadBalancer"],
                                "load balancer health probe")}
    if azure_ipv4(d.allow_cidrs):
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
AZURE_HEALTH_EXTENSION = {"name": "health", "publisher": "Microsoft.ManagedServices",
                          "type": "ApplicationHealthLinux", "type_handler_version": "1.0"}


def azure_health_settings(h: HealthCheck) -> dict[str, Any]:
    """The extension probes what the balancer probes (binary health states)."""
    return {"protocol": "http", "port": h.port, "requestPath": h.path,
            "intervalInSeconds": max(AZURE_PROBE_MIN_INTERVAL, h.interval_seconds),
            "numberOfProbes": h.unhealthy_threshold}
