"""The AWS Terraform output: names per service and stack, rolling replacement, drain time, and
the provider pin (test_render.py runs `terraform validate` on it with the 5.100.0 mirror)."""

from __future__ import annotations

import itertools
import re
from functools import cache

import pytest

from servestack import planner
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Deployment
from servestack.inputs import load_inputs
from servestack.terraform import render
from servestack.terraform.aws import PROVIDER, size_config, sweep_config
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
                     "aws_iam_role", "aws_iam_instance_profile"):
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
