"""AWS: its facts (zones, quotas, error texts, images, disks, secrets) and the spellings that
the Pulumi component (components/aws.py) and the Terraform renderer (terraform/aws.py) share.

The dicts use the argument names both engines share (the Pulumi SDK's Python names are the
Terraform provider's argument names for these blocks). No SDK imports.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from servestack.catalog.aws import ZONE_NAME, is_zone_name
from servestack.clouds.base import Cloud, Offered, QuotaScope, Rule, digest, rule
from servestack.deployment.model import (
    DOWNSCALE_DELAY_SECONDS,
    UPSCALE_DELAY_SECONDS,
    WORLD,
    Autoscaling,
    Deployment,
    HealthCheck,
    ImageRef,
    NetworkPlan,
    SecretRef,
)
from servestack.errors import UserError

ALL_PROTOCOLS = "-1"  # security group rules: every protocol
# IMDSv2 only (session tokens), one hop: a container on the VM cannot reach the metadata service.
AWS_METADATA_OPTIONS: dict[str, Any] = {"http_endpoint": "enabled", "http_tokens": "required",
                        "http_put_response_hop_limit": 1}
SSM_KEY = "alias/aws/ssm"  # the AWS-managed key SSM SecureStrings are encrypted with
IO2_IOPS = 16000  # only for the "ultra" disk tier (io2 needs provisioned IOPS)
IO2_MAX_IOPS_PER_GIB = 500
# EC2 takes at most 16 KB of user data, counted before base64 (EC2 User Guide, "Run commands
# when you launch an EC2 instance with user data input"); here, the gzip'd bytes.
USER_DATA_LIMIT = 16384
QUOTA_UNIT = "vcpus"  # EC2 quotas count vCPUs
# An instance that is pending or running got its capacity: EC2 places it on a host when it
# launches, and "pending" is its boot. Without capacity the group's launch fails and no
# instance exists, so counting only "running" would, during the boot, read a group that got
# its GPUs as one that did not. Both engines' group-size probes ask for these states.
GROUP_STATES = ("pending", "running")
# What a sweep counts as still there: a terminated instance keeps its tags for a while.
LIVE_STATES = ("pending", "running", "stopping", "stopped")
# A NAT gateway that still costs (a deleted one stays listed, tags and all, for about an hour).
NAT_LIVE_STATES = ("pending", "available")
STACK_TAG = "servestack-stack"
# The tags the sweep and the group-size probe match: the candidate's and its stack's, so two
# stacks of one candidate (blue/green) never count or remove each other's resources.
TAG_KEYS = ("servestack-service", "servestack-candidate", STACK_TAG)
# Instance refresh bounds, as percentages of the desired capacity: AWS takes 0-100 and
# 100-200, at most 100 apart (Auto Scaling API, InstanceMaintenancePolicy).
REFRESH_MIN_HEALTHY = 100
REFRESH_MAX_HEALTHY = 200
# The stack's own VPC. Every stack has its own, so one range serves them all; subnets are /20
# blocks of it (4,091 usable addresses each), public ones from the first block, private ones
# from PRIVATE_FIRST_BLOCK on: a region has at most 6 standard AZs (us-east-1), so 8 of each fit.
VPC_CIDR = "10.20.0.0/16"
SUBNET_PREFIX = 20
PRIVATE_FIRST_BLOCK = 8
ALB_MIN_ZONES = 2  # an ALB needs subnets in two AZs or more (elbv2 CreateLoadBalancer)
# Only the region's standard AZs (not Local Zones or Wavelength Zones, which an account may
# have opted into and whose subnets an ALB cannot always use): EC2 DescribeAvailabilityZones'
# zone-type filter, and zones that are up.
AZ_STATE = "available"
AZ_FILTER: dict[str, Any] = {"name": "zone-type", "values": ["availability-zone"]}
# AWS's recommended HTTPS policy (the console's default): TLS 1.3 and 1.2 only, forward-secret
# ciphers, and hybrid post-quantum key exchange (ML-KEM) for the clients that offer it
# (Elastic Load Balancing User Guide, "Security policies for your Application Load Balancer").
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"
# TTL of the certificate's DNS validation record (ACM re-reads it to renew the certificate).
VALIDATION_TTL = 60
# Session Manager (a shell through the SSM agent, no open port, every session logged in
# CloudTrail): AWS's managed policy for the agent on an instance.
SSM_CORE_POLICY = "AmazonSSMManagedInstanceCore"
# The network quotas a stack's VPC draws from, each counted per region (the NAT gateway quota
# per AZ, but a stack places its NAT gateway in a region's AZ of its choosing, so another AZ of
# the region would not help; another region does): VPCs (5 by default), internet gateways (as
# many as VPCs), Elastic IPs (5), NAT gateways (5 per AZ). Their EC2 error codes.
NETWORK_QUOTA_CODES = ("VpcLimitExceeded", "InternetGatewayLimitExceeded",
                       "AddressLimitExceeded", "NatGatewayLimitExceeded")

# EC2 Service Quotas (vCPUs) per quota family of `Aws.quota_families`.
QUOTA_CODES = {"aws-G-ondemand": "L-DB2E81BA", "aws-P-ondemand": "L-417A185B",
               "aws-G-spot": "L-3819A6DF", "aws-P-spot": "L-7212CCBC",
               "aws-P5-spot": "L-C4BD4855"}

RULES = (
    rule("capacity", "InsufficientInstanceCapacity", r"InsufficientInstanceCapacity"),
    rule("capacity", "InsufficientInstanceCapacity",
         r"do not have sufficient \S+ capacity in the Availability Zone"),
    rule("capacity", "NoSpotCapacity", r"no Spot capacity available|capacity-not-available"),
    rule("capacity", "AsgCapacityTimeout",
         r"capacity satisfied: timeout while waiting for state to become 'ok'"),
    rule("capacity", "Unsupported", r"not supported in your requested Availability Zone"),
    rule("quota", "VcpuLimitExceeded", r"VcpuLimitExceeded|more vCPU capacity than your current"),
    rule("quota", "MaxSpotInstanceCountExceeded",
         r"MaxSpotInstanceCountExceeded|Max spot instance count exceeded"),
    rule("quota", "InstanceLimitExceeded", r"InstanceLimitExceeded"),
    # The stack's network (see NETWORK_QUOTA_CODES): code, or the message AWS words it with
    # (CloudFormation-style reports carry only the message).
    rule("quota", "VpcLimitExceeded",
         r"VpcLimitExceeded|maximum number of VPCs has been reached"),
    rule("quota", "InternetGatewayLimitExceeded",
         r"InternetGatewayLimitExceeded|maximum number of internet gateways has been reached"),
    rule("quota", "AddressLimitExceeded",
         r"AddressLimitExceeded|maximum number of addresses has been reached"),
    rule("quota", "NatGatewayLimitExceeded",
         r"NatGatewayLimitExceeded|maximum number of NAT gateways has been reached"),
    rule("credentials", "NoCredentials",
         r"No valid credential sources|NoCredentialProviders|unable to validate AWS credentials"
         r"|Invalid credentials configured"),
    rule("credentials", "InvalidToken",
         r"InvalidClientTokenId|AuthFailure|ExpiredToken|SignatureDoesNotMatch"
         r"|security token included in the request is (?:invalid|expired)"),
    rule("permission", "UnauthorizedOperation",
         r"UnauthorizedOperation|AccessDenied|is not authorized to perform"),
    rule("permission", "OptInRequired", r"OptInRequired|PendingVerification"),
    rule("throttled", "RequestLimitExceeded",
         r"RequestLimitExceeded|ThrottlingException|\bThrottling\b|Rate exceeded"),
    rule("transient", "ServerError",
         r"\bInternalError\b|InternalFailure|ServiceUnavailable|\bServerInternal\b"
         r"|api error Unavailable"),
    rule("invalid-config", "InvalidParameter",
         r"InvalidParameter\w*|InvalidAMIID\.\w+|image id '\[?ami-[0-9a-f]+\]?' does not exist"
         r"|InvalidBlockDeviceMapping|InvalidUserData|MissingParameter|ValidationError"),
)


class Aws(Cloud):
    name = "aws"
    title = "AWS"
    zone_shape = ZONE_NAME  # a zone name; the catalog keeps zone IDs (use1-az1)
    disk_types = {"low": "gp3", "medium": "gp3", "high": "gp3", "ultra": "io2", "best": "gp3",
                  "none": "gp3"}
    # AWS Deep Learning AMI (NVIDIA driver, PyTorch) on Ubuntu 22.04.
    default_image = ImageRef(
        kind="lookup", owner="amazon",
        name="Deep Learning OSS Nvidia Driver AMI GPU PyTorch * (Ubuntu 22.04) *",
        architecture="x86_64")
    network = NetworkPlan(vnet=VPC_CIDR)  # each stack's own VPC
    metrics_namespace = "Servestack/vLLM"
    balancer_address = "name"  # an ALB has no fixed IP: clients resolve its DNS name
    # Instances are InService once launched (the grace period covers the model load), so
    # this bounds the wait for GPU capacity only: on timeout the apply fails and the loop
    # falls back instead of waiting on a sold-out instance type.
    capacity_timeout = "15m"
    user_data_limit = USER_DATA_LIMIT
    # cloud-init unpacks gzip'd user data before reading it ("User data formats", docs.cloud-
    # init.io: gzip-compressed content is decompressed, then used as if it were not, which is
    # what the 16 KiB user data limit is for): the Mixtral documents gzip to about a quarter.
    user_data_gzip = True
    failure_rules = RULES
    capacity_per_instance_type = True  # EC2 keeps a capacity pool per instance type and AZ
    cache_scheme = "s3"
    # boto3: S3's conditional PutObject (If-None-Match) arrived in botocore 1.35.
    cache_packages = ("boto3>=1.35.16",)

    def disk_iops(self, disk_type: str, size_gb: int) -> int | None:
        """io2 needs provisioned IOPS (at most 500 per GiB); the other types come with theirs."""
        return min(IO2_IOPS, IO2_MAX_IOPS_PER_GIB * size_gb) if disk_type == "io2" else None

    def secret_ref(self, service: str, stack: str) -> SecretRef:
        """An SSM parameter per service and stack (names are unique per account and region)."""
        name = f"/servestack/{service}/{digest(f'{service}/{stack}')}/hf-token"
        return SecretRef(self.name, "ssm", name, key=SSM_KEY)

    def api_key_ref(self, service: str, stack: str) -> SecretRef:
        """The generated API key: its own SecureString beside the secrets' parameter."""
        name = f"/servestack/{service}/{digest(f'{service}/{stack}')}/api-key"
        return SecretRef(self.name, "ssm", name, key=SSM_KEY)

    def stack_config(self, d: Deployment) -> dict[str, str]:
        return {"aws:region": d.region}

    def quota_families(self, c: Offered) -> tuple[str, ...]:
        return (quota_family(c.instance_type, c.use_spot),)

    def check(self, d: Deployment) -> None:
        """HTTPS needs the hosted zone: ACM validates the certificate through DNS records the
        stack writes there, and the domain's alias record goes there too."""
        if d.tls is not None and not d.tls.dns_zone:
            raise UserError(f"--domain {d.tls.domain} needs --dns-zone on AWS: the id of the "
                            "Route 53 hosted zone that holds the domain (Z0123456789ABCDEFGHIJ), "
                            "where the stack writes the certificate's validation record and "
                            "the domain's alias to the load balancer")

    def quota_scope(self, found: Rule, text: str, c: Offered) -> QuotaScope:
        if found.code in NETWORK_QUOTA_CODES:  # any GPU, spot or not: the region's network
            return QuotaScope(c.region)
        # a spot-count limit is a spot quota whatever the candidate's own setting
        spot = True if found.code == "MaxSpotInstanceCountExceeded" else c.use_spot
        return QuotaScope(c.region, quota_family(c.instance_type, spot), spot)

    def zones_for(self, c: Offered) -> tuple[str, ...]:
        """A spot candidate's group spans every zone of its region that offers its types (empty:
        the plan's spot zones of the group's types fill `d.zones`, servestack.deployment.build
        `_group_zones`), as SkyServe spreads spot replicas: the plan prices AWS spot per
        zone ID, but a group held to that one zone loses every replica when its pool runs dry,
        while a region-wide group lets capacity-optimized allocation pick the deepest pools.
        A zone *name* stays: only a spec pins one (`zone: us-east-1a`)."""
        if c.use_spot and c.zone and not is_zone_name(c.zone, c.region):
            return ()
        return super().zones_for(c)

    def zone_in_error(self, text: str, c: Offered) -> str | None:
        """AWS errors name zones (us-east-1b) while the plan holds zone ids (use1-az4), so a
        region candidate is blocked as a whole. So is a spot candidate of one zone id: its group
        spread over every zone of the region that sells its types (`zones_for`), so its failure
        says those pools are short region-wide, and the same types' spot candidates of the
        region's other zones (the same group) would fail alike. Only a zone *name* a spec pins
        holds the group in that zone, and only that zone is blocked."""
        return c.zone if c.zone and is_zone_name(c.zone, c.region) else None


CLOUD = Aws()


def quota_family(instance_type: str, spot: bool) -> str:
    """The EC2 vCPU quota an instance type counts against (G and VT share one, P5 spot has
    its own)."""
    prefix = re.match(r"[a-z]+", instance_type.lower())
    letters = prefix.group(0) if prefix else instance_type
    if letters in ("g", "vt"):
        family = "G"
    elif letters == "p":
        family = "P5" if spot and instance_type.startswith("p5") else "P"
    else:
        family = letters.upper()
    return f"aws-{family}-{'spot' if spot else 'ondemand'}"


def subnet_zone_filter(region: str, zones: tuple[str, ...]) -> dict[str, Any]:
    """The subnets filter (EC2 DescribeSubnets) that keeps the subnets in `zones`: by
    `availability-zone` for zone names, by `availability-zone-id` for the catalog's zone IDs.
    A candidate's zones are one name (pinned by the spec) or the catalog's IDs, never both."""
    names = [is_zone_name(z, region) for z in zones]
    if any(names) and not all(names):
        raise ValueError(f"zones mix AWS zone names and zone IDs: {list(zones)}")
    return {"name": "availability-zone" if all(names) else "availability-zone-id",
            "values": list(zones)}


@dataclass(frozen=True, slots=True)
class ZoneKeys:
    """How the deployment's zones are spelled in each place that names a zone: the subnet's
    argument (aws_subnet `availability_zone` / `availability_zone_id`), and the attribute and
    exclusion argument of the region's AZ lookup (aws_availability_zones `names` /
    `zone_ids`, `exclude_names` / `exclude_zone_ids`). Zone names (us-east-1a, as a spec may
    pin one) differ per account; zone IDs (the catalog's use1-az1) do not."""

    subnet_arg: str
    listed: str
    exclude_arg: str


def zone_keys(region: str, zones: tuple[str, ...]) -> ZoneKeys:
    by_name = subnet_zone_filter(region, zones)["name"] == "availability-zone" if zones \
        else False
    if by_name:
        return ZoneKeys("availability_zone", "names", "exclude_names")
    return ZoneKeys("availability_zone_id", "zone_ids", "exclude_zone_ids")


def extra_alb_zones(d: Deployment) -> int:
    """How many of the region's other AZs the public subnets add, so the ALB spans two: a
    group pinned to one zone (AWS spot candidates are per zone) still gets a balancer."""
    return max(0, ALB_MIN_ZONES - len(d.zones))


def public_ssh(d: Deployment) -> bool:
    """The user asked for SSH from given addresses (--ssh-cidr): the VMs then sit in the public
    subnets with public addresses, port 22 open to those addresses only. Otherwise they have
    no public address at all (Session Manager reaches them through the SSM agent)."""
    return bool(d.ssh_cidrs)


def aws_network_interface(d: Deployment) -> dict[str, Any]:
    """The VMs' one network interface (the launch template's; the group picks the subnet): a
    public address only when the user asked for SSH from given addresses (see public_ssh).
    The provider takes these booleans as strings."""
    return {"device_index": 0, "delete_on_termination": "true",
            "associate_public_ip_address": "true" if public_ssh(d) else "false"}


def subnet_cidr(d: Deployment, tier: str, index: int) -> str:
    """The `index`-th public or private /20 of the stack's VPC, the same for both engines and
    every run (a subnet's range never moves, so an update never replaces one)."""
    vpc = ipaddress.ip_network(d.network.range_of("vnet"))
    blocks = list(vpc.subnets(new_prefix=SUBNET_PREFIX))
    first = PRIVATE_FIRST_BLOCK if tier == "private" else 0
    if index >= PRIVATE_FIRST_BLOCK:
        raise ValueError(f"{vpc} has room for {PRIVATE_FIRST_BLOCK} {tier} subnets, "
                         f"not {index + 1}")
    return str(blocks[first + index])


def aws_https_listener(d: Deployment) -> dict[str, Any]:
    """The HTTPS listener's port, protocol and TLS policy (the certificate is the stack's)."""
    tls = d.tls
    if tls is None:
        raise ValueError(f"deployment {d.candidate_id} has no TLS")
    return {"port": tls.port, "protocol": "HTTPS", "ssl_policy": TLS_POLICY}


def aws_https_redirect(d: Deployment) -> dict[str, Any]:
    """The HTTP listener's action with TLS: a permanent redirect to the same URL over HTTPS."""
    tls = d.tls
    if tls is None:
        raise ValueError(f"deployment {d.candidate_id} has no TLS")
    return {"type": "redirect", "redirect": {"port": str(tls.port), "protocol": "HTTPS",
                                             "status_code": "HTTP_301"}}


def alb_client_ports(d: Deployment) -> tuple[int, ...]:
    """The ports clients reach the ALB on: the HTTP listener, and with TLS the HTTPS one (the
    HTTP listener then only redirects)."""
    return (d.listener_port, d.tls.port) if d.tls else (d.listener_port,)


DEFAULT_ROUTE = WORLD  # the route to the internet gateway / NAT gateway


def aws_tags(d: Deployment) -> dict[str, str]:
    """The tags on every resource: the deployment's, and its stack's (see TAG_KEYS)."""
    return {**d.tags, STACK_TAG: d.stack}


def aws_match_tags(d: Deployment) -> dict[str, str]:
    """The tags by which the probes find the deployment's resources."""
    return {key: aws_tags(d)[key] for key in TAG_KEYS}


def aws_name(d: Deployment, kind: str) -> str:
    """A fixed name of one of the deployment's resources (its Name tag): the scope (service and
    a digest of the stack, at most 27 characters) and the resource's kind, so no two services
    or stacks share one in an account."""
    return f"{d.scope}-{kind}"


def aws_name_prefix(d: Deployment, kind: str) -> str:
    """A `name_prefix`: AWS names the resource with it and a unique suffix (26 characters). At
    most 34 characters here, within the tightest limit of the resources that take one (an IAM
    role's name_prefix: 38)."""
    return f"{aws_name(d, kind)}-"


def aws_load_balancer(d: Deployment) -> dict[str, Any]:
    """The internet-facing ALB: connections idle for as long as a stream may, and requests with
    header fields that are not valid HTTP are dropped rather than passed to vLLM (they are how
    request smuggling through a proxy starts; checkov CKV_AWS_131)."""
    return {"load_balancer_type": "application", "internal": False,
            "idle_timeout": d.idle_timeout_seconds, "drop_invalid_header_fields": True}


def aws_target_group(d: Deployment) -> dict[str, Any]:
    """Where the ALB sends requests, and how long a leaving instance drains: a deregistered
    instance (scale-in, instance refresh) keeps its open streams for as long as the ALB lets a
    connection idle (`idle_timeout`), instead of the 300 s default that cuts a stream still
    running. The target group takes 0-3600 s (aws_lb_target_group `deregistration_delay`)."""
    return {"port": d.service_port, "protocol": "HTTP", "target_type": "instance",
            "deregistration_delay": d.idle_timeout_seconds}


def aws_instance_refresh(d: Deployment) -> dict[str, Any]:
    """Rolling replacement when the launch template changes.

    The group tracks the template's latest version number, so a new version changes the
    group's mixed instances policy, and the provider then starts an instance refresh
    (aws_autoscaling_group `instance_refresh`). Launch before terminating: 100 % of the desired
    replicas stay in service while up to as many new VMs boot and load the model, and an old VM
    leaves only once its replacement is healthy after a warm-up of the health check grace
    period (the model load). A group of GPUs cannot lose capacity for the 10-20 minutes a
    load takes; the price is up to twice the group for that time, within the GPU quota (if
    the quota or capacity is short, the new VMs fail to launch and the old ones keep serving).
    Instances already on the new template are kept (`skip_matching`), so a refresh that is
    restarted after a failure replaces only what is left.
    """
    return {"strategy": "Rolling", "preferences": {
        "min_healthy_percentage": REFRESH_MIN_HEALTHY,
        "max_healthy_percentage": REFRESH_MAX_HEALTHY,
        "instance_warmup": str(d.health.grace_period_seconds), "skip_matching": True}}


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


def ec2_trust_policy() -> dict[str, Any]:
    """Who may assume the VMs' role: EC2 instances."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"Service": "ec2.amazonaws.com"}}]}


def ssm_core_policy_arn(partition: str) -> str:
    """The managed policy Session Manager needs on the instance role (see SSM_CORE_POLICY)."""
    return f"arn:{partition}:iam::aws:policy/{SSM_CORE_POLICY}"


def read_token_policy(parameter_arns: list[str], partition: str, account: str, region: str,
                      dns_suffix: str, key: str) -> dict[str, Any]:
    """Read the stack's parameters (the secrets, the API key), exactly as the bootstrap does
    (`aws ssm get-parameter --with-decryption`: ssm:GetParameter on each), and decrypt them
    only through SSM with the AWS-managed key.

    The arguments are values (Pulumi, after apply) or Terraform expressions; the document is
    the same either way."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadToken", "Effect": "Allow", "Action": "ssm:GetParameter",
         "Resource": parameter_arns},
        {"Sid": "DecryptTokenViaSsm", "Effect": "Allow", "Action": "kms:Decrypt",
         "Resource": f"arn:{partition}:kms:{region}:{account}:key/*",
         "Condition": {
             "StringEquals": {"kms:ViaService": f"ssm.{region}.{dns_suffix}"},
             "ForAnyValue:StringEquals": {"kms:ResourceAliases": key}}},
    ]}


# --- autoscaling: SkyServe's replica_policy run by the group itself (no controller VM) --------
# The functions take the group's name and the balancer's ARN suffixes as values or as an
# engine's references (Pulumi outputs, Terraform expressions); they only place them.
# Every signal here is read per minute: the group metrics (collected at 1Minute granularity),
# the ALB's request counts, and the replicas' gauges (the bootstrap ships them every 60 s).
PERIOD_SECONDS = 60
GROUP_METRICS = ("GroupDesiredCapacity", "GroupInServiceInstances")
METRICS_GRANULARITY = "1Minute"
GROUP_DIMENSION = "AutoScalingGroupName"
# Target tracking on the ALB: the average number of requests per target in one minute (the
# metric's only statistic is Sum over a 60 s period, so its target is requests per minute).
ALB_REQUESTS_PER_TARGET = "ALBRequestCountPerTarget"


def fallback_capacity(d: Deployment) -> int:
    """The on-demand fallback group's maximum: the replicas above the on-demand base, which are
    spot and may each need an on-demand stand-in (0: no fallback group)."""
    return d.max_replicas - d.on_demand_base if d.dynamic_ondemand_fallback and d.use_spot else 0


def aws_metadata_options(d: Deployment) -> dict[str, Any]:
    """IMDSv2 as always; with a shipped metric also the instance's tags, from which the metric
    shipper reads its group's name (aws:autoscaling:groupName) for the metric's dimension."""
    if CLOUD.shipped_metric(d) is None:
        return AWS_METADATA_OPTIONS
    return {**AWS_METADATA_OPTIONS, "instance_metadata_tags": "enabled"}


def put_metrics_policy(d: Deployment) -> dict[str, Any] | None:
    """What the VMs need to publish their gauge: PutMetricData, which takes no resource ARN
    (IAM: CloudWatch actions without resource-level permissions), held to the namespace."""
    if CLOUD.shipped_metric(d) is None:
        return None
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "PutVllmMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData",
        "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": CLOUD.metrics_namespace}}}]}


def aws_group_metrics(d: Deployment) -> dict[str, Any]:
    """The group's arguments for scaling: the warm-up (SkyServe's upscale delay: a new VM's
    metrics join the group's only after it, so one burst of load adds replicas once, not again
    each minute while the first new ones boot) and the group metrics the alarms read."""
    found: dict[str, Any] = {}
    if d.autoscaling is not None:
        found["default_instance_warmup"] = d.autoscaling.upscale_delay_seconds
    if d.autoscaling is not None or fallback_capacity(d):
        found |= {"enabled_metrics": list(GROUP_METRICS),
                  "metrics_granularity": METRICS_GRANULARITY}
    return found


def aws_target_tracking(d: Deployment, resource_label: Any, group_name: Any) -> dict[str, Any]:
    """The scale-out policy: target tracking on the ALB's requests per target, or on the
    replicas' gauge averaged over the group. Its scale-in is off (see `aws_scale_in_alarm`).

    "qps": SkyServe's target is requests per second per replica; ALBRequestCountPerTarget is
    requests per target per minute (Sum over 60 s), hence the target times 60. The resource
    label is the ALB's and the target group's ARN suffixes joined by "/" (Auto Scaling API,
    PredefinedMetricSpecification)."""
    scaling = _scaling(d)
    config: dict[str, Any] = {"disable_scale_in": True}
    if scaling.on_load_balancer:
        config |= {"target_value": scaling.target * PERIOD_SECONDS,
                   "predefined_metric_specification": {
                       "predefined_metric_type": ALB_REQUESTS_PER_TARGET,
                       "resource_label": resource_label}}
    else:
        config |= {"target_value": scaling.target, "customized_metric_specification": {
            "metric_name": scaling.shipped_metric, "namespace": CLOUD.metrics_namespace,
            "statistic": "Average",
            "metric_dimension": [{"name": GROUP_DIMENSION, "value": group_name}]}}
    return {"policy_type": "TargetTrackingScaling",
            "estimated_instance_warmup": scaling.upscale_delay_seconds,
            "target_tracking_configuration": config}


def aws_scale_in_alarm(d: Deployment, group_name: Any, load_balancer: Any,
                       target_group: Any) -> dict[str, Any]:
    """The scale-in alarm: SkyServe's rule, replicas = ceil(load / target), held for the
    downscale delay.

    Why not target tracking's own scale-in: EC2 Auto Scaling creates its low alarm with 15
    one-minute datapoints, which no API changes (aws-samples/amazon-aurora-labs-for-mysql#3),
    so the downscale delay (default 1200 s) could not be honoured; target tracking's scale-in
    is disabled and this alarm, ceil(delay / 60) minutes of "more replicas than the load
    needs", drives a step policy instead (a step policy may take any alarm: EC2 Auto Scaling
    User Guide, step and simple scaling policies).

    `surplus` = desired - ceil(load / target). Load: the target group's requests per second
    (RequestCount, which the ALB publishes only for minutes with requests: a missing minute is
    0), or the replicas' gauge average times the replicas in service (no gauge yet: no
    datapoint, not breaching, so booting replicas never look idle)."""
    scaling = _scaling(d)
    minutes = _minutes(scaling.downscale_delay_seconds)
    group = {GROUP_DIMENSION: group_name}
    queries = [_query("desired", "AWS/AutoScaling", "GroupDesiredCapacity", group, "Maximum")]
    if scaling.on_load_balancer:
        queries.append(_query("requests", "AWS/ApplicationELB", "RequestCount",
                              {"LoadBalancer": load_balancer, "TargetGroup": target_group}, "Sum"))
        load = f"FILL(requests, 0) / {PERIOD_SECONDS}"
    else:
        queries += [_query("gauge", CLOUD.metrics_namespace, scaling.shipped_metric, group,
                           "Average"),
                    _query("serving", "AWS/AutoScaling", "GroupInServiceInstances", group,
                           "Maximum")]
        load = "gauge * serving"
    queries.append({"id": "surplus", "expression": f"desired - CEIL({load} / {scaling.target:g})",
                    "label": "replicas beyond what the load needs", "return_data": True})
    return {"comparison_operator": "GreaterThanOrEqualToThreshold", "threshold": 1,
            "evaluation_periods": minutes, "datapoints_to_alarm": minutes,
            "treat_missing_data": "notBreaching", "metric_query": queries,
            "alarm_description": f"servestack {d.service}: {minutes} min with more replicas "
                                 "than the load needs"}


def aws_scale_in_policy(d: Deployment) -> dict[str, Any]:
    """Remove the surplus at once: the alarm's threshold is 1 replica, and step i (surplus i,
    i.e. i - 1 <= surplus - threshold < i) removes i; the last step is open-ended. The group's
    min_size bounds it."""
    room = d.max_replicas - d.min_replicas
    return {"policy_type": "StepScaling", "adjustment_type": "ChangeInCapacity",
            "step_adjustment": _steps(room, lambda i: -i, start=0)}


def aws_fallback_alarms(d: Deployment, group_name: Any) -> dict[str, dict[str, Any]]:
    """dynamic_ondemand_fallback's two alarms on the spot group's deficit (desired minus in
    service: spot VMs it wants but cannot get). "short": a deficit of 1 or more for the upscale
    delay (a VM that gets capacity is in service within a minute or two, so a longer deficit is
    missing spot capacity); "back": no deficit for the downscale delay (spot is back, and its
    VMs have had that long to load the model before the stand-ins leave)."""
    scaling = d.autoscaling
    up = scaling.upscale_delay_seconds if scaling else UPSCALE_DELAY_SECONDS
    down = scaling.downscale_delay_seconds if scaling else DOWNSCALE_DELAY_SECONDS
    group = {GROUP_DIMENSION: group_name}
    queries = [_query("desired", "AWS/AutoScaling", "GroupDesiredCapacity", group, "Maximum"),
               _query("serving", "AWS/AutoScaling", "GroupInServiceInstances", group, "Minimum"),
               {"id": "deficit", "expression": "desired - serving",
                "label": "spot replicas wanted but not in service", "return_data": True}]
    # Half a replica: the deficit is a whole number, so no datapoint sits on the threshold.
    short, back = _minutes(up), _minutes(down)
    return {
        "short": {"comparison_operator": "GreaterThanOrEqualToThreshold", "threshold": 0.5,
                  "evaluation_periods": short, "datapoints_to_alarm": short,
                  "treat_missing_data": "missing", "metric_query": queries,
                  "alarm_description": f"servestack {d.service}: spot short for {short} min"},
        "back": {"comparison_operator": "LessThanThreshold", "threshold": 0.5,
                 "evaluation_periods": back, "datapoints_to_alarm": back,
                 "treat_missing_data": "missing", "metric_query": queries,
                 "alarm_description": f"servestack {d.service}: spot back for {back} min"},
    }


def aws_fallback_policies(d: Deployment) -> dict[str, dict[str, Any]]:
    """The on-demand group's capacity as step policies with ExactCapacity.

    Step bounds are relative to the alarm's threshold (0.5): for "short" (above it) a step
    holds lower <= deficit - 0.5 < upper, so step i, [i - 1, i), sets i on-demand VMs for a
    deficit of i; the last is open-ended and sets the group's maximum. EC2 Auto Scaling runs
    the policy again every minute the alarm stays in ALARM (CloudWatch: Auto Scaling actions
    repeat while the state lasts), so the capacity follows the deficit as spot comes and goes.
    "back" (below the threshold) has one step, upper bound 0 and no lower bound: 0 VMs."""
    most = fallback_capacity(d)
    exact = {"policy_type": "StepScaling", "adjustment_type": "ExactCapacity"}
    return {"short": {**exact, "step_adjustment": _steps(most, lambda i: i, start=0)},
            "back": {**exact, "step_adjustment": [{"scaling_adjustment": 0,
                                                   "metric_interval_upper_bound": "0"}]}}


def _steps(count: int, adjustment: Callable[[int], int], start: int) -> list[dict[str, Any]]:
    """`count` steps of width 1 from `start` above the threshold; the last is open-ended."""
    steps = []
    for i in range(1, count + 1):
        step = {"scaling_adjustment": adjustment(i),
                "metric_interval_lower_bound": str(start + i - 1)}
        if i < count:
            step["metric_interval_upper_bound"] = str(start + i)
        steps.append(step)
    return steps


def _query(query_id: str, namespace: str, metric: str, dimensions: dict[str, Any],
           stat: str) -> dict[str, Any]:
    return {"id": query_id, "return_data": False, "metric": {
        "namespace": namespace, "metric_name": metric, "dimensions": dimensions,
        "stat": stat, "period": PERIOD_SECONDS}}


def _minutes(seconds: int) -> int:
    """Whole alarm periods covering `seconds` (at least one)."""
    return max(1, -(-seconds // PERIOD_SECONDS))


def _scaling(d: Deployment) -> Autoscaling:
    if d.autoscaling is None:
        raise ValueError(f"deployment {d.candidate_id} does not autoscale")
    return d.autoscaling


# --- --weight-cache (servestack.deployment.cache): the S3 bucket, as both engines spell it ---
# Private and owned: every public-access block on, ACLs off (the bucket owner owns every
# object), SSE-S3 encryption, versioning never enabled (a refill overwrites; old versions
# would only cost), force_destroy so a destroy takes the weights with the bucket.
AWS_CACHE_PUBLIC_ACCESS_BLOCK = {"block_public_acls": True, "block_public_policy": True,
                                 "ignore_public_acls": True, "restrict_public_buckets": True}
AWS_CACHE_OWNERSHIP = "BucketOwnerEnforced"
AWS_CACHE_SSE = "AES256"
AWS_CACHE_VERSIONING = "Disabled"


def cache_bucket_policy(bucket_arn: str) -> dict:
    """The VMs' rights on the cache: list, read, write and delete in that bucket only (the
    lock is deleted after a fill; multipart uploads of the large shards may be aborted)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ListWeightCache", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [bucket_arn]},
        {"Sid": "ReadWriteWeightCache", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                    "s3:AbortMultipartUpload"],
         "Resource": [f"{bucket_arn}/*"]}]}
