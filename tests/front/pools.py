"""Pools as the front tests see them: real deployments of the frozen catalog's plan, one per
region of a cloud, with the endpoint URLs their stacks export."""

from __future__ import annotations

from functools import cache

from servestack import planner
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Deployment
from servestack.front.build import build_front, pool_endpoint
from servestack.front.model import FrontPlan, PoolEndpoint
from servestack.inputs import load_inputs
from servestack.service import pool_endpoint as stack_endpoint
from tests.fakes import FROZEN_CATALOG

ZONE_ID = "Z0123456789ABCDEFGHIJ"
DOMAIN = "llm.example.com"
ACCOUNT = "123456789012"


@cache
def deployments(cloud: str, count: int = 2) -> tuple[Deployment, ...]:
    """The best candidate of `count` regions of `cloud`, each built as its pool's stack."""
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud=cloud, spot=False), model=inputs.model)
    firsts = {}
    for c in plan.candidates:
        firsts.setdefault(c.region, c)
    chosen = list(firsts.values())[:count]
    assert len(chosen) == count, f"the frozen plan has fewer than {count} {cloud} regions"
    return tuple(build_deployment(inputs.spec, c, plan.candidates, model=inputs.model)
                 for c in chosen)


def alb_arn(region: str, name: str) -> str:
    return (f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT}:loadbalancer/app/{name}/"
            "50dc6c495c0c9188")


def aws_pools(weights: tuple[int, ...] = (1, 1)) -> tuple[PoolEndpoint, ...]:
    """The AWS pools as their stacks' outputs give them: http://<ALB DNS name>:<port>."""
    pools = []
    for i, (d, weight) in enumerate(zip(deployments("aws", len(weights)), weights, strict=True)):
        host = f"pool{i}-1234567890.{d.region}.elb.amazonaws.com"
        pools.append(pool_endpoint(d, f"http://{host}:{d.listener_port}", weight=weight,
                                   lb_arn=alb_arn(d.region, f"pool{i}")))
    return tuple(pools)


def ip_pools(cloud: str) -> tuple[PoolEndpoint, ...]:
    """Pools whose balancers have an IP (GCP's forwarding rule, Azure's public IP)."""
    return tuple(pool_endpoint(d, f"http://203.0.113.{10 + i}:{d.listener_port}")
                 for i, d in enumerate(deployments(cloud)))


def route53(routing: str = "weighted", pools: tuple[PoolEndpoint, ...] | None = None
            ) -> FrontPlan:
    return build_front("route53", "mixtral", pools or aws_pools((3, 1)), routing=routing,
                       domain=DOMAIN, hosted_zone_id=ZONE_ID)


def accelerator(pools: tuple[PoolEndpoint, ...] | None = None) -> FrontPlan:
    return build_front("global-accelerator", "mixtral", pools or aws_pools((3, 1)))


def stack_pools(cloud: str) -> tuple[PoolEndpoint, ...]:
    """The pools as a generated front knows them: by their stacks (servestack.service)."""
    return tuple(stack_endpoint(d) for d in deployments(cloud))
