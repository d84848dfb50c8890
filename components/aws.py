"""AWS: the service as an Application Load Balancer in front of a GPU auto scaling group, in a
VPC of its own where the GPU VMs have no public address.

`Service` is the top of the tree; each concern is its own child component:

- `Network`: the stack's VPC, public subnets (the ALB's, in two AZs or more) behind an
  internet gateway, private subnets for the group (one per deployment zone) whose way out is
  one NAT gateway; with --ssh-cidr the VMs sit in the public subnets instead.
- `Firewall`: the ALB's security group (listener ports from the allowed CIDRs) and the
  instances' (service port from the ALB only, SSH only if asked, all egress for the download).
- `LoadBalancer`: ALB, target group with the deployment's health check, listener; with TLS
  (`Https`) an ACM certificate validated in the Route 53 hosted zone, the HTTPS listener, the
  domain's alias record, and the HTTP listener redirecting to HTTPS.
- `TokenSecret`: the SSM SecureString holding the Hugging Face token (a Pulumi secret).
- `ApiKeySecret`: the API key (components.apikey: drawn here, or the service's shared one read
  from its key stack) as an SSM SecureString.
- `InstanceRole`: role + instance profile that may read those parameters and nothing else,
  and run the SSM agent (Session Manager: a shell without an open port).
- `InstanceGroup`: launch template (image, IMDSv2, encrypted root volume, one network
  interface without a public address, cloud-init user data) and the auto scaling group with
  its instance types in rank order and the spot split, which replaces its instances, new ones
  first, when the template changes (instance refresh).
- `Autoscaler` (replica_policy autoscales): target tracking scale-out on the ALB's requests
  per target or the replicas' vLLM gauge, and a scale-in alarm + step policy that waits the
  downscale delay; the group's desired capacity is then left to them (ignore_changes).
- `OnDemandFallback` (dynamic_ondemand_fallback): an on-demand twin of the spot group, in the
  same subnets, whose capacity two alarms set to the spot group's deficit.

A spot group spans every zone the plan offers its types in (d.zones, fixed at plan time), one
private subnet each.

Fixed names (name prefixes, Name tags, the parameters) derive from the deployment's scope,
service and stack, so two services or two stacks never share one in an account; the ALB and
target group take Pulumi's autonames (a random suffix). The domain's records are the one
exception: they are the domain's, so two stacks given one --domain contend for it.

Everything lands in the provider's region (`aws:region`), which must be the deployment's
region. Every value comes from the `Deployment`, and how AWS spells it from
servestack.clouds.aws (shared with the Terraform renderer); nothing is decided here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pulumi
import pulumi_aws as aws
from servestack.components import TYPE_PREFIX
from servestack.components.apikey import service_key
from servestack.components.aws_cache import WeightCache, WeightCacheArgs

from servestack.bootstrap import user_data
from servestack.clouds.aws import (
    ALB_MIN_ZONES,
    ALL_PROTOCOLS,
    AZ_FILTER,
    AZ_STATE,
    CLOUD,
    DEFAULT_ROUTE,
    GROUP_STATES,
    LIVE_STATES,
    NAT_LIVE_STATES,
    QUOTA_CODES,
    VALIDATION_TTL,
    alb_client_ports,
    aws_distribution,
    aws_fallback_alarms,
    aws_fallback_policies,
    aws_group_metrics,
    aws_health_check,
    aws_https_listener,
    aws_https_redirect,
    aws_instance_refresh,
    aws_load_balancer,
    aws_match_tags,
    aws_metadata_options,
    aws_name,
    aws_name_prefix,
    aws_network_interface,
    aws_root_ebs,
    aws_scale_in_alarm,
    aws_scale_in_policy,
    aws_tags,
    aws_target_group,
    aws_target_tracking,
    ec2_trust_policy,
    extra_alb_zones,
    fallback_capacity,
    public_ssh,
    put_metrics_policy,
    read_token_policy,
    ssm_core_policy_arn,
    subnet_cidr,
    zone_keys,
)
from servestack.clouds.aws import QUOTA_UNIT as QUOTA_UNIT  # the engine reads it here
from servestack.deployment.model import WORLD, Deployment, SecretRef
from servestack.planner import Candidate

# ALB and target group names are at most 32 characters; Pulumi appends "-" and 7 characters
# to the logical name, and the logical name adds "-alb" / "-tg" to this many.
NAME_ROOM = 20


def _type(kind: str) -> str:
    return f"{TYPE_PREFIX}:aws:{kind}"


def _child(parent: pulumi.Resource, **extra) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **extra)


def _fit(name: str, room: int) -> str:
    """A name prefix short enough for the provider's random suffix within AWS's limit."""
    return name[:room].rstrip("-") or "s"


def _named(deployment: Deployment, name: str) -> dict[str, str]:
    return {**aws_tags(deployment), "Name": name}


def _split_cidrs(cidrs: tuple[str, ...]) -> dict[str, Any]:
    """Security group rule fields for a mix of IPv4 and IPv6 CIDRs."""
    v6 = [c for c in cidrs if ":" in c]
    v4 = [c for c in cidrs if ":" not in c]
    return {"cidr_blocks": v4, **({"ipv6_cidr_blocks": v6} if v6 else {})}


@dataclass
class NetworkArgs:
    deployment: Deployment
    region_zones: pulumi.Output[list[str]] | None  # the region's other AZs, when needed


class Network(pulumi.ComponentResource):
    """The stack's own VPC, so no GPU VM needs a public address.

    Public subnets (the ALB's; an ALB needs two AZs or more, so a group pinned to one zone
    adds one of the region's other AZs) route to an internet gateway. The group's private
    subnets, one per deployment zone, route to the internet (model and package downloads,
    the SSM agent) through one NAT gateway with its Elastic IP. With --ssh-cidr (the user's
    choice) the VMs sit in the public subnets with public addresses and no NAT is made.

    One NAT gateway, not one per AZ: each costs about 32 $/month plus 0.045 $/GB, and the
    VMs use it only to download the model and packages and to reach SSM; if its AZ fails the
    running replicas keep serving (inbound traffic comes through the ALB) and only new VMs in
    the other zones cannot download until it is back.
    """

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Network"), name, None, opts)
        d = args.deployment
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc", cidr_block=d.network.range_of("vnet"), enable_dns_support=True,
            enable_dns_hostnames=True, tags=_named(d, aws_name(d, "vpc")), opts=_child(self))
        # No rule on the VPC's default group: nothing here uses it, and nothing may by mistake.
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=self.vpc.id,
                                     tags=_named(d, aws_name(d, "default")), opts=_child(self))
        self.gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags=_named(d, aws_name(d, "igw")),
            opts=_child(self))
        zones = _subnet_zones(d, args.region_zones)
        self.public = self._subnets(name, d, "public", zones)
        self.public_routes = self._routes(name, d, "public", self.public,
                                          gateway_id=self.gateway.id)
        self.lb_subnet_ids: pulumi.Output[list[str]] = pulumi.Output.all(
            *[s.id for s in self.public])
        group_zones = len(d.zones) or len(zones)
        if public_ssh(d):
            self.group_subnets = self.public[:group_zones]
            self.egress: list[pulumi.Resource] = [*self.public_routes, self.gateway]
        else:
            self.group_subnets = self._subnets(name, d, "private", zones[:group_zones])
            self.egress = self._nat(name, d)
        self.group_subnet_ids: pulumi.Output[list[str]] = pulumi.Output.all(
            *[s.id for s in self.group_subnets])
        self.register_outputs({"vpcId": self.vpc.id, "lbSubnetIds": self.lb_subnet_ids,
                               "groupSubnetIds": self.group_subnet_ids})

    def _subnets(self, name: str, d: Deployment, tier: str,
                 zones: list[pulumi.Input[str]]) -> list[aws.ec2.Subnet]:
        key = zone_keys(d.region, d.zones).subnet_arg
        return [aws.ec2.Subnet(
            f"{name}-{tier}-{i}", vpc_id=self.vpc.id, cidr_block=subnet_cidr(d, tier, i),
            **_zone_arg(key, zone), map_public_ip_on_launch=False,
            tags=_named(d, aws_name(d, f"{tier}-{i}")), opts=_child(self))
            for i, zone in enumerate(zones)]

    def _routes(self, name: str, d: Deployment, tier: str, subnets: list[aws.ec2.Subnet],
                **target: pulumi.Input[str]) -> list[pulumi.Resource]:
        """A route table whose default route goes to `target`, and its subnets' associations."""
        table = aws.ec2.RouteTable(f"{name}-{tier}-rt", vpc_id=self.vpc.id,
                                   tags=_named(d, aws_name(d, f"{tier}-rt")), opts=_child(self))
        route = aws.ec2.Route(f"{name}-{tier}-default", route_table_id=table.id,
                              destination_cidr_block=DEFAULT_ROUTE, **target, opts=_child(self))
        links = [aws.ec2.RouteTableAssociation(
            f"{name}-{tier}-rt-{i}", subnet_id=subnet.id, route_table_id=table.id,
            opts=_child(self)) for i, subnet in enumerate(subnets)]
        return [table, route, *links]

    def _nat(self, name: str, d: Deployment) -> list[pulumi.Resource]:
        """The NAT gateway in the first public subnet. Its Elastic IP and itself need the
        internet gateway attached first (and on destroy go before it is detached)."""
        after_gateway = _child(self, depends_on=[self.gateway])
        address = aws.ec2.Eip(f"{name}-nat-ip", domain="vpc",
                              tags=_named(d, aws_name(d, "nat")), opts=after_gateway)
        nat = aws.ec2.NatGateway(
            f"{name}-nat", allocation_id=address.id, subnet_id=self.public[0].id,
            connectivity_type="public", tags=_named(d, aws_name(d, "nat")), opts=after_gateway)
        return self._routes(name, d, "private", self.group_subnets, nat_gateway_id=nat.id)


def _zone_arg(key: str, zone: pulumi.Input[str]) -> dict[str, Any]:
    """The subnet's zone argument, by name or by ID (see clouds.aws.zone_keys)."""
    return {key: zone}


def _subnet_zones(d: Deployment, others: pulumi.Output[list[str]] | None
                  ) -> list[pulumi.Input[str]]:
    """The public subnets' zones: the deployment's, then as many of the region's others as the
    ALB needs to span two AZs."""
    extra = extra_alb_zones(d)
    zones: list[pulumi.Input[str]] = list(d.zones)
    if extra and others is not None:
        zones += [_nth_zone_of(others, i, d) for i in range(extra)]
    return zones


def _nth_zone_of(others: pulumi.Output[list[str]], index: int, d: Deployment
                 ) -> pulumi.Output[str]:
    return others.apply(lambda found: _nth_zone(found, index, d))


def _nth_zone(found: list[str] | None, index: int, d: Deployment) -> str:
    if len(found or []) <= index:
        raise ValueError(f"{d.region} lists {len(found or [])} other available AZs "
                         f"(beside {list(d.zones)}); the load balancer needs "
                         f"{ALB_MIN_ZONES} AZs")
    return (found or [])[index]


def region_zones(d: Deployment, parent: pulumi.Resource) -> pulumi.Output[list[str]] | None:
    """The region's standard AZs other than the deployment's, when the ALB needs some."""
    if not extra_alb_zones(d):
        return None
    keys = zone_keys(d.region, d.zones)
    exclude: dict[str, Any] = {keys.exclude_arg: list(d.zones)}
    found = aws.get_availability_zones_output(
        state=AZ_STATE, filters=[aws.GetAvailabilityZonesFilterArgs(
            name=AZ_FILTER["name"], values=AZ_FILTER["values"])],
        **exclude, opts=pulumi.InvokeOutputOptions(parent=parent))
    return getattr(found, keys.listed)


@dataclass
class FirewallArgs:
    deployment: Deployment
    vpc_id: pulumi.Input[str]


class Firewall(pulumi.ComponentResource):
    """Two security groups: internet -> ALB listener(s), ALB -> instances' service port."""

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Firewall"), name, None, opts)
        d = args.deployment
        self.lb_group = aws.ec2.SecurityGroup(
            f"{name}-alb", name_prefix=aws_name_prefix(d, "alb"), vpc_id=args.vpc_id,
            description=f"servestack {d.service}: load balancer listener",
            ingress=[aws.ec2.SecurityGroupIngressArgs(
                protocol="tcp", from_port=port, to_port=port,
                description="clients to the listener", **_split_cidrs(d.allow_cidrs))
                for port in alb_client_ports(d)],
            egress=[aws.ec2.SecurityGroupEgressArgs(
                protocol="tcp", from_port=d.service_port, to_port=d.service_port,
                cidr_blocks=[d.network.range_of("vnet")], description="ALB to the instances")],
            tags=_named(d, aws_name(d, "alb")), opts=_child(self))
        ingress = [aws.ec2.SecurityGroupIngressArgs(
            protocol="tcp", from_port=d.service_port, to_port=d.service_port,
            security_groups=[self.lb_group.id], description="ALB to vLLM")]
        if d.ssh_cidrs:
            ingress.append(aws.ec2.SecurityGroupIngressArgs(
                protocol="tcp", from_port=d.ssh_port, to_port=d.ssh_port, description="SSH",
                **_split_cidrs(d.ssh_cidrs)))
        self.instance_group = aws.ec2.SecurityGroup(
            f"{name}-vm", name_prefix=aws_name_prefix(d, "vm"), vpc_id=args.vpc_id,
            description=f"servestack {d.service}: GPU instances",
            ingress=ingress,
            egress=[aws.ec2.SecurityGroupEgressArgs(
                protocol=ALL_PROTOCOLS, from_port=0, to_port=0, cidr_blocks=[WORLD],
                description="model and package downloads")],
            tags=_named(d, aws_name(d, "vm")), opts=_child(self))
        self.register_outputs({"lbSecurityGroupId": self.lb_group.id,
                               "instanceSecurityGroupId": self.instance_group.id})


@dataclass
class LoadBalancerArgs:
    deployment: Deployment
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    ready_first: list[pulumi.Resource]  # an internet-facing ALB needs the internet gateway


class LoadBalancer(pulumi.ComponentResource):
    """ALB -> listener -> target group that probes the deployment's health path; with TLS the
    HTTP listener redirects to an HTTPS one (`Https`)."""

    def __init__(self, name: str, args: LoadBalancerArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("LoadBalancer"), name, None, opts)
        d = args.deployment
        short = _fit(name, NAME_ROOM)
        self.alb = aws.lb.LoadBalancer(
            f"{short}-alb", **aws_load_balancer(d), subnets=args.subnet_ids,
            security_groups=[args.security_group_id], tags=_named(d, aws_name(d, "lb")),
            opts=_child(self, depends_on=args.ready_first))
        self.target_group = aws.lb.TargetGroup(
            f"{short}-tg", **aws_target_group(d), vpc_id=args.vpc_id,
            health_check=aws.lb.TargetGroupHealthCheckArgs(**aws_health_check(d.health)),
            tags=_named(d, aws_name(d, "lb")), opts=_child(self))
        forward = aws.lb.ListenerDefaultActionArgs(type="forward",
                                                   target_group_arn=self.target_group.arn)
        if d.tls is None:
            action = forward
            self.endpoint = pulumi.Output.concat("http://", self.alb.dns_name, ":",
                                                 str(d.listener_port))
        else:
            redirect = aws_https_redirect(d)
            action = aws.lb.ListenerDefaultActionArgs(
                type=redirect["type"],
                redirect=aws.lb.ListenerDefaultActionRedirectArgs(**redirect["redirect"]))
            self.https = Https(f"{name}-tls", HttpsArgs(d, self.alb, forward), _child(self))
            self.endpoint = pulumi.Output.from_input(f"https://{d.tls.domain}")
        self.listener = aws.lb.Listener(
            f"{name}-http", load_balancer_arn=self.alb.arn, port=d.listener_port,
            protocol="HTTP", default_actions=[action],
            tags=_named(d, aws_name(d, "lb")), opts=_child(self))
        self.register_outputs({"dnsName": self.alb.dns_name, "endpoint": self.endpoint,
                               "targetGroupArn": self.target_group.arn})


@dataclass
class HttpsArgs:
    deployment: Deployment
    alb: aws.lb.LoadBalancer
    forward: aws.lb.ListenerDefaultActionArgs


class Https(pulumi.ComponentResource):
    """HTTPS on the deployment's domain: an ACM certificate validated through DNS (its record
    in the Route 53 hosted zone), the HTTPS listener once it is issued, and the domain's alias
    record to the ALB."""

    def __init__(self, name: str, args: HttpsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Https"), name, None, opts)
        d, tls = args.deployment, args.deployment.tls
        assert tls is not None and tls.dns_zone  # Aws.check refuses a domain without its zone
        self.certificate = aws.acm.Certificate(
            f"{name}-cert", domain_name=tls.domain, validation_method="DNS",
            tags=_named(d, aws_name(d, "cert")), opts=_child(self))
        option = self.certificate.domain_validation_options.apply(lambda found: found[0])
        self.validation_record = aws.route53.Record(
            f"{name}-validation", zone_id=tls.dns_zone,
            name=option.apply(lambda o: o.resource_record_name or ""),
            type=option.apply(lambda o: o.resource_record_type or ""),
            records=[option.apply(lambda o: o.resource_record_value or "")],
            ttl=VALIDATION_TTL, allow_overwrite=True, opts=_child(self))
        self.validation = aws.acm.CertificateValidation(
            f"{name}-validated", certificate_arn=self.certificate.arn,
            validation_record_fqdns=[self.validation_record.fqdn], opts=_child(self))
        listener = aws_https_listener(d)
        self.listener = aws.lb.Listener(
            f"{name}-https", load_balancer_arn=args.alb.arn, port=listener["port"],
            protocol=listener["protocol"], ssl_policy=listener["ssl_policy"],
            certificate_arn=self.validation.certificate_arn, default_actions=[args.forward],
            tags=_named(d, aws_name(d, "lb")), opts=_child(self))
        self.alias = aws.route53.Record(
            f"{name}-alias", zone_id=tls.dns_zone, name=tls.domain, type="A",
            aliases=[aws.route53.RecordAliasArgs(name=args.alb.dns_name,
                                                 zone_id=args.alb.zone_id,
                                                 evaluate_target_health=True)],
            opts=_child(self))
        self.register_outputs({"certificateArn": self.certificate.arn,
                               "domain": self.alias.fqdn})


@dataclass
class AccountFacts:
    region: str
    account_id: pulumi.Output[str]
    partition: pulumi.Output[str]
    dns_suffix: pulumi.Output[str]


def account_facts(region: str, parent: pulumi.Resource) -> AccountFacts:
    opts = pulumi.InvokeOutputOptions(parent=parent)
    partition = aws.get_partition_output(opts=opts)
    return AccountFacts(region=region,
                        account_id=aws.get_caller_identity_output(opts=opts).account_id,
                        partition=partition.partition, dns_suffix=partition.dns_suffix)


def provider_region(deployment: Deployment) -> str:
    """The provider's region (`aws:region`); it must be where the plan put the deployment."""
    region = pulumi.Config("aws").get("region")
    if region and region != deployment.region:
        raise ValueError(f"aws:region is {region} but candidate {deployment.candidate_id} "
                         f"is in {deployment.region}: set aws:region to {deployment.region}")
    return region or deployment.region


def parameter_arn(facts: AccountFacts, name: str) -> pulumi.Output[str]:
    path = name if name.startswith("/") else f"/{name}"
    return pulumi.Output.concat("arn:", facts.partition, ":ssm:", facts.region, ":",
                                facts.account_id, ":parameter", path)


@dataclass
class TokenSecretArgs:
    deployment: Deployment
    token: pulumi.Input[str]


class TokenSecret(pulumi.ComponentResource):
    """The Hugging Face token as an SSM SecureString (AWS-managed key) at the deployment's name."""

    def __init__(self, name: str, args: TokenSecretArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("TokenSecret"), name, None, opts)
        d = args.deployment
        self.parameter = aws.ssm.Parameter(
            f"{name}-param", name=d.token_secret.name, type="SecureString",
            key_id=d.token_secret.key,
            value=pulumi.Output.secret(args.token),
            description=f"Hugging Face token for servestack {d.service}",
            tags=aws_tags(d), opts=_child(self))
        self.register_outputs({"parameterName": self.parameter.name})


class ApiKeySecret(pulumi.ComponentResource):
    """The generated API key (drawn once, a secret in the state) as an SSM SecureString at the
    deployment's `api_key` name, where the VMs read it at boot for vLLM's --api-key."""

    def __init__(self, name: str, deployment: Deployment,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("ApiKeySecret"), name, None, opts)
        d, ref = deployment, deployment.api_key_secret
        # drawn here, or the service's one key read from its key stack (shared_api_key)
        self.value: pulumi.Output[str] = service_key(f"{name}-value", d, _child(self))
        self.parameter = aws.ssm.Parameter(
            f"{name}-param", name=ref.name, type="SecureString", key_id=ref.key,
            value=self.value,
            description=f"API key of servestack {d.service}", tags=aws_tags(d), opts=_child(self))
        self.register_outputs({"parameterName": self.parameter.name})


@dataclass
class InstanceRoleArgs:
    deployment: Deployment
    facts: AccountFacts


class InstanceRole(pulumi.ComponentResource):
    """What the VMs may do: read the stack's parameters (the token, the API key; decrypted
    via SSM only), run the SSM agent for Session Manager, and publish their vLLM gauge when
    the autoscaler reads one; nothing else."""

    def __init__(self, name: str, args: InstanceRoleArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("InstanceRole"), name, None, opts)
        d = args.deployment
        self.role = aws.iam.Role(
            f"{name}-role", name_prefix=aws_name_prefix(d, "vm"),
            assume_role_policy=json.dumps(ec2_trust_policy()),
            description=f"servestack {d.service} GPU instances", tags=aws_tags(d),
            opts=_child(self))
        self.session_manager = aws.iam.RolePolicyAttachment(
            f"{name}-ssm", role=self.role.name,
            policy_arn=args.facts.partition.apply(ssm_core_policy_arn), opts=_child(self))
        secrets = _secrets(d)
        self.policy = aws.iam.RolePolicy(
            f"{name}-read-secrets", role=self.role.id,
            policy=_read_secrets_policy(args.facts, [s.name for s in secrets],
                                        secrets[0].key or ""),
            opts=_child(self)) if secrets else None
        metrics = put_metrics_policy(d)
        self.put_metrics = aws.iam.RolePolicy(
            f"{name}-put-metrics", role=self.role.id,
            policy=json.dumps(metrics, sort_keys=True), opts=_child(self)) \
            if metrics is not None else None
        self.profile = aws.iam.InstanceProfile(
            f"{name}-profile", name_prefix=aws_name_prefix(d, "vm"), role=self.role.name,
            tags=aws_tags(d), opts=_child(self))
        self.register_outputs({"roleArn": self.role.arn, "profileArn": self.profile.arn})


def _secrets(d: Deployment) -> list[SecretRef]:
    """The parameters the VMs read at boot (one KMS key for all: SSM's managed key)."""
    return [ref for ref in (d.secret, d.api_key) if ref is not None]


def _read_secrets_policy(facts: AccountFacts, names: list[str], key: str
                         ) -> pulumi.Output[str]:
    def document(args: list[str]) -> str:
        partition, account, suffix, *arns = args
        return json.dumps(read_token_policy(arns, partition, account, facts.region, suffix, key),
                          sort_keys=True)

    return pulumi.Output.all(facts.partition, facts.account_id, facts.dns_suffix,
                             *[parameter_arn(facts, n) for n in names]).apply(document)


@dataclass
class InstanceGroupArgs:
    deployment: Deployment
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]
    instance_profile_arn: pulumi.Input[str]
    # the secrets, their read permission and the route out exist before boot (and on destroy
    # the VMs leave before them)
    ready_first: list[pulumi.Resource]


class InstanceGroup(pulumi.ComponentResource):
    """Launch template + auto scaling group registered in the target group."""

    def __init__(self, name: str, args: InstanceGroupArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("InstanceGroup"), name, None, opts)
        d = args.deployment
        image = _image(d, self)
        self.template = aws.ec2.LaunchTemplate(
            f"{name}-lt", name_prefix=aws_name_prefix(d, "vm"), image_id=image.id,
            instance_type=d.primary.instance_type,
            network_interfaces=[aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                **aws_network_interface(d), security_groups=[args.security_group_id])],
            user_data=user_data(d),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                **aws_metadata_options(d)),
            block_device_mappings=[_root_volume(d, image.root_device_name)],
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(
                arn=args.instance_profile_arn),
            tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(
                resource_type="volume", tags=_named(d, aws_name(d, "vm")))],
            update_default_version=True, tags=_named(d, aws_name(d, "vm")), opts=_child(self))
        self.group = aws.autoscaling.Group(
            f"{name}-asg", name_prefix=aws_name_prefix(d, "asg"), min_size=d.min_replicas,
            max_size=d.max_replicas,
            desired_capacity=d.desired_replicas, vpc_zone_identifiers=args.subnet_ids,
            target_group_arns=[args.target_group_arn], health_check_type="ELB",
            health_check_grace_period=d.health.grace_period_seconds,
            capacity_rebalance=d.capacity_rebalance,
            mixed_instances_policy=_mixed_policy(d, self.template),
            instance_refresh=_instance_refresh(d),
            wait_for_capacity_timeout=d.capacity_timeout,
            tags=_group_tags(d), **aws_group_metrics(d),
            opts=_child(self, depends_on=args.ready_first,
                        ignore_changes=_scaled(d.autoscaling is not None)))
        self.register_outputs({"groupName": self.group.name, "groupArn": self.group.arn,
                               "launchTemplateId": self.template.id})


def _group_tags(d: Deployment) -> list[aws.autoscaling.GroupTagArgs]:
    return [aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=True)
            for k, v in _named(d, aws_name(d, "vm")).items()]


def _scaled(scaled: bool) -> list[str] | None:
    """A scaled group's desired capacity belongs to its policies once it exists: `pulumi up`
    must not set it back to the deployment's number."""
    return ["desired_capacity"] if scaled else None


@dataclass
class Image:
    id: pulumi.Input[str]
    root_device_name: pulumi.Input[str]


def _image(d: Deployment, parent: pulumi.Resource) -> Image:
    """The deployment's image: an AMI id (looked up for its root device) or the newest AMI
    of the image's owner, name pattern and architecture."""
    opts = pulumi.InvokeOutputOptions(parent=parent)
    image = d.image
    if image.kind == "id":
        ami = aws.ec2.get_ami_output(
            filters=[aws.ec2.GetAmiFilterArgs(name="image-id", values=[image.exact()])],
            opts=opts)
        return Image(id=image.exact(), root_device_name=ami.root_device_name)
    owner, pattern, architecture = image.ami_lookup()
    ami = aws.ec2.get_ami_output(
        owners=[owner], most_recent=True,
        filters=[aws.ec2.GetAmiFilterArgs(name="name", values=[pattern]),
                 aws.ec2.GetAmiFilterArgs(name="architecture", values=[architecture]),
                 aws.ec2.GetAmiFilterArgs(name="state", values=["available"])],
        opts=opts)
    return Image(id=ami.id, root_device_name=ami.root_device_name)


def _root_volume(d: Deployment, device: pulumi.Input[str]
                 ) -> aws.ec2.LaunchTemplateBlockDeviceMappingArgs:
    return aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
        device_name=device, ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(**aws_root_ebs(d)))


def _mixed_policy(d: Deployment, template: aws.ec2.LaunchTemplate
                  ) -> aws.autoscaling.GroupMixedInstancesPolicyArgs:
    """Always a mixed policy: one shape for one or many types, on-demand or spot."""
    return aws.autoscaling.GroupMixedInstancesPolicyArgs(
        launch_template=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateArgs(
            launch_template_specification=aws.autoscaling
            .GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs(
                launch_template_id=template.id,
                version=template.latest_version.apply(str)),
            overrides=[aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateOverrideArgs(
                instance_type=choice.instance_type) for choice in d.instances]),
        instances_distribution=aws.autoscaling
        .GroupMixedInstancesPolicyInstancesDistributionArgs(**aws_distribution(d)))


def _instance_refresh(d: Deployment) -> aws.autoscaling.GroupInstanceRefreshArgs:
    """Rolling replacement of the instances when the template's version changes."""
    refresh = aws_instance_refresh(d)
    return aws.autoscaling.GroupInstanceRefreshArgs(
        strategy=refresh["strategy"],
        preferences=aws.autoscaling.GroupInstanceRefreshPreferencesArgs(**refresh["preferences"]))


@dataclass
class AutoscalerArgs:
    deployment: Deployment
    group_name: pulumi.Input[str]
    load_balancer_suffix: pulumi.Input[str]  # the ALB's ARN suffix (app/<name>/<id>)
    target_group_suffix: pulumi.Input[str]  # the target group's (targetgroup/<name>/<id>)


class Autoscaler(pulumi.ComponentResource):
    """`d.autoscaling` on the group: a target tracking policy scales out, and a step policy
    driven by the scale-in alarm scales in once the downscale delay has passed (the shared
    spellings and their reasons: servestack.clouds.aws)."""

    def __init__(self, name: str, args: AutoscalerArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Autoscaler"), name, None, opts)
        d = args.deployment
        label = pulumi.Output.concat(args.load_balancer_suffix, "/", args.target_group_suffix)
        self.scale_out = _policy(f"{name}-scale-out", "scale-out", args.group_name,
                                 aws_target_tracking(d, label, args.group_name), self)
        self.scale_in = _policy(f"{name}-scale-in", "scale-in", args.group_name,
                                aws_scale_in_policy(d), self)
        alarm = aws_scale_in_alarm(d, args.group_name, args.load_balancer_suffix,
                                   args.target_group_suffix)
        self.alarm = _alarm(f"{name}-scale-in-alarm", d, "scale-in", alarm, self.scale_in, self)
        self.register_outputs({"scaleOutPolicy": self.scale_out.name,
                               "scaleInAlarm": self.alarm.name})


@dataclass
class OnDemandFallbackArgs:
    deployment: Deployment
    spot_group_name: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    target_group_arn: pulumi.Input[str]
    template: aws.ec2.LaunchTemplate
    ready_first: list[pulumi.Resource]


class OnDemandFallback(pulumi.ComponentResource):
    """dynamic_ondemand_fallback: a second group, on-demand only, in the same target group,
    from 0 to the spot replicas' number; two alarms on the spot group's deficit set its
    capacity through ExactCapacity step policies (servestack.clouds.aws)."""

    def __init__(self, name: str, args: OnDemandFallbackArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("OnDemandFallback"), name, None, opts)
        d = args.deployment
        self.group = aws.autoscaling.Group(
            f"{name}-asg", name_prefix=aws_name_prefix(d, "od"), min_size=0,
            max_size=fallback_capacity(d), desired_capacity=0,
            vpc_zone_identifiers=args.subnet_ids, target_group_arns=[args.target_group_arn],
            health_check_type="ELB", health_check_grace_period=d.health.grace_period_seconds,
            capacity_rebalance=False,
            mixed_instances_policy=_mixed_policy(replace(d, use_spot=False), args.template),
            instance_refresh=_instance_refresh(d),
            # its capacity is whatever the alarms last set: an update never waits for it
            wait_for_capacity_timeout="0", tags=_group_tags(d),
            opts=_child(self, depends_on=args.ready_first, ignore_changes=_scaled(True)))
        alarms = aws_fallback_alarms(d, args.spot_group_name)
        self.policies: dict[str, aws.autoscaling.Policy] = {}
        self.alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}
        for kind, body in aws_fallback_policies(d).items():
            policy = _policy(f"{name}-{kind}", f"fallback-{kind}", self.group.name, body, self)
            self.policies[kind] = policy
            self.alarms[kind] = _alarm(f"{name}-{kind}-alarm", d, f"spot-{kind}",
                                       alarms[kind], policy, self)
        self.register_outputs({"groupName": self.group.name})


def _policy(name: str, policy_name: str, group_name: pulumi.Input[str], body: dict[str, Any],
            parent: pulumi.Resource) -> aws.autoscaling.Policy:
    """A scaling policy from the shared spelling (Terraform's block names, the SDK's args)."""
    tracking = body.get("target_tracking_configuration")
    return aws.autoscaling.Policy(
        name, name=policy_name, autoscaling_group_name=group_name,
        policy_type=body["policy_type"], adjustment_type=body.get("adjustment_type"),
        estimated_instance_warmup=body.get("estimated_instance_warmup"),
        step_adjustments=[aws.autoscaling.PolicyStepAdjustmentArgs(**step)
                          for step in body.get("step_adjustment", [])] or None,
        target_tracking_configuration=_tracking(tracking) if tracking else None,
        opts=_child(parent))


def _tracking(config: dict[str, Any]) -> aws.autoscaling.PolicyTargetTrackingConfigurationArgs:
    predefined = config.get("predefined_metric_specification")
    custom = config.get("customized_metric_specification")
    return aws.autoscaling.PolicyTargetTrackingConfigurationArgs(
        target_value=config["target_value"], disable_scale_in=config["disable_scale_in"],
        predefined_metric_specification=aws.autoscaling
        .PolicyTargetTrackingConfigurationPredefinedMetricSpecificationArgs(**predefined)
        if predefined else None,
        customized_metric_specification=aws.autoscaling
        .PolicyTargetTrackingConfigurationCustomizedMetricSpecificationArgs(
            metric_name=custom["metric_name"], namespace=custom["namespace"],
            statistic=custom["statistic"],
            metric_dimensions=[aws.autoscaling
                               .PolicyTargetTrackingConfigurationCustomizedMetricSpecificationMetricDimensionArgs(**dimension)  # noqa: E501
                               for dimension in custom["metric_dimension"]])
        if custom else None)


def _alarm(name: str, d: Deployment, kind: str, body: dict[str, Any],
           policy: aws.autoscaling.Policy, parent: pulumi.Resource) -> aws.cloudwatch.MetricAlarm:
    """A metric-math alarm from the shared spelling, whose action is `policy`."""
    fields = {k: v for k, v in body.items() if k != "metric_query"}
    queries = [aws.cloudwatch.MetricAlarmMetricQueryArgs(
        **{k: v for k, v in query.items() if k != "metric"},
        metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(**query["metric"])
        if "metric" in query else None) for query in body["metric_query"]]
    return aws.cloudwatch.MetricAlarm(
        name, name=aws_name(d, kind), **fields, metric_queries=queries,
        alarm_actions=[policy.arn], tags=aws_tags(d), opts=_child(parent))


class Service(pulumi.ComponentResource):
    """The whole service on AWS; `endpoint` is the ALB's URL (https://<domain> with TLS);
    `api_key` (a secret) and `api_key_ref` (its SSM parameter) when the deployment has a key."""

    def __init__(self, name: str, deployment: Deployment,
                 hf_token: pulumi.Input[str] | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Service"), name, None, opts)
        d = deployment
        region = provider_region(d)
        network = Network(f"{name}-net", NetworkArgs(d, region_zones(d, self)), _child(self))
        firewall = Firewall(f"{name}-fw", FirewallArgs(d, network.vpc.id), _child(self))
        lb = LoadBalancer(name, LoadBalancerArgs(
            d, network.vpc.id, network.lb_subnet_ids, firewall.lb_group.id,
            [*network.public_routes, network.gateway]), _child(self))
        secrets = self._secrets(name, d, hf_token)
        role = InstanceRole(f"{name}-vm", InstanceRoleArgs(d, account_facts(region, self)),
                            _child(self))
        ready_first = [*secrets, role, *network.egress]
        if d.weight_cache is not None:  # the VMs read (or fill) it from their first boot
            ready_first.append(WeightCache(f"{name}-cache", WeightCacheArgs(
                d, role.role.id, account_facts(region, self).account_id), _child(self)))
        group = InstanceGroup(f"{name}-group", InstanceGroupArgs(
            d, network.group_subnet_ids, firewall.instance_group.id,
            lb.target_group.arn, role.profile.arn, ready_first), _child(self))
        self._scaling(name, d, group, lb, network, ready_first)
        self.endpoint = lb.endpoint
        # what a front reaches: the ALB by name, alias zone and ARN (Global Accelerator)
        self.lb_host, self.lb_arn, self.lb_zone_id = lb.alb.dns_name, lb.alb.arn, lb.alb.zone_id
        self.group_name = group.group.name
        self.group_id = group.group.id
        key = next((s for s in secrets if isinstance(s, ApiKeySecret)), None)
        self.api_key: pulumi.Output[str] | None = key.value if key else None
        self.api_key_ref = key.parameter.name if key else None
        self.register_outputs({"endpoint": self.endpoint, "groupName": self.group_name,
                               "groupId": self.group_id})

    def _scaling(self, name: str, d: Deployment, group: InstanceGroup, lb: LoadBalancer,
                 network: Network, ready_first: list[pulumi.Resource]) -> None:
        """The autoscaler and the on-demand fallback group, when the deployment has them. The
        fallback group shares the spot group's subnets (private, or public with --ssh-cidr) and
        waits for what it waits for (secrets, role, the route out)."""
        if d.autoscaling is not None:
            Autoscaler(f"{name}-scale", AutoscalerArgs(
                d, group.group.name, lb.alb.arn_suffix, lb.target_group.arn_suffix),
                _child(self))
        if fallback_capacity(d):
            OnDemandFallback(f"{name}-od", OnDemandFallbackArgs(
                d, group.group.name, network.group_subnet_ids, lb.target_group.arn,
                group.template, ready_first), _child(self))

    def _secrets(self, name: str, d: Deployment, hf_token: pulumi.Input[str] | None
                 ) -> list[pulumi.Resource]:
        """The token's parameter (when given) and the API key's (when the deployment has one)."""
        made: list[pulumi.Resource] = []
        if d.secret is not None and hf_token is None:
            pulumi.log.warn(f"no Hugging Face token given (servestack:hfToken): the instances "
                            f"expect SSM parameter {d.secret.name} to exist already", self)
        elif d.secret is not None and hf_token is not None:
            made.append(TokenSecret(f"{name}-token", TokenSecretArgs(d, hf_token),
                                    _child(self)))
        if d.api_key is not None:
            made.append(ApiKeySecret(f"{name}-api-key", d, _child(self)))
        return made


# --- read-only probes (the deploy loop's engine uses these) ---
# Programs that only read (invokes); servestack.pulumi.engine runs each in a throwaway stack.


# What these probes answer: names of servestack.engine.Capabilities fields (the sweep
# reports Pulumi type tokens, so what it finds can be imported: adopt_strays).
PROBES = ("adopt_strays", "cloud_sweep", "credentials_check", "group_size", "quota_precheck")


def sweep_program(deployment: Deployment, snapshot: list[dict]) -> Callable[[], None]:
    """Exports `found`: what still carries the candidate's tags."""
    return lambda: pulumi.export("found", _tagged(deployment))


def _tagged(deployment: Deployment) -> list[dict]:
    tags = aws_match_tags(deployment)
    filters = [{"key": key, "values": [value]} for key, value in tags.items()]
    mapped = aws.resourcegroupstaggingapi.get_resources(tag_filters=filters,  # type: ignore[arg-type]
                                                        region=deployment.region)
    # Instances and NAT gateways keep their tags for a while once gone (terminated, deleted):
    # only the live ones count, from their own lookups below.
    found = [_from_arn(m.resource_arn) for m in mapped.resource_tag_mapping_lists
             if ":instance/" not in m.resource_arn and ":natgateway/" not in m.resource_arn]
    live = aws.ec2.get_instances(instance_tags=tags,
                                 instance_state_names=list(LIVE_STATES), region=deployment.region)
    found += [{"type": "aws:ec2/instance:Instance", "name": i, "id": i} for i in live.ids]
    nats = aws.ec2.get_nat_gateways(
        tags=tags, filters=[aws.ec2.GetNatGatewaysFilterArgs(name="state",
                                                             values=list(NAT_LIVE_STATES))],
        region=deployment.region)
    found += [{"type": "aws:ec2/natGateway:NatGateway", "name": i, "id": i} for i in nats.ids]
    return found


# ARN -> Pulumi type token; the last field says whether the import id is the ARN (0) or the
# name the pattern captures (1).
ARN_TYPES = (
    (r":autoScalingGroup:.*:autoScalingGroupName/(.+)$", "aws:autoscaling/group:Group", 1),
    (r":launch-template/(lt-[0-9a-f]+)$", "aws:ec2/launchTemplate:LaunchTemplate", 1),
    (r":security-group/(sg-[0-9a-f]+)$", "aws:ec2/securityGroup:SecurityGroup", 1),
    (r":loadbalancer/(?:app|net)/([^/]+)/.+$", "aws:lb/loadBalancer:LoadBalancer", 0),
    (r":targetgroup/([^/]+)/.+$", "aws:lb/targetGroup:TargetGroup", 0),
    (r":vpc/(vpc-[0-9a-f]+)$", "aws:ec2/vpc:Vpc", 1),
    (r":subnet/(subnet-[0-9a-f]+)$", "aws:ec2/subnet:Subnet", 1),
    (r":internet-gateway/(igw-[0-9a-f]+)$", "aws:ec2/internetGateway:InternetGateway", 1),
    (r":elastic-ip/(eipalloc-[0-9a-f]+)$", "aws:ec2/eip:Eip", 1),
    (r":route-table/(rtb-[0-9a-f]+)$", "aws:ec2/routeTable:RouteTable", 1),
    (r":certificate/([0-9a-f-]+)$", "aws:acm/certificate:Certificate", 0),
)


def _from_arn(arn: str) -> dict:
    for pattern, type_token, id_group in ARN_TYPES:
        match = re.search(pattern, arn)
        if match:
            name = match.group(1)
            return {"type": type_token, "name": name, "id": arn if id_group == 0 else name}
    service = arn.split(":")[2] if arn.count(":") >= 2 else "aws"
    return {"type": f"aws {service}", "name": arn.rsplit("/", 1)[-1], "id": arn}


def group_program(deployment: Deployment, group_name: str | None) -> Callable[[], None]:
    """Exports `running`: the group's instances that got capacity (see GROUP_STATES)."""

    def program() -> None:
        found = aws.ec2.get_instances(
            instance_tags=aws_match_tags(deployment),
            instance_state_names=list(GROUP_STATES), region=deployment.region)
        pulumi.export("running", len(found.ids))

    return program


def quota_wanted(candidates: list[Candidate]) -> list[tuple[str, str]]:
    """(region, quota family) pairs to read: the families Service Quotas has a code for."""
    pairs = {(c.region, CLOUD.quota_families(c)[0]) for c in candidates}
    return sorted(pair for pair in pairs if pair[1] in QUOTA_CODES)


def quota_probe(wanted: list[tuple[str, str]], project: str | None
                ) -> tuple[dict[str, str], Callable[[], None]]:
    """The probe stack's config and program; it exports `limits` as {"region|family": vCPUs}."""

    def program() -> None:
        limits: dict[str, float | None] = {}
        for region, family in wanted:
            try:
                quota = aws.servicequotas.get_service_quota(
                    service_code="ec2", quota_code=QUOTA_CODES[family], region=region)
                limits[f"{region}|{family}"] = quota.value
            except Exception:  # noqa: BLE001 - no answer is not a zero quota
                limits[f"{region}|{family}"] = None
        pulumi.export("limits", limits)

    return {"aws:region": wanted[0][0]}, program


def identity_probe() -> tuple[dict[str, str], Callable[[], None]]:
    """`credentials_check`: exports `identity`, the account and ARN the credentials belong
    to (STS GetCallerIdentity needs no permission, so only missing or invalid credentials
    fail it). STS answers in every region; the provider needs one."""

    def program() -> None:
        me = aws.get_caller_identity()
        pulumi.export("identity", f"account {me.account_id} ({me.arn})")

    return {"aws:region": "us-east-1"}, program
