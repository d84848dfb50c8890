"""The front's Terraform JSON: real arguments and values per pool, the timing that takes a
failing pool out of rotation within a minute, and `terraform validate` with the offline AWS
provider 5.100.0 (the same skip rules as tests/terraform/test_aws.py)."""

from __future__ import annotations

from dataclasses import replace

from servestack.front import aws
from servestack.front.terraform import render_front
from servestack.terraform.aws import PROVIDER
from tests.fakes import needs_terraform_aws, terraform_validate
from tests.front.pools import (
    DOMAIN,
    ZONE_ID,
    accelerator,
    aws_pools,
    ip_pools,
    route53,
    stack_pools,
)


def https(pools):
    return tuple(replace(p, scheme="https", port=443) for p in pools)


def test_failing_pool_leaves_route53_answers_within_a_minute():
    # a failed HTTP(S) check: 4 s to connect + 2 s to answer, then the 10 s interval
    assert aws.FAILURE_THRESHOLD == 3
    assert aws.FAILURE_THRESHOLD * (aws.REQUEST_INTERVAL + aws.CHECK_TIMEOUT) == 48 <= 60
    assert (aws.FAILURE_THRESHOLD + 1) * (aws.REQUEST_INTERVAL + aws.CHECK_TIMEOUT) > 60


def test_route53_checks_each_pool_on_its_health_path():
    pools = aws_pools((3, 1))
    checks = render_front(route53())["resource"]["aws_route53_health_check"]
    assert list(checks) == [p.key for p in pools] == ["aws-us-east-1", "aws-us-east-2"]
    for pool in pools:
        assert checks[pool.key] == {
            "type": "HTTP", "fqdn": pool.host, "port": 80, "resource_path": "/health",
            "request_interval": 10, "failure_threshold": 3,
            "tags": {"servestack-service": "mixtral", "servestack-front": "route53",
                     "managed-by": "servestack", "Name": f"{route53().scope}-{pool.key}"}}


def test_route53_weighted_records_one_per_pool_tied_to_its_check():
    doc = render_front(route53())
    records = doc["resource"]["aws_route53_record"]
    for pool, weight in zip(aws_pools(), (3, 1), strict=True):
        assert records[pool.key] == {
            "zone_id": ZONE_ID, "name": DOMAIN, "type": "CNAME", "ttl": 60,
            "records": [pool.host], "set_identifier": pool.key,
            "health_check_id": f"${{aws_route53_health_check.{pool.key}.id}}",
            "weighted_routing_policy": {"weight": weight}}
    assert doc["output"]["endpoint"]["value"] == f"http://{DOMAIN}"
    # Route 53 is global: the provider only needs a region to sign its calls
    assert doc["provider"] == {"aws": {"region": "us-east-1"}}
    assert doc["terraform"]["required_providers"] == {PROVIDER[0]: PROVIDER[1]}


def test_route53_latency_records_name_each_pools_aws_region():
    records = render_front(route53("latency"))["resource"]["aws_route53_record"]
    assert [r["latency_routing_policy"] for r in records.values()] == \
        [{"region": "us-east-1"}, {"region": "us-east-2"}]
    assert not any("weighted_routing_policy" in r for r in records.values())


def test_route53_over_ip_pools_uses_a_records_and_ip_checks():
    pools = ip_pools("gcp")
    doc = render_front(route53(pools=pools))["resource"]
    assert [r["type"] for r in doc["aws_route53_record"].values()] == ["A", "A"]
    assert [r["records"] for r in doc["aws_route53_record"].values()] == \
        [["203.0.113.10"], ["203.0.113.11"]]
    checks = list(doc["aws_route53_health_check"].values())
    assert [c["ip_address"] for c in checks] == ["203.0.113.10", "203.0.113.11"]
    assert not any("fqdn" in c for c in checks)


def test_route53_over_https_pools_checks_https_with_sni():
    doc = render_front(route53(pools=https(aws_pools())))
    for check in doc["resource"]["aws_route53_health_check"].values():
        assert (check["type"], check["port"], check["enable_sni"]) == ("HTTPS", 443, True)
    assert doc["output"]["endpoint"]["value"] == f"https://{DOMAIN}"


def test_accelerator_listens_on_the_pools_port_and_groups_each_region():
    doc = render_front(accelerator())
    resources = doc["resource"]
    # the Global Accelerator API answers in us-west-2 only
    assert doc["provider"] == {"aws": {"region": "us-west-2"}}
    assert resources["aws_globalaccelerator_accelerator"]["front"] == {
        "name": f"{accelerator().scope}-front", "ip_address_type": "IPV4", "enabled": True,
        "tags": {"servestack-service": "mixtral", "servestack-front": "global-accelerator",
                 "managed-by": "servestack", "Name": f"{accelerator().scope}-front"}}
    assert resources["aws_globalaccelerator_listener"]["front"] == {
        "accelerator_arn": "${aws_globalaccelerator_accelerator.front.id}", "protocol": "TCP",
        "port_range": [{"from_port": 80, "to_port": 80}]}
    groups = resources["aws_globalaccelerator_endpoint_group"]
    for pool, weight in zip(aws_pools(), (3, 1), strict=True):
        assert groups[pool.region] == {
            "listener_arn": "${aws_globalaccelerator_listener.front.id}",
            "endpoint_group_region": pool.region, "health_check_protocol": "HTTP",
            "health_check_port": 80, "health_check_path": "/health",
            "health_check_interval_seconds": 10, "threshold_count": 3,
            "traffic_dial_percentage": 100,
            "endpoint_configuration": [{"endpoint_id": pool.lb_arn, "weight": weight,
                                        "client_ip_preservation_enabled": True}]}
    assert doc["output"]["endpoint"]["value"] == \
        "http://${aws_globalaccelerator_accelerator.front.dns_name}"


def test_accelerator_over_https_pools_also_passes_their_redirect_port():
    doc = render_front(accelerator(https(aws_pools())))
    listener = doc["resource"]["aws_globalaccelerator_listener"]["front"]
    assert listener["port_range"] == [{"from_port": 80, "to_port": 80},
                                      {"from_port": 443, "to_port": 443}]
    groups = doc["resource"]["aws_globalaccelerator_endpoint_group"].values()
    assert {(g["health_check_protocol"], g["health_check_port"]) for g in groups} == \
        {("HTTPS", 443)}
    assert doc["output"]["endpoint"]["value"] == \
        "https://${aws_globalaccelerator_accelerator.front.dns_name}"


def test_a_pool_on_another_port_keeps_it_in_the_url():
    pools = tuple(replace(p, port=8080) for p in aws_pools())
    assert render_front(route53(pools=pools))["output"]["endpoint"]["value"] == \
        f"http://{DOMAIN}:8080"
    listener = render_front(accelerator(pools))["resource"]["aws_globalaccelerator_listener"]
    assert listener["front"]["port_range"] == [{"from_port": 8080, "to_port": 8080}]


def test_template_text_from_pools_is_never_evaluated():
    pools = tuple(replace(p, health_path="/health?x=${path.module}") for p in aws_pools())
    checks = render_front(route53(pools=pools))["resource"]["aws_route53_health_check"]
    assert {c["resource_path"] for c in checks.values()} == {"/health?x=$${path.module}"}


def test_pools_known_by_stack_are_read_from_their_states():
    aws, gcp = stack_pools("aws")[0], stack_pools("gcp")[1]
    doc = render_front(route53(pools=(aws, gcp)))
    states = doc["data"]["terraform_remote_state"]
    assert states == {p.key: {"backend": "local",
                              "config": {"path": f"../{p.stack}/terraform.tfstate"}}
                      for p in (aws, gcp)}
    records = doc["resource"]["aws_route53_record"]
    aws_out = f"data.terraform_remote_state.{aws.key}.outputs"
    assert records[aws.key] == {
        "zone_id": ZONE_ID, "name": DOMAIN, "type": "A", "set_identifier": aws.key,
        "alias": {"name": f"${{{aws_out}.lb_host}}", "zone_id": f"${{{aws_out}.lb_zone_id}}",
                  "evaluate_target_health": True},
        "health_check_id": f"${{aws_route53_health_check.{aws.key}.id}}",
        "weighted_routing_policy": {"weight": aws.weight}}
    gcp_host = f"${{data.terraform_remote_state.{gcp.key}.outputs.lb_host}}"
    assert (records[gcp.key]["type"], records[gcp.key]["records"]) == ("A", [gcp_host])
    checks = doc["resource"]["aws_route53_health_check"]
    assert checks[aws.key]["fqdn"] == f"${{{aws_out}.lb_host}}"
    assert checks[gcp.key]["ip_address"] == gcp_host


def test_a_literal_pool_beside_stack_pools_keeps_its_host():
    literal = ip_pools("azure")[0]
    doc = render_front(route53(pools=(stack_pools("gcp")[0], literal)))
    assert doc["resource"]["aws_route53_record"][literal.key]["records"] == [literal.host]
    assert set(doc["data"]["terraform_remote_state"]) == {stack_pools("gcp")[0].key}


def test_accelerator_endpoints_are_the_pools_lb_arn_outputs():
    groups = render_front(accelerator(stack_pools("aws")))["resource"][
        "aws_globalaccelerator_endpoint_group"]
    for pool in stack_pools("aws"):
        (endpoint,) = groups[pool.region]["endpoint_configuration"]
        assert endpoint["endpoint_id"] == \
            f"${{data.terraform_remote_state.{pool.key}.outputs.lb_arn}}"


@needs_terraform_aws
def test_every_front_passes_terraform_validate(tmp_path):
    variants = [route53(), route53("latency"), route53(pools=ip_pools("azure")),
                route53(pools=https(aws_pools())), accelerator(),
                accelerator(https(aws_pools())), accelerator(stack_pools("aws")),
                route53(pools=(stack_pools("aws")[0], stack_pools("gcp")[1])),
                route53("latency", stack_pools("aws"))]
    terraform_validate([render_front(plan) for plan in variants], tmp_path)
