"""Readiness against moto: its load balancers serve nothing, so a replica "answers" when its
VM is InService in the pool's auto scaling group, read through the same AWS API Terraform
wrote to. The deploy code around the probe (how many replicas must answer, the key it sends,
the front's probe) is the real one; only the HTTP request is replaced.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from servestack.deploy.readiness import ProbeAnswer
from servestack.deployment.model import Deployment

CANDIDATE_TAG = "servestack-candidate"  # the tag every generated AWS resource carries


def aws_client(url: str, service: str, region: str) -> Any:
    import boto3

    return boto3.client(service, region_name=region, endpoint_url=url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def group_of(url: str, d: Deployment) -> dict | None:
    """The pool's auto scaling group, found by its candidate tag in its region."""
    groups = aws_client(url, "autoscaling", d.region).describe_auto_scaling_groups()
    for group in groups["AutoScalingGroups"]:
        tags = {t["Key"]: t["Value"] for t in group["Tags"]}
        if tags.get(CANDIDATE_TAG) == d.candidate_id:
            return group
    return None


def moto_probe_factory(url: str) -> Callable[[str, Deployment], Callable[[], ProbeAnswer]]:
    """A ProbeFactory (servestack.deploy.loop): each InService VM of the deployment's group
    counts as one replica; the answers name them in turn, as a load balancer would."""

    def factory(endpoint: str, deployment: Deployment) -> Callable[[], ProbeAnswer]:
        turns = itertools.count()

        def probe() -> ProbeAnswer:
            group = group_of(url, deployment) or {}
            live = [i["InstanceId"] for i in group.get("Instances", [])
                    if i["LifecycleState"] == "InService"]
            if not live:
                return ProbeAnswer(False, error=f"no InService instance behind {endpoint}")
            return ProbeAnswer(True, 200, live[next(turns) % len(live)])

        return probe

    return factory
