"""The AWS Terraform output: names per service and stack, rolling replacement, drain time, and
the provider pin (test_render.py runs `terraform validate` on it with the 5.100.0 mirror)."""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import math
import re
import tempfile
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from servestack import clouds, planner
from servestack.bootstrap import USER_DATA_LIMIT, render_cloud_init, written_files
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Autoscaling, Choices, Deployment, Tls
from servestack.inputs import load_inputs
from servestack.terraform import render, tfvars
from servestack.terraform.aws import PROVIDER, size_config, sweep_config, sweep_found
from tests.fakes import FROZEN_CATALOG, name_tags, needs_terraform_aws, terraform_validate
from tests.terraform.scaling_sim import Alarm, Metrics, Scaled


@cache
def deployment(service: str = "mixtral", stack: str | None = None) -> Deployment:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="aws", spot=False), model=inputs.model)
    return build_deployment(inputs.spec, plan.candidates[0], plan.candidates,
                            model=inputs.model, service_name=service, stack=stack)


def fixed_names(body: dict) -> set[str]:
    """The names a resource's arguments fix: `name`, `name_prefix` and every Name tag (a tags
    map, or the group's `tag` blocks)."""
    found = {body[k] for k in ("name", "name_prefix") if k in body}
    return found | name_tags(body)


def test_two_services_and_two_stacks_share_no_physical_name():
    names = {}
    for service, stack in itertools.product(("mixtral", "other"), ("blue", "green")):
        d = deployment(service, stack)
        resources = render(d)["resource"]
        for kind in ("aws_security_group", "aws_launch_template", "aws_autoscaling_group",
                     "aws_iam_role", "aws_iam_instance_profile"):  # network: Name tags
            for body in resources[kind].values():
                assert body["name_prefix"].startswith(f"{d.scope}-"), kind
        # an inline policy's name is its role's own ("read-token"), not the account's
        names[service, stack] = {name for kind, bodies in resources.items()
                                 if kind != "aws_iam_role_policy"
                                 for body in bodies.values() for name in fixed_names(body)}
    assert all(names.values())
    for one, other in itertools.combinations(names, 2):
        assert not names[one] & names[other], (one, other)


def test_template_change_rolls_new_instances_in_before_old_ones_leave():
    d = deployment()
    resources = render(d)["resource"]
    asg = resources["aws_autoscaling_group"]["group"]
    assert asg["instance_refresh"] == {"strategy": "Rolling", "preferences": {
        "min_healthy_percentage": 100, "max_healthy_percentage": 200,
        "instance_warmup": str(d.health.grace_period_seconds), "skip_matching": True}}
    template = asg["mixed_instances_policy"]["launch_template"]["launch_template_specification"]
    assert template == {"launch_template_id": "${aws_launch_template.vm.id}",
                        "version": "${aws_launch_template.vm.latest_version}"}
    assert resources["aws_launch_template"]["vm"]["update_default_version"] is True


def test_target_group_drains_for_as_long_as_a_stream_may_idle():
    d = deployment()
    resources = render(d)["resource"]
    assert resources["aws_lb_target_group"]["service"]["deregistration_delay"] == \
        resources["aws_lb"]["service"]["idle_timeout"] == d.idle_timeout_seconds == 900


def test_every_resource_and_probe_carries_the_stack():
    for stack in ("blue", "green"):
        d = deployment(stack=stack)
        tagged = [body for bodies in render(d)["resource"].values() for body in bodies.values()
                  if "tags" in body]
        assert tagged and all(body["tags"]["servestack-stack"] == stack for body in tagged)
        assert {"key": "servestack-stack", "value": stack, "propagate_at_launch": True} in \
            render(d)["resource"]["aws_autoscaling_group"]["group"]["tag"]
        wanted = {"servestack-service": d.service, "servestack-candidate": d.candidate_id,
                  "servestack-stack": stack}
        size = size_config(d, None, None)["data"]["aws_instances"]["group"]
        sweep = sweep_config(d)["data"]
        assert size["instance_tags"] == sweep["aws_instances"]["live"]["instance_tags"] == wanted
        assert sweep["aws_resourcegroupstaggingapi_resources"]["tagged"]["tag_filter"] == \
            [{"key": k, "values": [v]} for k, v in wanted.items()]
        assert sweep["aws_nat_gateways"]["live"]["tags"] == wanted


def test_sweep_counts_live_nat_gateways_only_from_their_own_lookup():
    arn = "arn:aws:ec2:us-east-1:123456789012:natgateway/nat-0a1b2c3d4e5f67890"
    vpc = "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-0a1b2c3d4e5f67890"
    found = sweep_found({"arns": [arn, vpc], "instances": [],
                         "nat_gateways": ["nat-0fedcba9876543210"]})
    assert found == [{"type": "aws_vpc", "name": "vpc-0a1b2c3d4e5f67890",
                      "id": "vpc-0a1b2c3d4e5f67890"},
                     {"type": "aws_nat_gateway", "name": "nat-0fedcba9876543210",
                      "id": "nat-0fedcba9876543210"}]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def admits(constraint: str, version: str) -> bool:
    """Terraform's version constraint operators that the pin uses (>=, <, =)."""
    compare = {">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "=": lambda a, b: a == b}
    for part in constraint.split(","):
        operator, wanted = re.fullmatch(r"\s*(>=|<|=)?\s*([\d.]+)\s*", part).groups()
        if not compare[operator or "="](_version(version), _version(wanted)):
            return False
    return True


@pytest.mark.parametrize("version, admitted", [
    ("5.100.0", True),  # the offline mirror that `terraform validate` runs with
    ("6.0.0", True), ("6.52.0", True),  # today's releases
    ("5.99.1", False),  # not checked: below the mirror
    ("7.0.0", False),  # the next major release may remove arguments used
])
def test_provider_pin_admits_the_mirror_and_todays_releases(version, admitted):
    local, requirement = PROVIDER
    assert (local, requirement["source"]) == ("aws", "hashicorp/aws")
    assert admits(requirement["version"], version) is admitted


# --- network, API key, TLS (issue 10) ----------------------------------------------------------

def spot_deployment() -> Deployment:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="aws", spot=True), model=inputs.model)
    return build_deployment(inputs.spec, plan.candidates[0], plan.candidates, model=inputs.model)


def one_zone() -> Deployment:
    """The spot group held to one zone (the plan offers its types in that zone only)."""
    d = spot_deployment()
    return replace(d, zones=d.zones[:1])


DOMAIN, HOSTED_ZONE = "llm.example.com", "Z0123456789ABCDEFGHIJ"


def with_tls(d: Deployment) -> Deployment:
    return replace(d, tls=Tls(DOMAIN, HOSTED_ZONE))


def test_own_vpc_public_subnets_for_the_alb_private_ones_for_the_group():
    d = deployment()
    res = render(d)["resource"]
    assert res["aws_vpc"]["service"]["cidr_block"] == d.network.vnet == "10.20.0.0/16"
    subnets = res["aws_subnet"]
    public = [subnets[f"public_{i}"] for i in range(len(d.zones))]
    private = [subnets[f"private_{i}"] for i in range(len(d.zones))]
    assert len(subnets) == 2 * len(d.zones)
    assert [s["availability_zone_id"] for s in public] == \
        [s["availability_zone_id"] for s in private] == list(d.zones)
    assert public[0]["cidr_block"] == "10.20.0.0/20"
    assert private[0]["cidr_block"] == "10.20.128.0/20"
    assert all(s["vpc_id"] == "${aws_vpc.service.id}" and s["map_public_ip_on_launch"] is False
               for s in public + private)
    assert res["aws_lb"]["service"]["subnets"] == \
        [f"${{aws_subnet.public_{i}.id}}" for i in range(len(d.zones))]
    asg = res["aws_autoscaling_group"]["group"]
    assert asg["vpc_zone_identifier"] == \
        [f"${{aws_subnet.private_{i}.id}}" for i in range(len(d.zones))]
    nic, = res["aws_launch_template"]["vm"]["network_interfaces"]
    assert nic["associate_public_ip_address"] == "false"
    assert nic["security_groups"] == ["${aws_security_group.vm.id}"]
    assert "vpc_security_group_ids" not in res["aws_launch_template"]["vm"]
    assert "data" not in render(d) or "aws_availability_zones" not in render(d)["data"]


def test_one_nat_gateway_routes_the_private_subnets_out():
    d = deployment()
    res = render(d)["resource"]
    assert list(res["aws_eip"]) == ["nat"] and list(res["aws_nat_gateway"]) == ["service"]
    assert res["aws_eip"]["nat"]["domain"] == "vpc"
    nat = res["aws_nat_gateway"]["service"]
    assert (nat["allocation_id"], nat["subnet_id"]) == \
        ("${aws_eip.nat.id}", "${aws_subnet.public_0.id}")
    # created after the internet gateway, destroyed before it
    assert nat["depends_on"] == res["aws_eip"]["nat"]["depends_on"] == \
        ["aws_internet_gateway.service"]
    assert res["aws_route"] == {
        "public": {"route_table_id": "${aws_route_table.public.id}",
                   "destination_cidr_block": "0.0.0.0/0",
                   "gateway_id": "${aws_internet_gateway.service.id}"},
        "private": {"route_table_id": "${aws_route_table.private.id}",
                    "destination_cidr_block": "0.0.0.0/0",
                    "nat_gateway_id": "${aws_nat_gateway.service.id}"}}
    links = res["aws_route_table_association"]
    assert links["private_0"] == {"subnet_id": "${aws_subnet.private_0.id}",
                                  "route_table_id": "${aws_route_table.private.id}"}
    assert links["public_0"]["route_table_id"] == "${aws_route_table.public.id}"
    # the VMs boot after their way out exists and leave before it goes; the ALB needs the
    # internet gateway
    assert {"aws_route.private", "aws_route_table_association.private_0"} <= \
        set(res["aws_autoscaling_group"]["group"]["depends_on"])
    assert "aws_internet_gateway.service" in res["aws_lb"]["service"]["depends_on"]


def test_pinned_zone_takes_a_second_az_from_the_region_for_the_alb():
    d = one_zone()
    doc = render(d)
    zones = doc["data"]["aws_availability_zones"]["other"]
    assert zones["state"] == "available" and zones["exclude_zone_ids"] == list(d.zones)
    assert zones["filter"] == [{"name": "zone-type", "values": ["availability-zone"]}]
    subnets = doc["resource"]["aws_subnet"]
    assert subnets["public_1"]["availability_zone_id"] == \
        "${data.aws_availability_zones.other.zone_ids[0]}"
    assert sorted(subnets) == ["private_0", "public_0", "public_1"]
    by_name = render(replace(d, zones=(f"{d.region}a",)))
    zones = by_name["data"]["aws_availability_zones"]["other"]
    assert zones["exclude_names"] == [f"{d.region}a"]
    assert by_name["resource"]["aws_subnet"]["public_1"]["availability_zone"] == \
        "${data.aws_availability_zones.other.names[0]}"


def test_ssh_cidrs_put_the_group_in_public_subnets_without_nat():
    d = replace(deployment(), ssh_cidrs=("192.0.2.10/32",))
    res = render(d)["resource"]
    assert "aws_nat_gateway" not in res and "aws_eip" not in res
    assert not [name for name in res["aws_subnet"] if name.startswith("private")]
    nic, = res["aws_launch_template"]["vm"]["network_interfaces"]
    assert nic["associate_public_ip_address"] == "true"
    assert res["aws_autoscaling_group"]["group"]["vpc_zone_identifier"][0] == \
        "${aws_subnet.public_0.id}"
    ssh = res["aws_vpc_security_group_ingress_rule"]["vm_ssh_v4"]
    assert (ssh["from_port"], list(ssh["for_each"])) == (22, ["192.0.2.10/32"])


def test_api_key_parameter_read_grant_session_manager_and_outputs():
    d = deployment()
    doc = render(d)
    res = doc["resource"]
    assert "api_key" in res["terraform_data"]
    parameter = res["aws_ssm_parameter"]["api_key"]
    assert (parameter["name"], parameter["type"], parameter["key_id"]) == \
        (d.api_key.name, "SecureString", "alias/aws/ssm")
    assert parameter["value"] == "${sensitive(terraform_data.api_key.output)}"
    policy = json.loads(res["aws_iam_role_policy"]["read_secrets"]["policy"])
    read, = [s for s in policy["Statement"] if s["Action"] == "ssm:GetParameter"]
    assert read["Resource"] == ["${aws_ssm_parameter.hf_token.arn}",
                                "${aws_ssm_parameter.api_key.arn}"]
    assert res["aws_iam_role_policy_attachment"]["ssm"]["policy_arn"] == \
        "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
    assert doc["output"]["api_key"]["sensitive"] is True
    assert doc["output"]["api_key_secret"]["value"] == "${aws_ssm_parameter.api_key.name}"
    assert "aws_ssm_parameter.api_key" in res["aws_autoscaling_group"]["group"]["depends_on"]


def test_no_api_key_means_no_key_parameter_grant_or_output():
    doc = render(replace(deployment(), api_key=None, secret=None))
    res = doc["resource"]
    assert "terraform_data" not in res and "aws_ssm_parameter" not in res
    assert "aws_iam_role_policy" not in res and "aws_iam_role_policy_attachment" in res
    assert "api_key" not in doc["output"] and "api_key_secret" not in doc["output"]


def test_tls_certificate_validation_https_listener_redirect_and_alias():
    d = with_tls(deployment())
    doc = render(d)
    res = doc["resource"]
    cert = res["aws_acm_certificate"]["service"]
    assert (cert["domain_name"], cert["validation_method"]) == (DOMAIN, "DNS")
    validation = res["aws_route53_record"]["validation"]
    assert validation["zone_id"] == HOSTED_ZONE and validation["allow_overwrite"] is True
    assert validation["for_each"].startswith(
        "${{for o in aws_acm_certificate.service.domain_validation_options")
    assert res["aws_acm_certificate_validation"]["service"]["validation_record_fqdns"] == \
        "${[for r in aws_route53_record.validation : r.fqdn]}"
    https = res["aws_lb_listener"]["https"]
    assert (https["port"], https["protocol"], https["ssl_policy"]) == \
        (443, "HTTPS", "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09")
    assert https["certificate_arn"] == \
        "${aws_acm_certificate_validation.service.certificate_arn}"
    assert https["default_action"]["type"] == "forward"
    assert res["aws_lb_listener"]["http"]["default_action"] == {
        "type": "redirect",
        "redirect": {"port": "443", "protocol": "HTTPS", "status_code": "HTTP_301"}}
    alias = res["aws_route53_record"]["alias"]
    assert (alias["zone_id"], alias["name"], alias["type"]) == (HOSTED_ZONE, DOMAIN, "A")
    assert alias["alias"] == {"name": "${aws_lb.service.dns_name}",
                              "zone_id": "${aws_lb.service.zone_id}",
                              "evaluate_target_health": True}
    ports = sorted(r["from_port"] for name, r in
                   res["aws_vpc_security_group_ingress_rule"].items() if name.startswith("alb"))
    assert ports == [80, 443]
    assert doc["output"]["endpoint"]["value"] == f"https://{DOMAIN}"


def test_without_tls_no_certificate_and_a_forwarding_http_listener():
    res = render(deployment())["resource"]
    assert "aws_acm_certificate" not in res and "aws_route53_record" not in res
    assert list(res["aws_lb_listener"]) == ["http"]
    assert res["aws_lb_listener"]["http"]["default_action"]["type"] == "forward"


def test_network_resources_share_no_fixed_name_across_stacks():
    """Every new resource's Name tag differs per service and stack (the earlier test covers
    the union; this one says each network resource has one)."""
    for stack in ("blue", "green"):
        d = deployment(stack=stack)
        res = render(d)["resource"]
        for kind in ("aws_vpc", "aws_subnet", "aws_internet_gateway", "aws_eip",
                     "aws_nat_gateway", "aws_route_table", "aws_default_security_group"):
            for body in res[kind].values():
                assert body["tags"]["Name"].startswith(f"{d.scope}-"), kind


# --- autoscaling, spot spread, on-demand fallback (issue 11) ---------------------------------

SCALED_SPEC = """\
name: mixtral
envs:
  MODEL_NAME: mistralai/Mixtral-8x7B-Instruct-v0.1
secrets:
  HF_TOKEN: hf_placeholder
resources:
  accelerators: {L4:8, A10g:8, L40S:4, A100:4, A100-80GB:2}
  ports: 8000
  use_spot: true
service:
  readiness_probe: /health
  replica_policy:
    min_replicas: 1
    max_replicas: 3
    target_qps_per_replica: 2.5
    base_ondemand_fallback_replicas: 1
    dynamic_ondemand_fallback: true
    upscale_delay_seconds: 120
    downscale_delay_seconds: 600
run: vllm serve $MODEL_NAME --tensor-parallel-size $SKYPILOT_NUM_GPUS_PER_NODE
"""


@cache
def scaled(metric: str | None = None, spot: bool = True, secrets: bool = True,
           cache: bool = False) -> Deployment:
    """The spec above as the planner and builder make it (`metric`: --scale-metric, `cache`:
    --weight-cache)."""
    folder = Path(tempfile.mkdtemp(prefix="servestack-scaled-"))
    spec = folder / "serve.yaml"
    spec.write_text(SCALED_SPEC if secrets else SCALED_SPEC.replace(
        "secrets:\n  HF_TOKEN: hf_placeholder\n", ""))
    inputs = load_inputs(str(spec), catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="aws", spot=spot), model=inputs.model)
    return build_deployment(inputs.spec, plan.candidates[0], plan.candidates,
                            model=inputs.model,
                            choices=Choices(scale_metric=metric, weight_cache=cache))


def test_the_scaled_spec_builds_what_the_tests_below_assume():
    d = scaled()
    assert d.use_spot and d.autoscaling == Autoscaling("qps", 2.5, 120, 600)
    assert (d.min_replicas, d.max_replicas, d.on_demand_base) == (1, 3, 1)
    # the plan's spot zones of the group's types (build.py `_group_zones`), by zone ID
    assert d.dynamic_ondemand_fallback and len(d.zones) >= 2


def test_group_is_bounded_by_min_and_max_and_keeps_the_scaled_desired_capacity():
    d = scaled()
    doc = render(d)
    asg = doc["resource"]["aws_autoscaling_group"]["group"]
    values = tfvars(d)
    assert (asg["min_size"], asg["max_size"]) == ("${var.min_replicas}", "${var.max_replicas}")
    assert (values["min_replicas"], values["max_replicas"], values["desired_replicas"]) == \
        (1, 3, 1)
    assert asg["lifecycle"] == {"ignore_changes": ["desired_capacity"]}
    assert asg["default_instance_warmup"] == 120  # the upscale delay
    assert asg["enabled_metrics"] == ["GroupDesiredCapacity", "GroupInServiceInstances"]
    assert asg["metrics_granularity"] == "1Minute"
    assert asg["capacity_rebalance"] is True


def test_fixed_group_has_no_autoscaler():
    d = deployment()
    resources = render(d)["resource"]
    assert d.autoscaling is None
    assert "aws_autoscaling_policy" not in resources
    assert "aws_cloudwatch_metric_alarm" not in resources
    asg = resources["aws_autoscaling_group"]["group"]
    assert "lifecycle" not in asg and "enabled_metrics" not in asg
    assert set(resources["aws_autoscaling_group"]) == {"group"}


def test_qps_scales_out_on_alb_requests_per_target_per_minute():
    doc = render(scaled())
    policy = doc["resource"]["aws_autoscaling_policy"]["scale_out"]
    assert policy["autoscaling_group_name"] == "${aws_autoscaling_group.group.name}"
    assert policy["policy_type"] == "TargetTrackingScaling"
    assert policy["estimated_instance_warmup"] == 120
    config = policy["target_tracking_configuration"]
    assert config["target_value"] == 150  # 2.5 requests per second = 150 per minute
    assert config["disable_scale_in"] is True  # the scale-in alarm below does it
    assert config["predefined_metric_specification"] == {
        "predefined_metric_type": "ALBRequestCountPerTarget",
        "resource_label": "${aws_lb.service.arn_suffix}/${aws_lb_target_group.service.arn_suffix}"}


def test_vllm_gauge_scales_out_on_the_replicas_metric_per_group():
    d = scaled("vllm-waiting")
    doc = render(d)
    config = doc["resource"]["aws_autoscaling_policy"]["scale_out"][
        "target_tracking_configuration"]
    assert config["target_value"] == 5  # production-stack's 5 waiting requests per replica
    assert config["customized_metric_specification"] == {
        "metric_name": "requests_waiting", "namespace": "Servestack/vLLM", "statistic": "Average",
        "metric_dimension": [{"name": "AutoScalingGroupName",
                              "value": "${aws_autoscaling_group.group.name}"}]}
    assert clouds.get("aws").shipped_metric(d) == "requests_waiting"


def test_scale_in_waits_the_downscale_delay():
    doc = render(scaled())
    alarm = doc["resource"]["aws_cloudwatch_metric_alarm"]["scale_in"]
    assert (alarm["evaluation_periods"], alarm["datapoints_to_alarm"]) == (10, 10)  # 600 s
    assert alarm["alarm_actions"] == ["${aws_autoscaling_policy.scale_in.arn}"]
    policy = doc["resource"]["aws_autoscaling_policy"]["scale_in"]
    assert (policy["policy_type"], policy["adjustment_type"]) == ("StepScaling",
                                                                  "ChangeInCapacity")


def test_replicas_that_ship_a_gauge_may_put_that_namespace_only_and_read_their_tags():
    for secrets in (True, False):
        d = scaled("vllm-kv-cache", secrets=secrets)
        resources = render(d)["resource"]
        template = resources["aws_launch_template"]["vm"]
        assert template["metadata_options"]["instance_metadata_tags"] == "enabled"
        assert template["metadata_options"]["http_tokens"] == "required"
        assert template["iam_instance_profile"] == {"arn": "${aws_iam_instance_profile.vm.arn}"}
        statement, = json.loads(resources["aws_iam_role_policy"]["put_metrics"]["policy"])[
            "Statement"]
        assert statement["Action"] == "cloudwatch:PutMetricData"
        assert statement["Condition"] == {
            "StringEquals": {"cloudwatch:namespace": "Servestack/vLLM"}}
        # one role for everything: Session Manager, the API key, the token when there is one
        assert set(resources["aws_iam_role"]) == {"vm"}
        assert set(resources["aws_ssm_parameter"]) == ({"hf_token", "api_key"} if secrets
                                                       else {"api_key"})
        assert set(resources["aws_iam_role_policy"]) == {"read_secrets", "put_metrics"}
        assert "aws_iam_role_policy.put_metrics" in \
            resources["aws_autoscaling_group"]["group"]["depends_on"]
    qps = render(scaled())["resource"]
    assert "instance_metadata_tags" not in qps["aws_launch_template"]["vm"]["metadata_options"]
    assert "put_metrics" not in qps["aws_iam_role_policy"]


def test_spot_group_spans_the_planned_zones_in_private_subnets_beside_its_fallback():
    """A spot group's zones come from the plan (every zone it offers the types on spot in):
    one private subnet each, by zone ID; the on-demand fallback group uses the same subnets,
    and nothing is looked up when the stack is applied."""
    d = scaled()
    doc = render(d)
    subnets = doc["resource"]["aws_subnet"]
    private = [subnets[f"private_{i}"] for i in range(len(d.zones))]
    assert [s["availability_zone_id"] for s in private] == list(d.zones)
    wanted = [f"${{aws_subnet.private_{i}.id}}" for i in range(len(d.zones))]
    groups = doc["resource"]["aws_autoscaling_group"]
    assert groups["group"]["vpc_zone_identifier"] == groups["on_demand"]["vpc_zone_identifier"] \
        == wanted
    assert "aws_ec2_instance_type_offerings" not in doc["data"]
    assert "aws_availability_zones" not in doc["data"]  # two zones or more: the ALB has them
    assert doc["resource"]["aws_lb"]["service"]["subnets"] == \
        [f"${{aws_subnet.public_{i}.id}}" for i in range(len(d.zones))]
    public = render(replace(d, ssh_cidrs=("192.0.2.10/32",)))["resource"]["aws_autoscaling_group"]
    assert public["on_demand"]["vpc_zone_identifier"] == \
        [f"${{aws_subnet.public_{i}.id}}" for i in range(len(d.zones))]


def split(distribution: dict, capacity: int) -> tuple[int, int]:
    """(on-demand, spot) VMs of a group of `capacity` under an instances distribution: the
    base on-demand first, then the percentage of the rest (Auto Scaling API,
    InstancesDistribution)."""
    base = min(distribution["on_demand_base_capacity"], capacity)
    above = capacity - base
    on_demand = base + math.ceil(above * distribution["on_demand_percentage_above_base_capacity"]
                                 / 100)
    return on_demand, capacity - on_demand


def test_spot_plan_keeps_its_base_on_demand_and_grows_in_spot():
    doc = render(scaled())
    distribution = doc["resource"]["aws_autoscaling_group"]["group"][
        "mixed_instances_policy"]["instances_distribution"]
    assert distribution["spot_allocation_strategy"] == "capacity-optimized-prioritized"
    assert [split(distribution, n) for n in (1, 2, 3)] == [(1, 0), (1, 1), (1, 2)]
    od = doc["resource"]["aws_autoscaling_group"]["on_demand"]
    assert split(od["mixed_instances_policy"]["instances_distribution"], 2) == (2, 0)


def test_on_demand_fallback_group_stands_in_for_the_spot_replicas():
    d = scaled()
    resources = render(d)["resource"]
    group, od = (resources["aws_autoscaling_group"][k] for k in ("group", "on_demand"))
    assert (od["min_size"], od["max_size"], od["desired_capacity"]) == \
        (0, "${var.max_replicas - 1}", 0)
    assert od["lifecycle"] == {"ignore_changes": ["desired_capacity"]}
    assert od["wait_for_capacity_timeout"] == "0"
    for same in ("target_group_arns", "vpc_zone_identifier", "health_check_type",
                 "health_check_grace_period", "instance_refresh", "tag"):
        assert od[same] == group[same], same
    assert od["mixed_instances_policy"]["launch_template"] == \
        group["mixed_instances_policy"]["launch_template"]
    assert od["name_prefix"] != group["name_prefix"]
    assert "enabled_metrics" not in od  # the alarms read the spot group's metrics


def test_no_fallback_group_without_dynamic_fallback():
    resources = render(replace(scaled(), dynamic_ondemand_fallback=False))["resource"]
    assert set(resources["aws_autoscaling_group"]) == {"group"}
    assert set(resources["aws_cloudwatch_metric_alarm"]) == {"scale_in"}


# --- driving the generated alarms and policies ----------------------------------------------

SPOT_GROUP = "${aws_autoscaling_group.group.name}"


def scaled_by(resources: dict, group: str) -> list[tuple[Alarm, dict]]:
    """(alarm, policy) pairs whose policy scales the group `group` (a resource address)."""
    policies = {f"${{aws_autoscaling_policy.{k}.arn}}": p
                for k, p in resources["aws_autoscaling_policy"].items()
                if p["autoscaling_group_name"] == f"${{{group}.name}}"}
    return [(Alarm(a), policies[a["alarm_actions"][0]])
            for a in resources["aws_cloudwatch_metric_alarm"].values()
            if a["alarm_actions"][0] in policies]


def spot_group_metrics(desired: int, serving: int, group: str = SPOT_GROUP) -> Metrics:
    """The spot group's group metrics this minute (nothing for any other dimension)."""
    values = {"GroupDesiredCapacity": desired, "GroupInServiceInstances": serving}

    def read(namespace: str, metric: str, dimensions: dict) -> float | None:
        if namespace == "AWS/AutoScaling" and dimensions == {"AutoScalingGroupName": group}:
            return values[metric]
        return None

    return read


# minute -> spot VMs in service of 3 wanted: all there, spot lost (only the on-demand base
# left), one back, all back.
SPOT_SCRIPT = [3] * 10 + [1] * 30 + [2] * 10 + [3] * 40


def drive_fallback(rules: list[tuple[Alarm, dict]], high: int,
                   group: str = SPOT_GROUP) -> list[int]:
    od = Scaled(rules, capacity=0, low=0, high=high)
    return [od.minute(spot_group_metrics(3, serving, group)) for serving in SPOT_SCRIPT]


def assert_fallback_followed_the_deficit(capacity: list[int]) -> None:
    # the deficit (2) must last the upscale delay (120 s: 2 datapoints) before stand-ins launch
    assert capacity[:11] == [0] * 11
    assert capacity[11:40] == [2] * 29  # the deficit: two on-demand VMs
    assert capacity[40:50] == [1] * 10  # one spot VM back: its stand-in leaves
    # no deficit for the downscale delay (600 s: 10 datapoints, minutes 50-59): the last goes
    assert capacity[50:59] == [1] * 9
    assert capacity[59:] == [0] * 31


def test_fallback_group_follows_the_spot_deficit_up_and_back_to_zero():
    d = scaled()
    resources = render(d)["resource"]
    rules = scaled_by(resources, "aws_autoscaling_group.on_demand")
    assert len(rules) == 2
    high = tfvars(d)["max_replicas"] - d.on_demand_base
    assert resources["aws_autoscaling_group"]["on_demand"]["max_size"] == \
        f"${{var.max_replicas - {d.on_demand_base}}}"
    assert_fallback_followed_the_deficit(drive_fallback(rules, high))


def test_fallback_reads_the_spot_groups_metrics_not_another_groups():
    rules = scaled_by(render(scaled())["resource"], "aws_autoscaling_group.on_demand")
    other = "${aws_autoscaling_group.on_demand.name}"
    assert drive_fallback(rules, 2, group=other) == [0] * len(SPOT_SCRIPT)


def test_scale_in_waits_the_delay_then_removes_the_surplus_down_to_min():
    d = scaled()
    resources = render(d)["resource"]
    rules = scaled_by(resources, "aws_autoscaling_group.group")
    assert len(rules) == 1
    group = Scaled(rules, capacity=3, low=d.min_replicas, high=d.max_replicas)

    def minute(requests_per_minute: float | None) -> int:
        def read(namespace: str, metric: str, dimensions: dict) -> float | None:
            if metric == "GroupDesiredCapacity" and dimensions == {
                    "AutoScalingGroupName": SPOT_GROUP}:
                return group.capacity
            if metric == "RequestCount" and dimensions == {
                    "LoadBalancer": "${aws_lb.service.arn_suffix}",
                    "TargetGroup": "${aws_lb_target_group.service.arn_suffix}"}:
                return requests_per_minute
            return None
        return group.minute(read)

    # 4 requests/s need ceil(4 / 2.5) = 2 replicas of the 3: one too many for 10 minutes
    busy = [minute(240) for _ in range(15)]
    assert busy[:9] == [3] * 9 and busy[9:] == [2] * 6
    # no requests at all (the ALB publishes no datapoint): down to min_replicas after 10 min
    idle = [minute(None) for _ in range(12)]
    assert idle[:9] == [2] * 9 and idle[9:] == [1] * 3


@needs_terraform_aws
def test_security_and_scaling_variants_pass_terraform_validate(tmp_path):
    variants = [with_tls(deployment()), with_tls(spot_deployment()),
                replace(spot_deployment(), zones=(f"{spot_deployment().region}a",)),
                replace(deployment(), ssh_cidrs=("192.0.2.10/32",), api_key=None, secret=None),
                scaled(), scaled("vllm-waiting", secrets=False),
                scaled("vllm-kv-cache", spot=False),
                with_tls(replace(scaled(), ssh_cidrs=("192.0.2.10/32",))),
                scaled("vllm-waiting", cache=True)]
    terraform_validate([render(d) for d in variants], tmp_path)


def test_gauge_scale_in_counts_the_load_of_every_serving_replica_and_spares_booting_ones():
    d = scaled("vllm-waiting")
    rules = scaled_by(render(d)["resource"], "aws_autoscaling_group.group")
    group = Scaled(rules, capacity=3, low=d.min_replicas, high=d.max_replicas)

    def minute(waiting: float | None) -> int:
        values = {("AWS/AutoScaling", "GroupDesiredCapacity"): group.capacity,
                  ("AWS/AutoScaling", "GroupInServiceInstances"): 3,
                  ("Servestack/vLLM", "requests_waiting"): waiting}

        def read(namespace: str, metric: str, dimensions: dict) -> float | None:
            assert dimensions == {"AutoScalingGroupName": SPOT_GROUP}
            return values[namespace, metric]
        return group.minute(read)

    # no gauge yet (vLLM still loading on every replica): no datapoint, nothing removed
    assert [minute(None) for _ in range(30)] == [3] * 30
    # 4 waiting on average on 3 replicas: 12 need ceil(12 / 5) = 3, no surplus
    assert [minute(4) for _ in range(30)] == [3] * 30
    # 3 waiting on average: 9 need 2; after the 10-minute delay one replica goes
    assert [minute(3) for _ in range(12)] == [3] * 9 + [2] * 3


# --- user data: the bootstrap gzip'd, then base64 -------------------------------------------
# The golden document (tests/bootstrap/golden/mixtral-aws.yaml) is deployment()'s bootstrap.
GOLDEN = Path(__file__).parents[1] / "bootstrap" / "golden" / "mixtral-aws.yaml"


def sent_user_data(d: Deployment) -> bytes:
    """The launch template's user data as EC2 gets it (base64 removed)."""
    return base64.b64decode(render(d)["resource"]["aws_launch_template"]["vm"]["user_data"])


def test_launch_template_user_data_is_the_golden_document_gzipped():
    sent = sent_user_data(deployment())
    golden = GOLDEN.read_text()
    assert sent[:2] == b"\x1f\x8b"  # gzip's magic, which cloud-init looks for
    assert gzip.decompress(sent).decode() == golden
    assert sent[4:8] == bytes(4)  # no time in the header: every render the same bytes
    assert sent_user_data(deployment()) == sent
    # the limit holds for the bytes sent; the document itself would not fit
    assert len(sent) <= USER_DATA_LIMIT < len(golden.encode())


def test_the_weight_cache_and_a_vllm_metric_fit_together():
    d = scaled("vllm-waiting", cache=True)  # built as the CLI builds it: no refusal
    assert d.weight_cache is not None and d.autoscaling.metric == "vllm-waiting"
    sent = sent_user_data(d)
    files = written_files(gzip.decompress(sent).decode())
    assert gzip.decompress(sent).decode() == render_cloud_init(d)
    assert "/opt/servestack/lib/python/servestack_cache.py" in files
    assert any("servestack-metrics" in path for path in files)
    assert len(sent) <= USER_DATA_LIMIT * 3 // 4  # room left for the spec's setup and run
    assert "weight_cache" in render(d)["resource"]["aws_s3_bucket"]
