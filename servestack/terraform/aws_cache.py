"""AWS as Terraform, --weight-cache: the pool's S3 bucket for the model's weights, and the
VMs' role's rights on it (that bucket only). See servestack.deployment.cache for the design,
servestack.clouds.aws for the bucket's settings (shared with components/aws_cache.py).

The bucket's name is the deployment's cache prefix and a digest of the account id (S3 names
are global), computed here by Terraform's sha256() exactly as the VMs compute it.
"""

from __future__ import annotations

import json
from typing import Any

from servestack.clouds.aws import (
    AWS_CACHE_OWNERSHIP,
    AWS_CACHE_PUBLIC_ACCESS_BLOCK,
    AWS_CACHE_SSE,
    AWS_CACHE_VERSIONING,
    aws_tags,
    cache_bucket_policy,
)
from servestack.deployment.model import ACCOUNT_DIGEST, Deployment
from servestack.terraform import Ref, expr, template

BUCKET = "aws_s3_bucket.weight_cache"
ACCOUNT = "data.aws_caller_identity.current.account_id"


def cache_bucket_name(d: Deployment) -> Ref:
    cache = _cache(d)
    return template(cache.prefix, expr(f"substr(sha256({ACCOUNT}), 0, {ACCOUNT_DIGEST})"))


def weight_cache(d: Deployment) -> dict[str, Any]:
    """The bucket, its settings and the role's policy on it; nothing without a cache."""
    if d.weight_cache is None:
        return {}
    bucket = {"bucket": expr(f"{BUCKET}.id")}
    return {
        "aws_s3_bucket": {"weight_cache": {"bucket": cache_bucket_name(d), "force_destroy": True,
                                           "tags": aws_tags(d)}},
        "aws_s3_bucket_public_access_block": {"weight_cache": {
            **bucket, **AWS_CACHE_PUBLIC_ACCESS_BLOCK}},
        "aws_s3_bucket_ownership_controls": {"weight_cache": {
            **bucket, "rule": {"object_ownership": AWS_CACHE_OWNERSHIP}}},
        "aws_s3_bucket_server_side_encryption_configuration": {"weight_cache": {
            **bucket, "rule": [{"apply_server_side_encryption_by_default": {
                "sse_algorithm": AWS_CACHE_SSE}}]}},
        "aws_s3_bucket_versioning": {"weight_cache": {
            **bucket, "versioning_configuration": {"status": AWS_CACHE_VERSIONING}}},
        "aws_iam_role_policy": {"weight_cache": {
            "name": "weight-cache", "role": expr("aws_iam_role.vm.id"),
            # The one `${...}` in the document is the bucket's ARN.
            "policy": Ref(json.dumps(cache_bucket_policy(expr(f"{BUCKET}.arn")),
                                     sort_keys=True))}},
    }


def cache_ready(d: Deployment) -> list[str]:
    """What exists before the VMs boot when there is a cache (they fill and read it)."""
    if d.weight_cache is None:
        return []
    return ["aws_iam_role_policy.weight_cache", "aws_s3_bucket_public_access_block.weight_cache",
            "aws_s3_bucket_ownership_controls.weight_cache",
            "aws_s3_bucket_server_side_encryption_configuration.weight_cache"]


def _cache(d: Deployment):
    if d.weight_cache is None:
        raise ValueError(f"deployment {d.candidate_id} has no weight cache")
    return d.weight_cache
