"""Build the `Deployment` for a chosen candidate: every decision, made once, for both engines.

`build_deployment` turns the spec and a chosen candidate (plus same-region fallbacks of the same
plan) into a `Deployment`: instance types in rank order, the spot split, zones, ports and CIDRs,
health-check path and timings, the boot image, disk, how long to wait for capacity, the
bootstrap's inputs, tags. What differs per cloud (disk types, images, zones, secret names,
network ranges) comes from `servestack.clouds`; nothing here names a cloud.
"""

from __future__ import annotations

import json
import re

from servestack import clouds
from servestack.deployment.cache import with_weight_cache
from servestack.deployment.choices import replica_range, scale_delays, service_slug
from servestack.deployment.model import (
    DEFAULT_SCALE_TARGETS,
    LISTENER_PORT,
    SCALE_METRICS,
    WORLD,
    Autoscaling,
    Choices,
    Deployment,
    HealthCheck,
    InstanceChoice,
    Readiness,
    Tls,
)
from servestack.engine.interface import stack_name
from servestack.errors import UserError
from servestack.planner import Candidate, group_key
from servestack.spec import ReadinessProbe, ServiceSpec, default_probe_path, label_key, label_value

VLLM_VERSION = "0.32.0"  # pinned in the bootstrap's venv; overridable with --vllm-version
VLLM_HEALTH_PATH = "/health"
SSH_PORT = 22
DOCKER_PREFIX = "docker:"
DEFAULT_CHOICES = Choices()
# A Docker image reference: [registry[:port]/]path[:tag][@digest] (no spaces, no shell words).
DOCKER_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/:@-]{0,254}", re.IGNORECASE)


def build_deployment(spec: ServiceSpec, chosen: Candidate, plan: list[Candidate], *,
                     model: str | None, choices: Choices = DEFAULT_CHOICES,
                     vllm_version: str = VLLM_VERSION, service_name: str | None = None,
                     stack: str | None = None) -> Deployment:
    """The deployment of `chosen` as stack `stack` (default: the deploy loop's stack name for
    the candidate, `<service>-<candidate id>`)."""
    name = service_name or service_slug(spec.service_name)
    stack = stack or stack_name(name, chosen.id)
    policy = spec.service.replica_policy if spec.service else None
    probe = spec.service.readiness_probe if spec.service else None
    port = spec.port
    min_replicas, max_replicas = replica_range(policy)
    readiness = _readiness(probe, spec.run)
    lb_path = _balancer_path(readiness, choices.api_key)
    cloud = clouds.get(chosen.cloud)
    disk_type = cloud.disk_types[spec.disk_tier]
    image_id = _image_for(spec.image_id, chosen.region)
    container = _container_image(image_id)
    deployment = Deployment(
        service=name,
        stack=stack,
        candidate_id=chosen.id,
        cloud=chosen.cloud,
        region=chosen.region,
        zones=_group_zones(cloud.zones_for(chosen), chosen, plan),
        instances=tuple(_instance_choices(chosen, plan)),
        use_spot=chosen.use_spot,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        desired_replicas=min_replicas,
        on_demand_base=min(policy.base_ondemand_fallback_replicas, min_replicas)
        if policy and chosen.use_spot else 0,
        capacity_rebalance=chosen.use_spot,
        service_port=port,
        listener_port=LISTENER_PORT,
        allow_cidrs=tuple(choices.allow_cidrs or (WORLD,)),
        ssh_cidrs=tuple(choices.ssh_cidrs),
        health=HealthCheck(path=lb_path, port=port,
                           grace_period_seconds=readiness.initial_delay_seconds),
        readiness=readiness,
        disk_size_gb=spec.disk_size_gb,
        disk_type=disk_type,
        disk_iops=cloud.disk_iops(disk_type, spec.disk_size_gb),
        image=cloud.image_ref(None if container else image_id),
        capacity_timeout=_capacity_wait(cloud.capacity_timeout, policy, chosen),
        network=cloud.network,
        ssh_port=SSH_PORT,
        ssh_nat_ports=cloud.ssh_nat_ports,
        admin_user=cloud.admin_user,
        model=model,
        tensor_parallel_size=chosen.accelerator_count,
        vllm_version=vllm_version,
        setup=spec.setup,
        run=spec.run,
        envs=dict(spec.envs),  # the spec's secrets are not among them: they go to `secret`
        secret=cloud.secret_ref(name, stack) if spec.secrets else None,
        gcp_project=choices.gcp_project,
        labels={label_key(k): label_value(v) for k, v in spec.labels.items()},
        container_image=container,
        api_key=cloud.api_key_ref(name, stack) if choices.api_key else None,
        tls=Tls(domain=choices.domain, dns_zone=choices.dns_zone)
        if choices.domain and not choices.front else None,  # with a front, it is the front's
        autoscaling=_autoscaling(policy, choices, chosen.accelerator, min_replicas,
                                 max_replicas),
        dynamic_ondemand_fallback=bool(policy and chosen.use_spot
                                       and policy.dynamic_ondemand_fallback),
    )
    deployment = with_weight_cache(deployment, choices.weight_cache)
    cloud.check(deployment)
    return deployment


def _capacity_wait(timeout: str | None, policy, chosen: Candidate) -> str | None:
    """How long the apply waits for the group's capacity. With dynamic on-demand fallback a
    spot group short of capacity is what the fallback group is for: the apply must not fail
    on it ("0": do not wait), the readiness step counts the replicas of both groups."""
    if timeout and policy and chosen.use_spot and policy.dynamic_ondemand_fallback:
        return "0"
    return timeout


def _group_zones(zones: tuple[str, ...], chosen: Candidate,
                 plan: list[Candidate]) -> tuple[str, ...]:
    """The zones the group spans. A cloud that spreads a spot group over its region (no zones
    from `zones_for`, though the candidate is one zone's) gets every zone where the plan offers
    one of the group's types on spot in that region: the catalog's zones, fixed at plan time so
    the stack's subnets and the review show them. The candidate's own zone comes first."""
    if zones or not (chosen.use_spot and chosen.zone):
        return zones
    members = {c.instance_type for c in plan if group_key(c) == group_key(chosen)}
    found = {c.zone for c in plan if c.use_spot and c.cloud == chosen.cloud and c.zone
             and c.region == chosen.region and c.instance_type in members}
    return (chosen.zone, *sorted(found - {chosen.zone}))


def _balancer_path(readiness: Readiness, api_key: bool) -> str:
    """What the load balancer probes: the readiness path when it needs no body and no key
    (vLLM asks the key on every /v1 path; balancers cannot send it), else vLLM's /health."""
    if readiness.method != "GET" or readiness.headers:
        return VLLM_HEALTH_PATH
    if api_key and readiness.path.startswith("/v1"):
        return VLLM_HEALTH_PATH
    return readiness.path


def _autoscaling(policy, choices: Choices, accelerator: str, low: int,
                 high: int) -> Autoscaling | None:
    """The autoscaler the policy and the flags ask for; None for a fixed group."""
    metric = choices.scale_metric
    if policy is None or policy.fixed or high <= low:
        if metric is not None:
            raise UserError(f"--scale-metric {metric}: the spec's service has a fixed size; "
                            "give replica_policy min_replicas < max_replicas and "
                            "target_qps_per_replica to autoscale")
        return None
    metric = metric or "qps"
    if metric not in SCALE_METRICS:
        raise UserError(f"--scale-metric {metric!r}: expected one of {', '.join(SCALE_METRICS)}")
    target = choices.scale_target
    if target is None:
        target = _qps_target(policy.target_qps_per_replica, accelerator) if metric == "qps" \
            else DEFAULT_SCALE_TARGETS[metric]
    up, down = scale_delays(policy)
    return Autoscaling(metric=metric, target=float(target), upscale_delay_seconds=up,
                       downscale_delay_seconds=down)


def _qps_target(value, accelerator: str) -> float:
    """target_qps_per_replica: one number, or SkyServe's per-accelerator mapping."""
    if not isinstance(value, dict):
        return float(value)
    for name, qps in value.items():
        if str(name).split(":")[0].lower() == accelerator.lower():
            return float(qps)
    raise UserError(f"replica_policy.target_qps_per_replica names no rate for {accelerator} "
                    f"(it has {', '.join(map(str, value))})")


def _instance_choices(chosen: Candidate, plan: list[Candidate]) -> list[InstanceChoice]:
    """The chosen type first, then other types of the plan that can share its group.

    They must share its `group_key` (the planner shows the same group's price range).
    """
    choices = [_choice(chosen)]
    seen = {chosen.instance_type}
    for other in plan:
        if other.instance_type not in seen and group_key(other) == group_key(chosen):
            seen.add(other.instance_type)
            choices.append(_choice(other))
    return choices


def _choice(c: Candidate) -> InstanceChoice:
    return InstanceChoice(candidate_id=c.id, instance_type=c.instance_type,
                          accelerator=c.accelerator, accelerator_count=c.accelerator_count,
                          price_per_hour=c.price_per_hour, attached_gpu=c.attached_gpu)


def _readiness(probe, run: str | None) -> Readiness:
    if probe is None:  # no service section: the spec's defaults
        probe = ReadinessProbe(path=default_probe_path(run))
    post = json.dumps(probe.post_data, sort_keys=True) if probe.post_data is not None else None
    return Readiness(path=probe.path, method=probe.method, post_data=post,
                     headers=dict(probe.headers), timeout_seconds=probe.timeout_seconds,
                     initial_delay_seconds=probe.initial_delay_seconds)


def _image_for(image_id, region: str) -> str | None:
    if isinstance(image_id, dict):
        return image_id.get(region)
    return image_id


def _container_image(image_id: str | None) -> str | None:
    """The container of `image_id: docker:IMAGE`, SkyPilot's form (it then boots the cloud's
    default GPU image, which has Docker, and runs the task in IMAGE); None for a VM image."""
    if image_id is None or not image_id.startswith(DOCKER_PREFIX):
        return None
    image = image_id[len(DOCKER_PREFIX):]
    if not DOCKER_IMAGE.fullmatch(image):
        raise UserError(f"resources.image_id: {image_id[:80]!r} is not docker:IMAGE with a "
                        "Docker image reference such as docker:vllm/vllm-openai:v0.9.2")
    return image
