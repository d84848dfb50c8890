"""Pulumi ComponentResources, one file per cloud: aws.py, gcp.py, azure.py.

Each cloud file builds the same service from a `Deployment` (servestack.deployment): GPU
instance group, firewall ports, load balancer, health checks, the secret store entry for the
Hugging Face token, and the cloud-init bootstrap as user data. Every cloud file exposes one
top-level component, `Service`, with the same outputs (see `ServiceOutputs`).

Only the chosen cloud's SDK is imported: each SDK costs about a second to load.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from servestack.deployment.model import Deployment

TYPE_PREFIX = "servestack"


@dataclass
class ServiceOutputs:
    """What every cloud's Service gives back; the program exports these."""

    endpoint: Any  # pulumi.Output[str]: http://<load balancer address>:<listener port>
    group_name: Any  # pulumi.Output[str]: ASG name / MIG name / VMSS name
    group_id: Any  # pulumi.Output[str]
    api_key: Any = None  # pulumi.Output[str], a secret: the generated key (None: no key)
    api_key_ref: Any = None  # pulumi.Output[str]: where the secret store keeps it
    dns_records: Any = None  # the records the user creates for --domain (no --dns-zone)
    # The load balancer as a front reaches it (servestack.front): its address (AWS: the ALB's
    # DNS name; GCP, Azure: the frontend's IPv4), and on AWS the ALB's ARN and hosted zone id.
    lb_host: Any = None
    lb_arn: Any = None
    lb_zone_id: Any = None


def build_service(name: str, deployment: Deployment, hf_token: Any = None) -> ServiceOutputs:
    """Create the chosen cloud's Service component; `hf_token` is a Pulumi secret or None."""
    module = import_module(f"servestack.components.{deployment.cloud}")
    service = module.Service(name, deployment, hf_token=hf_token)
    return ServiceOutputs(endpoint=service.endpoint, group_name=service.group_name,
                          group_id=service.group_id, api_key=getattr(service, "api_key", None),
                          api_key_ref=getattr(service, "api_key_ref", None),
                          dns_records=getattr(service, "dns_records", None),
                          lb_host=service.lb_host, lb_arn=getattr(service, "lb_arn", None),
                          lb_zone_id=getattr(service, "lb_zone_id", None))
