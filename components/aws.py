"""AWS: the service as an Application Load Balancer in front of a GPU auto scaling group.

`Service` is the top of the tree; each concern is its own child component:

- `Firewall`: the ALB's security group (listener port from the allowed CIDRs) and the
  instances' (service port from the ALB only, SSH only if asked, all egress for the download).
- `LoadBalancer`: ALB, target group with the deployment's health check, listener.
- `TokenSecret`: the SSM SecureString holding the Hugging Face token (a Pulumi secret).
- `InstanceRole`: role + instance profile that may read that one parameter and nothing else.
- `InstanceGroup`: launch template (image, IMDSv2, encrypted root volume, cloud-init user data)
  and the auto scaling group with its instance types in rank order and the spot split, which
  replaces its instances, new ones first, when the template changes (instance refresh).
  A spot group without zones of its own spans every zone of the region that sells its types.
- `Autoscaler` (replica_policy autoscales): target tracking scale-out on the ALB's requests
  per target or the replicas' vLLM gauge, and a scale-in alarm + step policy that waits the
  downscale delay; the group's desired capacity is then left to them (ignore_changes).
- `OnDemandFallback` (dynamic_ondemand_fallback): an on-demand twin of the spot group whose
  capacity two alarms set to the spot group's deficit.

Fixed names (name prefixes, Name tags, the token's parameter) derive from the deployment's
scope, service and stack, so two services or two stacks never share one in an account; the
ALB and target group take Pulumi's autonames (a random suffix).

Everything lands in the account's default VPC, in the provider's region (`aws:region`), which
must be the deployment's region. Every value comes from the `Deployment`, and how AWS spells it
from servestack.mechanics (shared with the Terraform renderer); nothing is decided here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pulumi
import pulumi_aws as aws
from servestack.components import TYPE_PREFIX

from servestack.bootstrap import render_cloud_init
from servestack.clouds.aws import (
    ALL_PROTOCOLS,
    CLOUD,
    GROUP_STATES,
    LIVE_STATES,
    QUOTA_CODES,
    aws_distribution,
    aws_fallback_alarms,
    aws_fallback_policies,
    aws_group_metrics,
    aws_health_check,
    aws_instance_refresh,
    aws_load_balancer,
    aws_match_tags,
    aws_metadata_options,
    aws_name,
    aws_name_prefix,
    aws_root_ebs,
    aws_scale_in_alarm,
    aws_scale_in_policy,
    aws_tags,
    aws_target_group,
    aws_target_tracking,
    ec2_trust_policy,
    fallback_capacity,
    group_zone_lookup,
    group_zones_text,
    offered_zone_filter,
    put_metrics_policy,
    read_token_policy,
    subnet_zone_filter,
)
from servestack.clouds.aws import QUOTA_UNIT as QUOTA_UNIT  # the engine reads it here
from servestack.deployment.model import WORLD, Deployment
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
class Network:
    vpc_id: pulumi.Output[str]
    vpc_cidr: pulumi.Output[str]
    lb_subnet_ids: pulumi.Output[list[str]]
    group_subnet_ids: pulumi.Output[list[str]]


def default_network(deployment: Deployment, parent: pulumi.Resource) -> Network:
    """The default VPC; the group's subnets are the deployment's zones (AZ IDs, or the zone
    name a spec pinned: `subnet_zone_filter`).

    An ALB needs subnets in two AZs or more: with one pinned zone (AWS spot candidates are
    per zone) it spans every default subnet of the region while the group stays in the zone.
    """
    opts = pulumi.InvokeOutputOptions(parent=parent)
    vpc = aws.ec2.get_vpc_output(default=True, opts=opts)

    def subnets(zones: tuple[str, ...], offered: pulumi.Output[list[str]] | None = None
                ) -> pulumi.Output[list[str]]:
        def filters(args: list[Any]) -> list[aws.ec2.GetSubnetsFilterArgs]:
            vpc_id, zone_ids = args
            found = [aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[vpc_id]),
                     aws.ec2.GetSubnetsFilterArgs(name="default-for-az", values=["true"])]
            if zones:
                found.append(aws.ec2.GetSubnetsFilterArgs(
                    **subnet_zone_filter(deployment.region, zones)))
            elif zone_ids:  # none in an offline preview (no answer); AWS always lists some
                found.append(aws.ec2.GetSubnetsFilterArgs(**offered_zone_filter(zone_ids)))
            return found

        wanted = pulumi.Output.all(vpc.id, offered)
        return aws.ec2.get_subnets_output(filters=wanted.apply(filters), opts=opts).ids

    offered = _offered_zones(deployment, opts)
    in_zones = subnets(deployment.zones, offered)
    region_wide = in_zones if len(deployment.zones) > 1 else subnets(())
    group = in_zones.apply(
        lambda ids: _at_least(ids, 1, f"default subnet in {group_zones_text(deployment)}"))
    lb = region_wide.apply(
        lambda ids: _at_least(ids, 2, "default subnets (in distinct AZs) for the ALB"))
    return Network(vpc_id=vpc.id, vpc_cidr=vpc.cidr_block, lb_subnet_ids=lb,
                   group_subnet_ids=group)


def _offered_zones(d: Deployment, opts: pulumi.InvokeOutputOptions
                   ) -> pulumi.Output[list[str]] | None:
    """The zone IDs that sell the group's types, for a group without zones of its own."""
    lookup = group_zone_lookup(d)
    if lookup is None:
        return None
    found = aws.ec2.get_instance_type_offerings_output(
        location_type=lookup["location_type"],
        filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(**lookup["filter"])], opts=opts)
    return found.locations.apply(lambda zones: sorted(set(zones or [])))


def _at_least(ids: list[str] | None, count: int, what: str) -> list[str]:
    if len(ids or []) < count:
        raise ValueError(f"the default VPC has fewer than {count} {what}: found {ids or []}; "
                         "create the default VPC (`aws ec2 create-default-vpc`) or its "
                         "default subnets (`aws ec2 create-default-subnet`)")
    return sorted(ids or [])


@dataclass
class FirewallArgs:
    deployment: Deployment
    vpc_id: pulumi.Input[str]
    vpc_cidr: pulumi.Input[str]


class Firewall(pulumi.ComponentResource):
    """Two security groups: internet -> ALB listener, ALB -> instances' service port."""

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Firewall"), name, None, opts)
        d = args.deployment
        self.lb_group = aws.ec2.SecurityGroup(
            f"{name}-alb", name_prefix=aws_name_prefix(d, "alb"), vpc_id=args.vpc_id,
            description=f"servestack {d.service}: load balancer listener",
            ingress=[aws.ec2.SecurityGroupIngressArgs(
                protocol="tcp", from_port=d.listener_port, to_port=d.listener_port,
                description="clients to the listener", **_split_cidrs(d.allow_cidrs))],
            egress=[aws.ec2.SecurityGroupEgressArgs(
                protocol="tcp", from_port=d.service_port, to_port=d.service_port,
                cidr_blocks=[args.vpc_cidr], description="ALB to the instances")],
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


class LoadBalancer(pulumi.ComponentResource):
    """ALB -> listener -> target group that probes the deployment's health path."""

    def __init__(self, name: str, args: LoadBalancerArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("LoadBalancer"), name, None, opts)
        d = args.deployment
        short = _fit(name, NAME_ROOM)
        self.alb = aws.lb.LoadBalancer(
            f"{short}-alb", **aws_load_balancer(d), subnets=args.subnet_ids,
            security_groups=[args.security_group_id], tags=_named(d, aws_name(d, "lb")),
            opts=_child(self))
        self.target_group = aws.lb.TargetGroup(
            f"{short}-tg", **aws_target_group(d), vpc_id=args.vpc_id,
            health_check=aws.lb.TargetGroupHealthCheckArgs(**aws_health_check(d.health)),
            tags=_named(d, aws_name(d, "lb")), opts=_child(self))
        self.listener = aws.lb.Listener(
            f"{name}-http", load_balancer_arn=self.alb.arn, port=d.listener_port,
            protocol="HTTP",
            default_actions=[aws.lb.ListenerDefaultActionArgs(
                type="forward", target_group_arn=self.target_group.arn)],
            tags=_named(d, aws_name(d, "lb")), opts=_child(self))
        self.endpoint = pulumi.Output.concat("http://", self.alb.dns_name, ":",
                                             str(d.listener_port))
        self.register_outputs({"dnsName": self.alb.dns_name, "endpoint": self.endpoint,
                               "targetGroupArn": self.target_group.arn})


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


@dataclass
class InstanceRoleArgs:
    deployment: Deployment
    facts: AccountFacts


class InstanceRole(pulumi.ComponentResource):
    """What the VMs may do: read the token parameter (and decrypt it via SSM), and publish their
    vLLM gauge when the autoscaler reads one; nothing else."""

    def __init__(self, name: str, args: InstanceRoleArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("InstanceRole"), name, None, opts)
        d = args.deployment
        self.role = aws.iam.Role(
            f"{name}-role", name_prefix=aws_name_prefix(d, "vm"),
            assume_role_policy=json.dumps(ec2_trust_policy()),
            description=f"servestack {d.service} GPU instances", tags=aws_tags(d),
            opts=_child(self))
        if d.secret is not None:
            self.policy = aws.iam.RolePolicy(
                f"{name}-read-token", role=self.role.id,
                policy=_read_token_policy(args.facts, d.token_secret.name,
                                          d.token_secret.key or ""),
                opts=_child(self))
        metrics = put_metrics_policy(d)
        if metrics is not None:
            self.put_metrics = aws.iam.RolePolicy(
                f"{name}-put-metrics", role=self.role.id,
                policy=json.dumps(metrics, sort_keys=True), opts=_child(self))
        self.profile = aws.iam.InstanceProfile(
            f"{name}-profile", name_prefix=aws_name_prefix(d, "vm"), role=self.role.name,
            tags=aws_tags(d), opts=_child(self))
        self.register_outputs({"roleArn": self.role.arn, "profileArn": self.profile.arn})


def _read_token_policy(facts: AccountFacts, name: str, key: str) -> pulumi.Output[str]:
    def document(args: list[str]) -> str:
        arn, partition, account, suffix = args
        return json.dumps(read_token_policy(arn, partition, account, facts.region, suffix, key),
                          sort_keys=True)

    return pulumi.Output.all(parameter_arn(facts, name), facts.partition, facts.account_id,
                             facts.dns_suffix).apply(document)


@dataclass
class InstanceGroupArgs:
    deployment: Deployment
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]
    instance_profile_arn: pulumi.Input[str] | None
    ready_first: list[pulumi.Resource]  # the token and its read permission exist before boot


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
            vpc_security_group_ids=[args.security_group_id],
            user_data=base64.b64encode(render_cloud_init(d).encode()).decode(),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                **aws_metadata_options(d)),
            block_device_mappings=[_root_volume(d, image.root_device_name)],
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(
                arn=args.instance_profile_arn) if args.instance_profile_arn else None,
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
    """The whole service on AWS; `endpoint` is the ALB's URL."""

    def __init__(self, name: str, deployment: Deployment,
                 hf_token: pulumi.Input[str] | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Service"), name, None, opts)
        d = deployment
        region = provider_region(d)
        network = default_network(d, self)
        firewall = Firewall(f"{name}-fw", FirewallArgs(d, network.vpc_id, network.vpc_cidr),
                            _child(self))
        lb = LoadBalancer(name, LoadBalancerArgs(
            d, network.vpc_id, network.lb_subnet_ids, firewall.lb_group.id), _child(self))
        profile_arn, ready_first = self._token_access(name, d, region, hf_token)
        group = InstanceGroup(f"{name}-group", InstanceGroupArgs(
            d, network.group_subnet_ids, firewall.instance_group.id,
            lb.target_group.arn, profile_arn, ready_first), _child(self))
        self._scaling(name, d, group, lb, network, ready_first)
        self.endpoint = lb.endpoint
        self.group_name = group.group.name
        self.group_id = group.group.id
        self.register_outputs({"endpoint": self.endpoint, "groupName": self.group_name,
                               "groupId": self.group_id})

    def _scaling(self, name: str, d: Deployment, group: InstanceGroup, lb: LoadBalancer,
                 network: Network, ready_first: list[pulumi.Resource]) -> None:
        """The autoscaler and the on-demand fallback group, when the deployment has them."""
        if d.autoscaling is not None:
            Autoscaler(f"{name}-scale", AutoscalerArgs(
                d, group.group.name, lb.alb.arn_suffix, lb.target_group.arn_suffix),
                _child(self))
        if fallback_capacity(d):
            OnDemandFallback(f"{name}-od", OnDemandFallbackArgs(
                d, group.group.name, network.group_subnet_ids, lb.target_group.arn,
                group.template, ready_first), _child(self))

    def _token_access(self, name: str, d: Deployment, region: str,
                      hf_token: pulumi.Input[str] | None
                      ) -> tuple[pulumi.Output[str] | None, list[pulumi.Resource]]:
        """The token parameter and the role that reads it (and publishes the replicas' gauge);
        nothing when there is no secret to read and no metric to publish."""
        if d.secret is None:
            if put_metrics_policy(d) is None:
                return None, []
            role = InstanceRole(f"{name}-vm", InstanceRoleArgs(d, account_facts(region, self)),
                                _child(self))
            return role.profile.arn, [role]
        ready: list[pulumi.Resource] = []
        if hf_token is None:
            pulumi.log.warn(f"no Hugging Face token given (servestack:hfToken): the instances "
                            f"expect SSM parameter {d.secret.name} to exist already", self)
        else:
            ready.append(TokenSecret(f"{name}-token", TokenSecretArgs(d, hf_token),
                                     _child(self)))
        role = InstanceRole(f"{name}-vm", InstanceRoleArgs(d, account_facts(region, self)),
                            _child(self))
        return role.profile.arn, [*ready, role]


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
    found = [_from_arn(m.resource_arn) for m in mapped.resource_tag_mapping_lists
             if ":instance/" not in m.resource_arn]  # instances: the authoritative call below
    live = aws.ec2.get_instances(instance_tags=tags,
                                 instance_state_names=list(LIVE_STATES), region=deployment.region)
    found += [{"type": "aws:ec2/instance:Instance", "name": i, "id": i} for i in live.ids]
    return found


# ARN -> Pulumi type token; the last field says whether the import id is the ARN (0) or the
# name the pattern captures (1).
ARN_TYPES = (
    (r":autoScalingGroup:.*:autoScalingGroupName/(.+)$", "aws:autoscaling/group:Group", 1),
    (r":launch-template/(lt-[0-9a-f]+)$", "aws:ec2/launchTemplate:LaunchTemplate", 1),
    (r":security-group/(sg-[0-9a-f]+)$", "aws:ec2/securityGroup:SecurityGroup", 1),
    (r":loadbalancer/(?:app|net)/([^/]+)/.+$", "aws:lb/loadBalancer:LoadBalancer", 0),
    (r":targetgroup/([^/]+)/.+$", "aws:lb/targetGroup:TargetGroup", 0),
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
