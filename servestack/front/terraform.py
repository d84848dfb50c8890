"""The front as Terraform JSON: `render_front(plan)` returns a whole main.tf.json, with the
hashicorp/aws provider pinned as servestack/terraform/aws.py pins it.

route53: per pool an `aws_route53_health_check` on the pool's health path and an
`aws_route53_record` (set identifier, that health check, weighted or latency routing) under the
user's domain. global-accelerator: an `aws_globalaccelerator_accelerator`, one TCP listener, and
per pool region an `aws_globalaccelerator_endpoint_group` with the pools' ALBs. Arguments and
timings come from front/aws.py, which the Pulumi component reads too.

A pool known by its stack (`PoolEndpoint.stack`) is read by reference: one
`data "terraform_remote_state"` per such pool reads the local state of the pool's folder, which
sits next to the front's (servestack.terraform.sibling_state), and the pool's host, ALB ARN and
hosted zone are that state's `lb_host`, `lb_arn` and `lb_zone_id` outputs. An ALB read that way
gets an alias A record (front.aws.alias_record). A pool with a literal host keeps it.

Destroy order: every endpoint group refers to the listener and the listener to the accelerator,
so Terraform removes the endpoint groups first, then the listener, then the accelerator (its
delete disables it first: the provider's aws_globalaccelerator_accelerator does). What Global
Accelerator leaves: for an ALB endpoint with client IP preservation it creates an elastic
network interface per subnet of the ALB and a security group named "GlobalAccelerator" in the
pool's VPC (Global Accelerator Developer Guide, "Best practices for client IP address
preservation"); they are the service's, not in any Terraform state. The interfaces go once no
endpoint uses them; whether and when the security group goes was not confirmed from the guide
here, and a group left in the VPC makes the pool's VPC delete fail (DependencyViolation). So
the front is destroyed before the pools (servestack.service's order), and nothing here deletes
a group it did not create: when a pool destroy still fails on its VPC, that group is the one
to look for (delete it by hand, or retry the destroy once AWS has removed it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from servestack.deployment.model import OUTPUT_LB_ARN, OUTPUT_LB_HOST, OUTPUT_LB_ZONE_ID
from servestack.terraform import TERRAFORM_VERSION, expr, finish, merge, sibling_state, template
from servestack.terraform.aws import PROVIDER

from . import aws
from .build import alias
from .model import OUTPUT_ENDPOINT, FrontPlan, PoolEndpoint, url

REMOTE_STATE = "terraform_remote_state"


def render_front(plan: FrontPlan) -> dict[str, Any]:
    """The front's whole configuration; apply it once the pools are up."""
    local, requirement = PROVIDER
    resolved = replace(plan, pools=tuple(by_reference(p) for p in plan.pools))
    body = route53(resolved) if plan.kind == "route53" else accelerator(resolved)
    states = {p.key: sibling_state(p.stack) for p in plan.pools if p.stack}
    return finish({
        "terraform": {"required_version": TERRAFORM_VERSION,
                      "required_providers": {local: requirement}},
        "provider": {"aws": {"region": aws.provider_region(plan)}},
        **({"data": {REMOTE_STATE: states}} if states else {}),
        **body,
    })


def pool_output(pool: PoolEndpoint, name: str) -> str:
    """The expression of one output of the pool's stack."""
    return expr(f"data.{REMOTE_STATE}.{pool.key}.outputs.{name}")


def by_reference(pool: PoolEndpoint) -> PoolEndpoint:
    """The pool with its host (and an ALB's ARN) as expressions of its stack's outputs; a
    pool with a literal host as it is."""
    if pool.stack is None:
        return pool
    arn = pool_output(pool, OUTPUT_LB_ARN) if alias(pool) else pool.lb_arn
    return replace(pool, host=pool_output(pool, OUTPUT_LB_HOST), lb_arn=arn)


def route53(plan: FrontPlan) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    records: dict[str, Any] = {}
    for pool in plan.pools:
        checks[pool.key] = aws.health_check(plan, pool)
        stem, policy = aws.routing_policy(plan, pool)
        target = aws.alias_record(plan, pool, pool_output(pool, OUTPUT_LB_ZONE_ID)) \
            if alias(pool) else aws.record(plan, pool)
        records[pool.key] = {
            **target,
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
