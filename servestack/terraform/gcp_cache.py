"""GCP as Terraform, --weight-cache: the pool's GCS bucket for the model's weights, and the
VMs' service account as object admin on that bucket only. See servestack.deployment.cache
for the design, servestack.clouds.gcp for the settings (shared with components/gcp_cache.py).

The bucket's name is the deployment's cache prefix and a digest of the project id (GCS names
are global), computed by Terraform's sha256() exactly as the VMs compute it.
"""

from __future__ import annotations

from typing import Any

from servestack.clouds.gcp import (
    GCP_CACHE_BUCKET,
    GCP_CACHE_ROLE,
    GCP_CACHE_SOFT_DELETE_SECONDS,
    gcp_labels,
)
from servestack.deployment.model import ACCOUNT_DIGEST, Deployment
from servestack.terraform import Ref, expr, template

BUCKET = "google_storage_bucket.weight_cache"


def cache_bucket_name(d: Deployment) -> Ref:
    if d.weight_cache is None:
        raise ValueError(f"deployment {d.candidate_id} has no weight cache")
    return template(d.weight_cache.prefix,
                    expr(f"substr(sha256(var.project), 0, {ACCOUNT_DIGEST})"))


def weight_cache(d: Deployment) -> dict[str, Any]:
    """The bucket and the VMs' role on it; nothing without a cache."""
    if d.weight_cache is None:
        return {}
    return {
        "google_storage_bucket": {"weight_cache": {
            "name": cache_bucket_name(d), "project": expr("var.project"),
            "location": d.region.upper(), **GCP_CACHE_BUCKET,
            "soft_delete_policy": {"retention_duration_seconds": GCP_CACHE_SOFT_DELETE_SECONDS},
            "labels": gcp_labels(d.tags)}},
        "google_storage_bucket_iam_member": {"weight_cache": {
            "bucket": expr(f"{BUCKET}.name"), "role": GCP_CACHE_ROLE,
            "member": template("serviceAccount:", expr("google_service_account.vm.email"))}},
    }


def cache_ready(d: Deployment) -> list[str]:
    """What exists before the VMs boot when there is a cache."""
    return ["google_storage_bucket_iam_member.weight_cache"] if d.weight_cache else []
