"""End to end, for real: the hedged deploy of a service over two AWS regions with a Route 53
front, through the CLI (`servestack deploy --max-pools 2 --front route53`), the TerraformEngine
(the terraform CLI, the AWS provider 5.100) and a local AWS API (moto in server mode) that has
no GPU capacity at all in the first region.

The service: one instance type (g6.xlarge) in us-east-1 and us-west-2 (a two-region catalog
written from the shipped one, us-west-2 made dearer so the rank does not rest on a price tie),
min_replicas 2. The placement puts both replicas in us-east-1; the second lane hedges them in
us-west-2 (--hedge-budget lets it). moto refuses every instance type of the plan in every zone
of us-east-1 with AWS's InsufficientInstanceCapacity text (tests/e2e/moto_faults.py).

What runs is the CLI's own path: the key stack, both pools applied in parallel, the us-east-1
pool failing for capacity and cleaned with proof, us-west-2 kept, the Route 53 front over the
kept pool, `status`, `endpoint`, then `servestack destroy`. Two seams are replaced, as the
single-pool e2e does: the engine factory (the same TerraformEngine and folder, plus the
override pointing the provider at moto) and the readiness probe (moto's load balancers serve
nothing: a replica answers when its VM is InService, tests/e2e/moto_probe.py).

boto3 then checks: nothing of the service in us-east-1; the group in us-west-2 holds both
replicas; us-west-2's SSM parameter holds the key stack's key; the zone holds one alias A
record, to the us-west-2 ALB, with its health check on that ALB's /health, and nothing for
us-east-1; after the destroy nothing is left in either region (groups, balancers, target
groups, templates, VPCs, parameters, IAM roles and instance profiles) nor in Route 53.

Runs only with SERVESTACK_E2E=1 (and terraform + the provider mirror present): about four
minutes, most of it the provider's waits for new load balancers and Route 53 changes, and the
us-east-1 pool's cleanup, which the front waits for. The front here has one pool: the weighted
records over two pools stay with tests/front/test_e2e.py.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import uuid
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml
from servestack.catalog import DATA_DIR

from servestack import planner
from servestack.cli import deploy as deploy_cli
from servestack.cli.main import main
from servestack.deploy.journal import service_dir
from servestack.deployment.model import OUTPUT_API_KEY, ServiceStack
from servestack.inputs import load_inputs
from servestack.service import key_stack_name
from servestack.terraform.engine import TerraformEngine
from tests.e2e.moto_faults import ICE, MotoServer, terraform_override
from tests.e2e.moto_probe import aws_client, moto_probe_factory
from tests.fakes import PLUGIN_DIR, e2e_skip

SERVICE = "hedge-e2e"  # its own name: the per-user lock and the stacks collide with no other
TOKEN = "hf_E2EhedgeTokenMustNeverLeak0123456789"
FIRST, SECOND = "us-east-1", "us-west-2"
INSTANCE_TYPE = "g6.xlarge"
ZONES_PER_REGION = 2  # fewer subnets to create and delete; two still make a spread group
REPLICAS = 2
ZONE = "example.com"
DOMAIN = f"llm.{ZONE}"
# Two applies at once against the one local server now and then lose a connection
# mid-answer ("decomposing response: ... use of closed network connection"); the capacity
# fault is a failed scaling activity, not an API error, so retries do not prolong it.
RETRIES = 5

pytestmark = e2e_skip("about four minutes")


class Run:
    """The moto server, the folders, and what the deploy said."""

    def __init__(self, moto: MotoServer, work: Path) -> None:
        self.moto, self.work = moto, work
        self.state = work / "state"
        self.zone = ""
        self.deploy_code: int | None = None
        self.report: dict = {}
        self.destroyed = False

    def client(self, service: str, region: str = FIRST):
        return aws_client(self.moto.url, service, region)

    def cli(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with redirect_stdout(out):
            code = main(list(argv))
        return code, out.getvalue()

    def state_flags(self) -> list[str]:
        return ["--engine", "terraform", "--state-dir", str(self.state)]

    def engine(self) -> TerraformEngine:
        return deploy_cli.make_engine(deploy_cli.options.StateRequest(
            engine="terraform", state_dir=str(self.state)), SERVICE)


def write_catalog(folder: Path) -> Path:
    """The shipped catalog's INSTANCE_TYPE rows of the two regions (their first zones), the
    second region's price raised 10%: us-east-1 ranks first on price, not on a tie."""
    lines = (DATA_DIR / "aws.csv").read_text(encoding="utf-8").splitlines()
    header = [line for line in lines if line and not line.startswith("#")][0]
    rows = list(csv.DictReader([header] + [line for line in lines
                                           if line.startswith(f"{INSTANCE_TYPE},")]))
    kept = []
    for region in (FIRST, SECOND):
        mine = [r for r in rows if r["region"] == region][:ZONES_PER_REGION]
        assert len(mine) == ZONES_PER_REGION, f"the shipped catalog lost {region}"
        for row in mine:
            if region == SECOND:
                row["price"] = f"{float(row['price']) * 1.1:.4f}"
            kept.append(row)
    folder.mkdir()
    with open(folder / "aws.csv", "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=header.split(","))
        writer.writeheader()
        writer.writerows(kept)
    return folder


def write_spec(run: Run) -> Path:
    """A small AWS service on an image moto has, its HF_TOKEN read from the environment."""
    images = {region: run.client("ec2", region).describe_images(Owners=["amazon"])
              ["Images"][0]["ImageId"] for region in (FIRST, SECOND)}
    spec = {"name": SERVICE, "secrets": {"HF_TOKEN": None},
            "resources": {"accelerators": "L4:1", "instance_type": INSTANCE_TYPE,
                          "image_id": images, "ports": 8000, "disk_size": 100},
            "service": {"readiness_probe": "/health", "replica_policy":
                        {"min_replicas": REPLICAS}},
            "run": "vllm serve facebook/opt-125m --port 8000"}
    path = run.work / "hedge.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def zones_of(run: Run, region: str) -> list[str]:
    """Every zone of the region, by name and by id (a capacity fault matches either)."""
    zones = run.client("ec2", region).describe_availability_zones()["AvailabilityZones"]
    return [z["ZoneName"] for z in zones] + [z["ZoneId"] for z in zones]


def engine_factory(moto: MotoServer):
    """deploy_cli.make_engine's TerraformEngine in its own folder, pointed at moto."""
    override = terraform_override(moto.url)
    override["provider"]["aws"]["endpoints"]["route53"] = moto.url
    override["provider"]["aws"]["max_retries"] = RETRIES

    def make_engine(state, service, project=None, secrets=None):
        return TerraformEngine(service_dir(state.state_dir, service) / state.engine,
                               secrets=secrets, gcp_project=project, plugin_dir=PLUGIN_DIR,
                               overrides={"moto_override.tf.json": override},
                               env={"TF_CLI_CONFIG_FILE": "/dev/null"})

    return make_engine


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tf-hedge")
    with MotoServer(work) as moto, pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", TOKEN)
        patch.setenv("XDG_STATE_HOME", str(work / "xdg"))  # the service lock, ours alone
        patch.setattr(deploy_cli, "make_engine", engine_factory(moto))
        patch.setattr(deploy_cli, "make_probe_factory", lambda: moto_probe_factory(moto.url))
        result = Run(moto, work)
        zone = result.client("route53").create_hosted_zone(
            Name=ZONE, CallerReference=str(uuid.uuid4()))
        result.zone = zone["HostedZone"]["Id"].rsplit("/", 1)[-1]
        catalog, spec = write_catalog(work / "catalog"), write_spec(result)
        inputs = load_inputs(str(spec), catalog_dir=str(catalog))
        plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                            planner.Options(cloud="aws"), model=inputs.model)
        assert [c.region for c in plan.candidates] == [FIRST, SECOND]  # the premise
        refused = sorted({c.instance_type for c in plan.candidates if c.region == FIRST})
        moto.set_capacity_faults([{"instance_types": refused, "zones": zones_of(result, FIRST)}])
        result.deploy_code, out = result.cli(
            "deploy", str(spec), *result.state_flags(), "--catalog-dir", str(catalog),
            "--cloud", "aws", "--max-pools", "2", "--hedge-budget", "5", "--front", "route53",
            "--domain", DOMAIN, "--hosted-zone-id", result.zone, "--no-quota-check", "--json")
        result.report = json.loads(out)
        yield result
        if not result.destroyed:  # whatever a failed test left
            result.cli("destroy", SERVICE, "--yes", *result.state_flags())


def pool(report: dict, state: str, region: str) -> dict:
    (found,) = [p for p in report[state] if p["region"] == region]
    return found


def test_the_deploy_keeps_the_second_region_after_the_first_ran_out(run):
    report = run.report
    assert run.deploy_code == 0, report.get("message")
    assert report["outcome"] == "deployed" and report["needed_replicas"] == REPLICAS
    assert [(p["region"], p["replicas"]) for p in report["kept"]] == [(SECOND, REPLICAS)]
    # Failed (its lane ran out of candidates) or released (the kept pool was chosen while
    # its lane still cleaned up): which one depends on which came first; both end clean.
    (first,) = [p for p in report["released"] + report["failed"] if p["region"] == FIRST]
    assert len(report["released"] + report["failed"]) == 1
    (attempt,) = first["attempts"]  # the region's one candidate, tried once
    assert attempt["candidate"] == f"aws-{FIRST}-{INSTANCE_TYPE}-ondemand"
    assert attempt["code"] == ICE and attempt["cleanup"].startswith("clean")
    second = pool(report, "kept", SECOND)
    assert second["hedge"] is True and second["attempts"][0]["outcome"] == "deployed"
    assert report["endpoint"] == f"http://{DOMAIN}"
    assert report["key_stack"] == key_stack_name(SERVICE)


def test_nothing_of_the_service_is_left_in_the_first_region(run):
    assert regional_left(run, FIRST) == []
    stacks = run.engine().work_dir / "stacks"
    assert sorted(p.name for p in stacks.iterdir()) == sorted(
        [key_stack_name(SERVICE), f"{SERVICE}-front", pool(run.report, "kept", SECOND)["stack"]])


def test_both_replicas_landed_in_the_second_region(run):
    (group,) = run.client("autoscaling", SECOND).describe_auto_scaling_groups()[
        "AutoScalingGroups"]
    assert (group["MinSize"], group["DesiredCapacity"]) == (REPLICAS, REPLICAS)
    live = [i for i in group["Instances"] if i["LifecycleState"] == "InService"]
    assert len(live) == REPLICAS
    overrides = group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
    assert [o["InstanceType"] for o in overrides] == [INSTANCE_TYPE]


def test_the_kept_pool_is_built_as_a_single_stack_is(run):
    """The pool that serves is today's single-region stack (tests/terraform/test_e2e.py checks
    one in depth under SERVESTACK_E2E_ALL): IMDSv2, gzip'd user data without the token, the
    VMs in the stack's private subnets with no public address, behind the ALB's health path."""
    (group,) = run.client("autoscaling", SECOND).describe_auto_scaling_groups()[
        "AutoScalingGroups"]
    assert group["HealthCheckType"] == "ELB"
    ec2 = run.client("ec2", SECOND)
    spec = group["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
    (version,) = ec2.describe_launch_template_versions(
        LaunchTemplateId=spec["LaunchTemplateId"])["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    user_data = gzip.decompress(base64.b64decode(data["UserData"])).decode()
    assert user_data.startswith("#cloud-config") and TOKEN not in user_data
    (nic,) = data["NetworkInterfaces"]
    assert nic["AssociatePublicIpAddress"] is False
    subnet_ids = group["VPCZoneIdentifier"].split(",")
    subnets = ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
    assert not any(s["MapPublicIpOnLaunch"] for s in subnets)
    ids = [i["InstanceId"] for i in group["Instances"]]
    instances = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
                 for i in r["Instances"]]
    assert [i.get("PublicIpAddress") for i in instances] == [None] * REPLICAS
    assert all(i["SubnetId"] in subnet_ids for i in instances)
    elb = run.client("elbv2", SECOND)
    (target_group_arn,) = group["TargetGroupARNs"]
    (target_group,) = elb.describe_target_groups(
        TargetGroupArns=[target_group_arn])["TargetGroups"]
    assert target_group["HealthCheckPath"] == "/health"


def test_the_second_region_stores_the_key_stack_key(run):
    engine = run.engine()
    key = engine.shared_outputs(ServiceStack("key", key_stack_name(SERVICE), SERVICE))[
        OUTPUT_API_KEY]
    assert len(key) == 64  # two UUIDs without dashes, drawn once by the key stack
    parameters = run.client("ssm", SECOND).describe_parameters()["Parameters"]
    keys = [p["Name"] for p in parameters if p["Name"].endswith("/api-key")]
    (name,) = keys
    stored = run.client("ssm", SECOND).get_parameter(Name=name, WithDecryption=True)
    assert (stored["Parameter"]["Type"], stored["Parameter"]["Value"]) == ("SecureString", key)
    assert key not in json.dumps(run.report)


def test_the_records_are_the_pool_that_exists(run):
    (balancer,) = run.client("elbv2", SECOND).describe_load_balancers()["LoadBalancers"]
    route53 = run.client("route53")
    (check,) = route53.list_health_checks()["HealthChecks"]
    listed = route53.list_resource_record_sets(HostedZoneId=run.zone)["ResourceRecordSets"]
    (record,) = [r for r in listed if r["Name"].rstrip(".") == DOMAIN]
    assert (record["SetIdentifier"], record["Type"]) == (f"aws-{SECOND}", "A")
    target = record["AliasTarget"]
    assert target["DNSName"].rstrip(".") == balancer["DNSName"]
    assert target["HostedZoneId"] == balancer["CanonicalHostedZoneId"]
    assert target["EvaluateTargetHealth"] is True
    assert record["HealthCheckId"] == check["Id"]
    config = check["HealthCheckConfig"]
    assert config["FullyQualifiedDomainName"] == balancer["DNSName"]
    assert (config["Type"], config["Port"], config["ResourcePath"]) == ("HTTP", 80, "/health")


def test_status_and_endpoint_name_the_pool_that_exists(run):
    code, out = run.cli("status", SERVICE, "--state-dir", str(run.state), "--json")
    assert code == 0
    status = json.loads(out)
    assert status["outcome"] == "deployed" and status["interrupted"] is False
    assert [(p["region"], p["replicas"]) for p in status["kept"]] == [(SECOND, REPLICAS)]
    assert [p["region"] for p in status["released"] + status["failed"]] == [FIRST]
    assert [d["name"] for d in status["dirty_stacks"]] == [pool(run.report, "kept",
                                                                 SECOND)["stack"]]
    code, out = run.cli("endpoint", SERVICE, *run.state_flags(), "--json")
    assert code == 0
    endpoint = json.loads(out)
    assert endpoint["endpoint"] == f"http://{DOMAIN}" and endpoint["front"] == f"{SERVICE}-front"
    assert [(p["region"], p["replicas"]) for p in endpoint["pools"]] == [(SECOND, REPLICAS)]
    assert endpoint["api_key"]["command"]  # how to read the key, never the key itself
    key = run.engine().shared_outputs(ServiceStack("key", key_stack_name(SERVICE), SERVICE))[
        OUTPUT_API_KEY]
    assert key not in out


def test_no_token_in_any_file(run):
    leaked = [p for p in run.work.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []


def test_destroy_leaves_nothing_in_either_region_nor_route53(run):
    code, out = run.cli("destroy", SERVICE, "--yes", *run.state_flags())
    assert code == 0, out
    run.destroyed = True
    assert out.startswith("destroyed: ")
    for region in (FIRST, SECOND):
        assert regional_left(run, region) == []
    iam = run.client("iam")
    assert iam.list_roles()["Roles"] == []
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    route53 = run.client("route53")
    assert route53.list_health_checks()["HealthChecks"] == []
    listed = route53.list_resource_record_sets(HostedZoneId=run.zone)["ResourceRecordSets"]
    assert sorted(r["Type"] for r in listed) == ["NS", "SOA"]
    assert list((run.engine().work_dir / "stacks").iterdir()) == []
    code, out = run.cli("status", SERVICE, "--state-dir", str(run.state), "--json")
    assert code == 0 and json.loads(out)["outcome"] == "destroyed"


def regional_left(run: Run, region: str) -> list[str]:
    """Everything in the region: groups, balancers, target groups, templates, VPCs besides
    the default, parameters, and VMs not terminated."""
    autoscaling, elb = run.client("autoscaling", region), run.client("elbv2", region)
    ec2, ssm = run.client("ec2", region), run.client("ssm", region)
    left = [g["AutoScalingGroupName"]
            for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]]
    left += [b["LoadBalancerArn"] for b in elb.describe_load_balancers()["LoadBalancers"]]
    left += [t["TargetGroupArn"] for t in elb.describe_target_groups()["TargetGroups"]]
    left += [t["LaunchTemplateId"]
             for t in ec2.describe_launch_templates()["LaunchTemplates"]]
    left += [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v.get("IsDefault")]
    left += [p["Name"] for p in ssm.describe_parameters()["Parameters"]]
    running = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    left += [i["InstanceId"] for r in ec2.describe_instances(Filters=running)["Reservations"]
             for i in r["Instances"]]
    return left
