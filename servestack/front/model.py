"""The front's plan: the pools' load balancers it spreads clients over, and how.

A front is a stack of its own, applied after the pools are up (their load balancers' addresses
and, for Global Accelerator, their ALB ARNs are inputs here). Both renderers read a `FrontPlan`
and decide nothing again.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import asdict, dataclass, fields
from typing import Literal

from servestack.deployment.choices import FRONTS, ROUTINGS  # noqa: F401 (re-exported)
from servestack.errors import UserError

FrontKind = Literal["route53", "global-accelerator"]
Routing = Literal["weighted", "latency"]
Scheme = Literal["http", "https"]
KINDS: tuple[str, ...] = FRONTS
SCHEMES: tuple[str, ...] = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
OUTPUT_ENDPOINT = "endpoint"  # the front's URL, the same output name the pools export


@dataclass(frozen=True)
class PoolEndpoint:
    """One pool's regional load balancer, as the front reaches it."""

    cloud: str
    region: str
    host: str  # the load balancer's DNS name or IP (or the pool's own domain with TLS)
    port: int  # where clients (and the health checks) reach it: the pool's listener port
    health_path: str  # the pool's load balancer health path (vLLM's /health: no API key)
    weight: int = 1  # share of the traffic (weighted routing, and Global Accelerator)
    scheme: Scheme = "http"
    lb_arn: str | None = None  # an AWS ALB's ARN: Global Accelerator's endpoint id
    # Route 53 latency routing measures from AWS regions: the one standing for this pool
    # (None: the pool's own region, which only an AWS pool's is)
    latency_region: str | None = None
    # A pool known by its stack (generated fronts, and the deploy's): `host`, `lb_arn` and the
    # ALB's zone id are that stack's outputs (lb_host, lb_arn, lb_zone_id), read by reference
    # (Terraform: terraform_remote_state of the pool's folder; Pulumi: a StackReference), and
    # `address` says what `host` will be: "name" (DNS) or "ipv4". None: `host` is literal.
    stack: str | None = None
    address: str | None = None

    @property
    def key(self) -> str:
        """The pool's name in the front: record set identifier, resource names. A front holds
        one pool per region (placement puts each pool in its own region)."""
        return f"{self.cloud}-{self.region}"

    @property
    def ip_version(self) -> int | None:
        """4 or 6 when `host` is an IP address, None for a DNS name."""
        if self.address is not None:
            return 4 if self.address == "ipv4" else None
        try:
            return ipaddress.ip_address(self.host).version
        except ValueError:
            return None


@dataclass(frozen=True)
class FrontPlan:
    kind: FrontKind
    service: str
    scope: str  # prefix of physical names: service + digest of the stack (see `front_scope`)
    pools: tuple[PoolEndpoint, ...]
    routing: Routing = "weighted"
    domain: str | None = None  # route53: the name clients use
    hosted_zone_id: str | None = None  # route53: the hosted zone that holds `domain`

    @property
    def scheme(self) -> str:
        return self.pools[0].scheme  # build.py checks the pools share one

    @property
    def port(self) -> int:
        return self.pools[0].port  # build.py checks the pools share one

    @property
    def tags(self) -> dict[str, str]:
        return {"servestack-service": self.service, "servestack-front": self.kind,
                "managed-by": "servestack"}

    def to_config(self) -> dict:
        """Plain values, for a front stack's config (servestack:front)."""
        return asdict(self)

    @classmethod
    def from_config(cls, data: dict) -> FrontPlan:
        """The plan `to_config` gave; keys of another servestack version are refused."""
        values = _exactly(cls, data, "servestack:front")
        pools = values["pools"]
        if not isinstance(pools, list | tuple):
            raise UserError("stack config servestack:front.pools is not a list")
        values["pools"] = tuple(
            PoolEndpoint(**_exactly(PoolEndpoint, p, "servestack:front.pools")) for p in pools)
        return cls(**values)


def _exactly(kind: type, data: object, where: str) -> dict:
    """`data` as the fields of `kind`, or a one-line error naming what does not fit."""
    if not isinstance(data, dict):
        raise UserError(f"stack config {where} is not a mapping")
    names = {f.name for f in fields(kind)}
    if set(data) != names:
        odd = sorted(set(data) ^ names)
        raise UserError(f"stack config {where} does not match this servestack version "
                        f"({', '.join(odd)}); run `servestack generate` again")
    return dict(data)


def front_scope(service: str, stack: str) -> str:
    """The same shape as Deployment.scope: the service and a digest of the front's stack, so
    two fronts (blue/green) never share a name. At most 27 characters."""
    digest = hashlib.sha256(f"{service}/{stack}".encode()).hexdigest()[:6]
    return f"{service[:20].rstrip('-')}-{digest}"


def url(scheme: str, host: str, port: int) -> str:
    """scheme://host[:port], the port left out when it is the scheme's own."""
    return f"{scheme}://{host}" + ("" if DEFAULT_PORTS.get(scheme) == port else f":{port}")
