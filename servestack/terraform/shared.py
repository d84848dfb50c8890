"""A multi-pool service's own stacks as Terraform (servestack.service): the key and the front.

`render_key(stack)` is the key stack's whole main.tf.json: the one `terraform_data` that draws
the service's API key (as a single pool draws its own) and the sensitive `api_key` output that
every pool reads through `terraform_remote_state` (servestack.terraform.api_key_data). It holds
no cloud resource and needs no provider. `render_shared(stack)` renders either kind; the front
is servestack.front.terraform.render_front of `stack.front`.
"""

from __future__ import annotations

from typing import Any

from servestack.deployment.model import OUTPUT_API_KEY, ServiceStack
from servestack.front.model import FrontPlan
from servestack.front.terraform import render_front
from servestack.terraform import (
    API_KEY_RESOURCE,
    TERRAFORM_VERSION,
    draw_api_key,
    expr,
    finish,
)

KINDS = ("key", "front")


def render_key(stack: ServiceStack) -> dict[str, Any]:
    """The key stack: the key drawn once, kept, and exported as a sensitive output."""
    return finish({
        "terraform": {"required_version": TERRAFORM_VERSION},
        "resource": draw_api_key(),
        "output": {OUTPUT_API_KEY: {
            "value": expr(f"sensitive({API_KEY_RESOURCE}.output)"), "sensitive": True,
            "description": f"the API key of servestack {stack.service} (every pool stores it)"}},
    })


def front_plan(stack: ServiceStack) -> FrontPlan:
    if not isinstance(stack.front, FrontPlan):
        raise ValueError(f"front stack {stack.name} has no FrontPlan")
    return stack.front


def render_shared(stack: ServiceStack) -> dict[str, Any]:
    """The key or front stack's main.tf.json."""
    if stack.kind == "key":
        return render_key(stack)
    if stack.kind == "front":
        return render_front(front_plan(stack))
    raise ValueError(f"stack {stack.name}: kind {stack.kind!r} is not one of {KINDS}")
