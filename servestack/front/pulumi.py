"""The front as a Pulumi component (`Front`), the same resources terraform.py renders: per pool
a Route 53 health check and a record, or a Global Accelerator with one listener and an endpoint
group per pool region. Imports pulumi_aws: import this module only when a front is built.

Global Accelerator's resources go through a provider of their own in us-west-2 (the API's only
region, see front/aws.py), so the front does not depend on the program's `aws:region`.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws_sdk

from servestack.components import TYPE_PREFIX

from . import aws
from .model import FrontPlan, url


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
        if plan.kind == "route53":
            self.endpoint = self._route53(name, plan)
        else:
            self.endpoint = self._accelerator(name, plan)
        self.register_outputs({"endpoint": self.endpoint})

    def _route53(self, name: str, plan: FrontPlan) -> pulumi.Output[str]:
        for pool in plan.pools:
            check = aws_sdk.route53.HealthCheck(
                f"{name}-hc-{pool.key}", **aws.health_check(plan, pool), opts=_child(self))
            stem, policy = aws.routing_policy(plan, pool)
            routing = (
                {"latency_routing_policies": [
                    aws_sdk.route53.RecordLatencyRoutingPolicyArgs(**policy)]}
                if stem == "latency" else
                {"weighted_routing_policies": [
                    aws_sdk.route53.RecordWeightedRoutingPolicyArgs(**policy)]})
            aws_sdk.route53.Record(f"{name}-{pool.key}", **aws.record(plan, pool),
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
                    aws_sdk.globalaccelerator.EndpointGroupEndpointConfigurationArgs(**e)
                    for e in aws.endpoints(pools)],
                opts=in_api_region))
        before, after = url(plan.scheme, "\0", plan.port).split("\0")
        return pulumi.Output.concat(before, accelerator.dns_name, after)
