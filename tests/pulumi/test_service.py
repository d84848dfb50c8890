"""A service over several pools on the Pulumi side: `generate` writes the key, pool and front
stack files, and the real program runs each of them under Pulumi's mock runtime
(servestack.pulumi.preview.record), its StackReference reads answered with the outputs given
here, so every assertion is on a resource input the program built from another stack's output.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from servestack.cli.main import main
from servestack.deployment.choices import Choices
from servestack.errors import UserError
from servestack.front.build import build_front
from servestack.front.model import FrontPlan
from servestack.placement import Pool
from servestack.pulumi.generate import generate_service
from servestack.pulumi.preview import (
    PREVIEW_SECRETS,
    SECRET_MASK,
    Recording,
    preview_json,
    preview_stack,
    record,
)
from servestack.pulumi.program import main as program
from servestack.pulumi.stackfile import read_stack_file, runtime_config
from servestack.service import build_layout
from tests.fakes import FROZEN_CATALOG, INPUTS, PLAN

SPEC = Path(__file__).parents[2] / "servestack" / "examples" / "mixtral.yaml"
DOMAIN = "llm.example.com"
ZONE_ID = "Z0123456789ABCDEFGHIJ"
KEY = "mixtral-key"
FRONT = "mixtral-front"
DYNAMIC = "pulumi-python:dynamic:Resource"  # the ApiKey resource
REFERENCE = "pulumi:pulumi:StackReference"
PARAMETER = "aws:ssm/parameter:Parameter"
HEALTH_CHECK = "aws:route53/healthCheck:HealthCheck"
RECORD = "aws:route53/record:Record"
GROUP = "aws:globalaccelerator/endpointGroup:EndpointGroup"
API_KEY = "key-from-the-key-stack"


def generated(tmp_path: Path, monkeypatch, *flags: str) -> dict[str, Path]:
    """`servestack generate` of a three-replica Mixtral spread over two AWS pools; the stack
    files it wrote, by stack name."""
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "serve.yaml"
    spec.write_text(SPEC.read_text().replace("min_replicas: 2", "min_replicas: 3"))
    assert main(["generate", str(spec), "--cloud", "aws", "--catalog-dir", FROZEN_CATALOG,
                 "--max-pools", "2", "--spread", *flags]) == 0
    return {p.name.removeprefix("Pulumi.").removesuffix(".yaml"): p
            for p in (tmp_path / "stacks").glob("Pulumi.*.yaml")}


def pools_of(files: dict[str, Path]) -> list[str]:
    return sorted(name for name in files if name not in (KEY, FRONT))


def run(path: Path, outputs: dict[str, dict] | None = None) -> Recording:
    """The real program on a stack file, other stacks answering with `outputs`."""
    config, secret_keys = runtime_config(read_stack_file(path))
    return record(lambda: program(PREVIEW_SECRETS), config=config, secret_keys=secret_keys,
                  stack=path.name.split(".")[1], stack_outputs=outputs)


def region_of(path: Path) -> str:
    return read_stack_file(path)["config"]["servestack:deployment"]["region"]


def alb(path: Path, index: int) -> dict[str, str]:
    """A pool stack's outputs as its `pulumi up` would leave them."""
    region = region_of(path)
    return {"lb_host": f"pool{index}-1234567890.{region}.elb.amazonaws.com",
            "lb_arn": f"arn:aws:elasticloadbalancing:{region}:123456789012:loadbalancer/app/"
                      f"pool{index}/50dc6c495c0c918{index}",
            "lb_zone_id": f"ZALBZONE{index}"}


def weights(files: dict[str, Path]) -> dict[str, int]:
    return {name: read_stack_file(files[name])["config"]["servestack:deployment"]
            ["desired_replicas"] for name in pools_of(files)}


# --- the key stack and the pools -----------------------------------------------------------


def test_the_key_stack_draws_the_one_key_as_a_secret(tmp_path, monkeypatch):
    files = generated(tmp_path, monkeypatch, "--front", "route53", "--domain", DOMAIN,
                      "--hosted-zone-id", ZONE_ID)
    assert read_stack_file(files[KEY])["config"] == {"servestack:role": "key",
                                                     "servestack:service": "mixtral"}
    key = run(files[KEY])
    (drawn,) = key.resources
    assert (drawn.type, drawn.name, drawn.custom) == (DYNAMIC, "mixtral-api-key", True)
    assert key.outputs == {"api_key": SECRET_MASK} and not key.reads


def test_each_pool_reads_the_key_stack_and_draws_no_key(tmp_path, monkeypatch):
    files = generated(tmp_path, monkeypatch, "--front", "route53", "--domain", DOMAIN,
                      "--hosted-zone-id", ZONE_ID)
    names = pools_of(files)
    assert len(names) == 2 and {region_of(files[n]) for n in names} == {"us-east-1", "us-east-2"}
    for name in names:
        pool = run(files[name], {KEY: {"api_key": API_KEY}})
        assert DYNAMIC not in pool.types()  # no ApiKey of its own
        (read,) = pool.reads
        assert (read.type, read.id) == (REFERENCE, f"organization/servestack/{KEY}")
        assert read.parent and read.parent.endswith("::mixtral-api-key")  # the ApiKeySecret
        stored = next(r for r in pool.of_type(PARAMETER) if r.inputs["name"].endswith("api-key"))
        assert stored.inputs["value"] == SECRET_MASK and stored.inputs["type"] == "SecureString"
        assert pool.outputs["api_key"] == SECRET_MASK
        assert pool.outputs["api_key_secret"] == stored.inputs["name"]
        # what the front reads: the ALB's DNS name, ARN and hosted zone
        assert pool.outputs["lb_host"] == f"{pool.one('aws:lb/loadBalancer:LoadBalancer').name}" \
            ".preview.invalid"
        assert pool.outputs["lb_arn"].startswith("arn:preview:aws:lb/loadBalancer")
        assert pool.outputs["lb_zone_id"] == "ZPREVIEWALBZONE"
    assert sorted(weights(files).values()) == [1, 2]  # three replicas spread over two pools


def test_the_key_read_from_the_key_stack_is_the_pool_s_key(tmp_path, monkeypatch):
    """Unmasked: the pool's key is the key stack's output, and stays a secret."""
    import pulumi
    from servestack.components.apikey import service_key

    from servestack.deployment.model import Deployment

    files = generated(tmp_path, monkeypatch, "--front", "route53", "--domain", DOMAIN,
                      "--hosted-zone-id", ZONE_ID)
    deployment = Deployment.from_config(
        read_stack_file(files[pools_of(files)[0]])["config"]["servestack:deployment"])
    assert deployment.shared_api_key == KEY

    def key_only() -> None:
        value = service_key("probe", deployment)
        pulumi.export("plain", pulumi.Output.unsecret(value))
        pulumi.export("secret", value)

    recording = record(key_only, stack_outputs={KEY: {"api_key": API_KEY}})
    assert recording.outputs == {"plain": API_KEY, "secret": SECRET_MASK}
    assert [r.id for r in recording.reads] == [f"organization/servestack/{KEY}"]


def test_no_api_key_means_no_key_stack_and_open_pools(tmp_path, monkeypatch):
    files = generated(tmp_path, monkeypatch, "--no-api-key")
    assert KEY not in files and FRONT in files
    pool = run(files[pools_of(files)[0]])
    assert not pool.reads and DYNAMIC not in pool.types()
    assert "api_key" not in pool.outputs and "lb_host" in pool.outputs


# --- the front stack -----------------------------------------------------------------------


def test_route53_front_aliases_each_aws_pool_from_its_stack(tmp_path, monkeypatch):
    files = generated(tmp_path, monkeypatch, "--front", "route53", "--domain", DOMAIN,
                      "--hosted-zone-id", ZONE_ID)
    config = read_stack_file(files[FRONT])["config"]
    assert (config["servestack:role"], config["aws:region"]) == ("front", "us-east-1")
    names = pools_of(files)
    outputs = {name: alb(files[name], i) for i, name in enumerate(names)}
    front = run(files[FRONT], outputs)
    assert sorted(r.id for r in front.reads) == [f"organization/servestack/{n}" for n in names]
    checks = {r.name: r for r in front.of_type(HEALTH_CHECK)}
    records = {r.name: r for r in front.of_type(RECORD)}
    assert len(checks) == len(records) == 2
    for name, weight in weights(files).items():
        key = f"aws-{region_of(files[name])}"
        check, rec = checks[f"mixtral-hc-{key}"], records[f"mixtral-{key}"]
        assert check.inputs["fqdn"] == outputs[name]["lb_host"]
        assert (check.inputs["type"], check.inputs["port"], check.inputs["resourcePath"]) == \
            ("HTTP", 80, "/health")
        assert rec.inputs["aliases"] == [{"name": outputs[name]["lb_host"],
                                          "zoneId": outputs[name]["lb_zone_id"],
                                          "evaluateTargetHealth": True}]
        assert "ttl" not in rec.inputs and "records" not in rec.inputs  # an alias has neither
        assert (rec.inputs["type"], rec.inputs["name"], rec.inputs["zoneId"]) == \
            ("A", DOMAIN, ZONE_ID)
        assert rec.inputs["setIdentifier"] == key
        assert rec.inputs["healthCheckId"] == check.id
        assert rec.inputs["weightedRoutingPolicies"] == [{"weight": weight}]
    assert front.outputs == {"endpoint": f"http://{DOMAIN}"}


def test_latency_routing_names_each_pool_s_region(tmp_path, monkeypatch):
    files = generated(tmp_path, monkeypatch, "--front", "route53", "--domain", DOMAIN,
                      "--hosted-zone-id", ZONE_ID, "--routing", "latency")
    front = run(files[FRONT])
    regions = sorted(r.inputs["latencyRoutingPolicies"][0]["region"]
                     for r in front.of_type(RECORD))
    assert regions == ["us-east-1", "us-east-2"]
    assert not any("weightedRoutingPolicies" in r.inputs for r in front.of_type(RECORD))


def test_global_accelerator_front_reads_each_pool_s_alb_arn(tmp_path, monkeypatch):
    files = generated(tmp_path, monkeypatch)  # the default front for AWS pools
    plan = FrontPlan.from_config(read_stack_file(files[FRONT])["config"]["servestack:front"])
    assert plan.kind == "global-accelerator" and all(p.stack for p in plan.pools)
    names = pools_of(files)
    outputs = {name: alb(files[name], i) for i, name in enumerate(names)}
    front = run(files[FRONT], outputs)
    groups = {r.inputs["endpointGroupRegion"]: r for r in front.of_type(GROUP)}
    assert sorted(groups) == ["us-east-1", "us-east-2"]  # one endpoint group per region
    for name, weight in weights(files).items():
        group = groups[region_of(files[name])]
        assert group.inputs["endpointConfigurations"] == [{
            "endpointId": outputs[name]["lb_arn"], "weight": weight,
            "clientIpPreservationEnabled": True}]
        assert (group.inputs["healthCheckPath"], group.inputs["healthCheckProtocol"]) == \
            ("/health", "HTTP")
    listener = front.one("aws:globalaccelerator/listener:Listener")
    assert listener.inputs["portRanges"] == [{"fromPort": 80, "toPort": 80}]
    assert front.outputs["endpoint"].startswith("http://")


def mixed_layout():
    """One AWS and one GCP pool of the test plan, behind a Route 53 front."""
    firsts = [next(c for c in PLAN.candidates if c.cloud == cloud) for cloud in ("aws", "gcp")]
    pools = [Pool(c.cloud, c.region, c.use_spot, 1, (c.instance_type,), c.price_per_hour,
                  (c.id,), tuple(c.zones)) for c in firsts]
    choices = Choices(front="route53", domain=DOMAIN, hosted_zone_id=ZONE_ID,
                      gcp_project="acme-llm")
    return build_layout(INPUTS, PLAN, pools, choices)


def test_mixed_aws_and_gcp_pools_behind_route53(tmp_path):
    layout = mixed_layout()
    result = generate_service(INPUTS, PLAN, layout, stacks_dir=str(tmp_path))
    aws, gcp = layout.pools
    outputs = {aws.stack: alb(result.paths[aws.stack], 0), gcp.stack: {"lb_host": "198.51.100.7"}}
    front = run(result.paths[layout.front_stack], outputs)
    records = {r.name: r.inputs for r in front.of_type(RECORD)}
    checks = {r.name: r.inputs for r in front.of_type(HEALTH_CHECK)}
    aws_key, gcp_key = f"aws-{aws.region}", f"gcp-{gcp.region}"
    assert records[f"mixtral-{aws_key}"]["aliases"][0]["name"] == outputs[aws.stack]["lb_host"]
    assert records[f"mixtral-{aws_key}"]["type"] == records[f"mixtral-{gcp_key}"]["type"] == "A"
    assert records[f"mixtral-{gcp_key}"]["records"] == ["198.51.100.7"]
    assert records[f"mixtral-{gcp_key}"]["ttl"] == 60
    assert checks[f"mixtral-hc-{gcp_key}"]["ipAddress"] == "198.51.100.7"
    assert "fqdn" not in checks[f"mixtral-hc-{gcp_key}"]
    assert checks[f"mixtral-hc-{aws_key}"]["fqdn"] == outputs[aws.stack]["lb_host"]
    # the GCP pool keeps the shared key in its Secret Manager secret, drawn nowhere else
    pool = run(result.paths[gcp.stack], {KEY: {"api_key": API_KEY}})
    assert DYNAMIC not in pool.types()
    assert [r.id for r in pool.reads] == [f"organization/servestack/{KEY}"]
    version = next(r for r in pool.of_type("gcp:secretmanager/secretVersion:SecretVersion")
                   if "api-key" in r.name)
    assert version.inputs["secretData"] == SECRET_MASK
    assert pool.outputs["lb_host"] == "203.0.113.10"  # the forwarding rule's address


# --- generate --------------------------------------------------------------------------------


def test_generate_lists_the_stacks_in_apply_order(tmp_path, monkeypatch, capsys):
    files = generated(tmp_path, monkeypatch, "--front", "route53", "--domain", DOMAIN,
                      "--hosted-zone-id", ZONE_ID)
    out = capsys.readouterr().out
    pools = [line.split("pulumi up -s ")[1] for line in out.splitlines()
             if line.startswith("  pulumi up -s ")]
    assert pools[0] == KEY and pools[-1] == FRONT and sorted(pools[1:-1]) == pools_of(files)
    downs = [line.split("pulumi destroy -s ")[1] for line in out.splitlines()
             if line.startswith("  pulumi destroy -s ")]
    assert downs == list(reversed(pools))
    assert out.index(files[KEY].name) < out.index(files[pools[1]].name) < \
        out.index(files[FRONT].name)


def test_generate_again_writes_the_same_bytes_and_keeps_the_user_s_keys(tmp_path, monkeypatch):
    flags = ("--front", "route53", "--domain", DOMAIN, "--hosted-zone-id", ZONE_ID)
    files = generated(tmp_path, monkeypatch, *flags)
    before = {name: path.read_bytes() for name, path in files.items()}
    assert generated(tmp_path, monkeypatch, *flags) == files
    assert {name: path.read_bytes() for name, path in files.items()} == before
    front = yaml.safe_load(files[FRONT].read_text())
    front["config"]["aws:profile"] = "ops"
    front["encryptionsalt"] = "v1:abc"
    files[FRONT].write_text(yaml.safe_dump(front))
    generated(tmp_path, monkeypatch, *flags)
    kept = read_stack_file(files[FRONT])
    assert kept["config"]["aws:profile"] == "ops" and kept["encryptionsalt"] == "v1:abc"
    assert kept["config"]["servestack:role"] == "front"


def test_offline_preview_of_every_stack_file(tmp_path, monkeypatch):
    """`servestack preview STACK --offline` answers the references with plausible outputs."""
    files = generated(tmp_path, monkeypatch, "--front", "route53", "--domain", DOMAIN,
                      "--hosted-zone-id", ZONE_ID)
    stacks = str(tmp_path / "stacks")
    front = preview_json(preview_stack(FRONT, stacks))
    hosts = sorted(r["inputs"]["aliases"][0]["name"] for r in front["resources"]
                   if r["type"] == RECORD)
    assert [h.split(".")[1] for h in hosts] == ["us-east-1", "us-east-2"]
    assert all(h.endswith(".elb.amazonaws.com") for h in hosts)
    assert len(front["stacks_read"]) == 2
    pool = preview_json(preview_stack(pools_of(files)[0], stacks))
    assert pool["stacks_read"] == [{"name": "mixtral-api-key-value",
                                    "stack": f"organization/servestack/{KEY}"}]
    assert preview_json(preview_stack(KEY, stacks))["outputs"] == {"api_key": SECRET_MASK}


# --- the front's plan in stack config --------------------------------------------------------


def test_the_front_plan_round_trips_through_stack_config():
    plan = mixed_layout().front
    assert FrontPlan.from_config(yaml.safe_load(yaml.safe_dump(plan.to_config()))) == plan
    data = plan.to_config()
    with pytest.raises(UserError, match="servestack:front"):
        FrontPlan.from_config({**data, "extra": 1})
    with pytest.raises(UserError, match=r"servestack:front.pools .*weight"):
        FrontPlan.from_config({**data, "pools": [{k: v for k, v in data["pools"][0].items()
                                                  if k != "weight"}]})


def test_an_unknown_role_is_refused(tmp_path):
    with pytest.raises(Exception, match="servestack:role must be one of pool, key, front"):
        record(lambda: program(None), config={"servestack:role": "gateway"})


def test_a_literal_host_pool_keeps_its_cname():
    """Pools given by address (no stack) are unchanged: a CNAME to the name, no reference."""
    aws = [p for p in mixed_layout().front.pools if p.cloud == "aws"]
    literal = [replace(p, stack=None, address=None, host="pool0.us-east-1.elb.amazonaws.com")
               for p in aws]
    only_aws = build_front("route53", "mixtral", literal, domain=DOMAIN, hosted_zone_id=ZONE_ID)
    config = {"servestack:role": "front", "aws:region": "us-east-1",
              "servestack:front": json.dumps(only_aws.to_config())}
    front = record(lambda: program(None), config=config)
    (rec,) = front.of_type(RECORD)
    assert (rec.inputs["type"], rec.inputs["records"]) == \
        ("CNAME", ["pool0.us-east-1.elb.amazonaws.com"])
    assert not front.reads


def test_an_azure_pool_keeps_the_shared_key_in_its_vault():
    from servestack.components import build_service

    from tests.fakes import pool_builder

    candidate = next(c for c in PLAN.candidates if c.cloud == "azure")
    d = pool_builder(1)(candidate, PLAN.candidates)
    assert d.shared_api_key == KEY and d.api_key is not None
    made: list = []

    def service() -> None:
        made.append(build_service("svc", d, None))

    pool = record(service, stack_outputs={KEY: {"api_key": API_KEY}})
    assert DYNAMIC not in pool.types()
    assert [r.id for r in pool.reads] == [f"organization/servestack/{KEY}"]
    stored = next(r for r in pool.of_type("azure-native:keyvault:Secret")
                  if r.inputs["secretName"] == d.api_key.name)
    assert stored.inputs["properties"] == SECRET_MASK  # the value makes it all a secret
    assert made[0].lb_host is not None and made[0].lb_arn is None
