"""The Pulumi program: stack config -> Deployment -> the cloud's components -> outputs.

`Pulumi.yaml` points `main` at stacks/, whose __main__.py calls `main()`. The stack file that
`servestack generate` writes (stacks/Pulumi.<stack>.yaml) carries the deployment under
`servestack:deployment`. The deployment's secrets (servestack.secrets: one env file, kept in
the cloud's secret store) reach the program without a file or a command line: `servestack
deploy` passes them in memory to its inline program; a hand-run `pulumi up` reads the secret
config `servestack:hfToken` if the user set it (the env file, or a bare Hugging Face token),
else the names listed in `servestack:secrets` from the deployer's environment. Either way the
value is a Pulumi secret: encrypted in the state, masked in every output.

A service over several pools (servestack.service) is several stacks of this one project, told
apart by `servestack:role`: "pool" (the default: one pool's deployment, as above), "key" (the
API key the pools share, a secret `api_key` output and no cloud resource), "front" (the
`servestack:front` FrontPlan, whose pools are read from their stacks by reference).
"""

from __future__ import annotations

import os

import pulumi

from servestack.components import build_service
from servestack.deployment.model import (
    OUTPUT_API_KEY,
    OUTPUT_API_KEY_REF,
    OUTPUT_CANDIDATE,
    OUTPUT_DNS_RECORDS,
    OUTPUT_ENDPOINT,
    OUTPUT_GROUP_ID,
    OUTPUT_GROUP_NAME,
    OUTPUT_LB_ARN,
    OUTPUT_LB_HOST,
    OUTPUT_LB_ZONE_ID,
    OUTPUT_PRICE,
    OUTPUT_REPLICAS,
    Deployment,
)
from servestack.pulumi.stackfile import FRONT_ROLE, KEY_ROLE, NAMESPACE, POOL_ROLE, ROLE_KEY

ROLES = (POOL_ROLE, KEY_ROLE, FRONT_ROLE)


def main(secrets: str | None = None) -> None:
    """`secrets`: the env file of the deployment's secrets, given in memory (servestack
    deploy, the offline preview); None: from the stack config or the environment."""
    config = pulumi.Config(NAMESPACE)
    role = config.get("role") or POOL_ROLE
    if role == KEY_ROLE:
        key_stack(config)
    elif role == FRONT_ROLE:
        front_stack(config)
    elif role == POOL_ROLE:
        pool_stack(config, secrets)
    else:
        raise pulumi.RunError(f"{ROLE_KEY} must be one of {', '.join(ROLES)}, not {role!r}")


def key_stack(config: pulumi.Config) -> None:
    """The one API key of a service over several pools, drawn once; its pools read it."""
    from servestack.components.apikey import ApiKey

    key = ApiKey(f"{config.require('service')}-api-key")
    pulumi.export(OUTPUT_API_KEY, pulumi.Output.secret(key.value))


def front_stack(config: pulumi.Config) -> None:
    """One endpoint over the pools (their load balancers read from their stacks)."""
    from servestack.front.model import OUTPUT_ENDPOINT as FRONT_ENDPOINT
    from servestack.front.model import FrontPlan
    from servestack.front.pulumi import Front

    plan = FrontPlan.from_config(config.require_object("front"))
    front = Front(plan.service, plan)
    pulumi.export(FRONT_ENDPOINT, front.endpoint)


def pool_stack(config: pulumi.Config, secrets: str | None) -> None:
    """One pool (or a whole single-region service): the deployment in the stack's config."""
    deployment = Deployment.from_config(config.require_object("deployment"))
    env_file = _secrets(config, secrets) if deployment.secret else None
    outputs = build_service(deployment.service, deployment, env_file)
    pulumi.export(OUTPUT_ENDPOINT, outputs.endpoint)
    pulumi.export(OUTPUT_GROUP_NAME, outputs.group_name)
    pulumi.export(OUTPUT_GROUP_ID, outputs.group_id)
    pulumi.export(OUTPUT_CANDIDATE, deployment.candidate_id)
    pulumi.export(OUTPUT_PRICE, deployment.primary.price_per_hour)
    pulumi.export(OUTPUT_REPLICAS, deployment.desired_replicas)
    if outputs.api_key is not None:
        pulumi.export(OUTPUT_API_KEY, pulumi.Output.secret(outputs.api_key))
        pulumi.export(OUTPUT_API_KEY_REF, outputs.api_key_ref)
    if outputs.dns_records is not None:
        pulumi.export(OUTPUT_DNS_RECORDS, outputs.dns_records)
    for name, value in ((OUTPUT_LB_HOST, outputs.lb_host), (OUTPUT_LB_ARN, outputs.lb_arn),
                        (OUTPUT_LB_ZONE_ID, outputs.lb_zone_id)):
        if value is not None:  # what a front reads (lb_arn, lb_zone_id: AWS only)
            pulumi.export(name, value)


def _secrets(config: pulumi.Config, given: str | None) -> pulumi.Output[str] | None:
    """The env file as a Pulumi secret; None when nothing gives it (the components then expect
    the secret-store entry to exist already)."""
    from servestack.errors import UserError
    from servestack.secrets import env_file

    if given is not None:
        return pulumi.Output.secret(given)
    stored = config.get_secret("hfToken")
    if stored is not None:
        return stored
    names = config.get_object("secrets") or []
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        raise pulumi.RunError(f"no value for {', '.join(missing)}: export it before `pulumi up` "
                              "(or set the secret config servestack:hfToken)")
    if not names:
        return None
    try:
        text = env_file({name: os.environ[name] for name in names})
    except UserError as exc:
        raise pulumi.RunError(str(exc)) from None
    return pulumi.Output.secret(text)
