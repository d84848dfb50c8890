"""The front's plan from real pool deployments, and every refusal as one line."""

from __future__ import annotations

from dataclasses import replace

import pytest

from servestack.errors import UserError
from servestack.front.build import build_front, latency_region, pool_endpoint, record_type
from servestack.front.model import front_scope, url
from tests.front.pools import (
    DOMAIN,
    ZONE_ID,
    accelerator,
    aws_pools,
    deployments,
    ip_pools,
    route53,
)


def test_a_pool_is_read_from_its_stack_endpoint_and_deployment():
    d = deployments("aws")[0]
    pool = pool_endpoint(d, f"http://lb-1.{d.region}.elb.amazonaws.com:{d.listener_port}")
    assert (pool.cloud, pool.region, pool.scheme, pool.port) == \
        ("aws", d.region, "http", d.listener_port)
    assert pool.host == f"lb-1.{d.region}.elb.amazonaws.com"
    # the load balancers' own probe path: vLLM's /health, which needs no API key
    assert pool.health_path == d.health.path == "/health"
    tls = pool_endpoint(d, "https://eu.llm.example.com")
    assert (tls.scheme, tls.port, tls.host) == ("https", 443, "eu.llm.example.com")


def test_scope_names_the_service_and_the_front_stack_like_a_deployment():
    d = deployments("aws")[0]
    assert front_scope(d.service, d.stack) == d.scope
    assert route53().scope != build_front("route53", "mixtral", aws_pools(), stack="green",
                                          domain=DOMAIN, hosted_zone_id=ZONE_ID).scope


def test_record_types_follow_the_address():
    assert [record_type(p) for p in aws_pools()] == ["CNAME", "CNAME"]
    assert [record_type(p) for p in ip_pools("gcp")] == ["A", "A"]
    assert record_type(replace(ip_pools("gcp")[0], host="2001:db8::1")) == "AAAA"


def test_latency_regions_are_aws_regions():
    aws, other = aws_pools()[0], ip_pools("azure")[0]
    assert latency_region(aws) == aws.region
    assert latency_region(other) is None
    assert latency_region(replace(other, latency_region="us-east-1")) == "us-east-1"


def test_urls_leave_out_the_schemes_own_port():
    assert url("https", DOMAIN, 443) == f"https://{DOMAIN}"
    assert url("http", DOMAIN, 80) == f"http://{DOMAIN}"
    assert url("http", DOMAIN, 8080) == f"http://{DOMAIN}:8080"


REFUSED = [
    (lambda: build_front("cloudfront", "s", aws_pools()), "--front must be one of"),
    (lambda: build_front("route53", "s", aws_pools(), routing="geo", domain=DOMAIN,
                         hosted_zone_id=ZONE_ID), "--routing must be one of"),
    (lambda: build_front("route53", "s", (), domain=DOMAIN, hosted_zone_id=ZONE_ID),
     "at least one pool"),
    (lambda: build_front("route53", "s", aws_pools()), "needs --domain NAME and --hosted-zone-id"),
    (lambda: build_front("route53", "s", aws_pools(), domain=DOMAIN),
     "needs --domain NAME and --hosted-zone-id"),
    (lambda: build_front("route53", "s", aws_pools(), domain="Not A Name",
                         hosted_zone_id=ZONE_ID), "is not a DNS name"),
    (lambda: build_front("route53", "s", aws_pools(), domain=DOMAIN,
                         hosted_zone_id="/hostedzone/x"), "is not a Route 53 hosted zone id"),
    (lambda: route53(pools=(aws_pools()[0], ip_pools("gcp")[0])),
     "all be DNS names or all IPs of one family"),
    (lambda: route53(pools=(aws_pools()[0], aws_pools()[0])), "one pool per region"),
    (lambda: route53(pools=(aws_pools()[0], replace(aws_pools()[1], port=8080))),
     "share one scheme and port"),
    (lambda: route53(pools=(aws_pools()[0], replace(aws_pools()[1], scheme="https"))),
     "share one scheme and port"),
    (lambda: route53(pools=(replace(aws_pools()[0], weight=256),)), "weight 256 is not 0-255"),
    (lambda: route53(pools=(replace(aws_pools()[0], health_path="health"),)),
     "must start with /"),
    (lambda: route53("latency", ip_pools("azure")), "latency routing measures from AWS regions"),
    (lambda: accelerator(ip_pools("gcp")), "global-accelerator needs AWS pools with their ALB"),
    (lambda: accelerator((replace(aws_pools()[0], lb_arn=None),)),
     "global-accelerator needs AWS pools with their ALB"),
    (lambda: accelerator((replace(aws_pools()[0], lb_arn=aws_pools()[1].lb_arn),)),
     "is not an Application Load Balancer ARN in us-east-1"),
    (lambda: build_front("global-accelerator", "s", aws_pools(), domain=DOMAIN),
     "takes no --domain"),
]


@pytest.mark.parametrize(("build", "says"), REFUSED)
def test_refusals_are_one_line_user_errors(build, says):
    with pytest.raises(UserError) as refused:
        build()
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_what_each_front_accepts():
    assert route53().pools == aws_pools((3, 1))
    assert route53(pools=ip_pools("gcp") + ip_pools("azure")[1:2]).kind == "route53"
    assert route53("latency", aws_pools()).routing == "latency"
    nearest = ("us-east-2", "eu-central-1")  # AWS regions near GCP us-central1, europe-west4
    gcp = tuple(replace(p, latency_region=r) for p, r in zip(ip_pools("gcp"), nearest, strict=True))
    assert route53("latency", gcp).routing == "latency"
    https = tuple(replace(p, scheme="https", port=443) for p in aws_pools())
    assert accelerator(https).scheme == "https"
