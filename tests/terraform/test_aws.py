"""The AWS Terraform output: names per service and stack, rolling replacement, drain time, and
the provider pin (test_render.py runs `terraform validate` on it with the 5.100.0 mirror)."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from servestack import planner
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Deployment, Tls
from servestack.inputs import load_inputs
from servestack.terraform import render
from servestack.terraform.aws import PROVIDER, size_config, sweep_config, sweep_found
from tests.fakes import FROZEN_CATALOG, name_tags


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
    d = spot_deployment()
    assert len(d.zones) == 1
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


PLUGIN_DIR = Path(os.environ.get("SERVESTACK_TF_PLUGIN_DIR", "/opt/tf-plugins"))
AWS_PROVIDER = PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0"


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
@pytest.mark.skipif(not AWS_PROVIDER.is_dir(), reason=f"no hashicorp/aws 5.100.0 in {PLUGIN_DIR}")
def test_tls_api_key_and_network_variants_pass_terraform_validate(tmp_path):
    env = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "CHECKPOINT_DISABLE": "1"}
    variants = [with_tls(deployment()), with_tls(spot_deployment()),
                replace(spot_deployment(), zones=(f"{spot_deployment().region}a",)),
                replace(deployment(), ssh_cidrs=("192.0.2.10/32",), api_key=None, secret=None)]
    main = tmp_path / "main.tf.json"
    main.write_text(json.dumps(render(variants[0])))
    init = subprocess.run(["terraform", "init", "-backend=false", "-input=false", "-no-color",
                           f"-plugin-dir={PLUGIN_DIR}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr
    for d in variants:
        main.write_text(json.dumps(render(d)))
        checked = subprocess.run(["terraform", "validate", "-json", "-no-color"], cwd=tmp_path,
                                 env=env, capture_output=True, text=True, timeout=120)
        report = json.loads(checked.stdout)
        assert report["valid"] and report["warning_count"] == 0, report["diagnostics"]
