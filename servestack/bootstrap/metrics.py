"""The metrics shipper's part of the bootstrap: what the document adds when the autoscaler
tracks a gauge the replicas publish (`clouds.get(d.cloud).shipped_metric(d)` is not None).

It writes servestack_metrics.py (stdlib Python, see its docstring), its settings in
/etc/servestack/metrics.env (plain NAME=value lines, read by systemd's EnvironmentFile, so no
shell quoting: every value is checked to need none), and `servestack-metrics.service`, one
long-running process (Restart=always) that reads vLLM's /metrics on localhost and publishes
every METRICS_INTERVAL_SECONDS. Nothing is added when the autoscaler reads the load balancer
or the group has a fixed size, so those documents are unchanged.
"""

from __future__ import annotations

import ast
import re
from importlib import resources

from servestack import clouds
from servestack.deployment.model import Deployment

ETC = "/etc/servestack"
SCRIPT = "servestack_metrics.py"
SCRIPT_PATH = f"/opt/servestack/lib/python/{SCRIPT}"
UNIT = "servestack-metrics.service"
METRICS_INTERVAL_SECONDS = 60  # the period the cloud-side alarms and rules are built on
PLAIN = re.compile(r"^[A-Za-z0-9_./:@-]*$")
METRICS_UNIT = f"""\
[Unit]
Description=servestack metrics shipper: vLLM's gauge to the cloud's monitoring
Wants=network-online.target
After=network-online.target servestack-vllm.service
StartLimitIntervalSec=0

[Service]
Type=simple
EnvironmentFile={ETC}/metrics.env
ExecStart=/usr/bin/env python3 {SCRIPT_PATH}
Restart=always
RestartSec=30
StandardOutput=journal
StandardError=journal
SyslogIdentifier=servestack-metrics

[Install]
WantedBy=multi-user.target
"""


def shipped(d: Deployment) -> str | None:
    """The gauge this deployment's replicas publish, or None."""
    return clouds.get(d.cloud).shipped_metric(d)


def metrics_units(d: Deployment) -> list[str]:
    return [UNIT] if shipped(d) else []


def metrics_files(d: Deployment) -> list[tuple[str, str, str]]:
    """(path, text, permissions) of the shipper's files; none when nothing is shipped."""
    if not shipped(d):
        return []
    return [(f"{ETC}/metrics.env", metrics_env(d), "0644"),
            (SCRIPT_PATH, compact_script(d.cloud), "0644"),
            (f"/etc/systemd/system/{UNIT}", METRICS_UNIT, "0644")]


def metrics_env(d: Deployment) -> str:
    """systemd EnvironmentFile lines: what the shipper reads (no secret, no quoting)."""
    metric = shipped(d)
    values = {
        "SERVESTACK_CLOUD": d.cloud,
        "SERVESTACK_REGION": d.region,
        "SERVESTACK_PORT": d.service_port,
        "SERVESTACK_GCP_PROJECT": d.gcp_project or "",
        "SERVESTACK_METRIC": metric,
        "SERVESTACK_METRICS_NAMESPACE": clouds.get(d.cloud).metrics_namespace,
        "SERVESTACK_METRICS_INTERVAL": METRICS_INTERVAL_SECONDS,
    }
    for key, value in values.items():
        if not PLAIN.match(str(value)):
            raise ValueError(f"{key}={value!r} needs quoting, which EnvironmentFile reads "
                             "differently from a shell")
    return "# servestack metrics shipper settings (systemd EnvironmentFile)\n" \
        "# shellcheck shell=bash disable=SC2034\n" + \
        "".join(f"{key}={value}\n" for key, value in values.items())


def compact_script(cloud: str, script: str = SCRIPT) -> str:
    """servestack_metrics.py (or `script`) for one cloud, as small as Python allows: the other
    clouds' functions, classes and constants left out (their names start with the cloud's name), and
    docstrings and comments dropped by re-printing the syntax tree. AWS takes 16 KiB of user
    data in all, and the full script would take a third of it."""
    source = resources.files("servestack.bootstrap").joinpath(script).read_text()
    tree = ast.parse(source)
    others = tuple(c for c in clouds.NAMES if c != cloud)
    tree.body = [node for node in tree.body if not _docstring(node)
                 and not _defined_name(node).lower().startswith(others)]
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.body and \
                _docstring(node.body[0]):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def _docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and \
        isinstance(node.value.value, str)


def _defined_name(node: ast.stmt) -> str:
    """The name a top-level statement defines (a def, a class, one assignment), else ""."""
    if isinstance(node, ast.FunctionDef | ast.ClassDef):
        return node.name
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
            isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return ""
