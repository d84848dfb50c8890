"""End to end, for real: the fallback loop drives Terraform (the CLI, the AWS provider 5.100)
against a local AWS API (moto in server mode) that has no EC2 capacity for the first candidate.

One deploy run is shared by the tests below (about 3.5 minutes: the AWS provider waits 30 s
before it first polls a new load balancer, and each candidate creates one):

1. candidate 1 (us-east-1) is applied; its auto scaling group's scaling activity fails with
   AWS's InsufficientInstanceCapacity text, for every instance type of the group in its zones;
2. the loop classifies it (capacity), destroys the candidate and proves it gone, blocks it;
3. candidate 2 (us-east-2) is applied and comes up; the "replicas" the readiness step counts
   are the group's InService instances, read through the same API.

Then boto3 checks what Terraform built against the plan (the stack's own VPC, the GPU VMs in
private subnets without a public address, one NAT gateway, the API key's SSM parameter), and a
destroy leaves nothing (no VPC, NAT gateway or Elastic IP either).
Runs only with SERVESTACK_E2E=1 and SERVESTACK_E2E_ALL=1 (and terraform + the provider mirror
present). CI leaves it out to keep its time in bounds: tests/terraform/test_e2e_pools.py runs
the same loop (each pool's Fallback) through Terraform against moto, with a capacity refusal,
its cleanup and proof, and the kept pool's stack checked the same way in brief.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from servestack import clouds, planner
from servestack.deploy.clock import SystemClock
from servestack.deploy.journal import Journal
from servestack.deploy.loop import Fallback, Settings
from servestack.deploy.readiness import ProbeAnswer
from servestack.deployment.build import build_deployment
from servestack.deployment.model import WORLD, Deployment
from servestack.engine import stack_ref
from servestack.inputs import load_inputs
from servestack.terraform.engine import TerraformEngine
from tests.e2e.moto_faults import ICE, MotoServer, terraform_override
from tests.fakes import PLUGIN_DIR, e2e_skip

TOKEN = "hf_E2EtokenMustNeverLeak0123456789"


pytestmark = e2e_skip("about 3.5 minutes", extended=True)


class Run:
    """What the shared deploy left for the tests to check."""

    def __init__(self, moto: MotoServer, engine: TerraformEngine, work: Path) -> None:
        self.moto, self.engine, self.work = moto, engine, work
        self.outcome = None
        self.deployments: dict[str, Deployment] = {}
        self.first = self.second = None

    def client(self, service: str, region: str):
        import boto3

        return boto3.client(service, region_name=region, endpoint_url=self.moto.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def _group_of(run: Run, d: Deployment) -> dict | None:
    groups = run.client("autoscaling", d.region).describe_auto_scaling_groups()
    for group in groups["AutoScalingGroups"]:
        tags = {t["Key"]: t["Value"] for t in group["Tags"]}
        if tags.get("servestack-candidate") == d.candidate_id:
            return group
    return None


def _moto_probe(run: Run):
    """Readiness through the API: each InService instance of the group counts as a replica."""
    def factory(endpoint: str, deployment: Deployment):
        names = itertools.count()

        def probe() -> ProbeAnswer:
            group = _group_of(run, deployment)
            live = [i["InstanceId"] for i in (group or {}).get("Instances", [])
                    if i["LifecycleState"] == "InService"]
            if not live:
                return ProbeAnswer(False, error="no InService instance")
            return ProbeAnswer(True, 200, live[next(names) % len(live)])

        return probe

    return factory


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    work = tmp_path_factory.mktemp("tf-e2e")
    with MotoServer(work) as moto:
        engine = TerraformEngine(work / "engine", secrets=TOKEN, plugin_dir=PLUGIN_DIR,
                                 overrides={"moto_override.tf.json": terraform_override(moto.url)},
                                 env={"TF_CLI_CONFIG_FILE": "/dev/null"})
        run = Run(moto, engine, work)
        inputs = load_inputs(None)
        plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                            planner.Options(cloud="aws", spot=False), model=inputs.model)
        first = plan.candidates[0]
        second = next(c for c in plan.candidates if c.region != first.region)
        # candidate 1 alone in its region (one instance type); candidate 2 with its region's
        # other types, so its group lists several in rank order
        candidates = [first] + [c for c in plan.candidates if c.region == second.region]

        def build(c, pool):
            d = build_deployment(inputs.spec, c, pool, model=inputs.model)
            ami = run.client("ec2", c.region).describe_images(Owners=["amazon"])["Images"][0]
            d = replace(d, image=clouds.get("aws").image_ref(ami["ImageId"]))
            run.deployments[c.id] = d
            return d

        first_types = [i.instance_type for i in build(first, candidates).instances]
        moto.set_capacity_faults([{"instance_types": first_types, "zones": list(first.zones)}])
        journal = Journal.open(work / "state", "mixtral")
        settings = Settings(quota_precheck=False, attempt_timeout_s=600, retries=0,
                            cleanup_rounds=2, cleanup_wait_s=1, probe_interval_s=1)
        loop = Fallback(engine, journal, candidates, build, clock=SystemClock(),
                        settings=settings, probe_factory=_moto_probe(run))
        run.outcome = loop.run()
        run.first, run.second = first, second
        yield run
        live = run.deployments.get(second.id)
        if live is not None and _group_of(run, live) is not None:
            engine.destroy(stack_ref(live.service, second.id), live)


def test_the_loop_falls_back_after_insufficient_capacity(deployed):
    outcome = deployed.outcome
    assert outcome.status == "deployed", outcome.message
    report = outcome.to_json()
    first, second = report["attempts"]
    assert first["candidate"] == deployed.first.id
    assert first["error_class"] == "capacity" and first["code"] == ICE
    assert "We currently do not have sufficient" in first["message"]
    assert first["cleanup"].startswith("clean")
    assert second["candidate"] == deployed.second.id and second["outcome"] == "deployed"
    assert report["candidate"] == deployed.second.id
    assert report["endpoint"].startswith("http://") and ".elb.amazonaws.com:80" in \
        report["endpoint"]
    journal = Journal.open(deployed.work / "state", "mixtral")
    assert [a.candidate for a in journal.attempts] == [deployed.first.id, deployed.second.id]
    states = {s.candidate: s.state for s in journal.stacks.values()}
    assert states == {deployed.first.id: "clean", deployed.second.id: "live"}


def test_the_failed_candidate_left_nothing(deployed):
    d = deployed.deployments[deployed.first.id]
    assert _group_of(deployed, d) is None
    assert not _tagged(deployed, d)
    ec2 = deployed.client("ec2", d.region)
    assert not ec2.describe_launch_templates()["LaunchTemplates"]
    ssm = deployed.client("ssm", d.region)
    assert not ssm.describe_parameters()["Parameters"]
    assert _network_left(deployed, d) == []
    assert not deployed.engine.stack_dir(stack_ref(d.service, d.candidate_id)).exists()


def _tagged(run: Run, d: Deployment) -> list[str]:
    """Everything still tagged with the candidate: load balancers, target groups, security
    groups, live instances."""
    region = d.region
    found = []
    elb = run.client("elbv2", region)
    arns = [lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]]
    arns += [tg["TargetGroupArn"] for tg in elb.describe_target_groups()["TargetGroups"]]
    for chunk in range(0, len(arns), 20):
        for desc in elb.describe_tags(ResourceArns=arns[chunk:chunk + 20])["TagDescriptions"]:
            if {"Key": "servestack-candidate", "Value": d.candidate_id} in desc["Tags"]:
                found.append(desc["ResourceArn"])
    ec2 = run.client("ec2", region)
    filters = [{"Name": "tag:servestack-candidate", "Values": [d.candidate_id]}]
    found += [g["GroupId"] for g in ec2.describe_security_groups(Filters=filters)
              ["SecurityGroups"]]
    live = filters + [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    found += [i["InstanceId"] for r in ec2.describe_instances(Filters=live)["Reservations"]
              for i in r["Instances"]]
    return found


def _network_left(run: Run, d: Deployment) -> list[str]:
    """The stack's VPC, NAT gateways and Elastic IPs still there (moto keeps a deleted NAT
    gateway, in state "deleted", as AWS does for a while)."""
    ec2 = run.client("ec2", d.region)
    tagged = [{"Name": "tag:servestack-candidate", "Values": [d.candidate_id]}]
    left = [v["VpcId"] for v in ec2.describe_vpcs(Filters=tagged)["Vpcs"]]
    left += [n["NatGatewayId"] for n in ec2.describe_nat_gateways()["NatGateways"]
             if n["State"] not in ("deleting", "deleted")]
    left += [a["AllocationId"] for a in ec2.describe_addresses()["Addresses"]]
    return left


def _check_private_network(run: Run, d: Deployment, group: dict, template: dict) -> None:
    """The VMs have no public address: the template's interface asks for none, they sit in
    the stack's private subnets whose way out is the one NAT gateway, and none got one."""
    ec2 = run.client("ec2", d.region)
    (nic,) = template["NetworkInterfaces"]
    assert nic["AssociatePublicIpAddress"] is False and nic["DeviceIndex"] == 0
    subnet_ids = group["VPCZoneIdentifier"].split(",")
    subnets = ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
    assert sorted(s["AvailabilityZoneId"] for s in subnets) == sorted(d.zones)
    assert not any(s["MapPublicIpOnLaunch"] for s in subnets)
    (vpc,) = ec2.describe_vpcs(VpcIds=[subnets[0]["VpcId"]])["Vpcs"]
    assert vpc["CidrBlock"] == d.network.vnet and not vpc.get("IsDefault")
    (nat,) = [n for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] == "available"]
    assert nat["VpcId"] == vpc["VpcId"] and nat["SubnetId"] not in subnet_ids
    tables = ec2.describe_route_tables(
        Filters=[{"Name": "association.subnet-id", "Values": subnet_ids}])["RouteTables"]
    routes = [r for t in tables for r in t["Routes"] if r.get("DestinationCidrBlock") == WORLD]
    assert routes and all(r.get("NatGatewayId") == nat["NatGatewayId"] for r in routes)
    ids = [i["InstanceId"] for i in group["Instances"]]
    instances = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
                 for i in r["Instances"]]
    assert len(instances) == d.desired_replicas
    assert [i.get("PublicIpAddress") for i in instances] == [None] * len(instances)
    assert all(i["SubnetId"] in subnet_ids for i in instances)


def test_the_stack_is_built_as_planned(deployed):
    d = deployed.deployments[deployed.second.id]
    group = _group_of(deployed, d)
    assert group is not None
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == \
        (d.min_replicas, d.max_replicas, d.desired_replicas)
    assert len(group["Instances"]) == d.desired_replicas
    ref = stack_ref(d.service, d.candidate_id)
    assert deployed.engine.group_size(ref, d) == d.desired_replicas
    policy = group["MixedInstancesPolicy"]
    overrides = [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]]
    assert overrides == [i.instance_type for i in d.instances]
    spread = policy["InstancesDistribution"]
    assert spread["OnDemandAllocationStrategy"] == "prioritized"
    assert (spread["OnDemandBaseCapacity"], spread["OnDemandPercentageAboveBaseCapacity"]) == \
        (0, 100)
    assert group["HealthCheckType"] == "ELB"
    assert group["HealthCheckGracePeriod"] == d.health.grace_period_seconds

    ec2 = deployed.client("ec2", d.region)
    spec = policy["LaunchTemplate"]["LaunchTemplateSpecification"]
    version = ec2.describe_launch_template_versions(
        LaunchTemplateId=spec["LaunchTemplateId"])["LaunchTemplateVersions"][0]
    data = version["LaunchTemplateData"]
    assert data["InstanceType"] == d.primary.instance_type and data["ImageId"] == d.image.id
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == d.disk_size_gb
    import base64
    import gzip

    user_data = gzip.decompress(base64.b64decode(data["UserData"])).decode()  # sent gzip'd
    assert user_data.startswith("#cloud-config") and TOKEN not in user_data
    _check_firewall(deployed, d, data["NetworkInterfaces"][0]["Groups"])
    _check_private_network(deployed, d, group, data)
    _check_load_balancer(deployed, d, group)
    parameter = deployed.client("ssm", d.region).get_parameter(Name=d.secret.name,
                                                               WithDecryption=True)
    assert parameter["Parameter"]["Type"] == "SecureString"
    assert parameter["Parameter"]["Value"] == TOKEN
    key = deployed.client("ssm", d.region).get_parameter(Name=d.api_key_secret.name,
                                                         WithDecryption=True)["Parameter"]
    assert key["Type"] == "SecureString" and len(key["Value"]) == 64  # two UUIDs, no dashes
    role = group_role(deployed, d, data)
    assert "AmazonSSMManagedInstanceCore" in role


def group_role(run: Run, d: Deployment, template: dict) -> list[str]:
    """The managed policies of the VMs' role (through the template's instance profile)."""
    iam = run.client("iam", d.region)
    name = template["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1]
    (role,) = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    return [p["PolicyName"] for p in attached]


def _check_firewall(run: Run, d: Deployment, vm_groups: list[str]) -> None:
    ec2 = run.client("ec2", d.region)
    (vm_group,) = vm_groups
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [vm_group]}])["SecurityGroupRules"]
    ingress = [r for r in rules if not r["IsEgress"]]
    assert [(r["FromPort"], r["ToPort"]) for r in ingress] == [(d.service_port, d.service_port)]
    alb_group = ingress[0]["ReferencedGroupInfo"]["GroupId"]
    alb_rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [alb_group]}])["SecurityGroupRules"]
    clients = [(r["FromPort"], r.get("CidrIpv4")) for r in alb_rules if not r["IsEgress"]]
    assert clients == [(d.listener_port, cidr) for cidr in d.allow_cidrs]
    egress = [(r["FromPort"], r["ToPort"]) for r in alb_rules if r["IsEgress"]]
    assert egress == [(d.service_port, d.service_port)]


def _check_load_balancer(run: Run, d: Deployment, group: dict) -> None:
    elb = run.client("elbv2", d.region)
    (target_group_arn,) = group["TargetGroupARNs"]
    (target_group,) = elb.describe_target_groups(
        TargetGroupArns=[target_group_arn])["TargetGroups"]
    assert target_group["HealthCheckPath"] == d.health.path
    assert target_group["Port"] == d.service_port
    assert target_group["HealthCheckIntervalSeconds"] == d.health.interval_seconds
    assert target_group["UnhealthyThresholdCount"] == d.health.unhealthy_threshold
    (balancer_arn,) = target_group["LoadBalancerArns"]
    (balancer,) = elb.describe_load_balancers(LoadBalancerArns=[balancer_arn])["LoadBalancers"]
    assert balancer["Type"] == "application"  # moto reports no Scheme
    (listener,) = elb.describe_listeners(LoadBalancerArn=balancer_arn)["Listeners"]
    assert listener["Port"] == d.listener_port and listener["Protocol"] == "HTTP"
    assert listener["DefaultActions"][0]["TargetGroupArn"] == target_group_arn


def test_no_token_in_files_state_or_journal(deployed):
    leaked = [p for p in deployed.work.rglob("*") if p.is_file()
              and TOKEN.encode() in p.read_bytes()]
    assert leaked == []


def test_destroy_leaves_nothing(deployed):
    d = deployed.deployments[deployed.second.id]
    ref = stack_ref(d.service, d.candidate_id)
    result = deployed.engine.destroy(ref, d)
    assert result.ok, result.error_texts()
    assert deployed.engine.leftovers(ref, d) == deployed.engine.strays(ref, d) == []
    assert _group_of(deployed, d) is None and not _tagged(deployed, d)
    assert not deployed.client("ssm", d.region).describe_parameters()["Parameters"]
    assert _network_left(deployed, d) == []
