"""The Pulumi program: stack config -> Deployment -> the cloud's components -> outputs.

`Pulumi.yaml` points `main` at stacks/, whose __main__.py calls `main()`. The stack file that
`servestack generate` writes (stacks/Pulumi.<stack>.yaml) carries the deployment under
`servestack:deployment`; the Hugging Face token is the secret `servestack:hfToken`.
"""

from __future__ import annotations

import pulumi

from servestack.components import build_service
from servestack.deployment.model import (
    OUTPUT_CANDIDATE,
    OUTPUT_ENDPOINT,
    OUTPUT_GROUP_ID,
    OUTPUT_GROUP_NAME,
    OUTPUT_PRICE,
    OUTPUT_REPLICAS,
    Deployment,
)


def main() -> None:
    config = pulumi.Config("servestack")
    deployment = Deployment.from_config(config.require_object("deployment"))
    hf_token = config.get_secret("hfToken") if deployment.secret else None
    outputs = build_service(deployment.service, deployment, hf_token)
    pulumi.export(OUTPUT_ENDPOINT, outputs.endpoint)
    pulumi.export(OUTPUT_GROUP_NAME, outputs.group_name)
    pulumi.export(OUTPUT_GROUP_ID, outputs.group_id)
    pulumi.export(OUTPUT_CANDIDATE, deployment.candidate_id)
    pulumi.export(OUTPUT_PRICE, deployment.primary.price_per_hour)
    pulumi.export(OUTPUT_REPLICAS, deployment.desired_replicas)
