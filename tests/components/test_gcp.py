"""components/gcp.py under Pulumi's mock runtime: the real inputs of every GCP resource."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from functools import cache

import pulumi
import pytest

from servestack import clouds, planner
from servestack.bootstrap import render_cloud_init, written_files
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Autoscaling, Choices, Deployment, InstanceChoice, Tls
from servestack.inputs import load_inputs
from servestack.pulumi.preview import SECRET_MASK, preview_json, record
from tests.fakes import FROZEN_CATALOG

TOKEN = "hf_TestOnlyTokenValue9f3b2c1a"
MIG = "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager"
TEMPLATE = "gcp:compute/regionInstanceTemplate:RegionInstanceTemplate"
FIREWALL = "gcp:compute/firewall:Firewall"
HEALTH = "gcp:compute/regionHealthCheck:RegionHealthCheck"
BACKEND = "gcp:compute/regionBackendService:RegionBackendService"
RULE = "gcp:compute/forwardingRule:ForwardingRule"
PROXY = "gcp:compute/regionTargetHttpProxy:RegionTargetHttpProxy"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
ARMOR = "gcp:compute/regionSecurityPolicy:RegionSecurityPolicy"
SECRET = "gcp:secretmanager/secret:Secret"
VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
BINDING = "gcp:secretmanager/secretIamBinding:SecretIamBinding"
ACCOUNT = "gcp:serviceaccount/account:Account"
GET_IMAGE = "gcp:compute/getImage:getImage"
SETTINGS = "/etc/servestack/servestack.env"  # the bootstrap's settings file
NETWORK = "gcp:compute/network:Network"
ROUTER = "gcp:compute/router:Router"
NAT = "gcp:compute/routerNat:RouterNat"
API_KEY = "pulumi-python:dynamic:Resource"  # components.apikey.ApiKey
DNS_AUTH = "gcp:certificatemanager/dnsAuthorization:DnsAuthorization"
CERT = "gcp:certificatemanager/certificate:Certificate"
HTTPS_PROXY = "gcp:compute/regionTargetHttpsProxy:RegionTargetHttpsProxy"
SSL_POLICY = "gcp:compute/regionSslPolicy:RegionSslPolicy"
URL_MAP = "gcp:compute/regionUrlMap:RegionUrlMap"
RECORD = "gcp:dns/recordSet:RecordSet"
AUTOSCALER = "gcp:compute/regionAutoscaler:RegionAutoscaler"
IAM_MEMBER = "gcp:projects/iAMMember:IAMMember"
# The inputs that fix a physical name: what must differ between services and stacks.
NAME_INPUTS = ("name", "namePrefix", "accountId", "baseInstanceName")
# A secret's version and IAM binding, and the key (state only), have no name of their own;
# a DNS record's name is the user's domain.
UNNAMED = (VERSION, BINDING, API_KEY, RECORD)
T4_HOSTS = (
    InstanceChoice("gcp-us-central1-n1-standard-16-ondemand", "n1-standard-16", "T4", 4, 2.2,
                   attached_gpu="nvidia-tesla-t4"),
    InstanceChoice("gcp-us-central1-n1-standard-32-ondemand", "n1-standard-32", "T4", 4, 2.9,
                   attached_gpu="nvidia-tesla-t4"),
    InstanceChoice("gcp-us-central1-n1-highmem-32-ondemand", "n1-highmem-32", "V100", 4, 11.0,
                   attached_gpu="nvidia-tesla-v100"),
)


@cache
def planned(spot: bool) -> Deployment:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="gcp", spot=spot), model=inputs.model)
    deployment = build_deployment(inputs.spec, plan.candidates[0], plan.candidates,
                                  model=inputs.model)
    if len(deployment.instances) == 1:
        # The shipped plan has one on-demand type with 2 x A100-80GB in us-central1; the
        # flexibility policy is exercised with a second real 2-GPU type of the same region.
        extra = InstanceChoice("gcp-us-central1-a3-highgpu-2g-spot", "a3-highgpu-2g",
                               "H100", 2, 10.77)
        deployment = replace(deployment, instances=(*deployment.instances, extra))
    return deployment


def run(deployment: Deployment, token: str | None = TOKEN):
    def program() -> None:
        from servestack.components.gcp import Service

        secret = pulumi.Output.secret(token) if token else None
        service = Service(deployment.service, deployment, hf_token=secret)
        pulumi.export("endpoint", service.endpoint)
        pulumi.export("instance_group_name", service.group_name)
        pulumi.export("instance_group_id", service.group_id)

    return record(program)


@cache
def on_demand():
    return run(planned(False))


@cache
def spot():
    return run(planned(True))


def single(recording, token: str) -> dict:
    return recording.one(token).inputs


def named(recording, token: str, middle: str) -> dict:
    """The inputs of the one resource of a type whose logical name holds `middle` (the
    token's and the API key's secrets are of the same types)."""
    [found] = [r for r in recording.of_type(token) if middle in r.name]
    return found.inputs


def firewall(recording, suffix: str) -> dict | None:
    found = [r for r in recording.of_type(FIREWALL) if r.name.endswith(suffix)]
    return found[0].inputs if found else None


def test_planned_deployments_are_what_the_tests_assume():
    d, s = planned(False), planned(True)
    assert d.instances[0].instance_type.startswith("a2-") and len(d.instances) >= 2
    assert s.use_spot and s.instances[0].instance_type.startswith("g2-")
    assert d.desired_replicas == 2 and len(d.zones) == 2


def test_firewall_opens_service_port_to_health_checkers_and_proxies_only():
    d = planned(False)
    rec = on_demand()
    health = firewall(rec, "-health-checks")
    assert health["sourceRanges"] == ["35.191.0.0/16", "130.211.0.0/22"]
    assert health["allows"] == [{"protocol": "tcp", "ports": [str(d.service_port)]}]
    assert health["targetTags"] == [f"{d.scope}-vm"]
    assert health["direction"] == "INGRESS"
    proxies = firewall(rec, "-lb-proxies")
    proxy_subnet = [r.inputs for r in rec.of_type(SUBNET) if r.name.endswith("-proxy")][0]
    assert proxy_subnet["purpose"] == "REGIONAL_MANAGED_PROXY"
    assert proxies["sourceRanges"] == [proxy_subnet["ipCidrRange"]]
    assert proxies["allows"] == [{"protocol": "tcp", "ports": ["8000"]}]
    assert firewall(rec, "-ssh") is None
    assert len(rec.of_type(FIREWALL)) == 2
    template = single(rec, TEMPLATE)
    assert template["tags"] == [f"{d.scope}-vm"]


def test_ssh_rule_only_from_given_cidrs():
    rec = run(replace(planned(False), ssh_cidrs=("198.51.100.7/32",)))
    ssh = firewall(rec, "-ssh")
    assert ssh["sourceRanges"] == ["198.51.100.7/32"]
    assert ssh["allows"] == [{"protocol": "tcp", "ports": ["22"]}]
    assert len(rec.of_type(FIREWALL)) == 3


def test_client_cidrs_enforced_by_cloud_armor_when_not_world():
    assert on_demand().of_type(ARMOR) == []
    assert "securityPolicy" not in single(on_demand(), BACKEND)
    cidrs = tuple(f"203.0.113.{i}/32" for i in range(12))
    rec = run(replace(planned(False), allow_cidrs=cidrs))
    policy = single(rec, ARMOR)
    allows = [r for r in policy["rules"] if r["action"] == "allow"]
    assert [r["match"]["config"]["srcIpRanges"] for r in allows] == [list(cidrs[:10]),
                                                                      list(cidrs[10:])]
    default = [r for r in policy["rules"] if r["priority"] == 2147483647][0]
    assert default["action"] == "deny(403)"
    assert default["match"]["config"]["srcIpRanges"] == ["*"]
    assert single(rec, BACKEND)["securityPolicy"]


def test_health_check_and_autohealing_come_from_the_deployment():
    d = planned(False)
    rec = on_demand()
    check = single(rec, HEALTH)
    assert check["httpHealthCheck"] == {"port": 8000, "requestPath": "/health"}
    assert (check["checkIntervalSec"], check["timeoutSec"]) == (10, 5)
    assert (check["healthyThreshold"], check["unhealthyThreshold"]) == (2, 3)
    assert check["region"] == d.region
    mig = single(rec, MIG)
    assert mig["autoHealingPolicies"]["initialDelaySec"] == d.health.grace_period_seconds == 1200
    health_id = rec.one(HEALTH).id
    assert mig["autoHealingPolicies"]["healthCheck"] == health_id
    assert single(rec, BACKEND)["healthChecks"] == health_id


def test_group_zones_named_port_size_and_update_policy():
    d = planned(False)
    mig = single(on_demand(), MIG)
    assert mig["region"] == "us-central1"
    assert mig["distributionPolicyZones"] == ["us-central1-a", "us-central1-c"]
    assert mig["distributionPolicyTargetShape"] == "BALANCED"
    assert mig["namedPorts"] == [{"name": "http", "port": 8000}]
    assert mig["targetSize"] == d.desired_replicas == 2
    assert mig["waitForInstances"] is False
    policy = mig["updatePolicy"]
    assert policy["maxSurgeFixed"] == len(d.zones) and policy["maxUnavailableFixed"] == 0
    assert policy["instanceRedistributionType"] == "NONE"


@pytest.mark.parametrize("replicas", [1, 3])
def test_replica_count_is_the_target_size(replicas):
    rec = run(replace(planned(False), desired_replicas=replicas, min_replicas=replicas,
                      max_replicas=replicas))
    assert single(rec, MIG)["targetSize"] == replicas


def test_several_machine_types_are_ranked_in_the_flexibility_policy():
    d = planned(False)
    selections = single(on_demand(), MIG)["instanceFlexibilityPolicy"]["instanceSelections"]
    assert [s["machineTypes"] for s in selections] == [[c.instance_type] for c in d.instances]
    assert [s["rank"] for s in selections] == list(range(len(d.instances)))
    assert single(on_demand(), TEMPLATE)["machineType"] == d.instances[0].instance_type


def test_one_machine_type_has_no_flexibility_policy():
    d = planned(False)
    rec = run(replace(d, instances=d.instances[:1]))
    assert "instanceFlexibilityPolicy" not in single(rec, MIG)
    assert single(rec, TEMPLATE)["machineType"] == "a2-ultragpu-2g"


def test_on_demand_scheduling():
    scheduling = single(on_demand(), TEMPLATE)["scheduling"]
    assert scheduling == {"provisioningModel": "STANDARD", "preemptible": False,
                          "automaticRestart": True, "onHostMaintenance": "TERMINATE"}
    [version] = single(on_demand(), MIG)["versions"]
    assert version["name"] == "ondemand" and "targetSize" not in version


def test_spot_scheduling():
    rec = spot()
    scheduling = single(rec, TEMPLATE)["scheduling"]
    assert scheduling == {"provisioningModel": "SPOT", "preemptible": True,
                          "automaticRestart": False, "onHostMaintenance": "TERMINATE",
                          "instanceTerminationAction": "DELETE"}
    [version] = single(rec, MIG)["versions"]
    assert version["name"] == "spot"


def test_spot_with_on_demand_base_pins_an_on_demand_version():
    rec = run(replace(planned(True), on_demand_base=1, desired_replicas=3))
    templates = {r.name.rsplit("-", 1)[-1]: r for r in rec.of_type(TEMPLATE)}
    assert templates["ondemand"].inputs["scheduling"]["provisioningModel"] == "STANDARD"
    assert templates["spot"].inputs["scheduling"]["provisioningModel"] == "SPOT"
    versions = {v["name"]: v for v in single(rec, MIG)["versions"]}
    assert versions["ondemand"]["targetSize"] == {"fixed": 1}
    assert "targetSize" not in versions["spot"]
    assert single(rec, MIG)["targetSize"] == 3


def test_bundled_gpu_types_attach_no_accelerators():
    for rec in (on_demand(), spot()):  # a2 and g2 carry their GPUs
        assert "guestAccelerators" not in single(rec, TEMPLATE)


def test_n1_host_attaches_its_gpus_and_ranks_only_same_gpu_hosts():
    d = replace(planned(False), instances=T4_HOSTS, tensor_parallel_size=4)
    rec = run(d)
    template = single(rec, TEMPLATE)
    assert template["machineType"] == "n1-standard-16"
    assert template["guestAccelerators"] == [{"type": "nvidia-tesla-t4", "count": 4}]
    assert template["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert "nicType" not in template["networkInterfaces"][0]
    selections = single(rec, MIG)["instanceFlexibilityPolicy"]["instanceSelections"]
    assert [s["machineTypes"] for s in selections] == [["n1-standard-16"], ["n1-standard-32"]]


def test_boot_disk_image_family_and_override():
    d = planned(False)
    rec = on_demand()
    [disk] = single(rec, TEMPLATE)["disks"]
    assert disk["boot"] and disk["autoDelete"]
    assert (disk["diskSizeGb"], disk["diskType"]) == (d.disk_size_gb, d.disk_type) == \
        (256, "pd-ssd")
    [lookup] = [i for i in rec.invokes if i["token"] == GET_IMAGE]
    assert lookup["args"] == {"project": "deeplearning-platform-release",
                              "family": "common-cu129-ubuntu-2204-nvidia-580"}
    assert disk["sourceImage"].endswith("/global/images/preview-image")
    custom = "projects/acme/global/images/vllm-golden-1"
    rec = run(replace(d, image=clouds.get("gcp").image_ref(custom)))
    assert single(rec, TEMPLATE)["disks"][0]["sourceImage"] == custom
    assert not [i for i in rec.invokes if i["token"] == GET_IMAGE]


def test_user_data_is_the_bootstrap_and_holds_no_token():
    d = planned(False)
    rec = on_demand()
    metadata = single(rec, TEMPLATE)["metadata"]
    assert metadata["user-data"] == render_cloud_init(d)
    settings = written_files(metadata["user-data"])[SETTINGS]
    assert "SERVESTACK_TP_PLANNED=2\n" in settings
    assert f"SERVESTACK_SECRET_NAME={d.secret.name}\n" in settings
    assert d.secret.name.startswith("servestack-mixtral-")
    n1 = run(replace(d, instances=T4_HOSTS, tensor_parallel_size=4))
    user_data = single(n1, TEMPLATE)["metadata"]["user-data"]
    assert "SERVESTACK_TP_PLANNED=4\n" in written_files(user_data)[SETTINGS]


def test_token_appears_nowhere_but_as_a_secret():
    for rec in (on_demand(), spot()):
        text = json.dumps(preview_json(rec)) + json.dumps(rec.invokes)
        assert TOKEN not in text
        assert TOKEN[3:] not in text
        assert named(rec, VERSION, "-token-")["secretData"] == SECRET_MASK


def test_secret_and_its_single_reader():
    d = planned(False)
    rec = on_demand()
    secret = named(rec, SECRET, "-token-")
    assert secret["secretId"] == d.secret.name
    assert d.secret.name.startswith("servestack-mixtral-") and d.secret.name.endswith("-hf-token")
    assert secret["replication"] == {"userManaged": {"replicas": [{"location": d.region}]}}
    binding = named(rec, BINDING, "-token-")
    assert binding["role"] == "roles/secretmanager.secretAccessor"
    assert binding["secretId"] == d.secret.name
    assert len(binding["members"]) == 1
    [token_secret] = [r for r in rec.of_type(SECRET) if "-token-" in r.name]
    assert named(rec, VERSION, "-token-")["secret"] == token_secret.id
    account = single(rec, ACCOUNT)
    assert account["accountId"] == f"{d.scope}-vm" and d.scope.startswith("mixtral-")
    template = single(rec, TEMPLATE)
    assert template["serviceAccount"]["scopes"] == [
        "https://www.googleapis.com/auth/cloud-platform"]


def token_resources(rec, token: str) -> list:
    return [r for r in rec.of_type(token) if "-token-" in r.name]


def test_no_secret_resources_without_a_secret_and_no_version_without_a_token():
    rec = run(replace(planned(False), secret=None), token=None)
    assert not any(token_resources(rec, t) for t in (SECRET, BINDING, VERSION))
    rec = run(planned(False), token=None)
    assert token_resources(rec, SECRET) and token_resources(rec, BINDING)
    assert not token_resources(rec, VERSION)


def test_load_balancer_listens_on_listener_port_and_forwards_to_named_port():
    d = planned(False)
    rec = on_demand()
    rule = single(rec, RULE)
    assert rule["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    assert rule["portRange"] == str(d.listener_port) == "80"
    assert rule["target"] == rec.one(PROXY).id
    backend = single(rec, BACKEND)
    assert backend["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    assert (backend["protocol"], backend["portName"]) == ("HTTP", "http")
    assert backend["timeoutSec"] >= d.idle_timeout_seconds
    assert backend["backends"][0]["balancingMode"] == "UTILIZATION"


def test_labels_follow_gcp_rules():
    d = replace(planned(False), labels={"team": "ml-infra", "cost_center": "42"})
    rec = run(d)
    labels = single(rec, TEMPLATE)["labels"]
    assert labels == {"team": "ml-infra", "cost_center": "42", "servestack-service": "mixtral",
                      "servestack-candidate": d.candidate_id, "managed-by": "servestack"}
    assert named(rec, SECRET, "-token-")["labels"] == labels
    assert named(rec, SECRET, "-api-key-")["labels"] == labels
    assert single(rec, RULE)["labels"] == labels
    from servestack.components.gcp import gcp_labels

    assert gcp_labels({"Owner.Name": "Jane Doe", "9lives": "x" * 70}) == {
        "owner-name": "jane-doe", "l-9lives": "x" * 63}


def test_project_goes_on_every_resource_when_set():
    rec = run(replace(planned(False), gcp_project="acme-llm"))
    custom = [r for r in rec.resources if r.custom and r.type != API_KEY]  # not a GCP resource
    assert custom and all(r.inputs.get("project") == "acme-llm" for r in custom), \
        [r.name for r in custom if r.inputs.get("project") != "acme-llm"]
    assert "project" not in single(on_demand(), MIG)


def test_vms_have_no_public_address_and_go_out_through_cloud_nat_of_their_subnet():
    d = planned(False)
    for rec in (on_demand(), spot(), run(replace(planned(True), on_demand_base=1))):
        for template in rec.of_type(TEMPLATE):
            [nic] = template.inputs["networkInterfaces"]
            assert "accessConfigs" not in nic and "ipv6AccessConfigs" not in nic
    rec = on_demand()
    router, nat = single(rec, ROUTER), single(rec, NAT)
    assert router["network"] == rec.one(NETWORK).id and router["region"] == d.region
    assert nat["router"] == router["name"] and nat["region"] == d.region
    assert nat["natIpAllocateOption"] == "AUTO_ONLY"
    vms = [r for r in rec.of_type(SUBNET) if r.name.endswith("-vms")][0]
    assert nat["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
    assert nat["subnetworks"] == [{"name": vms.id, "sourceIpRangesToNats": ["ALL_IP_RANGES"]}]
    assert vms.inputs["privateIpGoogleAccess"] is True  # Google APIs without the NAT
    assert vms.inputs["logConfig"] == {"aggregationInterval": "INTERVAL_10_MIN",
                                       "flowSampling": 0.5, "metadata": "INCLUDE_ALL_METADATA"}
    assert all("logConfig" not in r.inputs for r in rec.of_type(SUBNET) if r is not vms)
    assert nat["enableDynamicPortAllocation"] is True
    assert nat["enableEndpointIndependentMapping"] is False
    assert nat["logConfig"] == {"enable": True, "filter": "ERRORS_ONLY"}


def physical_names(rec) -> list[str]:
    """Every name the deployment fixes in the project (and the VMs' network tag)."""
    names = []
    for r in rec.resources:
        if not r.custom or r.type in UNNAMED:
            continue
        fixed = [r.inputs[key] for key in NAME_INPUTS if key in r.inputs]
        fixed += [r.inputs["secretId"]] if r.type == SECRET else []
        assert fixed, f"{r.type} {r.name} has no name of its own"
        names += fixed + r.inputs.get("tags", [])
    return names


def test_two_services_and_two_stacks_of_one_spec_share_no_name():
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="gcp", spot=False), model=inputs.model)
    names: dict[str, tuple[str, str]] = {}
    for service, stack in (("servestack", "blue"), ("servestack", "green"), ("other", "blue")):
        d = build_deployment(inputs.spec, plan.candidates[0], plan.candidates,
                             model=inputs.model, service_name=service, stack=stack,
                             choices=Choices(ssh_cidrs=("203.0.113.0/24",),
                                             allow_cidrs=("198.51.100.0/24",),
                                             domain=f"{service}.example.com"))
        for found in set(physical_names(run(d))):
            assert found not in names, f"{found}: {names.get(found)} and {(service, stack)}"
            names[found] = (service, stack)
    # 26 named resources (the API key's secret and six for TLS too), the VMs' base name (tag =
    # account id)
    assert len(names) == 3 * 27


def test_every_name_follows_gcp_rules_for_the_longest_service_name():
    d = replace(planned(False), service="s" * 20, stack="a-very-long-stack-name" * 4)
    rec = run(replace(d, ssh_cidrs=("203.0.113.0/24",), allow_cidrs=("198.51.100.0/24",)))
    rfc1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
    for r in rec.resources:
        if r.custom and r.type not in UNNAMED:
            for key in ("name", "accountId", "baseInstanceName"):
                if key in r.inputs:
                    assert rfc1035.fullmatch(r.inputs[key]) and len(r.inputs[key]) <= 63
    assert 6 <= len(single(rec, ACCOUNT)["accountId"]) <= 30
    assert len(single(rec, TEMPLATE)["namePrefix"]) <= 37  # longer loses the unique suffix
    assert len(single(rec, MIG)["baseInstanceName"]) <= 58  # the MIG appends -xxxx


def test_every_resource_sits_in_the_service_tree():
    rec = on_demand()
    by_urn = {r.urn: r for r in rec.resources}
    [service] = [r for r in rec.resources if r.type == "servestack:gcp:Service"]
    assert service.parent.endswith("pulumi:pulumi:Stack::servestack-preview")
    for r in rec.resources:
        if r is service:
            continue
        parent = by_urn[r.parent]
        assert parent.type.startswith("servestack:gcp:"), r.name
        while parent is not service:
            parent = by_urn[parent.parent]
    kinds = {r.type for r in rec.resources if not r.custom}
    assert kinds == {f"servestack:gcp:{k}" for k in (
        "Service", "Network", "Firewall", "Identity", "TokenSecret", "ApiKeySecret",
        "HealthCheck", "InstanceGroup", "LoadBalancer")}


def test_outputs():
    outputs = on_demand().outputs
    assert outputs["instance_group_name"] == f"{planned(False).scope}-mig"
    assert outputs["instance_group_id"] == "mixtral-group-mig-id"


def test_endpoint_is_the_reserved_address_on_the_forwarding_rule():
    """The preview mock allocates 203.0.113.10 to the Address, as GCP does on `up`."""
    rec = on_demand()
    rule = single(rec, RULE)
    assert rule["ipAddress"] == "203.0.113.10"
    assert rec.outputs["endpoint"] == f"http://{rule['ipAddress']}:80"


def test_the_program_builds_the_gcp_service_from_stack_config():
    from servestack.pulumi.program import main

    d = planned(False)
    rec = record(main, config={"servestack:deployment": json.dumps(d.to_config()),
                               "servestack:hfToken": TOKEN},
                 secret_keys=["servestack:hfToken"])
    assert rec.one("servestack:gcp:Service").name == d.service
    assert named(rec, VERSION, "-token-")["secretData"] == SECRET_MASK
    assert TOKEN not in json.dumps(preview_json(rec))
    assert rec.outputs["instance_group_name"] == f"{d.scope}-mig"


# --- API key ---------------------------------------------------------------------------------


def test_api_key_is_kept_in_its_own_secret_that_only_the_vms_read():
    d = planned(False)
    rec = on_demand()
    secret = named(rec, SECRET, "-api-key-")
    assert secret["secretId"] == d.api_key.name != d.secret.name
    assert d.api_key.name.startswith("servestack-mixtral-") and d.api_key.name.endswith("-api-key")
    # The same placement and labels as the token's secret.
    token_secret = named(rec, SECRET, "-token-")
    assert (secret["replication"], secret["labels"]) == \
        (token_secret["replication"], token_secret["labels"])
    [key_secret] = [r for r in rec.of_type(SECRET) if "-api-key-" in r.name]
    [key] = rec.of_type(API_KEY)
    version = named(rec, VERSION, "-api-key-")
    assert version["secret"] == key_secret.id
    assert version["secretData"] == SECRET_MASK  # the key is a secret all the way
    binding = named(rec, BINDING, "-api-key-")
    assert binding["role"] == "roles/secretmanager.secretAccessor"
    assert binding["secretId"] == d.api_key.name  # that secret only, no project-wide grant
    assert binding["members"] == named(rec, BINDING, "-token-")["members"]
    assert len(binding["members"]) == 1
    assert "-api-key-" in key.name and key.parent == rec.one("servestack:gcp:ApiKeySecret").urn


def test_the_program_exports_the_key_as_a_secret_and_where_it_is_kept():
    from servestack.pulumi.program import main

    d = planned(False)
    rec = record(main, config={"servestack:deployment": json.dumps(d.to_config())})
    [key_secret] = [r for r in rec.of_type(SECRET) if "-api-key-" in r.name]
    assert rec.outputs["api_key"] == SECRET_MASK
    assert rec.outputs["api_key_secret"] == key_secret.id


def test_no_api_key_resources_or_outputs_with_no_api_key():
    from servestack.pulumi.program import main

    d = replace(planned(False), api_key=None)
    rec = record(main, config={"servestack:deployment": json.dumps(d.to_config())})
    assert not rec.of_type(API_KEY)
    assert [r.name for r in rec.of_type(SECRET)] == ["mixtral-token-secret"]
    assert [r.name for r in rec.of_type(BINDING)] == ["mixtral-token-reader"]
    assert "api_key" not in rec.outputs and "api_key_secret" not in rec.outputs


# --- TLS -------------------------------------------------------------------------------------

DOMAIN = "llm.example.com"


def with_tls(zone: str | None) -> Deployment:
    return replace(planned(False), tls=Tls(DOMAIN, zone))


@cache
def tls_run(zone: str | None):
    return run(with_tls(zone))


def test_https_on_443_with_a_managed_regional_certificate_proved_by_dns():
    d = with_tls(None)
    rec = tls_run(None)
    auth = single(rec, DNS_AUTH)
    assert (auth["domain"], auth["location"], auth["type"]) == \
        (DOMAIN, d.region, "PER_PROJECT_RECORD")
    cert = single(rec, CERT)
    assert cert["location"] == d.region  # regional: what a regional ALB's proxy takes
    assert cert["managed"] == {"domains": [DOMAIN], "dnsAuthorizations": [rec.one(DNS_AUTH).id]}
    assert "selfManaged" not in cert and "scope" not in cert
    policy = single(rec, SSL_POLICY)
    assert (policy["profile"], policy["minTlsVersion"], policy["region"]) == \
        ("MODERN", "TLS_1_2", d.region)
    proxy = single(rec, HTTPS_PROXY)
    [backend_map] = [r for r in rec.of_type(URL_MAP) if r.name.endswith("-urls")]
    assert proxy["urlMap"] == backend_map.id
    assert backend_map.inputs["defaultService"] == rec.one(BACKEND).id
    assert proxy["certificateManagerCertificates"] == [rec.one(CERT).id]
    assert "sslCertificates" not in proxy  # the API takes one kind or the other
    assert proxy["sslPolicy"] == f"https://preview/{SSL_POLICY}/mixtral-https-policy"
    rules = {r.inputs["portRange"]: r for r in rec.of_type(RULE)}
    assert set(rules) == {"80", "443"}
    https = rules["443"].inputs
    assert https["target"] == rec.one(HTTPS_PROXY).id
    assert https["ipAddress"] == rules["80"].inputs["ipAddress"] == "203.0.113.10"
    assert (https["loadBalancingScheme"], https["networkTier"]) == ("EXTERNAL_MANAGED", "STANDARD")
    assert https["network"] == rules["80"].inputs["network"]


def test_port_80_only_redirects_to_https_with_tls():
    rec = tls_run(None)
    [redirect] = [r for r in rec.of_type(URL_MAP) if r.name.endswith("-redirect")]
    assert redirect.inputs["defaultUrlRedirect"] == {
        "httpsRedirect": True, "stripQuery": False, "redirectResponseCode": "PERMANENT_REDIRECT"}
    assert "defaultService" not in redirect.inputs  # never reaches the replicas
    assert single(rec, PROXY)["urlMap"] == redirect.id
    [http] = [r for r in rec.of_type(RULE) if r.inputs["portRange"] == "80"]
    assert http.inputs["target"] == rec.one(PROXY).id
    # Without TLS, port 80 serves the backend and nothing of the above exists.
    plain = on_demand()
    assert single(plain, PROXY)["urlMap"] == plain.one(URL_MAP).id
    assert not any(plain.of_type(t) for t in (DNS_AUTH, CERT, SSL_POLICY, HTTPS_PROXY, RECORD))


def test_tls_opens_nothing_new_to_clients():
    assert [firewall(tls_run(None), s) for s in ("-health-checks", "-lb-proxies")] == \
        [firewall(on_demand(), s) for s in ("-health-checks", "-lb-proxies")]
    assert len(tls_run(None).of_type(FIREWALL)) == 2


def test_the_endpoint_is_the_domain_over_https():
    assert tls_run(None).outputs["endpoint"] == f"https://{DOMAIN}"
    assert tls_run("example-zone").outputs["endpoint"] == f"https://{DOMAIN}"


def test_records_are_written_in_the_managed_zone_when_given():
    rec = tls_run("example-zone")
    records = {r.inputs["type"]: r.inputs for r in rec.of_type(RECORD)}
    assert set(records) == {"A", "CNAME"}
    assert all(r["managedZone"] == "example-zone" and r["ttl"] == 300 for r in records.values())
    assert (records["A"]["name"], records["A"]["rrdatas"]) == (f"{DOMAIN}.", ["203.0.113.10"])
    # The CNAME's name and target are the authorization's, known once it exists.
    assert records["CNAME"]["name"] == "[unknown until deployed]"
    assert "dns_records" not in rec.outputs  # nothing left for the user to create


def test_without_a_zone_the_records_are_an_output_and_none_is_created():
    from servestack.pulumi.program import main

    rec = record(main, config={"servestack:deployment": json.dumps(with_tls(None).to_config())})
    assert not rec.of_type(RECORD)
    assert "dns_records" in rec.outputs  # unknown in a preview: the CNAME is the API's


def test_dns_records_output_lists_both_records_once_the_authorization_exists():
    """Under mocks that answer the authorization's record, as Certificate Manager does."""
    from pulumi.runtime import settings
    from pulumi.runtime.sync_await import _sync_await
    from servestack.components.gcp import Service

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args):
            state = dict(args.inputs)
            if args.typ == DNS_AUTH:
                state["dnsResourceRecords"] = [{
                    "name": f"_acme-challenge_abc.{DOMAIN}.", "type": "CNAME",
                    "data": "abc.4.authorize.certificatemanager.goog."}]
            if args.typ == "gcp:compute/address:Address":
                state["address"] = "203.0.113.10"
            return [f"{args.name}-id", state]

        def call(self, args):
            return {}

    old = settings.SETTINGS
    found: list = []
    try:
        pulumi.runtime.set_mocks(Mocks(), preview=False)
        service = Service("svc", with_tls(None), hf_token=None)
        found = _sync_await(service.dns_records.future())
    finally:
        settings.configure(old)
    assert found == [
        {"name": f"_acme-challenge_abc.{DOMAIN}.", "type": "CNAME",
         "value": "abc.4.authorize.certificatemanager.goog."},
        {"name": f"{DOMAIN}.", "type": "A", "value": "203.0.113.10"}]


def test_tls_names_are_the_scope_and_certificate_manager_rules():
    d = replace(with_tls("example-zone"), service="s" * 20, stack="a-very-long-stack-name" * 4)
    rec = run(d)
    rfc1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
    for token in (SSL_POLICY, HTTPS_PROXY, URL_MAP, RULE):
        for r in rec.of_type(token):
            assert rfc1035.fullmatch(r.inputs["name"]) and len(r.inputs["name"]) <= 63
            assert r.inputs["name"].startswith(d.scope + "-")
    for token in (DNS_AUTH, CERT):  # Certificate Manager: [a-zA-Z][a-zA-Z0-9_-]*, 1-64
        name = single(rec, token)["name"]
        assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_-]{0,63}", name) and name.startswith(d.scope)


@pytest.mark.parametrize("secured", ["tls", "tls-and-autoscaling"])
def test_both_engines_build_the_same_tls_and_key(secured):
    """The parts tests/test_engines_agree.py does not compare yet: names, the redirect, the
    TLS policy, the authorization and the records, on both engines from one deployment; with
    autoscaling too, the autoscalers' and the fallback MIG's names beside them."""
    from servestack.terraform import render

    d = with_tls("example-zone") if secured == "tls" else secured_and_scaled()
    rec, res = run(d), render(d)["resource"]
    pulumi_names = sorted([r.inputs["name"] for r in rec.resources
                           if r.custom and r.type not in UNNAMED and "name" in r.inputs]
                          + [r.inputs["secretId"] for r in rec.of_type(SECRET)])
    tf_names = sorted([body["name"] for kind, blocks in res.items() for body in blocks.values()
                       if kind != "google_dns_record_set" and "name" in body]
                      + [s["secret_id"] for s in res["google_secret_manager_secret"].values()])
    assert pulumi_names == tf_names and f"{d.scope}-https-listener" in tf_names
    assert secured == "tls" or {f"{d.scope}-ondemand-mig", f"{d.scope}-autoscaler"} <= \
        set(tf_names)
    redirect = [r for r in rec.of_type(URL_MAP) if r.name.endswith("-redirect")][0].inputs
    tf_redirect = res["google_compute_region_url_map"]["redirect"]["default_url_redirect"]
    assert (redirect["defaultUrlRedirect"]["redirectResponseCode"],
            redirect["defaultUrlRedirect"]["stripQuery"]) == \
        (tf_redirect["redirect_response_code"], tf_redirect["strip_query"])
    tf_policy = res["google_compute_region_ssl_policy"]["tls"]
    assert (single(rec, SSL_POLICY)["profile"], single(rec, SSL_POLICY)["minTlsVersion"]) == \
        (tf_policy["profile"], tf_policy["min_tls_version"])
    tf_auth = res["google_certificate_manager_dns_authorization"]["tls"]
    assert single(rec, DNS_AUTH)["type"] == tf_auth["type"]
    assert sorted((r.inputs["type"], r.inputs["ttl"], r.inputs["managedZone"])
                  for r in rec.of_type(RECORD)) == \
        sorted((r["type"], r["ttl"], r["managed_zone"])
               for r in res["google_dns_record_set"].values())


# --- autoscaling ----------------------------------------------------------------------------


def scaled(metric: str = "qps", target: float = 4.0, *, spot: bool = False,
           fallback: bool = False, base: int = 0, low: int = 2, high: int = 6) -> Deployment:
    """The planned deployment with a replica_policy that autoscales."""
    return replace(planned(spot), min_replicas=low, max_replicas=high, desired_replicas=low,
                   on_demand_base=base, dynamic_ondemand_fallback=fallback,
                   autoscaling=Autoscaling(metric, target))


def secured_and_scaled() -> Deployment:
    """Both features at once: API key, TLS with a managed zone, and a spot group on a vLLM
    gauge with an on-demand base and the dynamic on-demand fallback group."""
    return replace(scaled("vllm-waiting", 5.0, spot=True, fallback=True, base=1, low=3, high=9),
                   tls=Tls(DOMAIN, "example-zone"))


def autoscaler_of(rec, mig: str) -> dict:
    """The policy of the autoscaler whose target is the MIG named `mig` (by Pulumi name)."""
    [found] = [r.inputs for r in rec.of_type(AUTOSCALER) if r.inputs["target"] == f"{mig}-id"]
    return found


def test_qps_autoscaler_bounds_the_group_and_tracks_the_rate_per_replica():
    d = scaled("qps", 4.0, low=2, high=6)
    rec = run(d)
    autoscaler = single(rec, AUTOSCALER)
    assert autoscaler["target"] == rec.one(MIG).id
    assert autoscaler["region"] == d.region and autoscaler["name"] == f"{d.scope}-autoscaler"
    policy = autoscaler["autoscalingPolicy"]
    assert (policy["minReplicas"], policy["maxReplicas"]) == (2, 6)
    # 1.0 of max_rate_per_instance: GCP's ceil(load / (rate x target)) is SkyServe's
    # ceil(QPS / target_qps_per_replica).
    assert policy["loadBalancingUtilization"] == {"target": 1.0}
    assert "metrics" not in policy
    assert (policy["cooldownPeriod"], policy["scaleInControl"]) == (
        300, {"maxScaledInReplicas": {"percent": 0}, "timeWindowSec": 1200})
    [backend] = single(rec, BACKEND)["backends"]
    assert (backend["balancingMode"], backend["maxRatePerInstance"]) == ("RATE", 4.0)
    assert "targetSize" not in single(rec, MIG)  # the autoscaler owns the size
    assert not rec.of_type(IAM_MEMBER)  # the load balancer counts the requests itself


def test_vllm_gauge_autoscaler_reads_the_replicas_metric_they_may_write():
    d = scaled("vllm-waiting", 5.0)
    rec = run(d)
    policy = single(rec, AUTOSCALER)["autoscalingPolicy"]
    assert policy["metrics"] == [{"name": "custom.googleapis.com/servestack/requests_waiting",
                                  "target": 5.0, "type": "GAUGE"}]
    assert "loadBalancingUtilization" not in policy
    writer = single(rec, IAM_MEMBER)
    assert writer["role"] == "roles/monitoring.metricWriter"
    # The VMs' account's `member` output ("serviceAccount:<email>"), known once it exists.
    assert writer["member"] == "[unknown until deployed]"
    assert writer["project"] == "[unknown until deployed]"  # the account's project
    with_project = run(replace(d, gcp_project="acme-llm"))
    assert single(with_project, IAM_MEMBER)["project"] == "acme-llm"
    [backend] = single(rec, BACKEND)["backends"]
    assert backend["balancingMode"] == "UTILIZATION"


def test_spot_group_spans_every_zone_that_offers_the_type():
    d = planned(True)
    mig = single(spot(), MIG)
    assert mig["distributionPolicyZones"] == list(d.zones) and len(d.zones) > 1
    assert mig["distributionPolicyTargetShape"] == "BALANCED"


def test_dynamic_fallback_is_an_on_demand_group_with_its_own_autoscaler():
    d = scaled("qps", 4.0, spot=True, fallback=True, base=1, low=3, high=8)
    rec = run(d)
    migs = {r.name: r for r in rec.of_type(MIG)}
    assert set(migs) == {"mixtral-group-mig", "mixtral-group-scaling-ondemand-mig"}
    spot_mig, ondemand = migs["mixtral-group-mig"].inputs, \
        migs["mixtral-group-scaling-ondemand-mig"].inputs
    templates = {r.name.rsplit("-", 1)[-1]: r for r in rec.of_type(TEMPLATE)}
    assert templates["ondemand"].inputs["scheduling"]["provisioningModel"] == "STANDARD"
    assert [v["name"] for v in spot_mig["versions"]] == ["spot"]
    assert [v["name"] for v in ondemand["versions"]] == ["ondemand"]
    assert ondemand["name"] == f"{d.scope}-ondemand-mig"
    assert ondemand["distributionPolicyZones"] == spot_mig["distributionPolicyZones"]
    assert ondemand["autoHealingPolicies"] == spot_mig["autoHealingPolicies"]
    assert "targetSize" not in spot_mig and "targetSize" not in ondemand
    backends = single(rec, BACKEND)["backends"]
    assert [(b["balancingMode"], b["maxRatePerInstance"]) for b in backends] == \
        [("RATE", 4.0)] * 2
    spot_policy = autoscaler_of(rec, "mixtral-group-mig")["autoscalingPolicy"]
    ondemand_policy = autoscaler_of(rec, "mixtral-group-scaling-ondemand-mig")[
        "autoscalingPolicy"]
    assert (spot_policy["minReplicas"], spot_policy["maxReplicas"]) == (2, 7)
    assert (ondemand_policy["minReplicas"], ondemand_policy["maxReplicas"]) == (1, 8)
    assert spot_policy["loadBalancingUtilization"]["target"] == 0.5
    assert ondemand_policy["loadBalancingUtilization"]["target"] == 1.0
    by_urn = {r.urn: r for r in rec.resources}
    assert by_urn[migs["mixtral-group-scaling-ondemand-mig"].parent].type == \
        "servestack:gcp:GroupScaling"


# A small simulation of the two autoscalers' documented rules, fed with the recorded
# policies: every minute each autoscaler recommends ceil(size x utilization / target) VMs,
# clipped to [min, max]; it adds VMs at once and removes them only below the highest
# recommendation of the scale-in window (max_scaled_in_replicas 0%). The load balancer
# spreads requests over the VMs in proportion to capacity (RATE: equal max_rate_per_instance),
# so every VM sees the same utilization. Spot capacity is scripted: the spot MIG runs at most
# what the zones give it.


@dataclass
class Group:
    low: int
    high: int
    target: float
    window: int
    size: int = 0
    history: list[int] = field(default_factory=list)

    def step(self, utilization: float, available: int | None = None) -> None:
        wanted = math.ceil(self.size * utilization / self.target) if self.size else self.low
        wanted = min(max(wanted, self.low), self.high)
        self.history = (self.history + [wanted])[-self.window:]
        goal = wanted if wanted >= self.size else max(self.history)
        self.size = goal if available is None else min(goal, available)


def policy_group(policy: dict) -> Group:
    target = policy["loadBalancingUtilization"]["target"]
    window = policy["scaleInControl"]["timeWindowSec"] // 60
    return Group(policy["minReplicas"], policy["maxReplicas"], target, window)


def simulate(d: Deployment, load: float, spot_supply: list[int | None]) -> list[tuple]:
    rec = run(d)
    spot_group = policy_group(autoscaler_of(rec, "mixtral-group-mig")["autoscalingPolicy"])
    ondemand = policy_group(autoscaler_of(rec, "mixtral-group-scaling-ondemand-mig")[
        "autoscalingPolicy"])
    rate = single(rec, BACKEND)["backends"][0]["maxRatePerInstance"]
    spot_group.size, ondemand.size = spot_group.low, ondemand.low
    trace = []
    for supply in spot_supply:
        utilization = load / ((spot_group.size + ondemand.size) * rate)
        spot_group.step(utilization, supply)
        ondemand.step(utilization)
        trace.append((spot_group.size, ondemand.size, utilization))
    return trace


def test_dynamic_fallback_grows_on_demand_while_spot_is_missing_and_shrinks_it_after():
    d = scaled("qps", 4.0, spot=True, fallback=True, base=0, low=2, high=16)
    load = 8 * 4.0  # SkyServe would run ceil(32 / 4) = 8 replicas
    healthy, lost, back = [None] * 240, [2] * 60, [None] * 240
    trace = simulate(d, load, healthy + lost + back)
    before, during, after = trace[239], trace[299], trace[-1]
    # Spot carries the load at half the rate; on-demand is at its one-VM floor.
    assert before == (15, 1, 0.5)
    # Spot stock-out: two spot VMs left, the on-demand group grows until every replica is
    # at the target rate again, SkyServe's count in all, and never past it.
    assert during == (2, 6, 1.0)
    assert sum(during[:2]) == math.ceil(load / 4.0)
    assert max(u for _, _, u in trace[245:300]) <= 1.0
    # Spot back: spot grows again at once, the on-demand group shrinks after the 1200 s
    # downscale delay (20 one-minute steps) and drains to its floor.
    ondemand = [o for _, o, _ in trace[300:]]
    assert next(i for i, o in enumerate(ondemand) if o < 6) == 20
    assert after == before


def test_dynamic_fallback_keeps_the_on_demand_base_as_its_floor():
    d = scaled("qps", 4.0, spot=True, fallback=True, base=2, low=3, high=16)
    trace = simulate(d, 32.0, [None] * 240 + [2] * 60 + [None] * 240)
    assert trace[239][1] == 2 and trace[299][:2] == (2, 6) and trace[-1][1] == 2
    assert all(o >= 2 for _, o, _ in trace)


def test_on_demand_stays_at_its_floor_through_a_preemption_spot_recovers_from():
    d = scaled("qps", 4.0, spot=True, fallback=True, base=0, low=2, high=16)
    # Three of the fifteen spot VMs preempted and recreated within three minutes: the others
    # run at 32 / (13 x 4) = 0.62 of the rate, below the on-demand target.
    trace = simulate(d, 32.0, [None] * 240 + [12] * 3 + [None] * 60)
    assert {o for _, o, _ in trace[240:]} == {1}


def test_group_probe_counts_the_fallback_groups_vms_too():
    from servestack.components.gcp import group_program

    d = scaled(spot=True, fallback=True)
    vms = [{"instance": "i-1", "status": "RUNNING", "namedPorts": []},
           {"instance": "i-2", "status": "TERMINATED", "namedPorts": []}]
    answers = {"gcp:compute/getRegionInstanceGroup:getRegionInstanceGroup": {
        "id": "x", "name": "mig", "project": "p", "region": d.region, "selfLink": "s",
        "size": 1, "namedPorts": [], "instances": vms}}
    rec = record(group_program(d, f"{d.scope}-mig"), invoke_answers=answers)
    assert [i["args"]["name"] for i in rec.invokes] == [f"{d.scope}-mig",
                                                        f"{d.scope}-ondemand-mig"]
    assert rec.outputs["running"] == 2  # one running VM in each group


def snake(value):
    """Pulumi's camelCase wire names as Terraform's snake_case."""
    if isinstance(value, dict):
        return {re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", k).lower(): snake(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [snake(v) for v in value]
    return value


@pytest.mark.parametrize("d", [
    scaled("qps", 3.0), scaled("vllm-kv-cache", 70.0, spot=True, base=1),
    scaled("vllm-waiting", 5.0, spot=True, fallback=True, base=1, low=3, high=9),
    scaled("qps", 2.5, spot=True, fallback=True, base=0, low=1, high=4),
    secured_and_scaled()],
    ids=["qps", "kv-cache-base", "waiting-fallback", "qps-fallback", "with-key-and-tls"])
def test_both_engines_build_the_same_autoscalers(d):
    from servestack.terraform import render, tfvars
    from tests.terraform.test_gcp import evaluate

    rec, resources, values = run(d), render(d)["resource"], tfvars(d)
    assert (values["min_replicas"], values["max_replicas"]) == (d.min_replicas, d.max_replicas)
    by_target = {"mixtral-group-mig-id": "group",
                 "mixtral-group-scaling-ondemand-mig-id": "ondemand"}
    tf_scalers = resources["google_compute_region_autoscaler"]
    assert sorted(by_target[r.inputs["target"]] for r in rec.of_type(AUTOSCALER)) == \
        sorted(tf_scalers)
    for r in rec.of_type(AUTOSCALER):
        tf = tf_scalers[by_target[r.inputs["target"]]]
        assert r.inputs["name"] == tf["name"]
        policy, tf_policy = snake(r.inputs["autoscalingPolicy"]), dict(tf["autoscaling_policy"])
        tf_policy["metrics"] = tf_policy.pop("metric", None)  # a block there, a list here
        for key in ("min_replicas", "max_replicas"):
            tf_policy[key] = evaluate(tf_policy[key], d)
        assert policy == {k: v for k, v in tf_policy.items() if v is not None}
    backends = snake(single(rec, BACKEND)["backends"])
    tf_backends = resources["google_compute_region_backend_service"]["backend"]["backend"]
    assert [{k: v for k, v in b.items() if k != "group"} for b in backends] == \
        [{k: v for k, v in b.items() if k != "group"} for b in tf_backends]
    migs = {r.inputs["name"]: snake(r.inputs) for r in rec.of_type(MIG)}
    tf_migs = {m["name"]: m for m in resources["google_compute_region_instance_group_manager"]
               .values()}
    assert set(migs) == set(tf_migs)
    for name, mig in migs.items():
        tf = tf_migs[name]
        for key in ("base_instance_name", "distribution_policy_zones",
                    "distribution_policy_target_shape", "update_policy", "wait_for_instances",
                    "instance_flexibility_policy"):
            assert mig.get(key) == tf.get(key), (name, key)
        assert [v["name"] for v in mig["versions"]] == [v["name"] for v in tf["version"]]
        assert "target_size" not in mig and "target_size" not in tf
    writers = [snake(r.inputs) for r in rec.of_type(IAM_MEMBER)]
    tf_writers = list(resources.get("google_project_iam_member", {}).values())
    assert [w["role"] for w in writers] == [w["role"] for w in tf_writers]


# --- API key, TLS and autoscaling together ---------------------------------------------------


def registrations(d: Deployment, monkeypatch) -> list[tuple[str, str, str, str, set[str]]]:
    """(type, name, urn, parent urn, dependencies) of each RegisterResource the engine would
    receive, in the order the program sends them (a resource is sent once what it waits for
    exists). The preview's recording keeps no dependencies: read them from the requests."""
    from pulumi.runtime import mocks as pulumi_mocks

    seen: list[tuple[str, str, str, str, set[str]]] = []
    plain = pulumi_mocks.MockMonitor.RegisterResource

    def register(self, request):
        response = plain(self, request)
        seen.append((request.type, request.name, response.urn, request.parent,
                     set(request.dependencies)))
        return response

    monkeypatch.setattr(pulumi_mocks.MockMonitor, "RegisterResource", register)
    run(d)
    return seen


def test_every_mig_is_created_after_both_secrets_the_nat_and_the_metric_writer(monkeypatch):
    seen = registrations(secured_and_scaled(), monkeypatch)
    urn = {name: u for _, name, u, _, _ in seen}
    parent = {u: p for _, _, u, p, _ in seen}
    order = [u for _, _, u, _, _ in seen]
    [group] = [(u, deps) for t, _, u, _, deps in seen if t == "servestack:gcp:InstanceGroup"]
    # What the VMs read or need as they boot: each secret's version and accessor binding
    # (the token's and the API key's), the NAT, and the right to write the gauge.
    needed = {urn[name] for t, name, _, _, _ in seen
              if t in (VERSION, BINDING, NAT, IAM_MEMBER)}
    assert len(needed) == 6
    assert needed <= group[1]  # the component's dependencies, as Pulumi sends them
    migs = [u for t, _, u, _, _ in seen if t == MIG]
    assert len(migs) == 2  # the spot group and the on-demand fallback group
    for mig in migs:
        ancestor = parent[mig]
        while ancestor != group[0]:  # the fallback MIG sits under GroupScaling, inside it
            ancestor = parent[ancestor]
        assert all(order.index(need) < order.index(mig) for need in needed)


def test_https_and_the_redirect_sit_in_front_of_both_groups():
    rec = run(secured_and_scaled())
    backend = rec.one(BACKEND)
    assert len(backend.inputs["backends"]) == 2 == len(rec.of_type(AUTOSCALER))
    [urls] = [r for r in rec.of_type(URL_MAP) if r.name.endswith("-urls")]
    [redirect] = [r for r in rec.of_type(URL_MAP) if r.name.endswith("-redirect")]
    assert urls.inputs["defaultService"] == backend.id
    assert single(rec, HTTPS_PROXY)["urlMap"] == urls.id
    assert single(rec, PROXY)["urlMap"] == redirect.id
    assert rec.outputs["endpoint"] == f"https://{DOMAIN}"
    assert {r.inputs["type"] for r in rec.of_type(RECORD)} == {"A", "CNAME"}
    # The metric writer is the only project-wide grant; each secret has its own reader.
    assert [r.inputs["role"] for r in rec.of_type(IAM_MEMBER)] == \
        ["roles/monitoring.metricWriter"]
    assert sorted(r.inputs["secretId"] for r in rec.of_type(BINDING)) == \
        sorted(r.inputs["secretId"] for r in rec.of_type(SECRET))
