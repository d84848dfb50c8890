"""GCP, --weight-cache: the pool's GCS bucket for the model's weights, and the VMs' service
account as object admin on that bucket only (servestack.deployment.cache; the settings are
servestack.clouds.gcp's, shared with servestack/terraform/gcp_cache.py).

The bucket's name is the deployment's cache prefix and a digest of the project id (GCS names
are global), as the VMs derive it at boot.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from servestack.components import TYPE_PREFIX

from servestack.clouds.gcp import (
    GCP_CACHE_BUCKET,
    GCP_CACHE_ROLE,
    GCP_CACHE_SOFT_DELETE_SECONDS,
    gcp_labels,
)
from servestack.deployment.model import Deployment


@dataclass
class WeightCacheArgs:
    deployment: Deployment
    member: pulumi.Input[str]  # "serviceAccount:<the VMs' account>"
    project: pulumi.Input[str]


class WeightCache(pulumi.ComponentResource):
    """The private bucket in the pool's region and the VMs' object admin binding on it."""

    def __init__(self, name: str, args: WeightCacheArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:gcp:WeightCache", name, None, opts)
        d, cache = args.deployment, args.deployment.weight_cache
        if cache is None:
            raise ValueError(f"deployment {d.candidate_id} has no weight cache")
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = gcp.storage.Bucket(
            f"{name}-bucket", name=pulumi.Output.from_input(args.project).apply(cache.bucket),
            project=args.project, location=d.region.upper(),
            uniform_bucket_level_access=bool(GCP_CACHE_BUCKET["uniform_bucket_level_access"]),
            public_access_prevention=str(GCP_CACHE_BUCKET["public_access_prevention"]),
            force_destroy=bool(GCP_CACHE_BUCKET["force_destroy"]),
            soft_delete_policy=gcp.storage.BucketSoftDeletePolicyArgs(
                retention_duration_seconds=GCP_CACHE_SOFT_DELETE_SECONDS),
            labels=gcp_labels(d.tags), opts=child)
        self.access = gcp.storage.BucketIAMMember(
            f"{name}-access", bucket=self.bucket.name, role=GCP_CACHE_ROLE,
            member=args.member, opts=child)
        self.register_outputs({"bucket": self.bucket.name})
