"""A moto server (AWS API stand-in) that can run out of EC2 capacity, as AWS does.

Run as a script, it serves moto on 127.0.0.1 on an ephemeral port and prints one JSON line
`{"port": N}` once it listens. Faults come from the JSON file named by `--faults`, re-read on
every launch, so a test can change them while the server runs:

    {"capacity": [{"instance_types": ["g6e.12xlarge"], "zones": ["use1-az1", "us-east-1b"]}]}

A launch of one of those types into one of those zones (names or zone ids; no `zones` means
every zone) fails with AWS's own InsufficientInstanceCapacity error and message.

Where the fault sits, and why: moto's auto scaling group launches its instances inside
CreateAutoScalingGroup / SetDesiredCapacity by calling the EC2 backend's `run_instances`
directly, with the launch template's instance type, in the group's first subnet, and raises any
error straight out of the API call. Real AWS instead accepts the group and records a *failed
scaling activity*; Terraform's aws_autoscaling_group then finds that activity while it waits
for capacity and fails with its status message. So this launcher patches three places:

1. `InstanceBackend.run_instances` (every launch, RunInstances or the group's): the fault.
2. `FakeAutoScalingGroup.replace_autoscaling_group_instances`: tries the mixed instances
   policy's override types in priority order ("prioritized"), each in every subnet of the
   group, like AWS; if none launches, it records a Failed activity instead of raising.
3. `AutoScalingResponse.describe_scaling_activities` (a stub returning nothing in moto):
   returns the recorded activities.

`MotoServer` (for tests) starts the script, waits for the port, and stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ICE = "InsufficientInstanceCapacity"
READY_TIMEOUT_SECONDS = 30


def capacity_message(instance_type: str, zone: str, other_zones: list[str]) -> str:
    """The text AWS sends with InsufficientInstanceCapacity for a zonal launch."""
    others = ", ".join(other_zones) or "another Availability Zone"
    return (f"We currently do not have sufficient {instance_type} capacity in the Availability "
            f"Zone you requested ({zone}). Our system will be working on provisioning "
            f"additional capacity. You can currently get {instance_type} capacity by not "
            f"specifying an Availability Zone in your request or choosing {others}.")


# --- server side (runs in the moto process) ----------------------------------------------------

ACTIVITIES: dict[str, list[dict[str, Any]]] = {}  # group name -> activities, newest first
_LOCK = threading.Lock()


def _faults(path: str | None) -> list[dict[str, Any]]:
    if not path or not Path(path).exists():
        return []
    return json.loads(Path(path).read_text(encoding="utf-8")).get("capacity", [])


def _zone_of(backend: Any, kwargs: dict[str, Any]) -> tuple[str | None, str | None]:
    """(zone name, zone id) a launch lands in: its subnet's zone, else its placement."""
    if kwargs.get("subnet_id"):
        subnet = backend.get_subnet(kwargs["subnet_id"])
        return subnet.availability_zone, subnet.availability_zone_id
    name = kwargs.get("placement")
    zone = backend.get_zone_by_name(name) if name else None
    return name, zone.zone_id if zone else None


def _matches(fault: dict[str, Any], instance_type: str, zone: tuple[str | None, str | None]
             ) -> bool:
    if instance_type not in fault.get("instance_types", []):
        return False
    zones = fault.get("zones")
    return not zones or any(z in zones for z in zone if z)


def install(faults_file: str | None) -> None:
    """Patch moto so launches fail per the faults file and groups record scaling activities."""
    from moto.autoscaling.models import FakeAutoScalingGroup
    from moto.autoscaling.responses import AutoScalingResponse
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    original_run = InstanceBackend.run_instances
    original_replace = FakeAutoScalingGroup.replace_autoscaling_group_instances
    template_type = FakeAutoScalingGroup.instance_type

    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        instance_type = kwargs.get("instance_type") or "m1.small"
        zone = _zone_of(self, kwargs)
        if any(_matches(f, instance_type, zone) for f in _faults(faults_file)):
            others = [z.name for z in self.describe_availability_zones()
                      if not any(_matches(f, instance_type, (z.name, z.zone_id))
                                 for f in _faults(faults_file))]
            raise EC2ClientError(ICE, capacity_message(instance_type, zone[0] or "", others))
        return original_run(self, image_id, count, user_data, security_group_names, **kwargs)

    def instance_type(self) -> str:
        return getattr(self, "_launch_type", None) or template_type.fget(self)

    def replace_instances(self, count_needed: int, propagated_tags: dict[str, str]) -> None:
        subnets = [s for s in (self.vpc_zone_identifier or "").split(",") if s] or [None]
        saved_subnets = self.vpc_zone_identifier
        before = len(self.instance_states)
        error: Exception | None = None
        try:
            for launch_type in _priority_types(self):
                for subnet in subnets:
                    self._launch_type = launch_type
                    if subnet:
                        self.vpc_zone_identifier = subnet
                    try:
                        original_replace(self, count_needed, dict(propagated_tags))
                        _record(self, "Successful", f"Launching {count_needed} new EC2 "
                                f"instance(s): {launch_type}.", before, count_needed)
                        return
                    except EC2ClientError as exc:
                        if exc.code != ICE:
                            raise
                        error = exc
        finally:
            self._launch_type = None
            self.vpc_zone_identifier = saved_subnets
        market = "Spot" if _spot_only(self) else "On-Demand"
        _record(self, "Failed", f"Could not launch {market} Instances. {ICE} - "
                f"{error.message} Launching EC2 instance failed.", before, count_needed)

    def describe_scaling_activities(self) -> ActionResult:
        name = self._get_param("AutoScalingGroupName")
        ids = set(self._get_param("ActivityIds", []) or [])
        with _LOCK:
            found = [a for group, items in ACTIVITIES.items() if not name or group == name
                     for a in items if not ids or a["ActivityId"] in ids]
        return ActionResult({"Activities": found})

    InstanceBackend.run_instances = run_instances
    FakeAutoScalingGroup.instance_type = property(instance_type)
    FakeAutoScalingGroup.replace_autoscaling_group_instances = replace_instances
    AutoScalingResponse.describe_scaling_activities = describe_scaling_activities


def _priority_types(group: Any) -> list[str]:
    """The override types in priority order, else the launch template's type."""
    policy = group.mixed_instances_policy or {}
    overrides = policy.get("LaunchTemplate", {}).get("Overrides", [])
    types = [o["InstanceType"] for o in overrides if o.get("InstanceType")]
    return types or [group.instance_type]


def _spot_only(group: Any) -> bool:
    distribution = (group.mixed_instances_policy or {}).get("InstancesDistribution", {})
    return int(distribution.get("OnDemandPercentageAboveBaseCapacity", 100)) == 0 and \
        int(distribution.get("OnDemandBaseCapacity", 0)) == 0


def _record(group: Any, status: str, message: str, before: int, count: int) -> None:
    now = datetime.now(timezone.utc)
    activity = {
        "ActivityId": str(uuid.uuid4()), "AutoScalingGroupName": group.name,
        "AutoScalingGroupARN": group.arn,
        "Description": f"Launching a new EC2 instance.  Status Reason: {message}"
        if status == "Failed" else message,
        "Cause": f"At {now:%Y-%m-%dT%H:%M:%SZ} an instance was started in response to a "
                 f"difference between desired and actual capacity, increasing the capacity "
                 f"from {before} to {before + count}.",
        "StartTime": now, "EndTime": now, "StatusCode": status, "Progress": 100,
        "Details": "{}",
    }
    if status == "Failed":
        activity["StatusMessage"] = message
    with _LOCK:
        ACTIVITIES.setdefault(group.name, []).insert(0, activity)


def serve(faults_file: str | None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    install(faults_file)
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app),
                         threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


# --- test side -----------------------------------------------------------------------------------


class MotoServer:
    """The launcher above as a child process: `with MotoServer(tmp) as moto: moto.url`."""

    def __init__(self, workdir: Path) -> None:
        self.faults_file = Path(workdir) / "moto-faults.json"
        self.log_file = Path(workdir) / "moto.log"
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_capacity_faults(self, faults: list[dict[str, Any]]) -> None:
        tmp = self.faults_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"capacity": faults}), encoding="utf-8")
        os.replace(tmp, self.faults_file)

    def start(self) -> MotoServer:
        self.set_capacity_faults([])
        # AWS's managed policies (AmazonSSMManagedInstanceCore, attached to the VMs' role) are
        # loaded only on request: moto has them from AWS, but reading them costs seconds.
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "--faults", str(self.faults_file)],
                stdout=subprocess.PIPE, stderr=log, env=env)
        self.port = self._read_port()
        return self

    def _read_port(self) -> int:
        assert self.process is not None and self.process.stdout is not None
        result: dict[str, Any] = {}
        reader = threading.Thread(
            target=lambda: result.update(json.loads(self.process.stdout.readline() or "{}")),
            daemon=True)
        reader.start()
        reader.join(READY_TIMEOUT_SECONDS)
        if "port" not in result:
            self.stop()
            raise RuntimeError(f"moto did not start: {self.log_file.read_text()[-2000:]}")
        return int(result["port"])

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The AWS services a generated stack (and the engine's tag sweep) talks to.
TERRAFORM_SERVICES = ("autoscaling", "ec2", "elbv2", "iam", "kms", "resourcegroupstaggingapi",
                      "servicequotas", "ssm", "sts")


def terraform_override(url: str) -> dict[str, Any]:
    """An override file pointing the AWS provider at `url`: fake keys, no account lookups, and
    one retry (the provider retries InsufficientInstanceCapacity for minutes otherwise)."""
    return {"provider": {"aws": {
        "access_key": "testing", "secret_key": "testing",
        "skip_credentials_validation": True, "skip_requesting_account_id": True,
        "skip_metadata_api_check": "true", "skip_region_validation": True, "max_retries": 1,
        "endpoints": {service: url for service in TERRAFORM_SERVICES}}}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", help="JSON file with the capacity faults")
    serve(parser.parse_args(argv).faults)


if __name__ == "__main__":
    main()
