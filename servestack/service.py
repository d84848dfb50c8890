"""A service over several pools: one stack per pool, a key stack, a front stack.

With `--max-pools` above 1 the placement (servestack.placement) may put the replicas in more
than one pool (cloud x region). Each pool is today's single-region stack (one instance group
behind its own regional load balancer), built from the pool's best candidate with the pool's
share of the replicas. Two stacks of the service's own join them:

- the *key stack* (`<service>-key`) draws the service's one API key; every pool stores that
  key in its region's secret store (`Deployment.shared_api_key`), so a client behind the front
  uses one key whichever pool answers. It holds no cloud resource (Terraform: terraform_data;
  Pulumi: the ApiKey dynamic resource), so it is applied first and never fails for capacity.
- the *front stack* (`<service>-front`) gives the pools one endpoint (servestack.front): it
  reads each pool's load balancer from the pool stack's outputs, by reference.

Order: key, then the pools (in parallel: none depends on another), then the front. Nothing
here runs an engine or imports Pulumi.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from servestack import clouds
from servestack.clouds.aws import CLOUD as AWS
from servestack.deployment.build import build_deployment
from servestack.deployment.choices import Choices, replica_range, service_slug
from servestack.deployment.model import WORLD, Deployment
from servestack.engine.interface import stack_name
from servestack.errors import UserError
from servestack.front.build import build_front
from servestack.front.model import FrontPlan, PoolEndpoint
from servestack.inputs import Inputs
from servestack.placement import Pool
from servestack.planner import Plan

KEY_STACK = "key"
FRONT_STACK = "front"
DEFAULT_FRONT = "global-accelerator"  # needs no domain of the user's; AWS pools only


@dataclass(frozen=True)
class ServiceLayout:
    """Everything a service over several pools consists of, in the order it is applied."""

    service: str
    key_stack: str | None  # None: --no-api-key (each pool open, no key to share)
    pools: tuple[Deployment, ...]
    front_stack: str
    front: FrontPlan
    notes: tuple[str, ...] = ()  # what the user should hear (e.g. the front chosen for them)

    @property
    def stacks(self) -> tuple[str, ...]:
        key = (self.key_stack,) if self.key_stack else ()
        return (*key, *(d.stack for d in self.pools), self.front_stack)


@dataclass
class GeneratedService:
    """What `generate` wrote for a service over several pools (either engine)."""

    layout: ServiceLayout
    paths: dict[str, Path]  # stack name -> the file written (main.tf.json / Pulumi.<stack>.yaml)
    summary: str  # what was written, in the order to apply it, and how
    secret_names: tuple[str, ...] = ()  # what the VMs need (the values are never written)


def key_stack_name(service: str) -> str:
    return stack_name(service, KEY_STACK)


def front_stack_name(service: str) -> str:
    return stack_name(service, FRONT_STACK)


def build_layout(inputs: Inputs, plan: Plan, pools: Sequence[Pool], choices: Choices,
                 *, prefix: str | None = None) -> ServiceLayout:
    """The stacks of a service whose replicas `pools` hold (placement order). `prefix` names
    the stacks (default: the service's name): `<prefix>-<candidate id>`, `<prefix>-key`,
    `<prefix>-front`."""
    service = service_slug(inputs.spec.service_name)
    prefix = prefix or service
    if not pools:
        raise UserError("a service needs at least one pool")
    key = key_stack_name(prefix) if choices.api_key else None
    low, high = _range(inputs)
    ranges = pool_ranges([p.replicas for p in pools], high - low)
    deployments = tuple(
        pool_deployment(inputs, plan, pool, choices=choices, stack_prefix=prefix,
                        replicas=replicas, key_stack=key)
        for pool, replicas in zip(pools, ranges, strict=True))
    kind, notes = front_kind(deployments, choices)
    notes += _health_checker_notes(kind, choices)
    front = front_plan(service, deployments, replace(choices, front=kind),
                       stack=front_stack_name(prefix))
    return ServiceLayout(service=service, key_stack=key, pools=deployments,
                         front_stack=front_stack_name(prefix), front=front, notes=notes)


def _range(inputs: Inputs) -> tuple[int, int]:
    service = inputs.spec.service
    return replica_range(service.replica_policy if service else None)


def pool_ranges(shares: Sequence[int], headroom: int) -> list[tuple[int, int]]:
    """(min, max) replicas per pool: the pool's share of min_replicas, and the service's
    autoscaling headroom (max - min) dealt round-robin from the first (cheapest) pool, so the
    pools' ranges sum to the service's."""
    extra, rest = divmod(headroom, len(shares))
    return [(n, n + extra + (i < rest)) for i, n in enumerate(shares)]


def pool_deployment(inputs: Inputs, plan: Plan, pool: Pool, *, choices: Choices,
                    stack_prefix: str, replicas: tuple[int, int],
                    key_stack: str | None) -> Deployment:
    """The pool's stack: its best candidate (its group also lists the pool's other types),
    with the pool's share of the replicas."""
    by_id = {c.id: c for c in plan.candidates}
    chosen = by_id[pool.candidate_ids[0]]
    low, high = replicas
    d = build_deployment(inputs.spec, chosen, plan.candidates, model=inputs.model,
                         choices=choices, stack=stack_name(stack_prefix, chosen.id))
    return replace(
        d, min_replicas=low, desired_replicas=low, max_replicas=high,
        on_demand_base=min(d.on_demand_base, low),
        autoscaling=d.autoscaling if high > low else None,
        shared_api_key=key_stack)


def front_kind(pools: Sequence[Deployment], choices: Choices) -> tuple[str, tuple[str, ...]]:
    """The front the user named, else Global Accelerator when every pool is on AWS (it needs
    no domain of theirs); a front is needed as soon as there are two pools."""
    if choices.front:
        return choices.front, ()
    if all(d.cloud == AWS.name for d in pools):  # Global Accelerator reaches ALBs only
        return DEFAULT_FRONT, (
            f"front: {DEFAULT_FRONT} (the default for AWS pools: one static endpoint, no "
            "domain needed); --front route53 --domain NAME --hosted-zone-id ID for DNS",)
    where = ", ".join(sorted({d.cloud for d in pools}))
    raise UserError(f"pools on {where} need a front to share one endpoint: --front route53 "
                    "--domain NAME --hosted-zone-id ID (global-accelerator takes AWS pools only)")


def _health_checker_notes(kind: str, choices: Choices) -> tuple[str, ...]:
    """Route 53's health checkers probe the pools from AWS's own addresses: an --allow-cidr
    that leaves them out makes every pool fail its check and leave rotation."""
    if kind != "route53" or not choices.allow_cidrs or WORLD in choices.allow_cidrs:
        return ()
    return ("--front route53 with --allow-cidr: Route 53's health checkers must reach the "
            "pools too, or every pool fails its check and leaves rotation; add their ranges "
            "(AWS ip-ranges.json, service ROUTE53_HEALTHCHECKS) with --allow-cidr",)


def pool_endpoint(d: Deployment) -> PoolEndpoint:
    """A pool as its front sees it: by its stack's outputs, weighted by its replicas."""
    port = d.tls.port if d.tls else d.listener_port
    return PoolEndpoint(cloud=d.cloud, region=d.region, host="", port=port,
                        health_path=d.health.path, weight=max(d.desired_replicas, 1),
                        scheme="https" if d.tls else "http", stack=d.stack,
                        address=clouds.get(d.cloud).balancer_address)


def front_plan(service: str, pools: Sequence[Deployment], choices: Choices, *,
               stack: str) -> FrontPlan:
    """The checked front over `pools` (the live ones, when the deploy re-applies it)."""
    if choices.front is None:
        raise UserError("a front needs --front route53 or global-accelerator")
    return build_front(choices.front, service, [pool_endpoint(d) for d in pools], stack=stack,
                       routing=choices.routing, domain=choices.domain,
                       hosted_zone_id=choices.hosted_zone_id)
