"""One endpoint across pools: a managed front (Route 53 health-checked records, or an AWS Global
Accelerator) built as a stack of its own, once the pools' load balancers are up.

`model.py` holds the typed plan (`PoolEndpoint`, `FrontPlan`), `build.py` checks it (one-line
`UserError`s), `terraform.py` renders it as Terraform JSON (`render_front`), and `pulumi.py`
builds it as a Pulumi component (`Front`); only `pulumi.py` imports the Pulumi SDK, so import
it only when used.
"""

from .build import build_front, pool_endpoint
from .terraform import render_front

__all__ = ["build_front", "pool_endpoint", "render_front"]
