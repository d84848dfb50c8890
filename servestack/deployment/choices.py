"""The user's choices that shape a deployment besides the candidate, the scaling vocabulary
they pick from, the service's name as resources take it, and the replica bounds and delays
a replica_policy gives. Kept apart from
`model` (which re-exports them) so that option parsing and the plan's report load this small
module, not the whole deployment model and its builder."""

from __future__ import annotations

import re
from dataclasses import dataclass

# What the autoscaler may track: the load balancer's requests per second per replica
# (SkyServe's target_qps_per_replica), or vLLM's own gauges shipped from every replica to the
# cloud's monitoring: requests waiting in its queue, and KV-cache usage in percent.
SCALE_METRICS = ("qps", "vllm-waiting", "vllm-kv-cache")
# vllm-waiting: vLLM production-stack's KEDA threshold (5 waiting requests per replica).
DEFAULT_SCALE_TARGETS = {"vllm-waiting": 5.0, "vllm-kv-cache": 70.0}
# The managed fronts that give a service over several pools one endpoint (servestack.front),
# and Route 53's routing policies.
FRONTS = ("route53", "global-accelerator")
ROUTINGS = ("weighted", "latency")
# SkyServe's defaults when replica_policy leaves the delays out (sky/serve/constants.py).
UPSCALE_DELAY_SECONDS = 300
DOWNSCALE_DELAY_SECONDS = 1200


@dataclass(frozen=True)
class Choices:
    """The user's choices that shape a deployment besides the candidate (flags, or a generated
    stack file's earlier choices): who may reach it, SSH, the API key, TLS, the scaling signal."""

    allow_cidrs: tuple[str, ...] = ()  # empty: open to the world (behind the API key)
    ssh_cidrs: tuple[str, ...] = ()  # empty: no SSH
    gcp_project: str | None = None
    api_key: bool = True  # False: --no-api-key, an endpoint anyone in allow_cidrs may call
    domain: str | None = None  # --domain: HTTPS on it, HTTP redirected
    dns_zone: str | None = None  # --dns-zone: where the stack writes the domain's records
    scale_metric: str | None = None  # --scale-metric; None: "qps" when the policy autoscales
    scale_target: float | None = None  # --scale-target; None: the spec's or the default
    # A service over several pools (servestack.service): the managed front that gives it one
    # endpoint. --front route53 (with --domain NAME as the front's name and --hosted-zone-id)
    # or global-accelerator (AWS pools, no domain needed); None with one pool.
    front: str | None = None
    hosted_zone_id: str | None = None  # --hosted-zone-id: the Route 53 zone holding --domain
    routing: str = "weighted"  # --routing: weighted | latency (Route 53 front)
    # --weight-cache: a bucket per pool that holds the model's weights once a replica has
    # downloaded them; later replicas stream them from it (servestack.deployment.cache).
    weight_cache: bool = False


def service_slug(name: str) -> str:
    """A name every cloud accepts in resource names: lowercase, digits, dashes, <= 20 chars."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    slug = re.sub(r"-+", "-", slug)
    if not slug or not slug[0].isalpha():
        slug = f"s-{slug}".rstrip("-")
    return slug[:20].rstrip("-")


def replica_range(policy) -> tuple[int, int]:
    """min and max replicas; SkyServe's num_overprovision replicas come on top of both (it
    keeps that many beyond what the load asks for; a floor raised by as many is the closest a
    cloud autoscaler comes)."""
    if policy is None:
        return 1, 1
    low = max(policy.min_replicas, 1)
    high = max(policy.max_replicas or low, low)
    extra = policy.num_overprovision
    return low + extra, high + extra


def scale_delays(policy) -> tuple[int, int]:
    """upscale and downscale delays in seconds: the spec's, else SkyServe's defaults."""
    up, down = policy.upscale_delay_seconds, policy.downscale_delay_seconds
    return (int(up) if up is not None else UPSCALE_DELAY_SECONDS,
            int(down) if down is not None else DOWNSCALE_DELAY_SECONDS)
