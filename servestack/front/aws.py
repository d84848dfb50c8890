"""Route 53 and Global Accelerator: the facts a front's timings rest on, and the argument dicts
both engines share (pulumi_aws's Python names are the Terraform provider's argument names for
these resources: route53.HealthCheck / aws_route53_health_check, route53.Record /
aws_route53_record, globalaccelerator.* / aws_globalaccelerator_*). No SDK imports.

How fast a failing pool leaves rotation:
- Route 53 health checkers probe every `REQUEST_INTERVAL` s (10 or 30 are the only values); an
  HTTP(S) check fails when the TCP connection takes over 4 s or the answer over 2 s more, and a
  checker calls the endpoint unhealthy after `FAILURE_THRESHOLD` consecutive failures (1-10).
  One failed check costs at most interval + 6 s = 16 s, so 3 of them fit in a minute (48 s at
  worst, 30 s when the pool refuses at once): `failure_threshold` is computed that way. Route 53
  then stops answering with that pool's record (when 18% of the checkers or fewer see it
  healthy); a resolver that cached the answer keeps it up to `TTL` (60 s) longer.
  Sources: Route 53 Developer Guide, "How Amazon Route 53 determines whether a health check is
  healthy"; the API's HealthCheckConfig (RequestInterval 10/30, FailureThreshold 1-10).
- Global Accelerator checks EC2 / Elastic IP endpoints itself (interval 10 or 30 s, threshold
  1-10); for an ALB endpoint it uses the ALB's own target health instead (the pools' target
  groups: every 10 s, unhealthy after 3). Its static anycast IPs do not wait on DNS caches.
  Source: Global Accelerator Developer Guide, "Endpoint groups", "Health check options".
"""

from __future__ import annotations

from typing import Any

from .build import latency_region, record_type
from .model import FrontPlan, PoolEndpoint

REQUEST_INTERVAL = 10  # seconds: Route 53's "fast" interval (the other is 30)
CHECK_TIMEOUT = 4 + 2  # seconds: connect within 4 s, first answer within 2 s (HTTP/HTTPS)
LEAVE_WITHIN = 60  # seconds: the bound for a failing pool to leave rotation
FAILURE_THRESHOLD = LEAVE_WITHIN // (REQUEST_INTERVAL + CHECK_TIMEOUT)  # = 3
TTL = 60  # seconds: how long resolvers may keep a record that has left rotation
GA_INTERVAL = 10  # seconds (10 or 30)
GA_THRESHOLD = FAILURE_THRESHOLD  # 3 x 10 s: 30 s, as the pools' own target groups
TRAFFIC_DIAL = 100  # every region's group takes its full share
# Global Accelerator's API lives in us-west-2 only (AWS General Reference; the provider also
# sends its calls there in the commercial partition: terraform-provider-aws
# internal/service/globalaccelerator/service_package.go). The front's provider says so itself,
# so neither engine depends on that detail.
GA_API_REGION = "us-west-2"
# Route 53 is global; its API is answered from us-east-1, and the provider needs a region.
ROUTE53_API_REGION = "us-east-1"
GA_PROTOCOL = "TCP"  # TCP passes HTTP and TLS through to the ALB untouched
IP_ADDRESS_TYPE = "IPV4"
REDIRECT_PORT = 80  # an HTTPS pool's ALB also listens on 80 (its redirect to HTTPS)


def provider_region(plan: FrontPlan) -> str:
    return ROUTE53_API_REGION if plan.kind == "route53" else GA_API_REGION


def tags(plan: FrontPlan, name: str) -> dict[str, str]:
    return {**plan.tags, "Name": name}


def health_check(plan: FrontPlan, pool: PoolEndpoint) -> dict[str, Any]:
    """aws_route53_health_check / route53.HealthCheck arguments for one pool: its load
    balancer's health path (vLLM's /health answers without the API key)."""
    address = {"ip_address": pool.host} if pool.ip_version else {"fqdn": pool.host}
    sni = {"enable_sni": True} if pool.scheme == "https" and not pool.ip_version else {}
    return {"type": pool.scheme.upper(), **address, "port": pool.port,
            "resource_path": pool.health_path, "request_interval": REQUEST_INTERVAL,
            "failure_threshold": FAILURE_THRESHOLD, **sni,
            "tags": tags(plan, f"{plan.scope}-{pool.key}")}


def record(plan: FrontPlan, pool: PoolEndpoint) -> dict[str, Any]:
    """aws_route53_record arguments but the routing policy and the health check id."""
    return {"zone_id": plan.hosted_zone_id, "name": plan.domain, "type": record_type(pool),
            "ttl": TTL, "records": [pool.host], "set_identifier": pool.key}


def alias_record(plan: FrontPlan, pool: PoolEndpoint, zone_id: str) -> dict[str, Any]:
    """An ALB pool's record (build.alias): an alias A record to the ALB's DNS name in the
    ALB's own hosted zone (`zone_id`), but the routing policy and the health check id.

    Route 53's rules, followed here: an alias record has no TTL and no values of its own
    (the provider's `alias` conflicts with `ttl` and `records`); a weighted or latency alias
    record takes a set identifier, a health check and "evaluate target health" like any other
    of its group (Route 53 Developer Guide, "Values specific for weighted alias records" and
    "... latency alias records"), and every record of a group shares name and type, so the
    ALB's alias is an A record next to the IP pools' A records. With evaluate_target_health
    an ALB counts as healthy when every target group with targets has a healthy one (Route 53
    API, AliasTarget.EvaluateTargetHealth); the health check on the pool's /health is the
    same proof the IP pools give."""
    return {"zone_id": plan.hosted_zone_id, "name": plan.domain, "type": record_type(pool),
            "set_identifier": pool.key,
            "alias": {"name": pool.host, "zone_id": zone_id, "evaluate_target_health": True}}


def routing_policy(plan: FrontPlan, pool: PoolEndpoint) -> tuple[str, dict[str, Any]]:
    """(argument stem, block): ("weighted", {"weight": w}) or ("latency", {"region": r})."""
    if plan.routing == "latency":
        return "latency", {"region": latency_region(pool)}
    return "weighted", {"weight": pool.weight}


def accelerator(plan: FrontPlan) -> dict[str, Any]:
    name = f"{plan.scope}-front"
    return {"name": name, "ip_address_type": IP_ADDRESS_TYPE, "enabled": True,
            "tags": tags(plan, name)}


def listener_ports(plan: FrontPlan) -> list[int]:
    """The pools' port, and 80 beside 443 (HTTPS pools redirect plain HTTP there)."""
    extra = {REDIRECT_PORT} if plan.scheme == "https" else set()
    return sorted({plan.port} | extra)


def regions(plan: FrontPlan) -> dict[str, list[PoolEndpoint]]:
    """The pools by region: one endpoint group per region and listener."""
    grouped: dict[str, list[PoolEndpoint]] = {}
    for pool in plan.pools:
        grouped.setdefault(pool.region, []).append(pool)
    return grouped


def endpoint_group(region: str, pools: list[PoolEndpoint]) -> dict[str, Any]:
    """aws_globalaccelerator_endpoint_group arguments but the listener and the endpoints."""
    first = pools[0]
    return {"endpoint_group_region": region, "health_check_protocol": first.scheme.upper(),
            "health_check_port": first.port, "health_check_path": first.health_path,
            "health_check_interval_seconds": GA_INTERVAL, "threshold_count": GA_THRESHOLD,
            "traffic_dial_percentage": TRAFFIC_DIAL}


def endpoints(pools: list[PoolEndpoint]) -> list[dict[str, Any]]:
    """The ALBs: client IP preserved, so the pools' --allow-cidr rules still see clients."""
    return [{"endpoint_id": p.lb_arn, "weight": p.weight, "client_ip_preservation_enabled": True}
            for p in pools]
