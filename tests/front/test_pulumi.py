"""The front as a Pulumi component under the mock runtime (servestack.pulumi.preview.record):
its real resource inputs, and the same front as the Terraform renderer's, argument for argument.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pulumi
import pytest

from servestack.front.model import FrontPlan
from servestack.front.pulumi import Front
from servestack.front.terraform import render_front
from servestack.pulumi.preview import Recording, record
from tests.front.pools import DOMAIN, ZONE_ID, accelerator, aws_pools, ip_pools, route53

HEALTH_CHECK = "aws:route53/healthCheck:HealthCheck"
RECORD = "aws:route53/record:Record"
ACCELERATOR = "aws:globalaccelerator/accelerator:Accelerator"
LISTENER = "aws:globalaccelerator/listener:Listener"
GROUP = "aws:globalaccelerator/endpointGroup:EndpointGroup"
PROVIDER = "pulumi:providers:aws"


def recorded(plan: FrontPlan) -> tuple[Recording, Front]:
    made: list[Front] = []

    def program() -> None:
        front = Front("front", plan)
        made.append(front)
        pulumi.export("endpoint", front.endpoint)

    return record(program), made[0]


def https(pools):
    return tuple(replace(p, scheme="https", port=443) for p in pools)


def test_route53_front_records_a_checked_record_per_pool():
    recording, _ = recorded(route53())
    checks = {r.name: r for r in recording.of_type(HEALTH_CHECK)}
    records = {r.name: r for r in recording.of_type(RECORD)}
    for pool, weight in zip(aws_pools(), (3, 1), strict=True):
        check = checks[f"front-hc-{pool.key}"]
        assert check.inputs["type"] == "HTTP" and check.inputs["fqdn"] == pool.host
        assert (check.inputs["port"], check.inputs["resourcePath"]) == (80, "/health")
        assert (check.inputs["requestInterval"], check.inputs["failureThreshold"]) == (10, 3)
        rec = records[f"front-{pool.key}"]
        assert rec.inputs["healthCheckId"] == check.id  # its own pool's check
        assert rec.inputs["weightedRoutingPolicies"] == [{"weight": weight}]
        assert (rec.inputs["zoneId"], rec.inputs["name"], rec.inputs["type"]) == \
            (ZONE_ID, DOMAIN, "CNAME")
        assert (rec.inputs["setIdentifier"], rec.inputs["ttl"]) == (pool.key, 60)
        assert rec.inputs["records"] == [pool.host]
    assert all(r.parent and r.parent.endswith("::front") for r in recording.resources
               if r.custom)
    assert recording.outputs["endpoint"] == f"http://{DOMAIN}"
    assert not recording.of_type(PROVIDER)  # Route 53 is global: the program's provider


def test_route53_latency_records():
    recording, _ = recorded(route53("latency"))
    assert [r.inputs["latencyRoutingPolicies"] for r in recording.of_type(RECORD)] in (
        [[{"region": "us-east-1"}], [{"region": "us-east-2"}]],
        [[{"region": "us-east-2"}], [{"region": "us-east-1"}]])  # mocks record in any order
    assert not any("weightedRoutingPolicies" in r.inputs for r in recording.of_type(RECORD))


def test_accelerator_front_goes_through_a_us_west_2_provider():
    recording, front = recorded(accelerator(https(aws_pools())))
    provider = recording.one(PROVIDER)
    assert provider.inputs["region"] == "us-west-2"
    assert front.provider is not None
    for resource in (ACCELERATOR, LISTENER, GROUP):
        assert recording.of_type(resource)
    # every Global Accelerator resource is registered with that provider (the SDK keeps the
    # provider a resource was given on `_provider`)
    assert len(front.accelerated) == 4
    assert all(r._provider is front.provider for r in front.accelerated)
    listener = recording.one(LISTENER)
    assert listener.inputs["protocol"] == "TCP"
    assert listener.inputs["portRanges"] == [{"fromPort": 80, "toPort": 80},
                                             {"fromPort": 443, "toPort": 443}]
    assert listener.inputs["acceleratorArn"] == recording.one(ACCELERATOR).id
    groups = {r.inputs["endpointGroupRegion"]: r for r in recording.of_type(GROUP)}
    for pool in aws_pools():
        group = groups[pool.region].inputs
        assert group["listenerArn"] == listener.id
        assert (group["healthCheckProtocol"], group["healthCheckPort"],
                group["healthCheckPath"]) == ("HTTPS", 443, "/health")
        assert (group["healthCheckIntervalSeconds"], group["thresholdCount"],
                group["trafficDialPercentage"]) == (10, 3, 100)
        assert group["endpointConfigurations"] == [
            {"endpointId": pool.lb_arn, "weight": 1, "clientIpPreservationEnabled": True}]
    assert recording.outputs["endpoint"] == "https://front-ga.preview.invalid"


# --- the engines agree ------------------------------------------------------------------------

# Terraform's block names where Pulumi's list arguments are plural.
BLOCKS = {"weighted_routing_policies": "weighted_routing_policy",
          "latency_routing_policies": "latency_routing_policy", "port_ranges": "port_range",
          "endpoint_configurations": "endpoint_configuration"}
ONE_BLOCK = ("weighted_routing_policy", "latency_routing_policy")  # max one: JSON object
REFERENCES = ("health_check_id", "listener_arn", "accelerator_arn")  # compared as links


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def as_terraform(inputs: dict[str, Any]) -> dict[str, Any]:
    """Pulumi wire inputs spelled as the Terraform renderer spells them."""
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        name = BLOCKS.get(snake(key), snake(key))
        if name in REFERENCES:
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = [as_terraform(v) for v in value]
            value = value[0] if name in ONE_BLOCK else value
        out[name] = value if key != "tags" else dict(value)
    return out


def terraform_bodies(plan: FrontPlan) -> dict[str, list[dict[str, Any]]]:
    resources = render_front(plan)["resource"]
    return {kind: sorted(({k: v for k, v in body.items() if k not in REFERENCES}
                          for body in bodies.values()), key=canonical)
            for kind, bodies in resources.items()}


def pulumi_bodies(plan: FrontPlan) -> dict[str, list[dict[str, Any]]]:
    recording, _ = recorded(plan)
    kinds = {HEALTH_CHECK: "aws_route53_health_check", RECORD: "aws_route53_record",
             ACCELERATOR: "aws_globalaccelerator_accelerator",
             LISTENER: "aws_globalaccelerator_listener",
             GROUP: "aws_globalaccelerator_endpoint_group"}
    found: dict[str, list[dict[str, Any]]] = {}
    for token, kind in kinds.items():
        bodies = [as_terraform(r.inputs) for r in recording.of_type(token)]
        if bodies:
            found[kind] = sorted(bodies, key=canonical)
    return found


@pytest.mark.parametrize("plan", [
    route53(), route53("latency"), route53(pools=ip_pools("gcp")),
    route53(pools=https(aws_pools())), accelerator(), accelerator(https(aws_pools())),
    accelerator(tuple(replace(p, port=8080, health_path="/ready") for p in aws_pools((7, 0)))),
], ids=["weighted", "latency", "ip", "https", "ga", "ga-https", "ga-moved"])
def test_both_engines_build_the_same_front(plan):
    assert pulumi_bodies(plan) == terraform_bodies(plan)
