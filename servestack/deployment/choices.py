"""The user's choices that shape a deployment besides the candidate, and the scaling vocabulary
they pick from. Kept apart from `model` (which re-exports them) so that every command's option
parsing loads this small module, not the whole deployment model."""

from __future__ import annotations

from dataclasses import dataclass

# What the autoscaler may track: the load balancer's requests per second per replica
# (SkyServe's target_qps_per_replica), or vLLM's own gauges shipped from every replica to the
# cloud's monitoring: requests waiting in its queue, and KV-cache usage in percent.
SCALE_METRICS = ("qps", "vllm-waiting", "vllm-kv-cache")
# vllm-waiting: vLLM production-stack's KEDA threshold (5 waiting requests per replica).
DEFAULT_SCALE_TARGETS = {"vllm-waiting": 5.0, "vllm-kv-cache": 70.0}


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
