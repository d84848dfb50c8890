"""The front as Terraform JSON: `render_front(plan)` returns a whole main.tf.json, with the
hashicorp/aws provider pinned as servestack/terraform/aws.py pins it.

route53: per pool an `aws_route53_health_check` on the pool's health path and an
`aws_route53_record` (set identifier, that health check, weighted or latency routing) under the
user's domain. global-accelerator: an `aws_globalaccelerator_accelerator`, one TCP listener, and
per pool region an `aws_globalaccelerator_endpoint_group` with the pools' ALBs. Arguments and
timings come from front/aws.py, which the Pulumi component reads too.
"""

from __future__ import annotations

from typing import Any

from servestack.terraform import TERRAFORM_VERSION, expr, finish, merge, template
from servestack.terraform.aws import PROVIDER

from . import aws
from .model import OUTPUT_ENDPOINT, FrontPlan, url


def render_front(plan: FrontPlan) -> dict[str, Any]:
    """The front's whole configuration; apply it once the pools are up."""
    local, requirement = PROVIDER
    body = route53(plan) if plan.kind == "route53" else accelerator(plan)
    return finish({
        "terraform": {"required_version": TERRAFORM_VERSION,
                      "required_providers": {local: requirement}},
        "provider": {"aws": {"region": aws.provider_region(plan)}},
        **body,
    })


def route53(plan: FrontPlan) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    records: dict[str, Any] = {}
    for pool in plan.pools:
        checks[pool.key] = aws.health_check(plan, pool)
        stem, policy = aws.routing_policy(plan, pool)
        records[pool.key] = {
            **aws.record(plan, pool),
            "health_check_id": expr(f"aws_route53_health_check.{pool.key}.id"),
            f"{stem}_routing_policy": policy}
    domain = plan.domain or ""  # build.py requires one for route53
    return {"resource": {"aws_route53_health_check": checks, "aws_route53_record": records},
            "output": {OUTPUT_ENDPOINT: {"value": url(plan.scheme, domain, plan.port),
                                         "description": "the front's URL"}}}


def accelerator(plan: FrontPlan) -> dict[str, Any]:
    groups = {}
    for region, pools in aws.regions(plan).items():
        groups[region] = {
            "listener_arn": expr("aws_globalaccelerator_listener.front.id"),
            **aws.endpoint_group(region, pools),
            "endpoint_configuration": aws.endpoints(pools)}
    listener = {"accelerator_arn": expr("aws_globalaccelerator_accelerator.front.id"),
                "protocol": aws.GA_PROTOCOL,
                "port_range": [{"from_port": p, "to_port": p} for p in aws.listener_ports(plan)]}
    resources = merge(
        {"aws_globalaccelerator_accelerator": {"front": aws.accelerator(plan)}},
        {"aws_globalaccelerator_listener": {"front": listener}},
        {"aws_globalaccelerator_endpoint_group": groups})
    before, after = url(plan.scheme, "\0", plan.port).split("\0")
    endpoint = template(before, expr("aws_globalaccelerator_accelerator.front.dns_name"), after)
    return {"resource": resources,
            "output": {OUTPUT_ENDPOINT: {"value": endpoint, "description": "the front's URL"}}}
