"""Reading another stack of the same Pulumi project: a service over several pools
(servestack.service) joins its stacks this way. A pool reads the key stack's `api_key`; the
front reads each pool's `lb_host`, `lb_arn` and `lb_zone_id`.

A StackReference takes the stack's fully qualified name, `<organization>/<project>/<stack>`.
The DIY (file, s3, gs, azblob) backends name every stack's organization "organization", and
the Automation API passes that to an inline program too (pulumi.automation._server); Pulumi
Cloud passes the user's organization. So the program asks the runtime for both rather than
assuming either, and the project is the one running (Pulumi.yaml's `name`, or the Automation
API's ProjectSettings: "servestack" in both).
"""

from __future__ import annotations

import pulumi


def qualified(stack: str) -> str:
    """The fully qualified name of `stack` in the running program's organization and project."""
    return f"{pulumi.get_organization()}/{pulumi.get_project()}/{stack}"


def stack_reference(name: str, stack: str,
                    opts: pulumi.ResourceOptions | None = None) -> pulumi.StackReference:
    """A reference to `stack` of this project, as resource `name`."""
    return pulumi.StackReference(name, stack_name=qualified(stack), opts=opts)
