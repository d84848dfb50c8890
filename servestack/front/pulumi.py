"""The front as a Pulumi component (`Front`), the same resources terraform.py renders: per pool
a Route 53 health check and a record, or a Global Accelerator with one listener and an endpoint
group per pool region. Imports pulumi_aws: import this module only when a front is built.

Global Accelerator's resources go through a provider of their own in us-west-2 (the API's only
region, see front/aws.py), so the front does not depend on the program's `aws:region`.

A pool known by its stack (`PoolEndpoint.stack`, a service over several pools) is read through
one StackReference per pool: its `lb_host` goes where a literal pool's `host` goes (health
check, record), its `lb_arn` into Global Accelerator's endpoint, and an AWS pool's record is an
alias A record to its ALB (`lb_host` with `lb_zone_id`, the target's health evaluated too).
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws_sdk

from servestack.components import TYPE_PREFIX
from servestack.components.refs import stack_reference
from servestack.deployment.model import OUTPUT_LB_ARN, OUTPUT_LB_HOST, OUTPUT_LB_ZONE_ID

from . import aws
from .build import alias
from .model import FrontPlan, PoolEndpoint, url


def _child(parent: pulumi.Resource, **extra) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **extra)


class Front(pulumi.ComponentResource):
    """One endpoint across the plan's pools; `endpoint` is its URL."""

    endpoint: pulumi.Output[str]
    provider: aws_sdk.Provider | None = None  # Global Accelerator's (us-west-2)

    def __init__(self, name: str, plan: FrontPlan,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:front:Front", name, None, opts)
        self.accelerated: list[pulumi.CustomResource] = []  # the Global Accelerator resources
        # the pools known by their stacks, by pool key
        self.references = {p.key: stack_reference(f"{name}-{p.key}", p.stack, _child(self))
                           for p in plan.pools if p.stack}
        if plan.kind == "route53":
            self.endpoint = self._route53(name, plan)
        else:
            self.endpoint = self._accelerator(name, plan)
        self.register_outputs({"endpoint": self.endpoint})

    def _read(self, pool: PoolEndpoint, output: str, literal: str | None
              ) -> pulumi.Input[str]:
        """One of the pool's load balancer values: its stack's output, or the literal one."""
        if pool.stack is None:
            return literal or ""
        return self.references[pool.key].require_output(output)

    def _check(self, plan: FrontPlan, pool: PoolEndpoint) -> dict[str, Any]:
        """The health check's arguments, probing the pool's address (fqdn or ip_address)."""
        args = aws.health_check(plan, pool)
        host = self._read(pool, OUTPUT_LB_HOST, pool.host)
        return {**args, **{k: host for k in ("fqdn", "ip_address") if k in args}}

    def _record(self, plan: FrontPlan, pool: PoolEndpoint) -> dict[str, Any]:
        """The record's arguments but the routing and the health check: an alias A record to
        an AWS pool's ALB (an alias has no TTL and no values of its own), else the address."""
        args = aws.record(plan, pool)
        host = self._read(pool, OUTPUT_LB_HOST, pool.host)
        if not alias(pool):
            return {**args, "records": [host]}
        target = aws_sdk.route53.RecordAliasArgs(
            name=host, zone_id=self._read(pool, OUTPUT_LB_ZONE_ID, None),
            evaluate_target_health=True)
        return {**{k: v for k, v in args.items() if k not in ("ttl", "records")},
                "aliases": [target]}

    def _route53(self, name: str, plan: FrontPlan) -> pulumi.Output[str]:
        for pool in plan.pools:
            check = aws_sdk.route53.HealthCheck(
                f"{name}-hc-{pool.key}", **self._check(plan, pool), opts=_child(self))
            stem, policy = aws.routing_policy(plan, pool)
            routing = (
                {"latency_routing_policies": [
                    aws_sdk.route53.RecordLatencyRoutingPolicyArgs(**policy)]}
                if stem == "latency" else
                {"weighted_routing_policies": [
                    aws_sdk.route53.RecordWeightedRoutingPolicyArgs(**policy)]})
            aws_sdk.route53.Record(f"{name}-{pool.key}", **self._record(plan, pool),
                                   health_check_id=check.id, **routing, opts=_child(self))
        return pulumi.Output.from_input(url(plan.scheme, plan.domain or "", plan.port))

    def _accelerator(self, name: str, plan: FrontPlan) -> pulumi.Output[str]:
        self.provider = aws_sdk.Provider(f"{name}-ga-api", region=aws.GA_API_REGION,
                                         opts=_child(self))
        in_api_region = _child(self, provider=self.provider)
        accelerator = aws_sdk.globalaccelerator.Accelerator(
            f"{name}-ga", **aws.accelerator(plan), opts=in_api_region)
        self.accelerated.append(accelerator)
        listener = aws_sdk.globalaccelerator.Listener(
            f"{name}-ga-listener", accelerator_arn=accelerator.id, protocol=aws.GA_PROTOCOL,
            port_ranges=[aws_sdk.globalaccelerator.ListenerPortRangeArgs(from_port=p, to_port=p)
                         for p in aws.listener_ports(plan)],
            opts=in_api_region)
        self.accelerated.append(listener)
        for region, pools in aws.regions(plan).items():
            self.accelerated.append(aws_sdk.globalaccelerator.EndpointGroup(
                f"{name}-ga-{region}", listener_arn=listener.id,
                **aws.endpoint_group(region, pools),
                endpoint_configurations=[
                    aws_sdk.globalaccelerator.EndpointGroupEndpointConfigurationArgs(**{
                        **e, "endpoint_id": self._read(pool, OUTPUT_LB_ARN, pool.lb_arn)})
                    for pool, e in zip(pools, aws.endpoints(pools), strict=True)],
                opts=in_api_region))
        before, after = url(plan.scheme, "\0", plan.port).split("\0")
        return pulumi.Output.concat(before, accelerator.dns_name, after)
