"""What servestack needs to know about a cloud, as one class each cloud module fills in.

A `Cloud` answers the questions the cloud-independent code asks: how its zones look (spec),
which disk types, image, network, secret store and
name rules a deployment gets (deployment.build), how its errors read and which quota bucket a
machine draws from (deploy.failures), and how a Pulumi stack configures its provider. The
spellings both engines share live beside it in the cloud's own module.

No SDK imports, no engine: only facts and pure functions of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import ClassVar, Protocol

from servestack.deployment.model import Deployment, ImageRef, NetworkPlan, SecretRef


class Offered(Protocol):
    """The fields of a planned candidate that cloud rules read (servestack.planner.Candidate)."""

    @property
    def cloud(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def zone(self) -> str | None: ...
    @property
    def zones(self) -> tuple[str, ...]: ...
    @property
    def instance_type(self) -> str: ...
    @property
    def accelerator(self) -> str: ...
    @property
    def accelerator_count(self) -> int: ...
    @property
    def attached_gpu(self) -> str | None: ...
    @property
    def use_spot(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Rule:
    """One failure text: which class of error it is and the code the report shows."""

    error_class: str
    code: str
    pattern: re.Pattern
    scope: str = ""  # "cloud" / "region" to override the class's usual scope


def rule(error_class: str, code: str, pattern: str, scope: str = "") -> Rule:
    return Rule(error_class, code, re.compile(pattern, re.IGNORECASE | re.DOTALL), scope)


@dataclass(frozen=True, slots=True)
class QuotaScope:
    """What a quota error rules out: the whole cloud, or a region for one bucket and/or one
    spot setting (None: any)."""

    region: str | None = None
    family: str | None = None
    spot: bool | None = None


def digest(text: str, length: int = 8) -> str:
    """A short stable hash, for names that must differ per service and candidate."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class Cloud:
    """One cloud's facts. Each cloud module subclasses it once and registers the instance."""

    name: ClassVar[str]
    title: ClassVar[str]
    # A spec's zone: the shape a zone of `region` has, when the catalog does not list it.
    zone_shape: ClassVar[str]
    # SkyPilot's disk_tier -> this cloud's volume type.
    disk_types: ClassVar[dict[str, str]]
    default_image: ClassVar[ImageRef]
    network: ClassVar[NetworkPlan]
    # Where the replicas publish vLLM's gauges (servestack.deployment.model.SHIPPED_METRICS):
    # the CloudWatch namespace, the Cloud Monitoring metric-type prefix, the Azure Monitor
    # custom-metric namespace.
    metrics_namespace: ClassVar[str]
    # Whether the load balancer counts requests per replica (AWS ALB, GCP's managed L7); if
    # not (Azure's L4 balancer), the replicas ship their request rate for "qps" scaling too.
    balancer_counts_requests: ClassVar[bool] = True
    # How a front reaches the pool's load balancer: by DNS name (AWS ALB) or by its IPv4
    # address (GCP's regional external Application LB, Azure's public Standard LB).
    balancer_address: ClassVar[str] = "ipv4"
    # How long an apply waits for the group's capacity (None: it does not wait).
    capacity_timeout: ClassVar[str | None] = None
    admin_user: ClassVar[str | None] = None  # VMs' admin user, where the API needs one
    ssh_nat_ports: ClassVar[tuple[int, int] | None] = None  # SSH through the balancer
    # User data larger than this is refused by the cloud (None: no limit that binds us).
    user_data_limit: ClassVar[int | None] = None
    # Whether both engines hand the cloud its user data gzip'd, then base64 (cloud-init
    # unpacks gzip'd user data itself); user_data_limit then bounds the gzip'd bytes.
    user_data_gzip: ClassVar[bool] = False
    failure_rules: ClassVar[tuple[Rule, ...]] = ()
    # Capacity is pooled per instance type (AWS), not per GPU across a GPU's machine shapes.
    capacity_per_instance_type: ClassVar[bool] = False

    # --weight-cache (servestack.deployment.cache): the URI scheme vLLM's Run:ai streamer
    # reads this cloud's object store by, and the Python packages the VMs' cache tool needs
    # (servestack_cache.py, in its own venv: whatever environment runs vLLM is left alone).
    cache_scheme: ClassVar[str]
    cache_packages: ClassVar[tuple[str, ...]]

    def cache_prefix(self, scope: str) -> str:
        """The fixed part of the cache bucket's name (the account's digest follows it):
        lowercase letters, digits and dashes, which S3 and GCS bucket names both take."""
        return f"{scope}-wc-"

    def cache_container(self) -> str | None:
        """The container inside the bucket, on clouds whose store has one level more."""
        return None

    def zone_matches(self, region: str, zone: str) -> bool:
        return re.match(self.zone_shape.format(region=re.escape(region)), zone) is not None

    def zones_for(self, c: Offered) -> tuple[str, ...]:
        """The zones a candidate's group may use: its pinned zone, else the zones offered."""
        return (c.zone,) if c.zone else tuple(c.zones)

    def image_ref(self, image_id: str | None) -> ImageRef:
        """The spec's image (an id this cloud takes as is), else the default GPU image."""
        return ImageRef(kind="id", id=image_id) if image_id else self.default_image

    def disk_iops(self, disk_type: str, size_gb: int) -> int | None:
        """Provisioned IOPS for the volume types that need them."""
        return None

    def secret_ref(self, service: str, stack: str) -> SecretRef:
        """Where the token is kept: one secret per service and stack."""
        raise NotImplementedError

    def check(self, d: Deployment) -> None:
        """Refuse (UserError) a deployment this cloud cannot build as asked, e.g. a domain
        without the DNS zone its certificate needs. Called once the deployment is built."""

    def shipped_metric(self, d: Deployment) -> str | None:
        """The gauge the replicas publish for the autoscaler, or None when it reads the
        load balancer (or nothing scales)."""
        scaling = d.autoscaling
        if scaling is None or (scaling.on_load_balancer and self.balancer_counts_requests):
            return None
        return scaling.shipped_metric

    def api_key_ref(self, service: str, stack: str) -> SecretRef:
        """Where the generated API key is kept: one entry per service and stack."""
        raise NotImplementedError

    def stack_config(self, d: Deployment) -> dict[str, str]:
        """The Pulumi provider's stack config keys for a deployment."""
        raise NotImplementedError

    def setup_hints(self, d: Deployment, engine: str) -> list[str]:
        """What the user must still set before deploying (e.g. a GCP project)."""
        return []

    def quota_families(self, c: Offered) -> tuple[str, ...]:
        """The quota buckets a candidate draws from; the first is the one its errors name."""
        raise NotImplementedError

    def quota_scope(self, found: Rule, text: str, c: Offered) -> QuotaScope:
        """The region and bucket a quota error rules out (scope "cloud" is handled before)."""
        return QuotaScope(c.region, self.quota_families(c)[0], c.use_spot)

    def zone_in_error(self, text: str, c: Offered) -> str | None:
        """The zone a capacity error names, when the candidate can be narrowed to the others."""
        return c.zone
