"""The service's API key for the Pulumi engine: drawn once, kept (encrypted) in the stack state.

Pulumi's own `random` provider would do this, but it is one more plugin to download and one
more package outside the design card; a dynamic resource written in Python needs neither. It
draws 32 random bytes (`secrets.token_urlsafe`) on create only: every later `pulumi up` keeps
the stored value (no `diff`, so never a replacement), and `additional_secret_outputs` makes
the value a Pulumi secret, encrypted in the state and masked in every preview and log. The
Terraform renderers do the same with `terraform_data` (servestack.terraform.api_key_resources).

A pool of a service over several pools (`Deployment.shared_api_key`) draws no key: it reads
the service's key stack's secret `api_key` output (`service_key`), so one key opens every pool.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import pulumi
import pulumi.dynamic
from servestack.components.refs import stack_reference

from servestack.deployment.model import OUTPUT_API_KEY, Deployment

KEY_BYTES = 32  # 256 bits, url-safe base64: 43 characters, valid in an HTTP header


class _KeyProvider(pulumi.dynamic.ResourceProvider):
    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(id_=uuid.uuid4().hex,
                                           outs={"value": secrets.token_urlsafe(KEY_BYTES)})


class ApiKey(pulumi.dynamic.Resource):
    """`value`: the key, a secret Output."""

    value: pulumi.Output[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["value"])
        super().__init__(_KeyProvider(), name, {"value": None},
                         opts=pulumi.ResourceOptions.merge(opts, secret))


def service_key(name: str, deployment: Deployment,
                opts: pulumi.ResourceOptions | None = None) -> pulumi.Output[str]:
    """The deployment's key, a secret: drawn here as resource `name`, or read from the key
    stack (`shared_api_key`) through a StackReference of that name."""
    if deployment.shared_api_key:
        ref = stack_reference(name, deployment.shared_api_key, opts)
        return pulumi.Output.secret(ref.require_output(OUTPUT_API_KEY))
    return pulumi.Output.secret(ApiKey(name, opts=opts).value)
