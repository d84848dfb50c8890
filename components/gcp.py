"""GCP: a regional external Application Load Balancer in front of a regional GPU MIG.

`Service` is the top of the tree; each concern is its own child component:

- `Network`: a VPC of the service's own with a subnet for the VMs and the proxy-only subnet a
  regional Envoy load balancer needs. Its own VPC because only one ACTIVE proxy-only subnet may
  exist per region and VPC, and because the project's `default` network is often deleted.
  The VMs have no public address: a Cloud Router's NAT carries their egress (pip, the model
  download), for their subnet only.
- `Firewall`: the service port from Google's health checkers and from the proxy-only subnet
  (the load balancer's Envoys), SSH only from `ssh_cidrs`; nothing else comes in.
- `Identity`: the VMs' own service account (it can read its two secrets and nothing else,
  and write metrics when `MetricWriter` grants it).
- `TokenSecret`: the Secret Manager secret holding the Hugging Face token, its version (a
  Pulumi secret) and the accessor binding for that service account on that secret only.
- `ApiKeySecret`: the API key (components.apikey: drawn here, or the service's shared one read
  from its key stack), its own secret holding it, and the same account's accessor binding on
  that secret only (none with --no-api-key).
- `HealthCheck`: one regional HTTP health check, used by the load balancer and by autohealing.
- `InstanceGroup`: regional instance template(s) and the regional MIG (zones, flexibility,
  spot split, autohealing, rolling updates); with a replica_policy that autoscales, its
  `GroupScaling`: the regional autoscaler (and, with dynamic on-demand fallback, a second MIG
  of on-demand VMs with an autoscaler of its own, behind the same backend service). Every
  MIG in it is created after the NAT, both secrets' versions and accessor bindings and the
  metric writer role, which its VMs use as they boot.
- `MetricWriter`: roles/monitoring.metricWriter for the VMs' account, when the autoscaler
  reads a gauge the replicas write (vLLM's queue or KV-cache use).
- `LoadBalancer`: static address, backend service, URL map, HTTP proxy, forwarding rule, and
  a Cloud Armor policy when clients are limited to `allow_cidrs`. With TLS the HTTP proxy
  takes a URL map that only redirects to https.
- `Https` (with TLS): a Google-managed regional certificate from Certificate Manager, proved
  by a DNS authorization; a TLS 1.2+ policy; the HTTPS proxy on the backend URL map and its
  forwarding rule on 443 of the same address; the authorization's CNAME and the domain's A
  record in the Cloud DNS managed zone when one is given (else the `dns_records` output).

Why an EXTERNAL_MANAGED (Envoy) load balancer and not the passthrough network load balancer:
a passthrough NLB cannot change the port (clients would have to call the service port, not
`listener_port`), and it has no request timeout to set. The managed one listens on
`listener_port`, forwards to the named port `http` (the service port) and its backend timeout is
set to `idle_timeout_seconds`, so long streamed completions are not cut at the 30 s default.
Envoy terminates the client connection: the VMs see the proxy-only subnet as the source, never
the client, so the VPC firewall opens the service port to that subnet and to the health
checkers only, and `allow_cidrs` (when not the whole internet) is enforced at the load balancer
by a regional Cloud Armor policy instead.

Every physical name is given (servestack.clouds.gcp.gcp_name: the service, a digest of the
stack and the resource's kind), the same the Terraform renderer gives, so two services or two
stacks of one never collide in a project. The bridged provider replaces an explicitly named
resource delete-first (pulumi-terraform-bridge `nameRequiresDeleteBeforeReplace`); instance
templates, replaced on every change while the MIG still uses the old one, take a `name_prefix`.

Every value comes from the `Deployment`, and how GCP spells it from servestack.clouds.gcp
(shared with the Terraform renderer); what is left here is how the Pulumi SDK takes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from servestack.components import TYPE_PREFIX
from servestack.components.apikey import service_key
from servestack.components.gcp_cache import WeightCache, WeightCacheArgs

from servestack.bootstrap import render_cloud_init
from servestack.clouds.gcp import (
    CLOUD,
    GCP_ADDRESS_TYPE,
    GCP_ARMOR_TYPE,
    GCP_CLOUD_PLATFORM_SCOPE,
    GCP_DNS_AUTHORIZATION_RECORD,
    GCP_DNS_AUTHORIZATION_TYPE,
    GCP_DNS_TTL,
    GCP_FLOW_LOGS,
    GCP_HEALTH_CHECK_RANGES,
    GCP_HTTPS_REDIRECT,
    GCP_LB_SCHEME,
    GCP_LB_TIER,
    GCP_METRIC_WRITER,
    GCP_NAMED_PORT,
    GCP_NAT,
    GCP_NAT_LOG,
    GCP_NAT_SOURCE_RANGES,
    GCP_PROXY_SUBNET,
    GCP_SECRET_ACCESSOR,
    GCP_SSL_POLICY,
    GCP_TARGET_SHAPE,
    GCP_VPC,
    gcp_autoheal_delay,
    gcp_autoscaling_policy,
    gcp_backend,
    gcp_client_rules,
    gcp_draining_seconds,
    gcp_flexible_choices,
    gcp_fqdn,
    gcp_has_fallback_group,
    gcp_labels,
    gcp_metadata,
    gcp_metric_type,
    gcp_name,
    gcp_network_tag,
    gcp_nic_type,
    gcp_scheduling,
    gcp_service_account_id,
    gcp_template_kinds,
    gcp_template_prefix,
    gcp_update_policy,
    gcp_versions,
)
from servestack.deployment.model import OUTPUT_DNS_RECORDS, Deployment, Tls
from servestack.planner import Candidate


def _type(kind: str) -> str:
    return f"{TYPE_PREFIX}:gcp:{kind}"


def _child(parent: pulumi.Resource, **extra) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **extra)


# --- Network ---------------------------------------------------------------------------------


@dataclass
class NetworkArgs:
    deployment: Deployment


class Network(pulumi.ComponentResource):
    """VPC, the VMs' subnet, the proxy-only subnet of the regional load balancer, and the
    Cloud NAT (on a Cloud Router) through which the VMs, without public addresses, go out."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Network"), name, None, opts)
        d = args.deployment
        self.network = gcp.compute.Network(
            f"{name}-vpc", name=gcp_name(d, "vpc"), project=d.gcp_project, **GCP_VPC,
            description=f"servestack {d.service}", opts=_child(self))
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-vms", name=gcp_name(d, "vms"), project=d.gcp_project, region=d.region,
            network=self.network.id,
            ip_cidr_range=d.network.range_of("subnet"), private_ip_google_access=True,
            log_config=gcp.compute.SubnetworkLogConfigArgs(**GCP_FLOW_LOGS),
            description=f"servestack {d.service}: GPU VMs", opts=_child(self))
        self.proxy_subnet = gcp.compute.Subnetwork(
            f"{name}-proxy", name=gcp_name(d, "proxy-only"), project=d.gcp_project,
            region=d.region, network=self.network.id,
            ip_cidr_range=d.network.range_of("proxy_subnet"), **GCP_PROXY_SUBNET,
            description=f"servestack {d.service}: load balancer proxies", opts=_child(self))
        self.router = gcp.compute.Router(
            f"{name}-router", name=gcp_name(d, "router"), project=d.gcp_project,
            region=d.region, network=self.network.id,
            description=f"servestack {d.service}: egress of the GPU VMs", opts=_child(self))
        self.nat = gcp.compute.RouterNat(
            f"{name}-nat", name=gcp_name(d, "nat"), project=d.gcp_project, region=d.region,
            router=self.router.name, **GCP_NAT,
            subnetworks=[gcp.compute.RouterNatSubnetworkArgs(
                name=self.subnet.id, source_ip_ranges_to_nats=GCP_NAT_SOURCE_RANGES)],
            log_config=gcp.compute.RouterNatLogConfigArgs(**GCP_NAT_LOG), opts=_child(self))
        self.register_outputs({"network": self.network.id, "subnet": self.subnet.id,
                               "proxySubnet": self.proxy_subnet.id, "nat": self.nat.id})


# --- Firewall --------------------------------------------------------------------------------


@dataclass
class FirewallArgs:
    deployment: Deployment
    network: pulumi.Input[str]


class Firewall(pulumi.ComponentResource):
    """Ingress to the tagged VMs: the service port from health checkers and the load balancer's
    proxies, SSH from `ssh_cidrs` when given. Clients never reach the VMs directly."""

    def __init__(self, name: str, args: FirewallArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Firewall"), name, None, opts)
        d = args.deployment
        port = [str(d.service_port)]
        self.health_checks = self._allow(
            f"{name}-health-checks", "health-checks", args, list(GCP_HEALTH_CHECK_RANGES), port,
            "Google health checkers to the service port (load balancer and autohealing)")
        self.proxies = self._allow(
            f"{name}-lb-proxies", "lb-proxies", args, [d.network.range_of("proxy_subnet")], port,
            "the load balancer's proxies (proxy-only subnet) to the service port")
        self.ssh = self._allow(f"{name}-ssh", "ssh", args, list(d.ssh_cidrs),
                               [str(d.ssh_port)], "SSH from the operator's CIDRs") \
            if d.ssh_cidrs else None
        self.register_outputs({"healthChecks": self.health_checks.id,
                               "proxies": self.proxies.id,
                               "ssh": self.ssh.id if self.ssh else None})

    def _allow(self, name: str, kind: str, args: FirewallArgs, sources: list[str],
               ports: list[str], why: str) -> gcp.compute.Firewall:
        d = args.deployment
        return gcp.compute.Firewall(
            name, name=gcp_name(d, kind), project=d.gcp_project, network=args.network,
            direction="INGRESS",
            allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=ports)],
            source_ranges=sources, target_tags=[gcp_network_tag(d)],
            description=f"servestack {d.service}: {why}", opts=_child(self))


# --- Identity and secret ---------------------------------------------------------------------


@dataclass
class IdentityArgs:
    deployment: Deployment


class Identity(pulumi.ComponentResource):
    """The VMs' service account. It gets no project role; only its secrets' accessor."""

    def __init__(self, name: str, args: IdentityArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Identity"), name, None, opts)
        d = args.deployment
        self.account = gcp.serviceaccount.Account(
            f"{name}-sa", project=d.gcp_project, account_id=gcp_service_account_id(d),
            display_name=f"servestack {d.service} GPU VMs",
            description=f"servestack candidate {d.candidate_id}", opts=_child(self))
        self.email = self.account.email
        self.member = self.account.member  # "serviceAccount:<email>"
        self.register_outputs({"email": self.email})


def _regional_secret(name: str, d: Deployment, secret_id: str,
                     parent: pulumi.Resource) -> gcp.secretmanager.Secret:
    """A Secret Manager secret kept in the deployment's region only, with its labels."""
    return gcp.secretmanager.Secret(
        name, project=d.gcp_project, secret_id=secret_id, labels=gcp_labels(d.tags),
        replication=gcp.secretmanager.SecretReplicationArgs(
            user_managed=gcp.secretmanager.SecretReplicationUserManagedArgs(
                replicas=[gcp.secretmanager.SecretReplicationUserManagedReplicaArgs(
                    location=d.region)])),
        opts=_child(parent))


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
        self.secret = _regional_secret(f"{name}-secret", d, ref.name, self)
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
            role=GCP_SECRET_ACCESSOR,
            members=[args.reader_member],
            opts=_child(self))
        self.register_outputs({"secretId": self.secret.secret_id,
                               "versionCreated": self.version is not None})


@dataclass
class ApiKeySecretArgs:
    deployment: Deployment
    reader_member: pulumi.Input[str]


class ApiKeySecret(pulumi.ComponentResource):
    """The generated API key, in a Secret Manager secret of its own (in the region, labelled,
    like the token's) with one version, readable by the VMs' account only: vLLM on each VM
    reads it at boot (secret `d.api_key.name`, version latest). `value` is the key (a Pulumi
    secret), `ref` the secret's id (projects/<project>/secrets/<secret id>)."""

    def __init__(self, name: str, args: ApiKeySecretArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("ApiKeySecret"), name, None, opts)
        d = args.deployment
        # drawn here, or the service's one key read from its key stack (shared_api_key)
        self.value = service_key(f"{name}-value", d, _child(self))
        self.secret = _regional_secret(f"{name}-secret", d, d.api_key_secret.name, self)
        self.version = gcp.secretmanager.SecretVersion(
            f"{name}-version", project=d.gcp_project, secret=self.secret.id,
            secret_data=self.value, opts=_child(self))  # a secret Output already
        self.reader = gcp.secretmanager.SecretIamBinding(
            f"{name}-reader", project=d.gcp_project, secret_id=self.secret.secret_id,
            role=GCP_SECRET_ACCESSOR, members=[args.reader_member], opts=_child(self))
        self.ref = self.secret.id
        self.register_outputs({"secretId": self.secret.secret_id})


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
            f"{name}-http", name=gcp_name(d, "health"), project=d.gcp_project, region=d.region,
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
        self.templates: dict[str, gcp.compute.RegionInstanceTemplate] = {
            kind: self._template(f"{name}-{kind}", kind, args, user_data)
            for kind in reversed(gcp_template_kinds(d))}
        # An autoscaler owns the size of the group it scales: never set it then.
        self.manager = region_mig(
            f"{name}-mig", args, "mig", d.scope, self._versions(d),
            target_size=None if d.autoscaling else d.desired_replicas, opts=_child(self))
        self.group_name = self.manager.name
        self.group_id = self.manager.id
        self.instance_group = self.manager.instance_group
        scaled = GroupScaling(f"{name}-scaling", GroupScalingArgs(args, self.manager,
                                                                  self.templates),
                              opts=_child(self)) if d.autoscaling else None
        self.fallback_group = scaled.fallback_group if scaled else None
        self.register_outputs({"name": self.manager.name, "id": self.manager.id,
                               "instanceGroup": self.manager.instance_group})

    def _image(self, d: Deployment) -> pulumi.Input[str]:
        """The deployment's image, or the newest image of its family."""
        if d.image.kind == "id":
            return d.image.exact()
        project, family = d.image.gce_family()
        image = gcp.compute.get_image_output(
            family=family, project=project,
            opts=pulumi.InvokeOutputOptions(parent=self))
        return image.self_link

    def _template(self, name: str, kind: str, args: InstanceGroupArgs,
                  user_data: str) -> gcp.compute.RegionInstanceTemplate:
        d = args.deployment
        spot = kind == "spot"
        primary = d.primary
        labels = gcp_labels(d.tags)
        accelerators = None
        if primary.attached_gpu:  # N1 host: attach the GPUs; a2/a3/g2 types carry theirs
            accelerators = [gcp.compute.RegionInstanceTemplateGuestAcceleratorArgs(
                type=primary.attached_gpu, count=primary.accelerator_count)]
        return gcp.compute.RegionInstanceTemplate(
            name, name_prefix=gcp_template_prefix(d, kind), project=d.gcp_project,
            region=d.region,
            description=f"servestack {d.service}: {'spot' if spot else 'on-demand'} "
                        f"{primary.instance_type}",
            machine_type=primary.instance_type,
            guest_accelerators=accelerators,
            scheduling=gcp.compute.RegionInstanceTemplateSchedulingArgs(**gcp_scheduling(spot)),
            disks=[gcp.compute.RegionInstanceTemplateDiskArgs(
                source_image=self.image, boot=True, auto_delete=True,
                disk_size_gb=d.disk_size_gb, disk_type=d.disk_type, labels=labels)],
            # cloud-init reads `user-data`; SSH (when ssh_cidrs allow it) goes through OS Login.
            metadata=gcp_metadata(user_data),
            # No access config: no public address (egress goes through the router's NAT).
            network_interfaces=[gcp.compute.RegionInstanceTemplateNetworkInterfaceArgs(
                subnetwork=args.subnet, nic_type=gcp_nic_type(d))],
            service_account=gcp.compute.RegionInstanceTemplateServiceAccountArgs(
                email=args.service_account_email, scopes=[GCP_CLOUD_PLATFORM_SCOPE]),
            tags=[gcp_network_tag(d)],
            labels=labels,
            opts=_child(self))

    def _versions(self, d: Deployment
                  ) -> list[gcp.compute.RegionInstanceGroupManagerVersionArgs]:
        """One version per template (see mechanics.gcp_versions)."""
        return [gcp.compute.RegionInstanceGroupManagerVersionArgs(
            name=kind, instance_template=self.templates[kind].self_link,
            target_size=gcp.compute.RegionInstanceGroupManagerVersionTargetSizeArgs(fixed=fixed)
            if fixed is not None else None)
            for kind, fixed in gcp_versions(d).items()]


@dataclass
class GroupScalingArgs:
    group: InstanceGroupArgs
    manager: gcp.compute.RegionInstanceGroupManager
    templates: dict[str, gcp.compute.RegionInstanceTemplate]


class GroupScaling(pulumi.ComponentResource):
    """The regional autoscaler of the group and, with dynamic on-demand fallback, the MIG of
    on-demand VMs (the on-demand template, same zones, health and update policy) with its
    own autoscaler. How the two share the load: clouds.gcp.gcp_autoscaling_policy."""

    def __init__(self, name: str, args: GroupScalingArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("GroupScaling"), name, None, opts)
        d = args.group.deployment
        self.autoscaler = self._autoscaler(f"{name}-autoscaler", d, args.manager,
                                           fallback=False)
        self.fallback: gcp.compute.RegionInstanceGroupManager | None = None
        self.fallback_group: pulumi.Output[str] | None = None
        if gcp_has_fallback_group(d):
            self.fallback = self._fallback_manager(f"{name}-ondemand-mig", args)
            self.fallback_group = self.fallback.instance_group
            self._autoscaler(f"{name}-ondemand-autoscaler", d, self.fallback, fallback=True)
        self.register_outputs({"autoscaler": self.autoscaler.id,
                               "fallbackGroup": self.fallback_group})

    def _autoscaler(self, name: str, d: Deployment,
                    manager: gcp.compute.RegionInstanceGroupManager,
                    fallback: bool) -> gcp.compute.RegionAutoscaler:
        return gcp.compute.RegionAutoscaler(
            name, name=gcp_name(d, "ondemand-autoscaler" if fallback else "autoscaler"),
            project=d.gcp_project, region=d.region, target=manager.id,
            autoscaling_policy=autoscaling_policy(gcp_autoscaling_policy(d, fallback)),
            description=f"servestack {d.service}: "
                        f"{'on-demand fallback' if fallback else 'replica'} autoscaler",
            opts=_child(self))

    def _fallback_manager(self, name: str, args: GroupScalingArgs
                          ) -> gcp.compute.RegionInstanceGroupManager:
        """On-demand VMs that stand in while spot capacity is missing, sized by their own
        autoscaler only."""
        version = gcp.compute.RegionInstanceGroupManagerVersionArgs(
            name="ondemand", instance_template=args.templates["ondemand"].self_link)
        return region_mig(name, args.group, "ondemand-mig", f"{args.group.deployment.scope}-od",
                          [version], target_size=None, opts=_child(self))


def region_mig(name: str, args: InstanceGroupArgs, kind: str, base_name: str,
               versions: list[gcp.compute.RegionInstanceGroupManagerVersionArgs],
               target_size: int | None, opts: pulumi.ResourceOptions
               ) -> gcp.compute.RegionInstanceGroupManager:
    """A regional MIG of the deployment's VMs (`kind` names it)."""
    d = args.deployment
    return gcp.compute.RegionInstanceGroupManager(
        name, name=gcp_name(d, kind), project=d.gcp_project, region=d.region,
        base_instance_name=base_name,
        description=f"servestack {d.service}: {d.candidate_id}",
        versions=versions, target_size=target_size,
        distribution_policy_zones=list(d.zones) or None,
        distribution_policy_target_shape=GCP_TARGET_SHAPE,
        named_ports=[gcp.compute.RegionInstanceGroupManagerNamedPortArgs(
            name=GCP_NAMED_PORT, port=d.service_port)],
        auto_healing_policies=gcp.compute.RegionInstanceGroupManagerAutoHealingPoliciesArgs(
            health_check=args.health_check, initial_delay_sec=gcp_autoheal_delay(d)),
        instance_flexibility_policy=flexibility_policy(d),
        update_policy=gcp.compute.RegionInstanceGroupManagerUpdatePolicyArgs(
            **gcp_update_policy(d)),
        wait_for_instances=False,
        opts=opts)


ScalingPolicy = gcp.compute.RegionAutoscalerAutoscalingPolicyArgs
ScalingMetric = gcp.compute.RegionAutoscalerAutoscalingPolicyMetricArgs
BalancerUtilization = gcp.compute.RegionAutoscalerAutoscalingPolicyLoadBalancingUtilizationArgs
ScaleIn = gcp.compute.RegionAutoscalerAutoscalingPolicyScaleInControlArgs
ScaleInLimit = gcp.compute.RegionAutoscalerAutoscalingPolicyScaleInControlMaxScaledInReplicasArgs


def autoscaling_policy(policy: dict) -> ScalingPolicy:
    """clouds.gcp's policy dict as the SDK's types (its `metric` blocks are `metrics` here)."""
    rest = dict(policy)
    metrics = [ScalingMetric(**m) for m in rest.pop("metric", [])]
    utilization = rest.pop("load_balancing_utilization", None)
    scale_in = rest.pop("scale_in_control")
    return ScalingPolicy(
        **rest, metrics=metrics or None,
        load_balancing_utilization=BalancerUtilization(**utilization) if utilization else None,
        scale_in_control=ScaleIn(
            max_scaled_in_replicas=ScaleInLimit(**scale_in["max_scaled_in_replicas"]),
            time_window_sec=scale_in["time_window_sec"]))


@dataclass
class MetricWriterArgs:
    deployment: Deployment
    member: pulumi.Input[str]
    project: pulumi.Input[str]


class MetricWriter(pulumi.ComponentResource):
    """roles/monitoring.metricWriter for the VMs' account, so each replica can write the
    gauge the autoscaler reads. Cloud Monitoring grants writing on the project only."""

    def __init__(self, name: str, args: MetricWriterArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("MetricWriter"), name, None, opts)
        self.binding = gcp.projects.IAMMember(
            f"{name}-binding", project=args.project, role=GCP_METRIC_WRITER,
            member=args.member, opts=_child(self))
        self.register_outputs({"role": GCP_METRIC_WRITER})


FlexibilityPolicy = gcp.compute.RegionInstanceGroupManagerInstanceFlexibilityPolicyArgs
InstanceSelection = \
    gcp.compute.RegionInstanceGroupManagerInstanceFlexibilityPolicyInstanceSelectionArgs


def flexibility_policy(d: Deployment) -> FlexibilityPolicy | None:
    """Ranked machine types (rank 0 = the chosen one): the MIG falls back to the next type
    when the zones have no capacity for the preferred one. The policy overrides the template's
    machine type, so the chosen type is listed too. None with a single type."""
    choices = gcp_flexible_choices(d)
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
    # The on-demand fallback MIG, behind the same backend service (dynamic fallback only).
    fallback_group: pulumi.Input[str] | None = None


class LoadBalancer(pulumi.ComponentResource):
    """Regional external Application Load Balancer: `listener_port` -> named port `http`."""

    def __init__(self, name: str, args: LoadBalancerArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("LoadBalancer"), name, None, opts)
        d = args.deployment
        labels = gcp_labels(d.tags)
        self.address = gcp.compute.Address(
            f"{name}-ip", name=gcp_name(d, "ip"), project=d.gcp_project, region=d.region,
            address_type=GCP_ADDRESS_TYPE, network_tier=GCP_LB_TIER, labels=labels,
            description=f"servestack {d.service}: endpoint", opts=_child(self))
        self.policy = self._client_policy(name, d)
        self.backend = gcp.compute.RegionBackendService(
            f"{name}-backend", name=gcp_name(d, "backend"), project=d.gcp_project,
            region=d.region,
            load_balancing_scheme=GCP_LB_SCHEME, protocol="HTTP", port_name=GCP_NAMED_PORT,
            health_checks=args.health_check,
            # For this load balancer the timeout bounds a whole response: a streamed completion
            # may run for `idle_timeout_seconds`. Draining lets in-flight streams finish.
            timeout_sec=d.idle_timeout_seconds,
            connection_draining_timeout_sec=gcp_draining_seconds(d),
            backends=[gcp.compute.RegionBackendServiceBackendArgs(group=group, **gcp_backend(d))
                      for group in (args.instance_group, args.fallback_group) if group],
            security_policy=self.policy.self_link if self.policy else None,
            description=f"servestack {d.service}: the GPU group", opts=_child(self))
        self.url_map = gcp.compute.RegionUrlMap(
            f"{name}-urls", name=gcp_name(d, "urls"), project=d.gcp_project, region=d.region,
            default_service=self.backend.id, opts=_child(self))
        # With TLS, plain HTTP only redirects to https (the proxy may not serve both).
        self.redirect = gcp.compute.RegionUrlMap(
            f"{name}-redirect", name=gcp_name(d, "redirect"), project=d.gcp_project,
            region=d.region, description=f"servestack {d.service}: http to https",
            default_url_redirect=gcp.compute.RegionUrlMapDefaultUrlRedirectArgs(
                **GCP_HTTPS_REDIRECT),
            opts=_child(self)) if d.tls else None
        # Keep-alive between requests is capped at 600 s by the API (the default), below the
        # idle timeout; it only closes connections that carry no request.
        self.proxy = gcp.compute.RegionTargetHttpProxy(
            f"{name}-proxy", name=gcp_name(d, "http-proxy"), project=d.gcp_project,
            region=d.region, url_map=(self.redirect or self.url_map).id, opts=_child(self))
        self.rule = gcp.compute.ForwardingRule(
            f"{name}-listener", name=gcp_name(d, "listener"), project=d.gcp_project,
            region=d.region,
            load_balancing_scheme=GCP_LB_SCHEME, ip_protocol="TCP",
            port_range=str(d.listener_port), target=self.proxy.id,
            ip_address=self.address.address, network=args.network, network_tier=GCP_LB_TIER,
            labels=labels,
            opts=_child(self, depends_on=[args.proxy_subnet]))
        self.ip_address = self.rule.ip_address
        self.network = args.network
        self.proxy_subnet = args.proxy_subnet
        self.register_outputs({"ipAddress": self.rule.ip_address,
                               "backend": self.backend.id,
                               "clientPolicy": self.policy.id if self.policy else None})

    def _client_policy(self, name: str, d: Deployment
                       ) -> gcp.compute.RegionSecurityPolicy | None:
        """Cloud Armor: allow `allow_cidrs`, deny everyone else. None when open to all."""
        rules = gcp_client_rules(d)
        if rules is None:
            return None
        return gcp.compute.RegionSecurityPolicy(
            f"{name}-clients", name=gcp_name(d, "clients"), project=d.gcp_project,
            region=d.region, type=GCP_ARMOR_TYPE,
            description=f"servestack {d.service}: only allow_cidrs reach the endpoint",
            rules=[_armor_rule(r) for r in rules], opts=_child(self))


def _armor_rule(rule: dict) -> gcp.compute.RegionSecurityPolicyRuleArgs:
    match = rule["match"]
    return gcp.compute.RegionSecurityPolicyRuleArgs(
        priority=rule["priority"], action=rule["action"], description=rule["description"],
        match=gcp.compute.RegionSecurityPolicyRuleMatchArgs(
            versioned_expr=match["versioned_expr"],
            config=gcp.compute.RegionSecurityPolicyRuleMatchConfigArgs(**match["config"])))


# --- HTTPS -----------------------------------------------------------------------------------


@dataclass
class HttpsArgs:
    deployment: Deployment
    load_balancer: LoadBalancer


class Https(pulumi.ComponentResource):
    """HTTPS on the domain, on 443 of the load balancer's address: a Google-managed regional
    certificate (Certificate Manager: the only source of managed certificates for a regional
    external ALB), proved by a DNS authorization; a TLS 1.2+ policy; the HTTPS proxy on the
    backend URL map. With a managed zone, the authorization's CNAME and the domain's A record
    are written there; `records` lists them either way (the Service exports the list as
    `dns_records` when there is no zone, for the user to create)."""

    def __init__(self, name: str, args: HttpsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Https"), name, None, opts)
        d, lb = args.deployment, args.load_balancer
        tls = d.tls
        if tls is None:
            raise ValueError(f"deployment {d.candidate_id} asks for no TLS")
        labels = gcp_labels(d.tags)
        self.authorization = gcp.certificatemanager.DnsAuthorization(
            f"{name}-dns-auth", name=gcp_name(d, "dns-auth"), project=d.gcp_project,
            location=d.region, domain=tls.domain, type=GCP_DNS_AUTHORIZATION_TYPE,
            labels=labels, description=f"servestack {d.service}: proves {tls.domain} for its "
                                       "certificate", opts=_child(self))
        self.certificate = gcp.certificatemanager.Certificate(
            f"{name}-cert", name=gcp_name(d, "cert"), project=d.gcp_project, location=d.region,
            labels=labels, description=f"servestack {d.service}: {tls.domain}",
            managed=gcp.certificatemanager.CertificateManagedArgs(
                domains=[tls.domain], dns_authorizations=[self.authorization.id]),
            opts=_child(self))
        self.policy = gcp.compute.RegionSslPolicy(
            f"{name}-policy", name=gcp_name(d, "tls"), project=d.gcp_project, region=d.region,
            **GCP_SSL_POLICY, description=f"servestack {d.service}: TLS 1.2 or later",
            opts=_child(self))
        self.proxy = gcp.compute.RegionTargetHttpsProxy(
            f"{name}-proxy", name=gcp_name(d, "https-proxy"), project=d.gcp_project,
            region=d.region, url_map=lb.url_map.id,
            certificate_manager_certificates=[self.certificate.id],
            ssl_policy=self.policy.self_link, opts=_child(self))
        self.rule = gcp.compute.ForwardingRule(
            f"{name}-listener", name=gcp_name(d, "https-listener"), project=d.gcp_project,
            region=d.region, load_balancing_scheme=GCP_LB_SCHEME, ip_protocol="TCP",
            port_range=str(tls.port), target=self.proxy.id, ip_address=lb.address.address,
            network=lb.network, network_tier=GCP_LB_TIER, labels=labels,
            opts=_child(self, depends_on=[lb.proxy_subnet]))
        self.records = self._records(name, d, tls, lb.address.address)
        self.register_outputs({"certificate": self.certificate.id,
                               OUTPUT_DNS_RECORDS: self.records})

    def _records(self, name: str, d: Deployment, tls: Tls,
                 address: pulumi.Output[str]) -> pulumi.Output[list]:
        """The records the domain needs ({name, type, value}); created in the managed zone
        when there is one."""
        domain, zone = gcp_fqdn(tls.domain), tls.dns_zone
        found = self.authorization.dns_resource_records.apply(lambda rs: rs[0])
        wanted = [(found.name, GCP_DNS_AUTHORIZATION_RECORD, found.data),
                  (pulumi.Output.from_input(domain), "A", address)]
        kinds = ("authorization", "domain")
        if zone is not None:
            for kind, (record, record_type, value) in zip(kinds, wanted, strict=True):
                gcp.dns.RecordSet(f"{name}-{kind}", project=d.gcp_project, managed_zone=zone,
                                  name=record, type=record_type, ttl=GCP_DNS_TTL,
                                  rrdatas=[value], opts=_child(self))
        return pulumi.Output.all(*[pulumi.Output.all(n, t, v) for n, t, v in wanted]).apply(
            lambda rows: [{"name": n, "type": t, "value": v} for n, t, v in rows])


# --- Service ---------------------------------------------------------------------------------


class Service(pulumi.ComponentResource):
    """The whole service on GCP; `endpoint` is http://<forwarding rule IP>:<listener port>, or
    https://<domain> with TLS. `api_key` (a secret) and `api_key_ref` are None without a key;
    `dns_records` is None unless TLS asks the user to create records."""

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
        Firewall(f"{name}-fw", FirewallArgs(d, network.network.id), opts=_child(self))
        identity = Identity(f"{name}-id", IdentityArgs(d), opts=_child(self))
        waits: list[pulumi.Resource] = [network.nat]
        if d.secret is not None:
            waits.append(TokenSecret(f"{name}-token",
                                     TokenSecretArgs(d, identity.member, hf_token),
                                     opts=_child(self)))
        key = ApiKeySecret(f"{name}-api-key", ApiKeySecretArgs(d, identity.member),
                           opts=_child(self)) if d.api_key is not None else None
        waits += [key] if key else []
        if gcp_metric_type(d):
            writer = MetricWriter(f"{name}-metrics",
                                  MetricWriterArgs(d, identity.member,
                                                   d.gcp_project or identity.account.project),
                                  opts=_child(self))
            waits.append(writer)
        if d.weight_cache is not None:  # the VMs read (or fill) it from their first boot
            waits.append(WeightCache(f"{name}-cache", WeightCacheArgs(
                d, identity.member, d.gcp_project or identity.account.project),
                opts=_child(self)))
        health = HealthCheck(f"{name}-hc", HealthCheckArgs(d), opts=_child(self))
        # The VMs go out through the NAT, and read the token and the key, as they boot:
        # create them after the NAT and the secrets' versions and accessor bindings.
        group = InstanceGroup(
            f"{name}-group",
            InstanceGroupArgs(d, network.subnet.id, identity.email, health.check_id),
            opts=_child(self, depends_on=waits))
        lb = LoadBalancer(
            f"{name}-lb",
            LoadBalancerArgs(d, network.network.id, network.proxy_subnet,
                             group.instance_group, health.check_id,
                             fallback_group=group.fallback_group),
            opts=_child(self))
        https = Https(f"{name}-https", HttpsArgs(d, lb), opts=_child(self)) if d.tls else None
        self.endpoint = pulumi.Output.from_input(f"https://{d.tls.domain}") if d.tls else \
            pulumi.Output.concat("http://", lb.ip_address, ":", str(d.listener_port))
        self.lb_host = lb.ip_address  # what a front reaches: the forwarding rule's IPv4
        self.group_name = group.group_name
        self.group_id = group.group_id
        self.api_key = key.value if key else None
        self.api_key_ref = key.ref if key else None
        self.dns_records = https.records if https and d.tls and not d.tls.dns_zone else None
        self.register_outputs({"endpoint": self.endpoint, "groupName": self.group_name,
                               "groupId": self.group_id})


# --- read-only probes (the deploy loop's engine uses these) ---
# Programs that only read (invokes); servestack.pulumi.engine runs each in a throwaway stack.


# What these probes answer: names of servestack.engine.Capabilities fields (the sweep
# reports Pulumi type tokens, so what it finds can be imported: adopt_strays).
PROBES = ("adopt_strays", "cloud_sweep", "credentials_check", "group_size", "quota_precheck")
QUOTA_UNIT = "gpus"  # the GPU quotas read below count GPUs
# A VM that exists at all (PROVISIONING, STAGING, RUNNING) got capacity; without capacity or
# quota the MIG's creates fail and no instance exists.
GONE_STATES = ("STOPPING", "TERMINATED")
ASSET_TYPES = {
    "compute.googleapis.com/Instance": "gcp:compute/instance:Instance",
    "compute.googleapis.com/InstanceTemplate": "gcp:compute/instanceTemplate:InstanceTemplate",
    "compute.googleapis.com/RegionInstanceTemplate":
        "gcp:compute/regionInstanceTemplate:RegionInstanceTemplate",
    "compute.googleapis.com/Disk": "gcp:compute/disk:Disk",
}


def sweep_program(deployment: Deployment, snapshot: list[dict]) -> Callable[[], None]:
    """Exports `found`: what still carries the candidate's label (Cloud Asset Inventory)."""
    return lambda: pulumi.export("found", _labelled(deployment))


def _labelled(deployment: Deployment) -> list[dict]:
    project = deployment.gcp_project or gcp.organizations.get_project().project_id
    query = f"labels.servestack-candidate={deployment.tags['servestack-candidate']}"
    result = gcp.cloudasset.get_search_all_resources(scope=f"projects/{project}", query=query)
    found = []
    for item in result.results:
        resource_id = item.name.removeprefix("//compute.googleapis.com/")
        found.append({"type": ASSET_TYPES.get(item.asset_type, item.asset_type),
                      "name": item.name.rsplit("/", 1)[-1], "id": resource_id})
    return found


def group_program(deployment: Deployment, group_name: str | None) -> Callable[[], None]:
    """Exports `running`: the MIG's VMs that got capacity, with those of the on-demand
    fallback MIG when there is one (they serve too); None before the MIG has a name."""

    def program() -> None:
        if not group_name:
            pulumi.export("running", None)
            return
        names = [group_name]
        if gcp_has_fallback_group(deployment):
            names.append(gcp_name(deployment, "ondemand-mig"))
        running = 0
        for name in names:
            group = gcp.compute.get_region_instance_group(
                name=name, region=deployment.region, project=deployment.gcp_project)
            running += sum(1 for i in group.instances if i.status not in GONE_STATES)
        pulumi.export("running", running)

    return program


def quota_wanted(candidates: list[Candidate]) -> list[tuple[str, str]]:
    """(region, GPU quota metric) pairs, in plan order (the first region configures the probe)."""
    return list(dict.fromkeys((c.region, CLOUD.quota_families(c)[0]) for c in candidates))


def quota_id(metric: str) -> str:
    """NVIDIA_A100_80GB_GPUS -> NVIDIA-A100-80GB-GPUS-per-project-region (Cloud Quotas ids)."""
    return metric.replace("_", "-") + "-per-project-region"


def quota_probe(wanted: list[tuple[str, str]], project: str | None
                ) -> tuple[dict[str, str], Callable[[], None]]:
    """The probe stack's config and program; it exports `limits` as {"region|metric": GPUs}:
    region "*" is every region without its own value, "*|*" is GPUS_ALL_REGIONS (a cap on
    every GPU metric)."""
    metrics = sorted({metric for _, metric in wanted})

    def program() -> None:
        parent = f"projects/{project or gcp.organizations.get_project().project_id}" \
            "/locations/global"
        limits: dict[str, float | None] = {}
        asked = [("*", "GPUS-ALL-REGIONS-per-project"), *((m, quota_id(m)) for m in metrics)]
        for metric, asked_id in asked:
            try:
                info = gcp.cloudquota.get_s_quota_info(parent=parent, quota_id=asked_id,
                                                       service="compute.googleapis.com")
            except Exception:  # noqa: BLE001 - API off or unknown id: no answer, no block
                continue
            for dims in info.dimensions_infos:
                value = float(dims.details[0].value) if dims.details else None
                region = "*" if metric == "*" else dims.dimensions.get("region", "*")
                limits[f"{region}|{metric}"] = value
        pulumi.export("limits", limits)

    config = {"gcp:region": wanted[0][0], **({"gcp:project": project} if project else {})}
    return config, program


def identity_probe() -> tuple[dict[str, str], Callable[[], None]]:
    """`credentials_check`: exports `identity`, the default project and the account. Reading
    the client config fetches an access token, so missing or expired credentials fail it; the
    account's e-mail needs the userinfo.email scope, which some credentials lack."""

    def program() -> None:
        config = gcp.organizations.get_client_config()
        try:
            account = gcp.organizations.get_client_open_id_user_info().email
        except Exception:  # noqa: BLE001 - credentials are valid; only the e-mail is unknown
            account = "unknown account"
        pulumi.export("identity", f"project {config.project or '(none set)'} ({account})")

    return {}, program
