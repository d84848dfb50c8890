"""Google Cloud: its facts (zones, quotas, error texts, images, disks, secrets, labels) and the
spellings that the Pulumi component (components/gcp.py) and the Terraform renderer
(terraform/gcp.py) share.

The dicts use the argument names both engines share (the Pulumi SDK's Python names are the
Terraform provider's argument names for these blocks). No SDK imports.
"""

from __future__ import annotations

import re
from typing import Any

from servestack.clouds.base import Cloud, Offered, QuotaScope, Rule, digest, rule
from servestack.deployment.model import (
    WORLD,
    Autoscaling,
    Deployment,
    ImageRef,
    InstanceChoice,
    NetworkPlan,
    SecretRef,
)
from servestack.errors import UserError

# Google's health checkers and the regional load balancer's proxies come from these ranges.
GCP_HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")
# The regional external Application Load Balancer: Envoy proxies in a proxy-only subnet.
GCP_LB_SCHEME = "EXTERNAL_MANAGED"
GCP_VPC: dict[str, Any] = {"auto_create_subnetworks": False, "routing_mode": "REGIONAL"}
GCP_PROXY_SUBNET: dict[str, Any] = {"purpose": "REGIONAL_MANAGED_PROXY", "role": "ACTIVE"}
GCP_BACKEND: dict[str, Any] = {"balancing_mode": "UTILIZATION", "capacity_scaler": 1.0}
GCP_ADDRESS_TYPE = "EXTERNAL"
GCP_ARMOR_TYPE = "CLOUD_ARMOR"
# The GPU VMs have no public address: Cloud NAT carries their egress (pip, the model download)
# from the VMs' subnet only, on addresses Google allocates and adds as VMs are added. Dynamic
# port allocation lets a VM that opens many parallel connections to one CDN endpoint (the
# model's shards) grow past the default 64 ports; it requires endpoint-independent mapping off.
GCP_NAT: dict[str, Any] = {"nat_ip_allocate_option": "AUTO_ONLY",
                           "source_subnetwork_ip_ranges_to_nat": "LIST_OF_SUBNETWORKS",
                           "enable_dynamic_port_allocation": True,
                           "enable_endpoint_independent_mapping": False}
GCP_NAT_SOURCE_RANGES = ["ALL_IP_RANGES"]  # the subnet's primary and any secondary ranges
GCP_NAT_LOG: dict[str, Any] = {"enable": True, "filter": "ERRORS_ONLY"}  # dropped connections
# VPC flow logs on the VMs' subnet (proxy-only subnets have none): what the load balancer, the
# health checkers and the NAT exchange with the VMs. Ten-minute aggregation and half the flows
# sampled keep the log volume small on a subnet whose bulk is a model download.
GCP_FLOW_LOGS: dict[str, Any] = {"aggregation_interval": "INTERVAL_10_MIN", "flow_sampling": 0.5,
                                 "metadata": "INCLUDE_ALL_METADATA"}

RULES = (
    rule("capacity", "ZONE_RESOURCE_POOL_EXHAUSTED",
         r"ZONE_RESOURCE_POOL_EXHAUSTED(?:_WITH_DETAILS)?|does not have enough resources "
         r"available|resource_availability|state:STOCKOUT"),
    rule("capacity", "insufficientCapacity", r"insufficientCapacity|INSUFFICIENT_CAPACITY"
         r"|There is no more capacity in the zone"),
    rule("capacity", "NotOfferedInZone",
         r"zones/[a-z0-9-]+/(?:acceleratorTypes|machineTypes)/[^' ]+' was not found"),
    rule("quota", "GPUS_ALL_REGIONS", r"'GPUS_ALL_REGIONS' exceeded", scope="cloud"),
    rule("quota", "QUOTA_EXCEEDED", r"QUOTA_EXCEEDED|Quota '[A-Z0-9_]+' exceeded|\bquotaExceeded"),
    rule("credentials", "NoCredentials",
         r"could not find default credentials|invalid_grant|oauth2: cannot fetch token"
         r"|invalid authentication credentials|missing google credentials"
         r"|unable to parse credentials"),
    rule("permission", "PermissionDenied",
         r"Required '[\w.]+' permission|IAM_PERMISSION_DENIED|Permission '[^']+' denied"
         r"|caller does not have permission|Policy update access denied"
         r"|SERVICE_DISABLED|accessNotConfigured|has not been used in project \d+"),
    rule("throttled", "rateLimitExceeded",
         r"rateLimitExceeded|RATE_LIMIT_EXCEEDED|Quota exceeded for quota metric"
         r"|RESOURCE_OPERATION_RATE_EXCEEDED|Error 429"),
    rule("transient", "ServerError",
         r"Error 50[0234]\b|backendError|internalError|RESOURCE_NOT_READY"),
    rule("invalid-config", "BadRequest",
         r"Error 400\b|badRequest|INVALID_ARGUMENT|Invalid value for field"),
)
# Cloud DNS managed zone names (the API's ManagedZone.name): 1-63 characters, a letter first,
# a letter or digit last, lowercase letters, digits and dashes between.
GCP_DNS_ZONE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
ZONE_IN_ERROR = (r"zones/([a-z]+-[a-z]+\d+-[a-z])\b", r"in the ([a-z]+-[a-z]+\d+-[a-z]) zone",
                 r"\bzone: ([a-z]+-[a-z]+\d+-[a-z])\b")


class Gcp(Cloud):
    name = "gcp"
    title = "GCP"
    zone_shape = r"^{region}-[a-z]$"
    disk_types = {"low": "pd-standard", "medium": "pd-balanced", "high": "pd-ssd",
                  "ultra": "pd-ssd", "best": "pd-ssd", "none": "pd-balanced"}
    # Deep Learning VM: Ubuntu 22.04, NVIDIA driver 580, CUDA 12.9. Ubuntu (not the Debian DLVM
    # families) because its cloud-init reads the `user-data` metadata key on GCE.
    default_image = ImageRef(kind="lookup", project="deeplearning-platform-release",
                             family="common-cu129-ubuntu-2204-nvidia-580")
    # A VPC has no range of its own: a subnet for the VMs and the proxy-only subnet its
    # regional load balancer needs (Google recommends a /23).
    network = NetworkPlan(subnet="10.64.0.0/20", proxy_subnet="10.64.16.0/23")
    metrics_namespace = "custom.googleapis.com/servestack/"
    # The MIG does not hold the apply for its VMs (the deploy loop polls readiness).
    capacity_timeout = None
    failure_rules = RULES
    cache_scheme = "gs"
    cache_packages = ("google-cloud-storage>=2.10",)

    def secret_ref(self, service: str, stack: str) -> SecretRef:
        """A secret id per service and stack ([A-Za-z0-9_-], at most 255 characters)."""
        name = f"servestack-{service}-{digest(f'{service}/{stack}')}-hf-token"
        return SecretRef(self.name, "secret-manager", name)

    def api_key_ref(self, service: str, stack: str) -> SecretRef:
        """The generated API key: its own secret beside the secrets' one."""
        name = f"servestack-{service}-{digest(f'{service}/{stack}')}-api-key"
        return SecretRef(self.name, "secret-manager", name)

    def check(self, d: Deployment) -> None:
        """Refuses what GCP cannot build. A --dns-zone must be a Cloud DNS managed zone's
        name (the record sets take the name, not the zone's DNS name nor another cloud's zone
        id). The on-demand fallback group grows on the load the spot group cannot carry (see
        gcp_autoscaling_policy); a fixed-size policy gives it no load signal to grow on."""
        zone = d.tls.dns_zone if d.tls else None
        if zone is not None and not GCP_DNS_ZONE_NAME.fullmatch(zone):
            raise UserError(f"--dns-zone {zone[:80]!r}: on GCP, the name of a Cloud DNS "
                            "managed zone (1-63 lowercase letters, digits and dashes, a letter "
                            "first; `gcloud dns managed-zones list` shows them)")
        if d.dynamic_ondemand_fallback and d.autoscaling is None:
            raise UserError("replica_policy.dynamic_ondemand_fallback on GCP needs an "
                            "autoscaling policy (min_replicas < max_replicas and "
                            "target_qps_per_replica, or --scale-metric): the on-demand group "
                            "grows on the load the spot group cannot carry")

    def stack_config(self, d: Deployment) -> dict[str, str]:
        config = {"gcp:region": d.region}
        if d.gcp_project:
            config["gcp:project"] = d.gcp_project
        return config

    def setup_hints(self, d: Deployment, engine: str) -> list[str]:
        if d.gcp_project:
            return []
        if engine == "terraform":
            return ['Set the project first: add "project": "<id>" to terraform.tfvars.json']
        return ["Set the project first: pulumi config set gcp:project <id>"]

    def quota_families(self, c: Offered) -> tuple[str, ...]:
        """The GPU quota (preemptible when spot) and the machine series' CPU quota."""
        gpu = "NVIDIA_" + re.sub(r"[^A-Z0-9]+", "_", (c.attached_gpu or c.accelerator).upper())
        gpu = gpu.replace("NVIDIA_NVIDIA_", "NVIDIA_").replace("_TESLA_", "_") + "_GPUS"
        series = c.instance_type.split("-")[0].upper() + "_CPUS"
        return (("PREEMPTIBLE_" if c.use_spot else "") + gpu, series)

    def quota_scope(self, found: Rule, text: str, c: Offered) -> QuotaScope:
        """The metric and region GCP names; a global limit rules out the whole cloud."""
        match = re.search(r"Quota '([A-Z0-9_]+)' exceeded", text)
        metric = match.group(1) if match else None
        if re.search(r"Limit: [\d.]+ globally", text) or (metric or "").endswith("_ALL_REGIONS"):
            return QuotaScope()
        region = re.search(r"in region ([a-z]+-[a-z]+\d+)", text)
        where = region.group(1) if region else c.region
        if metric and metric in self.quota_families(c):
            return QuotaScope(where, metric)
        return QuotaScope(where)

    def zone_in_error(self, text: str, c: Offered) -> str | None:
        if c.zone:
            return c.zone
        for pattern in ZONE_IN_ERROR:
            match = re.search(pattern, text)
            if match and match.group(1) in c.zones:
                return match.group(1)
        return None


CLOUD = Gcp()


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
# flexibility policy also requires BALANCED (or ANY / ANY_SINGLE_ZONE). For spot too: Google's
# regional MIG target-shape docs recommend BALANCED for highly available serving (it creates VMs
# where capacity is, spot capacity included, while keeping them as even as it can over the
# zones) and ANY for batch work that needs no high availability; ANY_SINGLE_ZONE would put
# every replica in one zone. The zones are every zone of the region the catalog lists for the
# type (the deployment's `zones`), so a spot group is never pinned to one unless the spec is.
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


def gcp_name(d: Deployment, kind: str) -> str:
    """The physical name of one of the deployment's resources: its scope (service and a digest
    of its stack, at most 27 characters) and the resource's kind, so no two services or stacks
    share one in a project. Compute Engine names follow RFC 1035: a lowercase letter, then
    lowercase letters, digits and dashes, at most 63 characters, not ending in a dash."""
    return f"{d.scope}-{kind}"


def gcp_template_prefix(d: Deployment, kind: str) -> str:
    """The instance template's name prefix (each template change makes a new one): the
    provider appends a unique suffix, in full up to a 37-character prefix (google provider,
    website/docs/r/compute_region_instance_template `name_prefix`)."""
    return f"{gcp_name(d, kind)}-"


def gcp_network_tag(d: Deployment) -> str:
    """The network tag on the VMs (RFC 1035, like a name); firewall rules target it."""
    return gcp_name(d, "vm")


def gcp_service_account_id(d: Deployment) -> str:
    """The VMs' service account id: 6-30 characters of [a-z0-9-], a letter first."""
    return gcp_name(d, "vm")


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
    a spot split the on-demand version pinned to `on_demand_base` and spot above it.

    A MIG's versions may differ in provisioning model, and a fixed version size holds under
    an autoscaler (it sizes the whole group), so one MIG keeps SkyServe's fixed base exactly,
    its total bounded by min and max. With dynamic fallback the on-demand VMs are a second
    MIG of their own (gcp_has_fallback_group): their count must move apart from the spot
    group's, which a fixed version size cannot."""
    if not d.use_spot:
        return {"ondemand": None}
    if d.on_demand_base and not gcp_has_fallback_group(d):
        return {"ondemand": d.on_demand_base, "spot": None}
    return {"spot": None}


def gcp_template_kinds(d: Deployment) -> tuple[str, ...]:
    """The instance templates the deployment needs, on-demand first: its MIG's versions,
    and the on-demand template of the fallback group."""
    kinds = set(gcp_versions(d)) | ({"ondemand"} if gcp_has_fallback_group(d) else set())
    return tuple(k for k in ("ondemand", "spot") if k in kinds)


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


def gcp_nic_type(d: Deployment) -> str | None:
    """gVNIC where the machine family needs it (A3), else the API's default."""
    return "GVNIC" if gcp_needs_gvnic(d) else None


def gcp_metadata(user_data: Any) -> dict[str, Any]:
    """The VMs' metadata: cloud-init's user data, and OS Login for any SSH access."""
    return {"user-data": user_data, "enable-oslogin": "TRUE"}


# --- API key and TLS -------------------------------------------------------------------------
# A regional external Application LB takes Google-managed certificates only from Certificate
# Manager, as regional certificates (location = the region) authorized through a regional DNS
# authorization (the Compute regional SSL certificate is self-managed only). A DNS
# authorization outside "global" defaults to a per-project record, the kind Google documents
# for regional ones (set here explicitly); the record it asks for is a CNAME to
# <...>.authorize.certificatemanager.goog.
GCP_DNS_AUTHORIZATION_TYPE = "PER_PROJECT_RECORD"
GCP_DNS_AUTHORIZATION_RECORD = "CNAME"
GCP_DNS_TTL = 300  # seconds; short enough that a moved address is picked up soon
# Port 80 answers every request with a redirect to https on the same host and path. 308 (not
# the default 301) keeps the method and body, so an API client's POST is repeated over HTTPS.
# strip_query is required by the API ("to ensure an empty block is not set").
GCP_HTTPS_REDIRECT: dict[str, Any] = {"https_redirect": True, "strip_query": False,
                                      "redirect_response_code": "PERMANENT_REDIRECT"}
# TLS 1.2 or later, with the MODERN profile's forward-secret ciphers (the default policy,
# COMPATIBLE, still accepts TLS 1.0).
GCP_SSL_POLICY: dict[str, Any] = {"profile": "MODERN", "min_tls_version": "TLS_1_2"}


def gcp_fqdn(domain: str) -> str:
    """A domain as Cloud DNS record sets name it: fully qualified, with the trailing dot."""
    return f"{domain.rstrip('.')}."


# --- Autoscaling -----------------------------------------------------------------------------
# One regional autoscaler per MIG. Its signal is the load balancer's request rate ("qps": the
# backend's RATE balancing mode, max_rate_per_instance = the spec's target) or a per-instance
# Cloud Monitoring gauge the replicas ship (vllm-*: custom.googleapis.com/servestack/<name>).
# GCP's recommendation is ceil(load / (capacity per VM x utilization target)); with a
# target of 1.0 of max_rate_per_instance that is SkyServe's ceil(QPS / target_qps_per_replica).
GCP_LB_TARGET = 1.0
# With dynamic fallback both groups sit behind one backend service, which spreads requests over
# the VMs in proportion to their capacity, so every VM sees the same utilization U. The spot
# group aims at half the on-demand group's target: the on-demand group grows only when U passes
# its own target (SkyServe's rate per replica), which happens when spot cannot grow (capacity
# missing, or its max reached) or while a sudden rise outpaces new spot VMs; once spot VMs are
# back they bring U to half that, and the on-demand group shrinks. Half is the largest share
# that lets it drain all the way: GCP rounds recommendations up, and ceil(n x share) < n holds
# for every n > 1 only when share <= 1/2 (at 0.8, up to 4 on-demand VMs would stay). Limits:
# while spot is plentiful its group runs twice SkyServe's count (within its max), each replica
# at half the target rate; when the spot group sits at its max, U stays above one half and
# on-demand VMs added meanwhile may stay until the load falls.
GCP_SPOT_SHARE = 0.5
GCP_METRIC_KIND = "GAUGE"  # the shipped gauges: a value per VM, averaged by the autoscaler
GCP_METRIC_WRITER = "roles/monitoring.metricWriter"
# The longest initialization period and scale-in window servestack sets (one hour).
GCP_MAX_SCALING_WINDOW = 3600


def gcp_has_fallback_group(d: Deployment) -> bool:
    """Whether on-demand VMs stand in for missing spot ones in a MIG of their own."""
    return d.use_spot and d.dynamic_ondemand_fallback


def gcp_scaling(d: Deployment) -> Autoscaling:
    """The deployment's autoscaling; only asked of a deployment that scales."""
    if d.autoscaling is None:
        raise ValueError(f"deployment {d.candidate_id} has a fixed size")
    return d.autoscaling


def gcp_metric_type(d: Deployment) -> str | None:
    """The custom metric the replicas publish for the autoscaler; None when it reads the
    load balancer (or nothing scales)."""
    shipped = CLOUD.shipped_metric(d)
    return f"{CLOUD.metrics_namespace}{shipped}" if shipped else None


def gcp_backend(d: Deployment) -> dict[str, Any]:
    """How the backend service counts a group's capacity: requests per second per VM when
    the autoscaler scales on the load balancer (RATE; a regional MIG takes no per-group
    rate), else the default utilization mode."""
    scaling = d.autoscaling
    if scaling is None or not scaling.on_load_balancer:
        return dict(GCP_BACKEND)
    return {"balancing_mode": "RATE", "max_rate_per_instance": scaling.target,
            "capacity_scaler": 1.0}


def gcp_replica_bounds(d: Deployment, fallback: bool) -> tuple[int, int]:
    """min and max of one group's autoscaler. Alone, the MIG holds the whole range. With a
    fallback group, spot runs what is above the on-demand base and the on-demand group
    between the base and max_replicas (all of it when no spot is left). A group whose VMs
    report the signal cannot grow from zero, so each keeps at least one VM."""
    if not gcp_has_fallback_group(d):
        return d.min_replicas, d.max_replicas
    if fallback:
        low = max(d.on_demand_base, 1)
        return low, max(d.max_replicas, low)
    low = max(d.min_replicas - d.on_demand_base, 1)
    return low, max(d.max_replicas - d.on_demand_base, low)


def gcp_autoscaling_policy(d: Deployment, fallback: bool = False) -> dict[str, Any]:
    """One autoscaler's policy, in the names both engines share (the Terraform block
    `metric` is the Pulumi list `metrics`).

    upscale_delay -> cooldown_period, the initialization period: GCP scales out as soon as
    the signal is above target, and ignores a new VM's signal for that long, which damps
    repeated scale-outs while a replica loads its model. downscale_delay -> scale-in
    control: no VM is removed below the highest recommendation of the last
    `time_window_sec` (0% may go), so the group shrinks only once the load has stayed low
    for that long, SkyServe's downscale delay (GCP's own 10-minute stabilization is shorter
    than SkyServe's 1200 s default)."""
    scaling = gcp_scaling(d)
    low, high = gcp_replica_bounds(d, fallback)
    share = GCP_LB_TARGET if fallback or not gcp_has_fallback_group(d) else GCP_SPOT_SHARE
    policy: dict[str, Any] = {
        "min_replicas": low, "max_replicas": high, "mode": "ON",
        "cooldown_period": min(scaling.upscale_delay_seconds, GCP_MAX_SCALING_WINDOW),
        "scale_in_control": {
            "max_scaled_in_replicas": {"percent": 0},
            "time_window_sec": min(scaling.downscale_delay_seconds, GCP_MAX_SCALING_WINDOW)},
    }
    metric = gcp_metric_type(d)
    if metric is None:
        policy["load_balancing_utilization"] = {"target": share}
    else:
        policy["metric"] = [{"name": metric, "target": scaling.target * share,
                             "type": GCP_METRIC_KIND}]
    return policy


# --- --weight-cache (servestack.deployment.cache): the GCS bucket, as both engines spell it ---
# In the pool's region, uniform bucket-level access (IAM only, no object ACLs), public access
# prevention enforced, no soft delete (a destroy, with force_destroy, leaves nothing billed
# behind), and the VMs' service account as object admin on this bucket only.
GCP_CACHE_BUCKET = {"uniform_bucket_level_access": True, "public_access_prevention": "enforced",
                    "force_destroy": True}
GCP_CACHE_SOFT_DELETE_SECONDS = 0
GCP_CACHE_ROLE = "roles/storage.objectAdmin"
