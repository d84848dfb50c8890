"""GCP: a regional external Application Load Balancer in front of a regional GPU MIG.

`Service` is the top of the tree; each concern is its own child component:

- `Network`: a VPC of the service's own with a subnet for the VMs and the proxy-only subnet a
  regional Envoy load balancer needs. Its own VPC because only one ACTIVE proxy-only subnet may
  exist per region and VPC, and because the project's `default` network is often deleted.
- `Firewall`: the service port from Google's health checkers and from the proxy-only subnet
  (the load balancer's Envoys), SSH only from `ssh_cidrs`; nothing else comes in.
- `Identity`: the VMs' own service account (it can read the token secret and nothing else).
- `TokenSecret`: the Secret Manager secret holding the Hugging Face token, its version (a
  Pulumi secret) and the accessor binding for that service account on that secret only.
- `HealthCheck`: one regional HTTP health check, used by the load balancer and by autohealing.
- `InstanceGroup`: regional instance template(s) and the regional MIG (zones, flexibility,
  spot split, autohealing, rolling updates).
- `LoadBalancer`: static address, backend service, URL map, HTTP proxy, forwarding rule, and
  a Cloud Armor policy when clients are limited to `allow_cidrs`.

Why an EXTERNAL_MANAGED (Envoy) load balancer and not the passthrough network load balancer:
a passthrough NLB cannot change the port (clients would have to call the service port, not
`listener_port`), and it has no request timeout to set. The managed one listens on
`listener_port`, forwards to the named port `http` (the service port) and its backend timeout is
set to `idle_timeout_seconds`, so long streamed completions are not cut at the 30 s default.
Envoy terminates the client connection: the VMs see the proxy-only subnet as the source, never
the client, so the VPC firewall opens the service port to that subnet and to the health
checkers only, and `allow_cidrs` (when not the whole internet) is enforced at the load balancer
by a regional Cloud Armor policy instead.

Every value comes from the `Deployment`; the choices made here are GCP mechanics, explained
where they are made.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from ..bootstrap import render_cloud_init
from ..deployment import GCP_HEALTH_CHECK_RANGES, WORLD, Deployment, InstanceChoice
from . import TYPE_PREFIX

IMAGE_PROJECT = "deeplearning-platform-release"
# Ubuntu 22.04 with NVIDIA driver 580 and CUDA 12.9 preinstalled. Ubuntu (not the Debian DLVM
# families) because its cloud-init reads the `user-data` metadata key on GCE.
IMAGE_FAMILY = "common-cu129-ubuntu-2204-nvidia-580"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
VM_SUBNET_CIDR = "10.64.0.0/20"
PROXY_SUBNET_CIDR = "10.64.16.0/23"  # Google recommends a /23 for the proxy-only subnet
NAMED_PORT = "http"
LB_TIER = "STANDARD"  # a regional load balancer gains nothing from Premium's global anycast
MAX_AUTOHEAL_DELAY = 3600  # API range of initial_delay_sec
MAX_DRAINING = 3600  # API range of connection_draining_timeout_sec
DEFAULT_ZONE_COUNT = 3  # a regional MIG without explicit zones spreads over 3 of them
MAX_CIDRS_PER_RULE = 10  # Cloud Armor: src_ip_ranges per rule
DEFAULT_RULE_PRIORITY = 2147483647
SSH_PORT = 22


def _type(kind: str) -> str:
    return f"{TYPE_PREFIX}:gcp:{kind}"


def _child(parent: pulumi.Resource, **extra) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **extra)


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


def network_tag(deployment: Deployment) -> str:
    """The network tag on the VMs; firewall rules target it."""
    return f"servestack-{deployment.service}"[:63].rstrip("-")


def service_account_id(deployment: Deployment) -> str:
    """6-30 characters, unique per candidate so two stacks in one project do not collide."""
    digest = hashlib.sha256(deployment.candidate_id.encode()).hexdigest()[:6]
    return f"ss-{deployment.service[:17].rstrip('-')}-{digest}"


# --- Network ---------------------------------------------------------------------------------


@dataclass
class NetworkArgs:
    deployment: Deployment


class Network(pulumi.ComponentResource):
    """VPC, the VMs' subnet and the proxy-only subnet of the regional load balancer."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Network"), name, None, opts)
        d = args.deployment
        self.network = gcp.compute.Network(
            f"{name}-vpc", project=d.gcp_project, auto_create_subnetworks=False,
            routing_mode="REGIONAL", description=f"servestack {d.service}",
            opts=_child(self))
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-vms", project=d.gcp_project, region=d.region, network=self.network.id,
            ip_cidr_range=VM_SUBNET_CIDR, private_ip_google_access=True,
            description=f"servestack {d.service}: GPU VMs", opts=_child(self))
        self.proxy_subnet = gcp.compute.Subnetwork(
            f"{name}-proxy", project=d.gcp_project, region=d.region, network=self.network.id,
            ip_cidr_range=PROXY_SUBNET_CIDR, purpose="REGIONAL_MANAGED_PROXY", role="ACTIVE",
            description=f"servestack {d.service}: load balancer proxies", opts=_child(self))
        self.register_outputs({"network": self.network.id, "subnet": self.subnet.id,
                               "proxySubnet": self.proxy_subnet.id})


# --- Firewall --------------------------------------------------------------------------------


@dataclass
class FirewallArgs:
    deployment: Deployment
    network: pulumi.Input[str]
    proxy_cidr: str


class Firewall(pulumi.ComponentResource):
    """Ingress to the tagged VMs: the service port from health checkers and the load balancer's
    proxies, SSH from `ssh_cidrs` when given. Clients never reach the VMs directly."""

    def __init__(self, name: str, args: FirewallArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Firewall"), name, None, opts)
        d = args.deployment
        port = [str(d.service_port)]
        self.health_checks = self._allow(
            f"{name}-health-checks", args, list(GCP_HEALTH_CHECK_RANGES), port,
            "Google health checkers to the service port (load balancer and autohealing)")
        self.proxies = self._allow(
            f"{name}-lb-proxies", args, [args.proxy_cidr], port,
            "the load balancer's proxies (proxy-only subnet) to the service port")
        self.ssh = self._allow(f"{name}-ssh", args, list(d.ssh_cidrs), [str(SSH_PORT)],
                               "SSH from the operator's CIDRs") if d.ssh_cidrs else None
        self.register_outputs({"healthChecks": self.health_checks.id,
                               "proxies": self.proxies.id,
                               "ssh": self.ssh.id if self.ssh else None})

    def _allow(self, name: str, args: FirewallArgs, sources: list[str], ports: list[str],
               why: str) -> gcp.compute.Firewall:
        d = args.deployment
        return gcp.compute.Firewall(
            name, project=d.gcp_project, network=args.network, direction="INGRESS",
            allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=ports)],
            source_ranges=sources, target_tags=[network_tag(d)],
            description=f"servestack {d.service}: {why}", opts=_child(self))


# --- Identity and secret ---------------------------------------------------------------------


@dataclass
class IdentityArgs:
    deployment: Deployment


class Identity(pulumi.ComponentResource):
    """The VMs' service account. It gets no project role; only the token secret's accessor."""

    def __init__(self, name: str, args: IdentityArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Identity"), name, None, opts)
        d = args.deployment
        self.account = gcp.serviceaccount.Account(
            f"{name}-sa", project=d.gcp_project, account_id=service_account_id(d),
            display_name=f"servestack {d.service} GPU VMs",
            description=f"servestack candidate {d.candidate_id}", opts=_child(self))
        self.email = self.account.email
        self.member = self.account.member  # "serviceAccount:<email>"
        self.register_outputs({"email": self.email})


@dataclass
class TokenSecretArgs:
    deployment: Deployment
    reader_member: pulumi.Input[str]
    hf_token: pulumi.Input[str] | None


class TokenSecret(pulumi.ComponentResource):
    """Secret Manager secret for the Hugging Face token, readable by the VMs' account only.

    The VM fetches it at boot (the bootstrap knows the secret's name from the deployment); the
    token itself never appears in metadata or user data. Without a token the secret is created
    empty so one can be added later (`gcloud secrets versions add`).
    """

    def __init__(self, name: str, args: TokenSecretArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("TokenSecret"), name, None, opts)
        d = args.deployment
        ref = d.secret
        if ref is None or ref.store != "secret-manager":
            raise ValueError(f"deployment {d.candidate_id} has no Secret Manager secret: {ref}")
        self.secret = gcp.secretmanager.Secret(
            f"{name}-secret", project=d.gcp_project, secret_id=ref.name,
            labels=gcp_labels(d.tags),
            replication=gcp.secretmanager.SecretReplicationArgs(
                user_managed=gcp.secretmanager.SecretReplicationUserManagedArgs(
                    replicas=[gcp.secretmanager.SecretReplicationUserManagedReplicaArgs(
                        location=d.region)])),
            opts=_child(self))
        self.version = None
        if args.hf_token is not None:
            self.version = gcp.secretmanager.SecretVersion(
                f"{name}-version", project=d.gcp_project, secret=self.secret.id,
                secret_data=pulumi.Output.secret(args.hf_token), opts=_child(self))
        else:
            pulumi.log.warn(f"no Hugging Face token given: secret {ref.name} is created empty "
                            "(set servestack:hfToken as a secret and run up again)", self)
        self.reader = gcp.secretmanager.SecretIamBinding(
            f"{name}-reader", project=d.gcp_project, secret_id=self.secret.secret_id,
            role=SECRET_ACCESSOR,
            members=[args.reader_member],
            opts=_child(self))
        self.register_outputs({"secretId": self.secret.secret_id,
                               "versionCreated": self.version is not None})


# --- Health check ----------------------------------------------------------------------------


@dataclass
class HealthCheckArgs:
    deployment: Deployment


class HealthCheck(pulumi.ComponentResource):
    """The deployment's HTTP health check on the service port, regional like the rest."""

    def __init__(self, name: str, args: HealthCheckArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("HealthCheck"), name, None, opts)
        d = args.deployment
        h = d.health
        self.check = gcp.compute.RegionHealthCheck(
            f"{name}-http", project=d.gcp_project, region=d.region,
            http_health_check=gcp.compute.RegionHealthCheckHttpHealthCheckArgs(
                port=h.port, request_path=h.path),
            check_interval_sec=h.interval_seconds, timeout_sec=h.timeout_seconds,
            healthy_threshold=h.healthy_threshold, unhealthy_threshold=h.unhealthy_threshold,
            description=f"servestack {d.service}: GET {h.path} on port {h.port}",
            opts=_child(self))
        self.check_id = self.check.id
        self.register_outputs({"id": self.check.id})


# --- Instance group --------------------------------------------------------------------------


@dataclass
class InstanceGroupArgs:
    deployment: Deployment
    subnet: pulumi.Input[str]
    service_account_email: pulumi.Input[str]
    health_check: pulumi.Input[str]


def flexible_choices(deployment: Deployment) -> list[InstanceChoice]:
    """The ranked machine types one template can serve: N1 hosts only with the primary's GPU
    type attached (the template carries `guest_accelerators`), bundled types with each other."""
    primary = deployment.primary
    return [c for c in deployment.instances if c.attached_gpu == primary.attached_gpu]


def scheduling(spot: bool) -> gcp.compute.RegionInstanceTemplateSchedulingArgs:
    """GPU VMs cannot live-migrate, so host maintenance stops them (TERMINATE).

    Spot: DELETE on preemption rather than STOP. A stopped spot VM stays in its zone until
    capacity returns there (and its disk keeps billing); a deleted one is recreated by the MIG
    in whichever of the group's zones has spot capacity, and the bootstrap reloads the model.
    """
    if spot:
        return gcp.compute.RegionInstanceTemplateSchedulingArgs(
            provisioning_model="SPOT", preemptible=True, automatic_restart=False,
            on_host_maintenance="TERMINATE", instance_termination_action="DELETE")
    return gcp.compute.RegionInstanceTemplateSchedulingArgs(
        provisioning_model="STANDARD", preemptible=False, automatic_restart=True,
        on_host_maintenance="TERMINATE")


class InstanceGroup(pulumi.ComponentResource):
    """Regional instance template(s) and the regional managed instance group.

    Regional (not global) templates: the MIG, the load balancer and the secret all live in the
    deployment's region, and a regional template keeps the VM definition there too.

    `wait_for_instances` is false: `pulumi up` returns once the group exists, and the deploy
    loop polls the load balancer's readiness itself (a model load takes many minutes, and a MIG
    without capacity would otherwise hold `up` until the provider's timeout).
    """

    def __init__(self, name: str, args: InstanceGroupArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("InstanceGroup"), name, None, opts)
        d = args.deployment
        self.image = self._image(d)
        user_data = render_cloud_init(d)
        on_demand_base = d.on_demand_base if d.use_spot else 0
        self.templates: dict[str, gcp.compute.RegionInstanceTemplate] = {}
        if d.use_spot:
            self.templates["spot"] = self._template(f"{name}-spot", args, user_data, spot=True)
        if not d.use_spot or on_demand_base:
            self.templates["ondemand"] = self._template(f"{name}-ondemand", args, user_data,
                                                        spot=False)
        zone_count = len(d.zones) or DEFAULT_ZONE_COUNT
        self.manager = gcp.compute.RegionInstanceGroupManager(
            f"{name}-mig", project=d.gcp_project, region=d.region,
            base_instance_name=d.service,
            description=f"servestack {d.service}: {d.candidate_id}",
            versions=self._versions(on_demand_base),
            target_size=d.desired_replicas,
            distribution_policy_zones=list(d.zones) or None,
            # BALANCED: spread over the zones but create VMs where GPUs are available; the
            # instance flexibility policy also requires BALANCED (or ANY / ANY_SINGLE_ZONE).
            distribution_policy_target_shape="BALANCED",
            named_ports=[gcp.compute.RegionInstanceGroupManagerNamedPortArgs(
                name=NAMED_PORT, port=d.service_port)],
            auto_healing_policies=gcp.compute.RegionInstanceGroupManagerAutoHealingPoliciesArgs(
                health_check=args.health_check,
                initial_delay_sec=min(d.health.grace_period_seconds, MAX_AUTOHEAL_DELAY)),
            instance_flexibility_policy=flexibility_policy(d),
            # New VMs come up before old ones go (no capacity dip while a model loads); a
            # regional MIG needs a fixed surge of 0 or at least its zone count. Proactive
            # redistribution is off: BALANCED does not support it.
            update_policy=gcp.compute.RegionInstanceGroupManagerUpdatePolicyArgs(
                type="PROACTIVE", minimal_action="REPLACE", replacement_method="SUBSTITUTE",
                max_surge_fixed=zone_count, max_unavailable_fixed=0,
                instance_redistribution_type="NONE"),
            wait_for_instances=False,
            opts=_child(self))
        self.group_name = self.manager.name
        self.group_id = self.manager.id
        self.instance_group = self.manager.instance_group
        self.register_outputs({"name": self.manager.name, "id": self.manager.id,
                               "instanceGroup": self.manager.instance_group})

    def _image(self, d: Deployment) -> pulumi.Input[str]:
        if d.image_id:
            return d.image_id
        image = gcp.compute.get_image_output(
            family=IMAGE_FAMILY, project=IMAGE_PROJECT,
            opts=pulumi.InvokeOutputOptions(parent=self))
        return image.self_link

    def _template(self, name: str, args: InstanceGroupArgs, user_data: str, *,
                  spot: bool) -> gcp.compute.RegionInstanceTemplate:
        d = args.deployment
        primary = d.primary
        labels = gcp_labels(d.tags)
        accelerators = None
        if primary.attached_gpu:  # N1 host: attach the GPUs; a2/a3/g2 types carry theirs
            accelerators = [gcp.compute.RegionInstanceTemplateGuestAcceleratorArgs(
                type=primary.attached_gpu, count=primary.accelerator_count)]
        # A3 machine types only boot with gVNIC; the other GPU families accept the default.
        needs_gvnic = any(c.instance_type.startswith("a3-") for c in flexible_choices(d))
        return gcp.compute.RegionInstanceTemplate(
            name, project=d.gcp_project, region=d.region,
            description=f"servestack {d.service}: {'spot' if spot else 'on-demand'} "
                        f"{primary.instance_type}",
            machine_type=primary.instance_type,
            guest_accelerators=accelerators,
            scheduling=scheduling(spot),
            disks=[gcp.compute.RegionInstanceTemplateDiskArgs(
                source_image=self.image, boot=True, auto_delete=True,
                disk_size_gb=d.disk_size_gb, disk_type=d.disk_type, labels=labels)],
            # cloud-init reads `user-data`; SSH (when ssh_cidrs allow it) goes through OS Login.
            metadata={"user-data": user_data, "enable-oslogin": "TRUE"},
            network_interfaces=[gcp.compute.RegionInstanceTemplateNetworkInterfaceArgs(
                subnetwork=args.subnet,
                nic_type="GVNIC" if needs_gvnic else None,
                # An ephemeral public IP for egress (pip, the model download); ingress is
                # limited by the firewall to health checkers, the proxies and ssh_cidrs.
                access_configs=[
                    gcp.compute.RegionInstanceTemplateNetworkInterfaceAccessConfigArgs()],
            )],
            service_account=gcp.compute.RegionInstanceTemplateServiceAccountArgs(
                email=args.service_account_email, scopes=[CLOUD_PLATFORM_SCOPE]),
            tags=[network_tag(d)],
            labels=labels,
            opts=_child(self))

    def _versions(self, on_demand_base: int
                  ) -> list[gcp.compute.RegionInstanceGroupManagerVersionArgs]:
        """One version per template. With a spot split the on-demand version is pinned to
        `on_demand_base` VMs and the spot version takes the rest of the target size."""
        versions = []
        if "ondemand" in self.templates:
            pinned = None
            if "spot" in self.templates:
                pinned = gcp.compute.RegionInstanceGroupManagerVersionTargetSizeArgs(
                    fixed=on_demand_base)
            versions.append(gcp.compute.RegionInstanceGroupManagerVersionArgs(
                name="ondemand", instance_template=self.templates["ondemand"].self_link,
                target_size=pinned))
        if "spot" in self.templates:
            versions.append(gcp.compute.RegionInstanceGroupManagerVersionArgs(
                name="spot", instance_template=self.templates["spot"].self_link))
        return versions


FlexibilityPolicy = gcp.compute.RegionInstanceGroupManagerInstanceFlexibilityPolicyArgs
InstanceSelection = \
    gcp.compute.RegionInstanceGroupManagerInstanceFlexibilityPolicyInstanceSelectionArgs


def flexibility_policy(d: Deployment) -> FlexibilityPolicy | None:
    """Ranked machine types (rank 0 = the chosen one): the MIG falls back to the next type
    when the zones have no capacity for the preferred one. The policy overrides the template's
    machine type, so the chosen type is listed too. None with a single type."""
    choices = flexible_choices(d)
    if len(choices) < 2:
        return None
    return FlexibilityPolicy(instance_selections=[
        InstanceSelection(name=c.instance_type, machine_types=[c.instance_type], rank=rank)
        for rank, c in enumerate(choices)])


# --- Load balancer ---------------------------------------------------------------------------


@dataclass
class LoadBalancerArgs:
    deployment: Deployment
    network: pulumi.Input[str]
    proxy_subnet: pulumi.Resource
    instance_group: pulumi.Input[str]
    health_check: pulumi.Input[str]


class LoadBalancer(pulumi.ComponentResource):
    """Regional external Application Load Balancer: `listener_port` -> named port `http`."""

    def __init__(self, name: str, args: LoadBalancerArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("LoadBalancer"), name, None, opts)
        d = args.deployment
        labels = gcp_labels(d.tags)
        self.address = gcp.compute.Address(
            f"{name}-ip", project=d.gcp_project, region=d.region, address_type="EXTERNAL",
            network_tier=LB_TIER, labels=labels,
            description=f"servestack {d.service}: endpoint", opts=_child(self))
        self.policy = self._client_policy(name, d)
        self.backend = gcp.compute.RegionBackendService(
            f"{name}-backend", project=d.gcp_project, region=d.region,
            load_balancing_scheme="EXTERNAL_MANAGED", protocol="HTTP", port_name=NAMED_PORT,
            health_checks=args.health_check,
            # For this load balancer the timeout bounds a whole response: a streamed completion
            # may run for `idle_timeout_seconds`. Draining lets in-flight streams finish.
            timeout_sec=d.idle_timeout_seconds,
            connection_draining_timeout_sec=min(d.idle_timeout_seconds, MAX_DRAINING),
            backends=[gcp.compute.RegionBackendServiceBackendArgs(
                group=args.instance_group, balancing_mode="UTILIZATION", capacity_scaler=1.0)],
            security_policy=self.policy.self_link if self.policy else None,
            description=f"servestack {d.service}: the GPU group", opts=_child(self))
        self.url_map = gcp.compute.RegionUrlMap(
            f"{name}-urls", project=d.gcp_project, region=d.region,
            default_service=self.backend.id, opts=_child(self))
        # Keep-alive between requests is capped at 600 s by the API (the default), below the
        # idle timeout; it only closes connections that carry no request.
        self.proxy = gcp.compute.RegionTargetHttpProxy(
            f"{name}-proxy", project=d.gcp_project, region=d.region, url_map=self.url_map.id,
            opts=_child(self))
        self.rule = gcp.compute.ForwardingRule(
            f"{name}-listener", project=d.gcp_project, region=d.region,
            load_balancing_scheme="EXTERNAL_MANAGED", ip_protocol="TCP",
            port_range=str(d.listener_port), target=self.proxy.id,
            ip_address=self.address.address, network=args.network, network_tier=LB_TIER,
            labels=labels,
            opts=_child(self, depends_on=[args.proxy_subnet]))
        self.ip_address = self.rule.ip_address
        self.register_outputs({"ipAddress": self.rule.ip_address,
                               "backend": self.backend.id,
                               "clientPolicy": self.policy.id if self.policy else None})

    def _client_policy(self, name: str, d: Deployment
                       ) -> gcp.compute.RegionSecurityPolicy | None:
        """Cloud Armor: allow `allow_cidrs`, deny everyone else. None when open to all."""
        if not d.allow_cidrs or WORLD in d.allow_cidrs:
            return None
        cidrs = list(d.allow_cidrs)
        chunks = [cidrs[i:i + MAX_CIDRS_PER_RULE]
                  for i in range(0, len(cidrs), MAX_CIDRS_PER_RULE)]
        rules = [_armor_rule(1000 + i, "allow", chunk, "allowed client CIDRs")
                 for i, chunk in enumerate(chunks)]
        rules.append(_armor_rule(DEFAULT_RULE_PRIORITY, "deny(403)", ["*"], "everyone else"))
        return gcp.compute.RegionSecurityPolicy(
            f"{name}-clients", project=d.gcp_project, region=d.region, type="CLOUD_ARMOR",
            description=f"servestack {d.service}: only allow_cidrs reach the endpoint",
            rules=rules, opts=_child(self))


def _armor_rule(priority: int, action: str, ranges: list[str], why: str
                ) -> gcp.compute.RegionSecurityPolicyRuleArgs:
    return gcp.compute.RegionSecurityPolicyRuleArgs(
        priority=priority, action=action, description=why,
        match=gcp.compute.RegionSecurityPolicyRuleMatchArgs(
            versioned_expr="SRC_IPS_V1",
            config=gcp.compute.RegionSecurityPolicyRuleMatchConfigArgs(src_ip_ranges=ranges)))


# --- Service ---------------------------------------------------------------------------------


class Service(pulumi.ComponentResource):
    """The whole service on GCP; `endpoint` is http://<forwarding rule IP>:<listener port>."""

    endpoint: pulumi.Output[str]
    group_name: pulumi.Output[str]
    group_id: pulumi.Output[str]

    def __init__(self, name: str, deployment: Deployment,
                 hf_token: pulumi.Input[str] | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Service"), name, None, opts)
        d = deployment
        if d.cloud != "gcp":
            raise ValueError(f"deployment {d.candidate_id} is for {d.cloud}, not gcp")
        network = Network(f"{name}-net", NetworkArgs(d), opts=_child(self))
        Firewall(f"{name}-fw", FirewallArgs(d, network.network.id, PROXY_SUBNET_CIDR),
                 opts=_child(self))
        identity = Identity(f"{name}-id", IdentityArgs(d), opts=_child(self))
        waits: list[pulumi.Resource] = []
        if d.secret is not None:
            waits.append(TokenSecret(f"{name}-token",
                                     TokenSecretArgs(d, identity.member, hf_token),
                                     opts=_child(self)))
        health = HealthCheck(f"{name}-hc", HealthCheckArgs(d), opts=_child(self))
        # The VMs read the token as they boot: create them after the accessor binding.
        group = InstanceGroup(
            f"{name}-group",
            InstanceGroupArgs(d, network.subnet.id, identity.email, health.check_id),
            opts=_child(self, depends_on=waits))
        lb = LoadBalancer(
            f"{name}-lb",
            LoadBalancerArgs(d, network.network.id, network.proxy_subnet,
                             group.instance_group, health.check_id),
            opts=_child(self))
        self.endpoint = pulumi.Output.concat("http://", lb.ip_address, ":",
                                             str(d.listener_port))
        self.group_name = group.group_name
        self.group_id = group.group_id
        self.register_outputs({"endpoint": self.endpoint, "groupName": self.group_name,
                               "groupId": self.group_id})
