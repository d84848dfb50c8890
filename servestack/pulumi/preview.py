"""Offline preview: run the real Pulumi program under the SDK's mock runtime and record every
resource it would create (type token, name, parent, inputs). No CLI, no plugins, no credentials.

The same recorder backs the component tests, so what reviewers see in a preview is exactly what
the tests assert on. Invokes (image lookups, zone lookups) get plausible canned answers, listed
in `CANNED_INVOKES`; the preview marks them as such. Reads of other stacks (StackReference: a
pool reading its service's key stack, a front reading its pools) get plausible outputs
(`referenced_outputs`), and are recorded as reads (`Recording.reads`).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field

SECRET_MASK = "[secret]"
# What the preview hands the program as the secrets' env file: it never reads the real ones.
PREVIEW_SECRETS = "HF_TOKEN=preview-placeholder\n"
USER_DATA_KEYS = ("userData", "customData", "user-data", "startup-script")
# Answers for data-source invokes under the mock runtime; a real `pulumi up` asks the cloud.
CANNED_INVOKES: dict[str, dict] = {
    "aws:ec2/getAmi:getAmi": {"id": "ami-0preview0000000000", "imageId": "ami-0preview0000000000",
                              "name": "Deep Learning OSS Nvidia Driver AMI GPU PyTorch (preview)",
                              "rootDeviceName": "/dev/sda1"},
    "aws:ec2/getVpc:getVpc": {"id": "vpc-0preview", "cidrBlock": "172.31.0.0/16"},
    "aws:ec2/getSubnets:getSubnets": {"ids": ["subnet-0preview-a", "subnet-0preview-b",
                                              "subnet-0preview-c"]},
    # The region's other AZs, asked only when a group pinned to one zone needs a second AZ for
    # its load balancer (components/aws.py excludes the pinned zone itself).
    "aws:index/getAvailabilityZones:getAvailabilityZones": {
        "id": "preview", "names": ["preview-zone-b", "preview-zone-c"],
        "zoneIds": ["preview-az2", "preview-az3"], "groupNames": ["preview"]},
    "aws:index/getCallerIdentity:getCallerIdentity": {"accountId": "123456789012",
                                                      "arn": "arn:aws:iam::123456789012:root",
                                                      "userId": "preview"},
    "aws:index/getRegion:getRegion": {"name": "us-east-1", "region": "us-east-1"},
    "aws:index/getPartition:getPartition": {"id": "aws", "partition": "aws",
                                            "dnsSuffix": "amazonaws.com",
                                            "reverseDnsPrefix": "com.amazonaws"},
    "gcp:compute/getImage:getImage": {"selfLink": "projects/deeplearning-platform-release/"
                                      "global/images/preview-image", "name": "preview-image"},
    "gcp:compute/getZones:getZones": {"names": []},
    "gcp:organizations/getProject:getProject": {"number": "123456789012",
                                                "projectId": "preview-project"},
    "azure-native:authorization:getClientConfig": {
        "clientId": "00000000-0000-0000-0000-000000000001",
        "objectId": "00000000-0000-0000-0000-000000000002",
        "subscriptionId": "00000000-0000-0000-0000-000000000003",
        "tenantId": "00000000-0000-0000-0000-000000000004"},
}


STACK_REFERENCE = "pulumi:pulumi:StackReference"
DIY_ORGANIZATION = "organization"  # how the DIY backends name every stack's organization
# What a referenced stack answers under the mock runtime: the key stack's key (a secret), a
# pool's load balancer (an ALB's name, ARN and alias zone; an IP for the other clouds). The
# account is the preview's own (getCallerIdentity above), the addresses documentation ones.
PREVIEW_API_KEY = "preview-placeholder-api-key"
SECRET_OUTPUTS = ("api_key",)


def alb_outputs(stack: str, region: str) -> dict[str, str]:
    return {"lb_host": f"{stack[:24]}-0123456789.{region}.elb.amazonaws.com",
            "lb_arn": f"arn:aws:elasticloadbalancing:{region}:123456789012:loadbalancer/app/"
                      f"{stack[:24]}/0123456789abcdef",
            "lb_zone_id": "ZPREVIEWALBZONE"}


def ip_outputs(index: int) -> dict[str, str]:
    return {"lb_host": f"203.0.113.{20 + index}"}  # documentation range


def any_outputs(stack: str) -> dict[str, str]:
    """A stack nothing told the preview about: every output a reference may ask for."""
    return {"api_key": PREVIEW_API_KEY, **alb_outputs(stack, "us-east-1")}


def referenced_outputs(config: dict[str, str]) -> dict[str, dict]:
    """Plausible outputs of the stacks a stack file's program reads, by stack name: the key
    stack of a pool (servestack:deployment), the pools of a front (servestack:front)."""
    found: dict[str, dict] = {}
    if "servestack:deployment" in config:
        key = json.loads(config["servestack:deployment"]).get("shared_api_key")
        if key:
            found[key] = {"api_key": PREVIEW_API_KEY}
    if "servestack:front" in config:
        pools = json.loads(config["servestack:front"]).get("pools") or []
        for index, pool in enumerate(p for p in pools if p.get("stack")):
            found[pool["stack"]] = alb_outputs(pool["stack"], pool["region"]) \
                if pool.get("address") == "name" else ip_outputs(index)
    return found


@dataclass
class Recorded:
    type: str
    name: str
    urn: str
    parent: str | None
    custom: bool
    inputs: dict
    id: str = ""

    def to_json(self) -> dict:
        return {"type": self.type, "name": self.name, "urn": self.urn, "parent": self.parent,
                "custom": self.custom, "inputs": self.inputs}


@dataclass
class Recording:
    resources: list[Recorded] = field(default_factory=list)
    invokes: list[dict] = field(default_factory=list)
    reads: list[Recorded] = field(default_factory=list)  # other stacks read (StackReference)
    outputs: dict = field(default_factory=dict)

    def of_type(self, type_token: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str) -> Recorded:
        found = self.of_type(type_token)
        if len(found) != 1:
            raise AssertionError(f"expected one {type_token}, found {len(found)}: "
                                 f"{[r.name for r in found]}")
        return found[0]

    def types(self) -> list[str]:
        return [r.type for r in self.resources]


def record(program: Callable[[], None], *, config: dict[str, str] | None = None,
           secret_keys: list[str] | None = None, project: str = "servestack",
           stack: str = "preview", invoke_answers: dict[str, dict] | None = None,
           stack_outputs: dict[str, dict] | None = None) -> Recording:
    """Run `program` under Pulumi's mock runtime; return what it registered. A referenced
    stack answers with `stack_outputs[its name]`, else `any_outputs`."""
    import pulumi
    from pulumi.runtime import mocks as pulumi_mocks
    from pulumi.runtime import settings

    recording = Recording()
    answers = {**CANNED_INVOKES, **(invoke_answers or {})}

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            if args.typ == STACK_REFERENCE:
                return self.referenced(str(args.resource_id))
            state = dict(args.inputs)
            resource_id = f"{args.name}-id"
            state.setdefault("arn", f"arn:preview:{args.typ}:{args.name}")
            state.setdefault("name", args.name)
            state.setdefault("selfLink", f"https://preview/{args.typ}/{args.name}")
            state.setdefault("dnsName", f"{args.name}.preview.invalid")
            if args.typ == "aws:lb/loadBalancer:LoadBalancer":
                state.setdefault("zoneId", "ZPREVIEWALBZONE")  # what an alias record targets
            identity = state.get("identity")
            if isinstance(identity, dict) and \
                    isinstance(identity.get("userAssignedIdentities"), list):
                # azure-native takes a list of identity ids but returns a map keyed by them
                state["identity"] = {**identity, "userAssignedIdentities":
                                     {i: {} for i in identity["userAssignedIdentities"]}}
            if args.typ.endswith(("forwardingRule:ForwardingRule", ":PublicIPAddress",
                                  "address:Address")):
                state.setdefault("ipAddress", "203.0.113.10")  # documentation range
                state.setdefault("address", "203.0.113.10")
            return [resource_id, state]

        def referenced(self, qualified: str) -> tuple[str, dict]:
            name = qualified.rsplit("/", 1)[-1]
            outputs = (stack_outputs or {}).get(name) or any_outputs(name)
            return qualified, {"name": qualified, "outputs": outputs,
                               "secretOutputNames": [k for k in SECRET_OUTPUTS if k in outputs]}

        def call(self, args: pulumi.runtime.MockCallArgs):
            recording.invokes.append({"token": args.token, "args": dict(args.args)})
            return dict(answers.get(args.token, {}))

    class Monitor(pulumi_mocks.MockMonitor):
        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                inputs = pulumi.runtime.rpc.deserialize_properties(request.object)
                recording.resources.append(Recorded(
                    type=request.type, name=request.name, urn=response.urn,
                    parent=request.parent or None, custom=bool(request.custom),
                    inputs=_plain(inputs), id=response.id))
            return response

        def ReadResource(self, request):
            response = super().ReadResource(request)
            recording.reads.append(Recorded(
                type=request.type, name=request.name, urn=response.urn,
                parent=request.parent or None, custom=True, inputs={}, id=request.id))
            return response

    from pulumi.runtime import config as runtime_config

    old_settings = settings.SETTINGS
    old_config = runtime_config.CONFIG.get()
    old_secret_keys = runtime_config._SECRET_KEYS.get()
    try:
        pulumi.runtime.set_all_config(dict(config or {}), list(secret_keys or []))
        pulumi.runtime.set_mocks(Mocks(), project=project, stack=stack, preview=True,
                                 monitor=Monitor(Mocks()), organization=DIY_ORGANIZATION)
        _run(program, recording)
    except BaseException:
        _collect_failed_futures()
        raise
    finally:
        settings.configure(old_settings)
        runtime_config.CONFIG.set(old_config)
        runtime_config._SECRET_KEYS.set(old_secret_keys)
    return recording


def _collect_failed_futures() -> None:
    """Collect the runtime's failed futures now, with asyncio's logger quiet.

    Left to a later garbage collection, their "exception was never retrieved" logging runs
    inside whatever happens next (on Python 3.11 it can even break an unrelated pytest
    assertion rewrite), so a failed program is cleaned up before the error propagates.
    """
    import gc
    import logging

    logger = logging.getLogger("asyncio")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        gc.collect()
    finally:
        logger.setLevel(level)


def _run(program: Callable[[], None], recording: Recording) -> None:
    import pulumi
    from pulumi.runtime.settings import SETTINGS
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()
    exported: dict = {}
    original_export = pulumi.export

    def export(name: str, value) -> None:
        exported[name] = value
        original_export(name, value)

    pulumi.export = export
    try:
        _sync_await(run_pulumi_func(program))
        for name, value in exported.items():
            recording.outputs[name] = _sync_await(_resolve(value))
    finally:
        pulumi.export = original_export


async def _resolve(value):
    import pulumi

    output = pulumi.Output.from_input(value)
    is_secret = await output.is_secret()
    resolved = await output.future()
    return SECRET_MASK if is_secret else _plain(resolved)


def _plain(value):
    """Deserialized inputs -> JSON-able values; secrets masked; unknowns shown as such."""
    from pulumi.runtime import rpc

    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return SECRET_MASK
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is rpc.UNKNOWN or type(value).__name__ == "Unknown":
        return "[unknown until deployed]"
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the wire format carries every number as a float
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def decode_user_data(value: str) -> str:
    """User data as a reviewer reads it: base64 (and gzip) removed where present."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        return value
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return value


def preview_json(recording: Recording) -> dict:
    resources = []
    for r in recording.resources:
        entry = r.to_json()
        entry["inputs"] = _decode_user_data_in(entry["inputs"])
        resources.append(entry)
    return {"resources": resources, "outputs": recording.outputs,
            "canned_invokes": sorted({i["token"] for i in recording.invokes}),
            "stacks_read": [{"name": r.name, "stack": r.id} for r in recording.reads]}


def _decode_user_data_in(inputs):
    if isinstance(inputs, dict):
        return {k: (decode_user_data(v) if k in USER_DATA_KEYS and isinstance(v, str)
                    else _decode_user_data_in(v)) for k, v in inputs.items()}
    if isinstance(inputs, list):
        return [_decode_user_data_in(v) for v in inputs]
    return inputs


def dump(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def preview_stack(stack: str, stacks_dir: str = "stacks") -> Recording:
    """Run the real program on a generated stack file under the mock runtime (with a
    placeholder for the secrets, so a preview needs none and shows none)."""
    from servestack.pulumi.program import main
    from servestack.pulumi.stackfile import read_stack_file, runtime_config, stack_path

    config, secret_keys = runtime_config(read_stack_file(stack_path(stacks_dir, stack)))
    return record(lambda: main(PREVIEW_SECRETS), config=config, secret_keys=secret_keys,
                  stack=stack, stack_outputs=referenced_outputs(config))


def preview_table(recording: Recording) -> str:
    lines = [f"= reads stack {r.id} ({r.name}; canned outputs offline)" for r in recording.reads]
    for r in recording.resources:
        depth = r.urn.split("::")[2].count("$")
        lines.append(f"{'  ' * depth}+ {r.type}  {r.name}")
        for key in sorted(r.inputs):
            value = r.inputs[key]
            if key in USER_DATA_KEYS and isinstance(value, str):
                value = f"<{len(decode_user_data(value).splitlines())} lines of cloud-init>"
            text = json.dumps(value) if not isinstance(value, str) else value
            if len(text) > 110:
                text = text[:107] + "..."
            lines.append(f"{'  ' * depth}    {key}: {text}")
    lines.append(f"{len(recording.resources)} resources; outputs: "
                 + ", ".join(f"{k}={v}" for k, v in recording.outputs.items()))
    return "\n".join(lines) + "\n"
