"""End to end, for real: a service over two pools through the TerraformEngine (the CLI, the AWS
provider 5.100) against a local AWS API (moto in server mode).

key stack (up_shared) -> the two pool stacks in us-east-1 and us-west-2, one replica each,
applied in parallel, each storing the key stack's API key -> the Route 53 front over them in a
moto hosted zone (up_shared). boto3 then checks that the records are alias A records to the two
ALBs (their DNS names and hosted zones) and that each pool's health check probes its ALB; the
destroy runs in the reverse order and leaves nothing in either region nor in Route 53.

Runs only with SERVESTACK_E2E=1 (and terraform + the provider mirror present): about three
minutes, most of it the provider's waits for new load balancers and Route 53 changes.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from servestack import clouds, planner
from servestack.deployment.choices import Choices
from servestack.deployment.model import OUTPUT_API_KEY, Deployment, ServiceStack
from servestack.engine import StackRef
from servestack.inputs import load_inputs
from servestack.placement import Pool
from servestack.service import ServiceLayout, build_layout
from servestack.terraform.engine import TerraformEngine
from tests.e2e.moto_faults import MotoServer, terraform_override
from tests.fakes import PLUGIN_DIR, e2e_skip

TOKEN = "hf_E2EpoolsTokenMustNeverLeak0123456789"
REGIONS = ("us-east-1", "us-west-2")
ZONE = "example.com"
DOMAIN = f"llm.{ZONE}"
TIMEOUT_S = 600
RETRIES = 5

pytestmark = e2e_skip("about three minutes")


class Service:
    """The shared run: the moto server, the engine, the layout, and what the steps returned."""

    def __init__(self, moto: MotoServer, engine: TerraformEngine) -> None:
        self.moto, self.engine = moto, engine
        self.layout: ServiceLayout | None = None
        self.results: dict[str, object] = {}

    def client(self, service: str, region: str = "us-east-1"):
        import boto3

        return boto3.client(service, region_name=region, endpoint_url=self.moto.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    @property
    def pools(self) -> tuple[Deployment, ...]:
        assert self.layout is not None
        return self.layout.pools

    def key(self) -> ServiceStack:
        assert self.layout is not None and self.layout.key_stack
        return ServiceStack("key", self.layout.key_stack, self.layout.service)

    def front(self) -> ServiceStack:
        assert self.layout is not None
        return ServiceStack("front", self.layout.front_stack, self.layout.service,
                            front=self.layout.front)


def ref(d: Deployment) -> StackRef:
    """The pool's stack, in the folder the front and the key paths expect (Deployment.stack)."""
    return StackRef(d.service, d.candidate_id, d.stack)


def layout_over(run: Service, zone_id: str) -> ServiceLayout:
    """The best candidate of each region, one replica each, on an image moto has."""
    inputs = load_inputs(None)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="aws", spot=False), model=inputs.model)
    pools = []
    for region in REGIONS:
        c = next(c for c in plan.candidates if c.region == region)
        pools.append(Pool(cloud="aws", region=region, use_spot=False, replicas=1,
                          instance_types=(c.instance_type,), price_per_hour=c.price_per_hour,
                          candidate_ids=(c.id,), zones=tuple(c.zones)))
    choices = Choices(front="route53", domain=DOMAIN, hosted_zone_id=zone_id)
    layout = build_layout(inputs, plan, pools, choices)
    images = []
    for d in layout.pools:
        ami = run.client("ec2", d.region).describe_images(Owners=["amazon"])["Images"][0]
        images.append(replace(d, image=clouds.get("aws").image_ref(ami["ImageId"])))
    return replace(layout, pools=tuple(images))


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    work = tmp_path_factory.mktemp("tf-pools")
    with MotoServer(work) as moto:
        override = terraform_override(moto.url)
        override["provider"]["aws"]["endpoints"]["route53"] = moto.url
        # No capacity fault here, so the SDK may retry as it does by default: two applies at
        # once against the one local server now and then lose a connection mid-answer
        # ("decomposing response: ... use of closed network connection"), which one retry
        # (terraform_override's, to keep capacity errors short) does not always cover.
        override["provider"]["aws"]["max_retries"] = RETRIES
        engine = TerraformEngine(work / "engine", secrets=TOKEN, plugin_dir=PLUGIN_DIR,
                                 overrides={"moto_override.tf.json": override},
                                 env={"TF_CLI_CONFIG_FILE": "/dev/null"})
        run = Service(moto, engine)
        route53 = run.client("route53")
        zone = route53.create_hosted_zone(Name=ZONE, CallerReference=str(uuid.uuid4()))
        run.results["zone"] = zone["HostedZone"]["Id"].rsplit("/", 1)[-1]
        run.layout = layout_over(run, str(run.results["zone"]))
        run.results["key"] = engine.up_shared(run.key(), timeout_s=TIMEOUT_S)
        with ThreadPoolExecutor(len(run.pools)) as pool:
            ups = list(pool.map(lambda d: engine.up(ref(d), d, timeout_s=TIMEOUT_S),
                                run.pools))
        run.results["pools"] = ups
        run.results["front"] = engine.up_shared(run.front(), timeout_s=TIMEOUT_S)
        yield run
        # whatever a failed test left: front, pools, key (destroy of nothing is a no-op)
        engine.destroy_shared(run.front())
        for d in run.pools:
            engine.destroy(ref(d), d)
        engine.destroy_shared(run.key())


def test_every_stack_came_up(service):
    # in apply order, so the first failure named is the one the later ones follow from
    assert service.results["key"].ok, service.results["key"].error_texts()
    for result in service.results["pools"]:
        assert result.ok, result.error_texts()
    assert service.results["front"].ok, service.results["front"].error_texts()


def test_each_pool_stores_the_one_key_in_its_region(service):
    key = service.results["key"].outputs[OUTPUT_API_KEY]
    assert len(key) == 64  # two UUIDs without dashes, drawn once by the key stack
    assert service.engine.shared_outputs(service.key())[OUTPUT_API_KEY] == key
    for d, up in zip(service.pools, service.results["pools"], strict=True):
        parameter = service.client("ssm", d.region).get_parameter(
            Name=d.api_key_secret.name, WithDecryption=True)["Parameter"]
        assert (parameter["Type"], parameter["Value"]) == ("SecureString", key)
        assert up.outputs[OUTPUT_API_KEY] == key  # the deploy's readiness probe reads this


def test_the_records_and_checks_point_at_the_two_albs(service):
    albs = {}
    for d in service.pools:
        (balancer,) = service.client("elbv2", d.region).describe_load_balancers()[
            "LoadBalancers"]
        albs[f"aws-{d.region}"] = balancer
    route53 = service.client("route53")
    checks = {c["Id"]: c["HealthCheckConfig"]
              for c in route53.list_health_checks()["HealthChecks"]}
    listed = route53.list_resource_record_sets(HostedZoneId=service.results["zone"])
    records = {r["SetIdentifier"]: r for r in listed["ResourceRecordSets"]
               if r["Name"].rstrip(".") == DOMAIN}
    assert set(records) == set(albs) and len(checks) == len(albs)
    for key, record in records.items():
        balancer = albs[key]
        assert (record["Type"], record["Weight"]) == ("A", 1)
        target = record["AliasTarget"]
        assert target["DNSName"].rstrip(".") == balancer["DNSName"]
        assert target["HostedZoneId"] == balancer["CanonicalHostedZoneId"]
        assert target["EvaluateTargetHealth"] is True
        check = checks[record["HealthCheckId"]]  # its own pool's check
        assert check["FullyQualifiedDomainName"] == balancer["DNSName"]
        assert (check["Type"], check["Port"], check["ResourcePath"]) == ("HTTP", 80, "/health")
    endpoint = service.results["front"].outputs["endpoint"]
    assert endpoint == f"http://{DOMAIN}"


def test_no_token_in_any_file(service):
    work = service.engine.work_dir
    leaked = [p for p in work.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []


def test_destroy_in_reverse_order_leaves_nothing(service):
    engine = service.engine
    front = engine.destroy_shared(service.front())
    assert front.ok, front.error_texts()
    with ThreadPoolExecutor(len(service.pools)) as pool:
        results = list(pool.map(lambda d: engine.destroy(ref(d), d), service.pools))
    assert [r.ok for r in results] == [True] * len(results), \
        [r.error_texts() for r in results]
    key = engine.destroy_shared(service.key())
    assert key.ok, key.error_texts()
    for folder in (service.front(), service.key()):
        assert not engine.shared_dir(folder).exists()
    for d in service.pools:
        assert engine.leftovers(ref(d), d) == []
        assert left_in(service, d.region) == []
    route53 = service.client("route53")
    assert route53.list_health_checks()["HealthChecks"] == []
    listed = route53.list_resource_record_sets(HostedZoneId=service.results["zone"])
    assert sorted(r["Type"] for r in listed["ResourceRecordSets"]) == ["NS", "SOA"]


def left_in(run: Service, region: str) -> list[str]:
    """Everything of ours still in the region: groups, balancers, target groups, templates,
    VPCs besides the default, parameters, and IAM roles and instance profiles (global)."""
    autoscaling, elb = run.client("autoscaling", region), run.client("elbv2", region)
    ec2, ssm, iam = run.client("ec2", region), run.client("ssm", region), run.client("iam", region)
    left = [g["AutoScalingGroupName"]
            for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]]
    left += [b["LoadBalancerArn"] for b in elb.describe_load_balancers()["LoadBalancers"]]
    left += [t["TargetGroupArn"] for t in elb.describe_target_groups()["TargetGroups"]]
    left += [t["LaunchTemplateId"]
             for t in ec2.describe_launch_templates()["LaunchTemplates"]]
    left += [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v.get("IsDefault")]
    left += [p["Name"] for p in ssm.describe_parameters()["Parameters"]]
    left += [r["RoleName"] for r in iam.list_roles()["Roles"]]
    left += [p["InstanceProfileName"]
             for p in iam.list_instance_profiles()["InstanceProfiles"]]
    return left
