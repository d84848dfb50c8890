"""The Pulumi program: stack config -> Deployment -> the cloud's components -> outputs.

`Pulumi.yaml` points `main` at stacks/, whose __main__.py calls `main()`. The stack file that
`servestack generate` writes (stacks/Pulumi.<stack>.yaml) carries the deployment under
`servestack:deployment`; the Hugging Face token is the secret `servestack:hfToken`.
"""

from __future__ import annotations

import pulumi

from servestack.components import build_service
from servestack.deployment.model import Deployment


def main() -> None:
    config = pulumi.Config("servestack")
    deployment = Deployment.from_config(config.require_object("deployment"))
    hf_token = config.get_secret("hfToken") if deployment.secret else None
    outputs = build_service(deployment.service, deployment, hf_token)
    pulumi.export("endpoint", outputs.endpoint)
    pulumi.export("instanceGroupName", outputs.group_name)
    pulumi.export("instanceGroupId", outputs.group_id)
    pulumi.export("candidateId", deployment.candidate_id)
    pulumi.export("pricePerHour", deployment.primary.price_per_hour)
    pulumi.export("replicas", deployment.desired_replicas)
