"""Every cloud's knowledge, one module per cloud: aws.py, gcp.py, azure.py.

Each module holds one `Cloud` (see base.py): zone shape, quota families and codes, the
failure-text rules, disk/network/image/secret conventions, name and label rules; and beside it
the spellings its Pulumi component and Terraform renderer share. Code outside these modules asks
`get(name)` instead of branching on a cloud's name. Adding a cloud means one module here, one
component file (components/), one renderer file (servestack/terraform/) and its catalog rules
(catalog/<cloud>.py, which also says how its zones and spot prices are keyed).

No SDK and no engine is imported here.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servestack.clouds.base import Cloud

# The clouds in the order tables list them. A cloud's module is imported when it is first asked
# for: its failure rules compile dozens of regular expressions, which `plan` never needs.
NAMES: tuple[str, ...] = ("aws", "gcp", "azure")


def get(name: str) -> Cloud:
    """The cloud called `name` (one of NAMES); a KeyError names the known ones."""
    if name not in NAMES:
        raise KeyError(f"unknown cloud {name!r} (known: {', '.join(NAMES)})")
    cloud: Cloud = import_module(f"servestack.clouds.{name}").CLOUD
    return cloud
