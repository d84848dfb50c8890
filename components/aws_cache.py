"""AWS, --weight-cache: the pool's S3 bucket for the model's weights and the VMs' role's rights
on that bucket only (servestack.deployment.cache; the settings are servestack.clouds.aws's,
shared with servestack/terraform/aws_cache.py).

The bucket's name is the deployment's cache prefix and a digest of the account id (S3 names
are global), as the VMs derive it at boot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from servestack.components import TYPE_PREFIX

from servestack.clouds.aws import (
    AWS_CACHE_OWNERSHIP,
    AWS_CACHE_PUBLIC_ACCESS_BLOCK,
    AWS_CACHE_SSE,
    AWS_CACHE_VERSIONING,
    aws_tags,
    cache_bucket_policy,
)
from servestack.deployment.model import Deployment


@dataclass
class WeightCacheArgs:
    deployment: Deployment
    role_id: pulumi.Input[str]  # the VMs' role, which gets the bucket's policy
    account_id: pulumi.Input[str]


class WeightCache(pulumi.ComponentResource):
    """The private bucket (public access blocked, ACLs off, SSE-S3, versioning off,
    force_destroy) and the role policy on its ARN."""

    def __init__(self, name: str, args: WeightCacheArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:aws:WeightCache", name, None, opts)
        d, cache = args.deployment, args.deployment.weight_cache
        if cache is None:
            raise ValueError(f"deployment {d.candidate_id} has no weight cache")
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket", bucket=pulumi.Output.from_input(args.account_id).apply(
                cache.bucket), force_destroy=True, tags=aws_tags(d), opts=child)
        self.public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-private", bucket=self.bucket.id,
            block_public_acls=AWS_CACHE_PUBLIC_ACCESS_BLOCK["block_public_acls"],
            block_public_policy=AWS_CACHE_PUBLIC_ACCESS_BLOCK["block_public_policy"],
            ignore_public_acls=AWS_CACHE_PUBLIC_ACCESS_BLOCK["ignore_public_acls"],
            restrict_public_buckets=AWS_CACHE_PUBLIC_ACCESS_BLOCK["restrict_public_buckets"],
            opts=child)
        self.ownership = aws.s3.BucketOwnershipControls(
            f"{name}-owner", bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership=AWS_CACHE_OWNERSHIP),
            opts=child)
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse", bucket=self.bucket.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3
                .BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm=AWS_CACHE_SSE))], opts=child)
        self.versioning = aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=self.bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                status=AWS_CACHE_VERSIONING), opts=child)
        self.policy = aws.iam.RolePolicy(
            f"{name}-access", name="weight-cache", role=args.role_id,
            policy=self.bucket.arn.apply(
                lambda arn: json.dumps(cache_bucket_policy(arn), sort_keys=True)),
            opts=child)
        self.register_outputs({"bucket": self.bucket.bucket})
