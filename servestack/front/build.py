"""Build and check a `FrontPlan`: every refusal is one line (`UserError`), before any engine runs.

What a front cannot do, and why:
- Route 53 needs the user's domain and the hosted zone that holds it; one name answers with one
  record type, so the pools are all DNS names (CNAME) or all IPs of one family (A / AAAA): a
  CNAME may not share its name with other records.
- Latency routing measures from AWS regions: a pool outside AWS names the AWS region nearest
  to it (`latency_region`).
- Global Accelerator's endpoints here are AWS Application Load Balancers: every pool is an AWS
  pool with its ALB's ARN, in the pool's region.
- Clients use one URL, so the pools share one scheme and port.
- Weights are 0-255 in both (Route 53 `Weight`, Global Accelerator endpoint `Weight`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from servestack.clouds.aws import CLOUD as AWS
from servestack.deployment.model import Deployment
from servestack.errors import UserError

from .model import (
    DEFAULT_PORTS,
    KINDS,
    ROUTINGS,
    SCHEMES,
    FrontKind,
    FrontPlan,
    PoolEndpoint,
    Routing,
    Scheme,
    front_scope,
)

MAX_WEIGHT = 255
# A DNS name of letter-digit-hyphen labels (RFC 1123), at most 253 characters.
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
HOSTED_ZONE_ID = re.compile(r"^[A-Z0-9]{1,32}$")  # e.g. Z0123456789ABCDEFGHIJ
AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
# arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/<name>/<id>
ALB_ARN = re.compile(r"^arn:aws[a-z-]*:elasticloadbalancing:([a-z0-9-]+):\d{12}:"
                     r"loadbalancer/app/[^/]+/[0-9a-f]+$")


def build_front(kind: str, service: str, pools: Iterable[PoolEndpoint], *,
                stack: str = "front", routing: str = "weighted", domain: str | None = None,
                hosted_zone_id: str | None = None) -> FrontPlan:
    """The checked plan of a front named after `service` and its own `stack`."""
    if kind not in KINDS:
        raise UserError(f"--front must be one of {', '.join(KINDS)}, not {kind!r}")
    if routing not in ROUTINGS:
        raise UserError(f"--routing must be one of {', '.join(ROUTINGS)}, not {routing!r}")
    listed = tuple(pools)
    _check_pools(listed)
    plan = FrontPlan(kind=_kind(kind), service=service, scope=front_scope(service, stack),
                     pools=listed, routing=_routing(routing), domain=domain,
                     hosted_zone_id=hosted_zone_id)
    if plan.kind == "route53":
        _check_route53(plan)
    else:
        _check_accelerator(plan)
    return plan


def pool_endpoint(d: Deployment, endpoint: str, *, weight: int = 1, lb_arn: str | None = None,
                  latency_region: str | None = None) -> PoolEndpoint:
    """A pool as the front sees it, from its deployment and its stack's `endpoint` output
    (http://<load balancer>:<port>, or https://<domain> with TLS)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise UserError(f"pool {d.cloud} {d.region}: endpoint {endpoint!r} is not an "
                        "http(s) URL")
    scheme: Scheme = "https" if parts.scheme == "https" else "http"
    port = parts.port or DEFAULT_PORTS[scheme]
    return PoolEndpoint(cloud=d.cloud, region=d.region, host=parts.hostname, port=port,
                        health_path=d.health.path, weight=weight, scheme=scheme,
                        lb_arn=lb_arn, latency_region=latency_region)


def _kind(kind: str) -> FrontKind:
    return "route53" if kind == "route53" else "global-accelerator"


def _routing(routing: str) -> Routing:
    return "latency" if routing == "latency" else "weighted"


def _check_pools(pools: tuple[PoolEndpoint, ...]) -> None:
    if not pools:
        raise UserError("a front needs at least one pool")
    keys = [p.key for p in pools]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"a front takes one pool per region; twice: {', '.join(twice)}")
    for p in pools:
        if p.scheme not in SCHEMES:
            raise UserError(f"pool {p.key}: scheme must be http or https, not {p.scheme!r}")
        if not 1 <= p.port <= 65535:
            raise UserError(f"pool {p.key}: port {p.port} is not 1-65535")
        if not 0 <= p.weight <= MAX_WEIGHT:
            raise UserError(f"pool {p.key}: weight {p.weight} is not 0-{MAX_WEIGHT}")
        if not p.health_path.startswith("/"):
            raise UserError(f"pool {p.key}: health path {p.health_path!r} must start with /")
    urls = sorted({f"{p.scheme}:{p.port}" for p in pools})
    if len(urls) > 1:
        raise UserError("the pools must share one scheme and port (clients use one URL); "
                        f"got {', '.join(urls)}")


def record_type(pool: PoolEndpoint) -> str:
    """The DNS record that points at the pool: CNAME for a name, A / AAAA for an IP, A for
    an alias (which may share its name with other pools' A records, unlike a CNAME)."""
    if alias(pool):
        return "A"
    return {None: "CNAME", 4: "A", 6: "AAAA"}[pool.ip_version]


def alias(pool: PoolEndpoint) -> bool:
    """An AWS pool known by its stack: Route 53 answers with an alias A record to its ALB (the
    stack's lb_host and lb_zone_id outputs), so it mixes with other clouds' IP pools."""
    return pool.stack is not None and pool.address == "name" and pool.cloud == AWS.name


def latency_region(pool: PoolEndpoint) -> str | None:
    """The AWS region Route 53 measures this pool's latency from."""
    return pool.latency_region or (pool.region if pool.cloud == AWS.name else None)


def _check_route53(plan: FrontPlan) -> None:
    if not plan.domain or not plan.hosted_zone_id:
        raise UserError("--front route53 needs --domain NAME and --hosted-zone-id ID")
    if not DOMAIN.match(plan.domain):
        raise UserError(f"--domain {plan.domain!r} is not a DNS name (lowercase labels)")
    if not HOSTED_ZONE_ID.match(plan.hosted_zone_id):
        raise UserError(f"--hosted-zone-id {plan.hosted_zone_id!r} is not a Route 53 hosted "
                        "zone id (e.g. Z0123456789ABCDEFGHIJ)")
    types = sorted({record_type(p) for p in plan.pools})
    if len(types) > 1:
        raise UserError("--front route53: the pools must all be DNS names or all IPs of one "
                        f"family (one record type per name); got {', '.join(types)}")
    if plan.routing == "latency":
        for p in plan.pools:
            region = latency_region(p)
            if region is None or not AWS_REGION.match(region):
                raise UserError(f"pool {p.key}: latency routing measures from AWS regions; "
                                "name the AWS region nearest to it (latency_region)")


def _check_accelerator(plan: FrontPlan) -> None:
    if plan.domain or plan.hosted_zone_id:
        raise UserError("--front global-accelerator takes no --domain: clients use the "
                        "accelerator's own DNS name")
    for p in plan.pools:
        if p.cloud != AWS.name or not (p.lb_arn or p.stack):
            raise UserError(f"pool {p.key}: global-accelerator needs AWS pools with their "
                            "ALB ARNs")
        if p.lb_arn is None:  # read from the pool stack's lb_arn output
            continue
        found = ALB_ARN.match(p.lb_arn)
        if not found or found.group(1) != p.region:
            raise UserError(f"pool {p.key}: {p.lb_arn!r} is not an Application Load "
                            f"Balancer ARN in {p.region}")
