"""Every cloud's knowledge, one module per cloud: aws.py, gcp.py, azure.py.

Each module holds one `Cloud` (see base.py): zone shape, whether spot is priced per zone, quota
families and codes, the failure-text rules, disk/network/image/secret conventions, name and
label rules; and beside it the spellings its Pulumi component and Terraform renderer share.
Code outside these modules asks `get(name)` instead of branching on a cloud's name. Adding a
cloud means one module here, one component file (components/) and one renderer file
(servestack/terraform/).

No SDK and no engine is imported here.
"""

from __future__ import annotations

from servestack.clouds import aws, azure, gcp
from servestack.clouds.base import Cloud

CLOUDS: dict[str, Cloud] = {c.name: c for c in (aws.CLOUD, gcp.CLOUD, azure.CLOUD)}
NAMES: tuple[str, ...] = tuple(CLOUDS)


def get(name: str) -> Cloud:
    """The cloud called `name` (one of NAMES); a KeyError names the known ones."""
    try:
        return CLOUDS[name]
    except KeyError:
        raise KeyError(f"unknown cloud {name!r} (known: {', '.join(NAMES)})") from None
