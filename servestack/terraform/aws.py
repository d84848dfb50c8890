"""AWS as Terraform: an Application Load Balancer in front of a GPU auto scaling group, in a VPC
of its own where the GPU VMs have no public address.

The same service components/aws.py builds, resource for resource: the stack's VPC with public
subnets (the ALB's, two AZs or more: `data.aws_availability_zones` adds one when the group has
one zone) behind an internet gateway and private subnets for the group behind one NAT gateway
(the group in the public subnets instead with `ssh_cidrs`); two security groups (clients ->
ALB listeners, ALB -> instances' service port, SSH only from `ssh_cidrs`); ALB + target group
(the deployment's health check) + listener, and with TLS an ACM certificate validated in the
Route 53 hosted zone, the HTTPS listener, the domain's alias and an HTTP -> HTTPS redirect; the
SSM SecureStrings for the token and the generated API key (`terraform_data.api_key`) with a
role/instance profile that may read those and run the SSM agent; and a launch template + auto
scaling group with the deployment's instance types in rank order and its spot split,
replacing its instances (new ones first) when the template changes. With a
replica_policy that autoscales, the scaling policies and the scale-in alarm (the role may
then also publish the replicas' gauge); with dynamic_ondemand_fallback, the on-demand
fallback group in the same subnets and its two alarms (servestack/clouds/aws.py says how
and why). A spot group's zones are the plan's (d.zones), one private subnet each.

Fixed names (name prefixes, Name tags, the parameters) derive from the deployment's
scope, service and stack; the ALB and target group get names the provider generates.

Security group rules are their own resources (aws_vpc_security_group_*_rule), one per CIDR.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

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
from servestack.deployment.model import OUTPUT_LB_ARN, OUTPUT_LB_ZONE_ID, WORLD, Deployment
from servestack.planner import Candidate
from servestack.terraform import (
    TOKEN_VAR,
    TOKEN_VERSION_VAR,
    Ref,
    api_key_resources,
    api_key_value,
    compact,
    expr,
    merge,
    service_outputs,
    template,
)
from servestack.terraform.aws_cache import cache_ready, weight_cache

# (local name, requirement): the releases that have every argument used here. The floor is
# the last 5.x release, which `terraform validate` checks them against offline (the mirror in
# tests/terraform); every argument used was there already (the newest, write-only `value_wo`
# on aws_ssm_parameter, in a 5.x release of early 2025: hashicorp/terraform-provider-aws#40952),
# and none was removed or renamed in 6.0 (website/docs/guides/version-6-upgrade). The next
# major release may remove arguments, so it is left out until checked.
PROVIDER = ("aws", {"source": "hashicorp/aws", "version": ">= 5.100.0, < 7.0.0"})


def render(d: Deployment) -> dict[str, Any]:
    return {
        "provider": {"aws": {"region": d.region}},
        "data": merge(zone_data(d), image_data(d), account_data(d)),
        "resource": merge(network(d), firewall(d), load_balancer(d), https(d), secrets(d),
                          instance_role(d), group(d), scaling(d), fallback(d), weight_cache(d)),
        "output": outputs(d),
    }


def named(d: Deployment, name: str) -> dict[str, str]:
    return {**aws_tags(d), "Name": name}


def _filters(**values: list[Any]) -> list[dict[str, Any]]:
    return [{"name": name.replace("_", "-"), "values": v} for name, v in values.items()]


VPC_ID = expr("aws_vpc.service.id")


def zone_data(d: Deployment) -> dict[str, Any]:
    """The region's standard AZs other than the deployment's, when the ALB needs some (a group
    pinned to one zone: an ALB spans two AZs or more)."""
    extra = extra_alb_zones(d)
    if not extra:
        return {}
    keys = zone_keys(d.region, d.zones)
    return {"aws_availability_zones": {"other": {
        "state": AZ_STATE, "filter": [AZ_FILTER], keys.exclude_arg: list(d.zones),
        "lifecycle": {"postcondition": [{
            "condition": expr(f"length(self.{keys.listed}) >= {extra}"),
            "error_message": f"The region has fewer than {ALB_MIN_ZONES} available AZs "
                             "for the load balancer."}]}}}}


def subnet_zones(d: Deployment) -> list[str]:
    """The public subnets' zones: the deployment's, then the region's others the ALB needs."""
    listed = zone_keys(d.region, d.zones).listed
    return [*d.zones, *(expr(f"data.aws_availability_zones.other.{listed}[{i}]")
                        for i in range(extra_alb_zones(d)))]


def group_subnets(d: Deployment) -> list[str]:
    """The subnets the group launches in: private ones, or public ones with --ssh-cidr."""
    count = len(d.zones) or len(subnet_zones(d))
    tier = "public" if public_ssh(d) else "private"
    return [f"aws_subnet.{tier}_{i}" for i in range(count)]


def network(d: Deployment) -> dict[str, Any]:
    """The stack's own VPC (see components/aws.py `Network` for the design and why one NAT
    gateway): public subnets for the ALB, private ones for the group with a NAT gateway for
    their downloads, or the group in the public subnets with --ssh-cidr."""
    zones = subnet_zones(d)
    key = zone_keys(d.region, d.zones).subnet_arg
    group_count = len(d.zones) or len(zones)
    private = not public_ssh(d)
    tiers = [("public", zones)] + ([("private", zones[:group_count])] if private else [])
    subnets = {f"{tier}_{i}": {
        "vpc_id": VPC_ID, "cidr_block": subnet_cidr(d, tier, i), key: zone,
        "map_public_ip_on_launch": False, "tags": named(d, aws_name(d, f"{tier}-{i}"))}
        for tier, found in tiers for i, zone in enumerate(found)}
    resources: dict[str, Any] = {
        "aws_vpc": {"service": {"cidr_block": d.network.range_of("vnet"),
                                "enable_dns_support": True, "enable_dns_hostnames": True,
                                "tags": named(d, aws_name(d, "vpc"))}},
        # No rule on the VPC's default group: nothing here uses it, nothing may by mistake.
        "aws_default_security_group": {"service": {"vpc_id": VPC_ID,
                                                   "tags": named(d, aws_name(d, "default"))}},
        "aws_internet_gateway": {"service": {"vpc_id": VPC_ID,
                                             "tags": named(d, aws_name(d, "igw"))}},
        "aws_subnet": subnets,
        "aws_route_table": {tier: {"vpc_id": VPC_ID, "tags": named(d, aws_name(d, f"{tier}-rt"))}
                            for tier, _ in tiers},
        "aws_route": {"public": _route("public", gateway_id=expr(
            "aws_internet_gateway.service.id"))},
        "aws_route_table_association": {name: {
            "subnet_id": expr(f"aws_subnet.{name}.id"),
            "route_table_id": expr(f"aws_route_table.{name.split('_')[0]}.id")}
            for name in subnets},
    }
    if private:
        resources = merge(resources, nat(d))
    return resources


def _route(tier: str, **target: str) -> dict[str, Any]:
    return {"route_table_id": expr(f"aws_route_table.{tier}.id"),
            "destination_cidr_block": DEFAULT_ROUTE, **target}


def nat(d: Deployment) -> dict[str, Any]:
    """One NAT gateway (cost: see components/aws.py `Network`) in the first public subnet; it
    and its Elastic IP need the internet gateway attached first, and go before it on destroy."""
    after_gateway = ["aws_internet_gateway.service"]
    return {
        "aws_eip": {"nat": {"domain": "vpc", "tags": named(d, aws_name(d, "nat")),
                            "depends_on": after_gateway}},
        "aws_nat_gateway": {"service": {
            "allocation_id": expr("aws_eip.nat.id"), "subnet_id": expr("aws_subnet.public_0.id"),
            "connectivity_type": "public", "tags": named(d, aws_name(d, "nat")),
            "depends_on": after_gateway}},
        "aws_route": {"private": _route("private",
                                        nat_gateway_id=expr("aws_nat_gateway.service.id"))},
    }


def egress(d: Deployment) -> list[str]:
    """What the VMs' way out is made of: they boot after it and leave before it goes."""
    if public_ssh(d):
        return ["aws_internet_gateway.service", "aws_route.public"]
    return ["aws_route.private",
            *(f"aws_route_table_association.{s.split('.')[1]}" for s in group_subnets(d))]


GROUP = "aws_autoscaling_group.group"
FALLBACK_GROUP = "aws_autoscaling_group.on_demand"


def image_data(d: Deployment) -> dict[str, Any]:
    """The deployment's image: an AMI id (looked up for its root device) or the newest AMI of
    the image's owner, name pattern and architecture."""
    image = d.image
    if image.kind == "id":
        return {"aws_ami": {"image": {"filter": _filters(image_id=[image.exact()])}}}
    owner, pattern, architecture = image.ami_lookup()
    return {"aws_ami": {"image": {
        "owners": [owner], "most_recent": True,
        "filter": _filters(name=[pattern], architecture=[architecture],
                           state=["available"])}}}


def account_data(d: Deployment) -> dict[str, Any]:
    """The partition (the managed policy's ARN, the key's) and the account (the parameters')."""
    return {"aws_partition": {"current": {}}, "aws_caller_identity": {"current": {}}}


def _rule(group: str, description: str, tags: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {"security_group_id": expr(f"aws_security_group.{group}.id"),
            "description": description, "tags": tags, **fields}


def _per_cidr(cidrs: tuple[str, ...], name: str, body: dict[str, Any]) -> dict[str, Any]:
    """One rule per CIDR (for_each over the literal CIDRs), IPv4 and IPv6 apart."""
    rules: dict[str, Any] = {}
    for family, field, wanted in (("v4", "cidr_ipv4", False), ("v6", "cidr_ipv6", True)):
        chosen = [c for c in cidrs if (":" in c) == wanted]
        if chosen:
            rules[f"{name}_{family}"] = {"for_each": {c: c for c in chosen}, **body,
                                         field: expr("each.value")}
    return rules


def firewall(d: Deployment) -> dict[str, Any]:
    """internet -> ALB listener; ALB -> instances' service port; instances -> anywhere."""
    alb_tags, vm_tags = named(d, aws_name(d, "alb")), named(d, aws_name(d, "vm"))
    tcp = {"ip_protocol": "tcp"}
    listener = {**tcp, "from_port": d.listener_port, "to_port": d.listener_port}
    https = {**tcp, "from_port": d.tls.port, "to_port": d.tls.port} if d.tls else None
    service = {**tcp, "from_port": d.service_port, "to_port": d.service_port}
    ssh = {**tcp, "from_port": d.ssh_port, "to_port": d.ssh_port}
    ingress = {
        **_per_cidr(d.allow_cidrs, "alb_clients",
                    _rule("alb", "clients to the listener", alb_tags, **listener)),
        **(_per_cidr(d.allow_cidrs, "alb_https_clients",
                     _rule("alb", "clients to the listener", alb_tags, **https))
           if https else {}),
        "vm_from_alb": _rule("vm", "ALB to vLLM", vm_tags, **service,
                             referenced_security_group_id=expr("aws_security_group.alb.id")),
        **_per_cidr(d.ssh_cidrs, "vm_ssh", _rule("vm", "SSH", vm_tags, **ssh)),
    }
    egress = {
        "alb_to_vms": _rule("alb", "ALB to the instances", alb_tags, **service,
                            cidr_ipv4=d.network.range_of("vnet")),
        "vm_downloads": _rule("vm", "model and package downloads", vm_tags,
                              ip_protocol=ALL_PROTOCOLS, cidr_ipv4=WORLD),
    }
    groups = {
        "alb": {"name_prefix": aws_name_prefix(d, "alb"), "vpc_id": VPC_ID,
                "description": f"servestack {d.service}: load balancer listener",
                "tags": alb_tags},
        "vm": {"name_prefix": aws_name_prefix(d, "vm"), "vpc_id": VPC_ID,
               "description": f"servestack {d.service}: GPU instances", "tags": vm_tags},
    }
    return {"aws_security_group": groups, "aws_vpc_security_group_ingress_rule": ingress,
            "aws_vpc_security_group_egress_rule": egress}


def load_balancer(d: Deployment) -> dict[str, Any]:
    """ALB -> HTTP listener -> target group probing the deployment's health path; with TLS the
    HTTP listener redirects to the HTTPS one (`https`). The ALB and target group get names the
    provider generates (unique; their name_prefix takes only 6 characters)."""
    tags = named(d, aws_name(d, "lb"))
    forward = {"type": "forward", "target_group_arn": expr("aws_lb_target_group.service.arn")}
    return {
        "aws_lb": {"service": {
            **aws_load_balancer(d), "subnets": [expr(f"aws_subnet.public_{i}.id")
                                                for i in range(len(subnet_zones(d)))],
            "security_groups": [expr("aws_security_group.alb.id")], "tags": tags,
            # an internet-facing ALB needs the VPC's internet gateway and routes to it
            "depends_on": ["aws_internet_gateway.service", "aws_route.public"]}},
        "aws_lb_target_group": {"service": {
            **aws_target_group(d), "vpc_id": VPC_ID,
            "health_check": aws_health_check(d.health),
            "tags": tags}},
        "aws_lb_listener": {"http": {
            "load_balancer_arn": expr("aws_lb.service.arn"), "port": d.listener_port,
            "protocol": "HTTP", "default_action": aws_https_redirect(d) if d.tls else forward,
            "tags": tags}},
    }


def https(d: Deployment) -> dict[str, Any]:
    """With TLS: the ACM certificate validated through DNS (its record in the hosted zone), the
    HTTPS listener once it is issued, and the domain's alias record to the ALB."""
    tls = d.tls
    if tls is None:
        return {}
    options = "aws_acm_certificate.service.domain_validation_options"
    return {
        "aws_acm_certificate": {"service": {
            "domain_name": tls.domain, "validation_method": "DNS",
            "tags": named(d, aws_name(d, "cert")),
            "lifecycle": {"create_before_destroy": True}}},  # the listener holds the old one
        "aws_route53_record": {
            "validation": {
                "for_each": expr(f"{{for o in {options} : o.domain_name => o}}"),
                "zone_id": tls.dns_zone, "name": expr("each.value.resource_record_name"),
                "type": expr("each.value.resource_record_type"),
                "records": [expr("each.value.resource_record_value")],
                "ttl": VALIDATION_TTL, "allow_overwrite": True},
            "alias": {
                "zone_id": tls.dns_zone, "name": tls.domain, "type": "A",
                "alias": {"name": expr("aws_lb.service.dns_name"),
                          "zone_id": expr("aws_lb.service.zone_id"),
                          "evaluate_target_health": True}}},
        "aws_acm_certificate_validation": {"service": {
            "certificate_arn": expr("aws_acm_certificate.service.arn"),
            "validation_record_fqdns": expr("[for r in aws_route53_record.validation : r.fqdn]")}},
        "aws_lb_listener": {"https": {
            "load_balancer_arn": expr("aws_lb.service.arn"), **aws_https_listener(d),
            "certificate_arn": expr("aws_acm_certificate_validation.service.certificate_arn"),
            "default_action": {"type": "forward",
                               "target_group_arn": expr("aws_lb_target_group.service.arn")},
            "tags": named(d, aws_name(d, "lb"))}},
    }


def secret_arns(d: Deployment) -> list[str]:
    """The parameters the VMs read at boot: the token's, the API key's."""
    return [expr(f"aws_ssm_parameter.{name}.arn")
            for name, ref in (("hf_token", d.secret), ("api_key", d.api_key)) if ref is not None]


def token_policy(d: Deployment) -> Ref:
    """The shared read policy as a JSON template whose ARNs Terraform fills in."""
    partition = "data.aws_partition.current"
    key = (d.secret or d.api_key_secret).key or ""
    document = read_token_policy(
        secret_arns(d), expr(f"{partition}.partition"),
        expr("data.aws_caller_identity.current.account_id"), d.region,
        expr(f"{partition}.dns_suffix"), key)
    # Every `${...}` in it is one of the expressions above; the rest is fixed text.
    return Ref(json.dumps(document, sort_keys=True))


def secrets(d: Deployment) -> dict[str, Any]:
    """The SSM SecureStrings: the token (write-only) and the generated API key."""
    parameters: dict[str, Any] = {}
    if d.secret is not None:
        parameters["hf_token"] = {
            "name": d.token_secret.name, "type": "SecureString", "key_id": d.token_secret.key,
            "value_wo": expr(f"var.{TOKEN_VAR}"),
            "value_wo_version": expr(f"var.{TOKEN_VERSION_VAR}"),
            "description": f"Hugging Face token for servestack {d.service}", "tags": aws_tags(d)}
    if d.api_key is None:
        return {"aws_ssm_parameter": parameters} if parameters else {}
    # The key is in the state already (terraform_data draws it, or the key stack's state is
    # read); `value` lets a replaced parameter get it back, which a write-only argument would
    # not.
    parameters["api_key"] = {
        "name": d.api_key.name, "type": "SecureString", "key_id": d.api_key.key,
        "value": expr(api_key_value(d)), "description": f"API key of servestack {d.service}",
        "tags": aws_tags(d)}
    return merge({"aws_ssm_parameter": parameters}, api_key_resources(d))


def instance_role(d: Deployment) -> dict[str, Any]:
    """The VMs' role/profile: Session Manager's managed policy, reading the parameters, and
    publishing the replicas' gauge when the autoscaler tracks one."""
    role: dict[str, Any] = {
        "aws_iam_role": {"vm": {
            "name_prefix": aws_name_prefix(d, "vm"),
            "assume_role_policy": json.dumps(ec2_trust_policy()),
            "description": f"servestack {d.service} GPU instances", "tags": aws_tags(d)}},
        "aws_iam_role_policy_attachment": {"ssm": {
            "role": expr("aws_iam_role.vm.name"),
            "policy_arn": Ref(ssm_core_policy_arn(expr("data.aws_partition.current.partition"))),
        }},
        "aws_iam_instance_profile": {"vm": {
            "name_prefix": aws_name_prefix(d, "vm"), "role": expr("aws_iam_role.vm.name"),
            "tags": aws_tags(d)}},
    }
    policies: dict[str, Any] = {}
    if secret_arns(d):
        policies["read_secrets"] = {"name": "read-secrets", "role": expr("aws_iam_role.vm.id"),
                                    "policy": token_policy(d)}
    metrics = put_metrics_policy(d)
    if metrics is not None:  # the replicas' gauge, for the autoscaler that tracks it
        policies["put_metrics"] = {"name": "put-metrics", "role": expr("aws_iam_role.vm.id"),
                                   "policy": json.dumps(metrics, sort_keys=True)}
    return {**role, "aws_iam_role_policy": policies} if policies else role


def boot_after(d: Deployment) -> list[str]:
    """What exists before the VMs boot (and outlives them on destroy)."""
    return [*(f"aws_ssm_parameter.{n}" for n, ref in (("hf_token", d.secret),
                                                      ("api_key", d.api_key)) if ref),
            *(["aws_iam_role_policy.read_secrets"] if secret_arns(d) else []),
            *(["aws_iam_role_policy.put_metrics"] if put_metrics_policy(d) else []),
            "aws_iam_role_policy_attachment.ssm", "aws_iam_instance_profile.vm", *egress(d),
            *cache_ready(d)]


def root_volume(d: Deployment) -> dict[str, Any]:
    return {"device_name": expr("data.aws_ami.image.root_device_name"), "ebs": aws_root_ebs(d)}


def group(d: Deployment) -> dict[str, Any]:
    """Launch template + auto scaling group (always a mixed policy, types in rank order) that
    tracks the template's latest version and replaces its instances when it changes."""
    tags = named(d, aws_name(d, "vm"))
    template_body = compact({
        "name_prefix": aws_name_prefix(d, "vm"),
        "image_id": d.image.exact() if d.image.kind == "id" else expr("data.aws_ami.image.id"),
        "instance_type": d.primary.instance_type,
        "network_interfaces": [{**aws_network_interface(d),
                                "security_groups": [expr("aws_security_group.vm.id")]}],
        "user_data": user_data(d),
        "metadata_options": aws_metadata_options(d),
        "block_device_mappings": [root_volume(d)],
        "iam_instance_profile": {"arn": expr("aws_iam_instance_profile.vm.arn")},
        "tag_specifications": [{"resource_type": "volume", "tags": tags}],
        "update_default_version": True, "tags": tags})
    asg = compact({
        "name_prefix": aws_name_prefix(d, "asg"),
        "min_size": expr("var.min_replicas"), "max_size": expr("var.max_replicas"),
        "desired_capacity": expr("var.desired_replicas"),
        "vpc_zone_identifier": [expr(f"{s}.id") for s in group_subnets(d)],
        "target_group_arns": [expr("aws_lb_target_group.service.arn")],
        "health_check_type": "ELB",
        "health_check_grace_period": d.health.grace_period_seconds,
        "capacity_rebalance": d.capacity_rebalance,
        "mixed_instances_policy": {
            "launch_template": {
                "launch_template_specification": {
                    "launch_template_id": expr("aws_launch_template.vm.id"),
                    "version": expr("aws_launch_template.vm.latest_version")},
                "override": [{"instance_type": c.instance_type} for c in d.instances]},
            "instances_distribution": aws_distribution(d)},
        "instance_refresh": aws_instance_refresh(d),
        "wait_for_capacity_timeout": d.capacity_timeout,
        "tag": [{"key": k, "value": v, "propagate_at_launch": True} for k, v in tags.items()],
        **aws_group_metrics(d),
        # The autoscaler owns the desired capacity once the group exists: an apply that set
        # it back would undo every scaling decision since the last one.
        "lifecycle": {"ignore_changes": ["desired_capacity"]} if d.autoscaling else None,
        "depends_on": boot_after(d)})
    return {"aws_launch_template": {"vm": template_body},
            "aws_autoscaling_group": {"group": asg}}


def scaling(d: Deployment) -> dict[str, Any]:
    """The autoscaler (`d.autoscaling`) on the group: target tracking scales out, the scale-in
    alarm and its step policy scale in after the downscale delay (see clouds/aws.py)."""
    if d.autoscaling is None:
        return {}
    group_name = expr(f"{GROUP}.name")
    label = template(expr("aws_lb.service.arn_suffix"), "/",
                     expr("aws_lb_target_group.service.arn_suffix"))
    alarm = aws_scale_in_alarm(d, group_name, expr("aws_lb.service.arn_suffix"),
                               expr("aws_lb_target_group.service.arn_suffix"))
    return {
        "aws_autoscaling_policy": {
            "scale_out": {"name": "scale-out", "autoscaling_group_name": group_name,
                          **aws_target_tracking(d, label, group_name)},
            "scale_in": {"name": "scale-in", "autoscaling_group_name": group_name,
                         **aws_scale_in_policy(d)}},
        "aws_cloudwatch_metric_alarm": {"scale_in": _alarm(
            d, "scale-in", alarm, "aws_autoscaling_policy.scale_in.arn")},
    }


def fallback(d: Deployment) -> dict[str, Any]:
    """dynamic_ondemand_fallback: a second group, on-demand only, in the same target group,
    from 0 to the spot replicas' number, set to the spot group's deficit by two alarms and
    their ExactCapacity step policies (`aws_fallback_alarms`, `aws_fallback_policies`)."""
    most = fallback_capacity(d)
    if not most:
        return {}
    alarms = aws_fallback_alarms(d, expr(f"{GROUP}.name"))
    policies = aws_fallback_policies(d)
    name = expr(f"{FALLBACK_GROUP}.name")
    return {
        "aws_autoscaling_group": {"on_demand": fallback_group(d)},
        "aws_autoscaling_policy": {
            f"fallback_{kind}": {"name": f"fallback-{kind}", "autoscaling_group_name": name,
                                 **policies[kind]} for kind in ("short", "back")},
        "aws_cloudwatch_metric_alarm": {
            f"fallback_{kind}": _alarm(d, f"spot-{kind}", alarms[kind],
                                       f"aws_autoscaling_policy.fallback_{kind}.arn")
            for kind in ("short", "back")},
    }


def fallback_group(d: Deployment) -> dict[str, Any]:
    """The spot group's twin, on-demand only: same template, types, subnets, target group,
    health and refresh; it starts empty and its alarms own its desired capacity. It never
    waits for capacity on apply (its capacity is whatever the alarms last set)."""
    spot = group(d)["aws_autoscaling_group"]["group"]
    policy = spot["mixed_instances_policy"]
    return compact({
        **{k: v for k, v in spot.items() if k not in ("enabled_metrics", "metrics_granularity")},
        "name_prefix": aws_name_prefix(d, "od"),
        "min_size": 0, "max_size": expr(f"var.max_replicas - {d.on_demand_base}"),
        "desired_capacity": 0, "capacity_rebalance": False,
        "mixed_instances_policy": {**policy,
                                   "instances_distribution": aws_distribution(
                                       replace(d, use_spot=False))},
        "wait_for_capacity_timeout": "0",
        "lifecycle": {"ignore_changes": ["desired_capacity"]}})


def _alarm(d: Deployment, kind: str, body: dict[str, Any], policy_arn: str) -> dict[str, Any]:
    return {"alarm_name": aws_name(d, kind), **body, "alarm_actions": [expr(policy_arn)],
            "tags": aws_tags(d)}


def outputs(d: Deployment) -> dict[str, Any]:
    """The common outputs (lb_host: the ALB's DNS name, clouds.aws balancer_address "name"),
    and what a front needs of an ALB beyond its name: its ARN (Global Accelerator's endpoint
    id) and its hosted zone (a Route 53 alias record's target zone)."""
    found = service_outputs(d, "aws_lb.service.dns_name", "aws_autoscaling_group.group",
                            api_key_ref="aws_ssm_parameter.api_key.name" if d.api_key else None)
    found[OUTPUT_LB_ARN] = {"value": expr("aws_lb.service.arn"),
                            "description": "the load balancer's ARN (for a front)"}
    found[OUTPUT_LB_ZONE_ID] = {"value": expr("aws_lb.service.zone_id"),
                                "description": "the load balancer's hosted zone (for a front)"}
    return found


def variable_values(d: Deployment) -> dict[str, Any]:
    """This cloud's entries in terraform.tfvars.json: none beyond the shared ones."""
    return {}


# --- read-only probes (the deploy loop's engine uses these) ---
# Configurations of data sources only; servestack.terraform.engine applies each in a
# throwaway directory and reads its outputs.

# What these probes answer: names of servestack.engine.Capabilities fields (the sweep's ARNs
# give `terraform import` ids: adopt_strays).
PROBES = ("adopt_strays", "cloud_sweep", "credentials_check", "group_size", "quota_precheck")
# ARN marker -> Terraform type, and whether `terraform import` takes the ARN itself (True) or
# what follows the marker (False): a group's or parameter's name, a template's, security
# group's or volume's id (see each resource's "Import" section in the AWS provider docs).
ARN_TYPES = (
    (":autoScalingGroup:", "aws_autoscaling_group", False),
    (":launch-template/", "aws_launch_template", False),
    (":security-group-rule/", "aws_vpc_security_group_rule", False),
    (":security-group/", "aws_security_group", False), (":loadbalancer/", "aws_lb", True),
    (":listener/", "aws_lb_listener", True), (":targetgroup/", "aws_lb_target_group", True),
    (":parameter/", "aws_ssm_parameter", False), (":volume/", "aws_ebs_volume", False),
    (":vpc/", "aws_vpc", False), (":subnet/", "aws_subnet", False),
    (":internet-gateway/", "aws_internet_gateway", False),
    (":elastic-ip/", "aws_eip", False),
    (":route-table/", "aws_route_table", False), (":certificate/", "aws_acm_certificate", True),
)


def _probe_base(region: str) -> dict[str, Any]:
    local, requirement = PROVIDER
    return {"terraform": {"required_providers": {local: requirement}},
            "provider": {"aws": {"region": region}}}


def sweep_config(d: Deployment) -> dict[str, Any]:
    """What still carries the candidate's tags (instances apart: only live ones count)."""
    mapping = "data.aws_resourcegroupstaggingapi_resources.tagged.resource_tag_mapping_list"
    return {
        **_probe_base(d.region),
        "data": {
            "aws_resourcegroupstaggingapi_resources": {"tagged": {
                "tag_filter": [{"key": k, "values": [v]} for k, v in aws_match_tags(d).items()]}},
            "aws_instances": {"live": {"instance_tags": aws_match_tags(d),
                                       "instance_state_names": list(LIVE_STATES)}},
            "aws_nat_gateways": {"live": {"tags": aws_match_tags(d), "filter": [
                {"name": "state", "values": list(NAT_LIVE_STATES)}]}}},
        "output": {"arns": {"value": "${[for m in " + mapping + " : m.resource_arn]}"},
                   "instances": {"value": "${data.aws_instances.live.ids}"},
                   "nat_gateways": {"value": "${data.aws_nat_gateways.live.ids}"}},
    }


def sweep_found(outputs: dict[str, Any]) -> list[dict[str, str]]:
    """The sweep's outputs as {"type", "name", "id"} items; the id is the import id."""
    found = [_from_arn(arn) for arn in outputs.get("arns") or [] if not _answered_apart(arn)]
    found += [{"type": "aws_instance", "name": i, "id": i} for i in outputs.get("instances") or []]
    found += [{"type": "aws_nat_gateway", "name": i, "id": i}
              for i in outputs.get("nat_gateways") or []]
    return found


def _answered_apart(arn: str) -> bool:
    """Instances and NAT gateways keep their tags for a while once gone (terminated, deleted):
    the sweep counts only the live ones, from their own lookups."""
    return ":instance/" in arn or ":natgateway/" in arn


def _from_arn(arn: str) -> dict[str, str]:
    for marker, kind, by_arn in ARN_TYPES:
        if marker in arn:
            tail = arn.split(marker, 1)[1]
            tail = tail.split(":autoScalingGroupName/", 1)[-1]  # <uuid>:autoScalingGroupName/N
            if marker == ":parameter/" and "/" in tail:
                tail = "/" + tail  # a hierarchical name starts with "/"; its ARN drops it
            return {"type": kind, "name": arn.rsplit("/", 1)[-1], "id": arn if by_arn else tail}
    return {"type": "aws resource", "name": arn.rsplit("/", 1)[-1], "id": arn}


def size_config(d: Deployment, project: str | None, group: str | None) -> dict[str, Any]:
    """Exports `running`: the group's instances that got capacity (see GROUP_STATES)."""
    return {
        **_probe_base(d.region),
        "data": {"aws_instances": {"group": {"instance_tags": aws_match_tags(d),
                                             "instance_state_names": list(GROUP_STATES)}}},
        "output": {"running": {"value": "${length(data.aws_instances.group.ids)}"}},
    }


def quota_wanted(candidates: list[Candidate]) -> list[tuple[str, str]]:
    """(region, quota family) pairs to read: the families Service Quotas has a code for."""
    pairs = {(c.region, CLOUD.quota_families(c)[0]) for c in candidates}
    return sorted(pair for pair in pairs if pair[1] in QUOTA_CODES)


def quota_configs(wanted: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    """One configuration per region (the provider is regional), named by the region; each
    exports `limits` as {"region|family": vCPUs}."""
    configs = []
    for region in sorted({r for r, _ in wanted}):
        families = [f for r, f in wanted if r == region]
        quotas = {f"q{i}": {"service_code": "ec2", "quota_code": QUOTA_CODES[family]}
                  for i, family in enumerate(families)}
        limits = ", ".join(f'"{region}|{family}" = data.aws_servicequotas_service_quota.q{i}.value'
                           for i, family in enumerate(families))
        configs.append((region, {**_probe_base(region),
                                 "data": {"aws_servicequotas_service_quota": quotas},
                                 "output": {"limits": {"value": "${{" + limits + "}}"}}}))
    return configs


def identity_config() -> dict[str, Any]:
    """`credentials_check`: exports `identity`, the account and ARN of the credentials
    (data source aws_caller_identity: STS GetCallerIdentity, which needs no permission). STS
    answers in every region; the provider needs one."""
    return {**_probe_base("us-east-1"),
            "data": {"aws_caller_identity": {"me": {}}},
            "output": {"identity": {"value": "account ${data.aws_caller_identity.me.account_id}"
                                             " (${data.aws_caller_identity.me.arn})"}}}
