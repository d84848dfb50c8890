"""One Deployment, two engines: the Pulumi components and the Terraform renderers build the same
service from it.

For each cloud the same Deployment is recorded under Pulumi's mock runtime and rendered as
Terraform JSON, and every shared decision is compared: instance types and their rank, the spot
split, ports, CIDRs, health-check path and timings, image, zones, disk, capacity wait, names
the two must share. The "moved" variants change each decision in the Deployment to a value no
engine would pick by itself: both outputs must follow, so neither engine decides it.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from functools import cache
from typing import Any

import pulumi
import pytest

from servestack import clouds, planner
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Choices, Deployment, NetworkPlan
from servestack.inputs import load_inputs
from servestack.pulumi.preview import Recording, record
from servestack.terraform import escape, render, tfvars
from tests.fakes import FROZEN_CATALOG
from tests.terraform.test_azure import terraform_fills_in, unpacked

TOKEN = "hf_EnginesAgreeTestToken0123456789"
CLIENTS = ("198.51.100.0/24", "192.0.2.0/24")
SSH_FROM = ("203.0.113.0/24",)


@cache
def planned(cloud: str, spot: bool) -> Deployment:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud=cloud, spot=spot), model=inputs.model)
    return build_deployment(inputs.spec, plan.candidates[0], plan.candidates, model=inputs.model,
                            choices=Choices(allow_cidrs=CLIENTS, ssh_cidrs=SSH_FROM))


def moved(cloud: str) -> Deployment:
    """Every decision moved off what build_deployment picks, as a Deployment may carry it."""
    d = planned(cloud, True)
    images = {"aws": "ami-0fedcba9876543210", "gcp": "projects/acme/global/images/golden",
              "azure": "acme:vllm:gpu:1.2.3"}
    networks = {"aws": NetworkPlan(vnet="10.30.0.0/16"),
                "gcp": NetworkPlan(subnet="10.9.0.0/20", proxy_subnet="10.9.32.0/23"),
                "azure": NetworkPlan(vnet="10.7.0.0/16", subnet="10.7.3.0/24")}
    return replace(
        d, zones=d.zones[:1] if cloud != "azure" else ("2",), ssh_port=2222,
        service_port=9000, listener_port=8080, on_demand_base=1, min_replicas=3,
        max_replicas=4, desired_replicas=3, image=clouds.get(cloud).image_ref(images[cloud]),
        network=networks[cloud], capacity_timeout="7m" if cloud == "aws" else None,
        ssh_nat_ports=(41000, 41009) if cloud == "azure" else None,
        admin_user="ops" if cloud == "azure" else None, disk_size_gb=300,
        health=replace(d.health, path="/ready", port=9000, interval_seconds=15,
                       timeout_seconds=7, healthy_threshold=4, unhealthy_threshold=5,
                       grace_period_seconds=1800),
        idle_timeout_seconds=1200)


def variants(cloud: str) -> list[Deployment]:
    exact = {"aws": "ami-0123456789abcdef0", "gcp": "projects/acme/global/images/base",
             "azure": "/CommunityGalleries/acme/Images/vllm/Versions/latest"}
    return [planned(cloud, False), planned(cloud, True),
            replace(planned(cloud, True), on_demand_base=1), moved(cloud),
            replace(planned(cloud, False), image=clouds.get(cloud).image_ref(exact[cloud]))]


def aws_zone_name(d: Deployment) -> Deployment:
    """A spot deployment pinned by a spec's AWS zone name (us-east-1a), not a zone ID."""
    return replace(d, zones=(f"{d.region}a",))


def pulumi_record(d: Deployment) -> Recording:
    module = __import__(f"servestack.components.{d.cloud}", fromlist=["Service"])

    def program() -> None:
        module.Service("svc", d, hf_token=pulumi.Output.secret(TOKEN))

    return record(program, config={"aws:region": d.region} if d.cloud == "aws" else None)


def snake(value: Any, key: str = "") -> Any:
    """Pulumi's camelCase wire names as Terraform's snake_case (tag/label maps left alone)."""
    if isinstance(value, dict) and key not in ("tags", "labels", "metadata", "settings"):
        names = {k: re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", k).lower() for k in value}
        return {names[k]: snake(v, names[k]) for k, v in value.items()}
    if isinstance(value, list):
        return [snake(v) for v in value]
    return value


def inputs(rec: Recording, token: str) -> list[dict]:
    return [snake(r.inputs) for r in rec.of_type(token)]


def one(rec: Recording, token: str) -> dict:
    return snake(rec.one(token).inputs)


def same(pulumi_side: dict, terraform_side: dict, *keys: str) -> None:
    for key in keys:
        assert pulumi_side.get(key) == terraform_side.get(key), key


# --- AWS --------------------------------------------------------------------------------------

AWS = {"asg": "aws:autoscaling/group:Group", "lt": "aws:ec2/launchTemplate:LaunchTemplate",
       "tg": "aws:lb/targetGroup:TargetGroup", "param": "aws:ssm/parameter:Parameter",
       "sg": "aws:ec2/securityGroup:SecurityGroup", "listener": "aws:lb/listener:Listener",
       "alb": "aws:lb/loadBalancer:LoadBalancer", "subnet": "aws:ec2/subnet:Subnet",
       "vpc": "aws:ec2/vpc:Vpc"}


def aws_filters(filters: list[dict]) -> dict[str, list]:
    """Lookup filters by name; the VPC id (an output on one side, an expression on the other)
    left out."""
    return {f["name"]: f["values"] for f in filters if f["name"] != "vpc-id"}


@pytest.mark.parametrize("index", range(6))
def test_aws_engines_agree(index):
    d = [*variants("aws"), aws_zone_name(planned("aws", True))][index]
    rec, doc, values = pulumi_record(d), render(d), tfvars(d)
    res, data = doc["resource"], doc["data"]
    asg, tf_asg = one(rec, AWS["asg"]), res["aws_autoscaling_group"]["group"]
    assert (asg["min_size"], asg["max_size"], asg["desired_capacity"]) == \
        (values["min_replicas"], values["max_replicas"], values["desired_replicas"]) == \
        (d.min_replicas, d.max_replicas, d.desired_replicas)
    same(asg, tf_asg, "wait_for_capacity_timeout", "health_check_grace_period",
         "capacity_rebalance", "health_check_type", "instance_refresh", "name_prefix")
    assert asg["instance_refresh"]["preferences"]["instance_warmup"] == \
        str(d.health.grace_period_seconds)
    assert asg["wait_for_capacity_timeout"] == d.capacity_timeout
    policy, tf_policy = asg["mixed_instances_policy"], tf_asg["mixed_instances_policy"]
    assert [o["instance_type"] for o in policy["launch_template"]["overrides"]] == \
        [o["instance_type"] for o in tf_policy["launch_template"]["override"]] == \
        [c.instance_type for c in d.instances]
    assert policy["instances_distribution"] == tf_policy["instances_distribution"]
    assert policy["instances_distribution"]["on_demand_base_capacity"] == \
        (d.on_demand_base if d.use_spot else 0)

    lt, tf_lt = one(rec, AWS["lt"]), res["aws_launch_template"]["vm"]
    same(lt, tf_lt, "instance_type", "user_data", "metadata_options", "name_prefix")
    assert lt["block_device_mappings"][0]["ebs"] == tf_lt["block_device_mappings"][0]["ebs"]
    assert lt["block_device_mappings"][0]["ebs"].get("iops") == d.disk_iops
    ami = next(i["args"] for i in rec.invokes if i["token"] == "aws:ec2/getAmi:getAmi")
    tf_ami = data["aws_ami"]["image"]
    assert aws_filters(ami["filters"]) == aws_filters(tf_ami["filter"])
    assert ami.get("owners") == tf_ami.get("owners")
    if d.image.kind == "id":
        assert lt["image_id"] == tf_lt["image_id"] == d.image.id
    else:
        assert ami["owners"] == [d.image.owner]

    assert one(rec, AWS["vpc"])["cidr_block"] == res["aws_vpc"]["service"]["cidr_block"] == \
        d.network.vnet
    # a zone name (us-east-1a) starts with its region; a zone ID (use1-az1) does not
    by = "availability_zone" if d.zones[0].startswith(d.region) else "availability_zone_id"
    subnets = sorted((s["cidr_block"], s[by]) for s in inputs(rec, AWS["subnet"]))
    tf_subnets = sorted((s["cidr_block"], s[by]) for s in res["aws_subnet"].values())
    assert [c for c, _ in subnets] == [c for c, _ in tf_subnets]
    # the deployment's zones are literal on both sides; a one-zone group's second ALB zone
    # comes from the region's AZ lookup (canned under the mocks, an expression in Terraform)
    assert [z for _, z in subnets if z in d.zones] == \
        [z for _, z in tf_subnets if z in d.zones] and set(d.zones) <= {z for _, z in subnets}
    same(lt["network_interfaces"][0], tf_lt["network_interfaces"][0],
         "associate_public_ip_address", "device_index", "delete_on_termination")

    same(one(rec, AWS["alb"]), res["aws_lb"]["service"], "load_balancer_type", "internal",
         "idle_timeout", "drop_invalid_header_fields")
    tg, tf_tg = one(rec, AWS["tg"]), res["aws_lb_target_group"]["service"]
    same(tg, tf_tg, "port", "health_check", "deregistration_delay", "tags")
    assert tg["deregistration_delay"] == d.idle_timeout_seconds
    assert tg["port"] == d.service_port and tg["health_check"]["path"] == d.health.path
    assert one(rec, AWS["listener"])["port"] == res["aws_lb_listener"]["http"]["port"] == \
        d.listener_port
    params = {r.name: snake(r.inputs) for r in rec.of_type(AWS["param"])}
    for name, tf_name in (("svc-token-param", "hf_token"), ("svc-api-key-param", "api_key")):
        same(params[name], res["aws_ssm_parameter"][tf_name], "name", "type", "key_id")
    assert params["svc-token-param"]["key_id"] == d.secret.key
    assert sorted((g["name_prefix"], g["tags"]["Name"]) for g in inputs(rec, AWS["sg"])) == \
        sorted((g["name_prefix"], g["tags"]["Name"]) for g in res["aws_security_group"].values())
    ssh = [r for g in inputs(rec, AWS["sg"]) for r in g.get("ingress") or []
           if r["description"] == "SSH"]
    tf_ssh = res["aws_vpc_security_group_ingress_rule"]["vm_ssh_v4"]
    assert [(r["from_port"], r["to_port"], r["cidr_blocks"]) for r in ssh] == \
        [(tf_ssh["from_port"], tf_ssh["to_port"], list(tf_ssh["for_each"]))] == \
        [(d.ssh_port, d.ssh_port, list(d.ssh_cidrs))]


# --- GCP --------------------------------------------------------------------------------------

GCP = {"mig": "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager",
       "template": "gcp:compute/regionInstanceTemplate:RegionInstanceTemplate",
       "subnet": "gcp:compute/subnetwork:Subnetwork", "firewall": "gcp:compute/firewall:Firewall",
       "health": "gcp:compute/regionHealthCheck:RegionHealthCheck",
       "backend": "gcp:compute/regionBackendService:RegionBackendService",
       "rule": "gcp:compute/forwardingRule:ForwardingRule",
       "address": "gcp:compute/address:Address",
       "armor": "gcp:compute/regionSecurityPolicy:RegionSecurityPolicy",
       "account": "gcp:serviceaccount/account:Account",
       "secret": "gcp:secretmanager/secret:Secret",
       "binding": "gcp:secretmanager/secretIamBinding:SecretIamBinding",
       "nat": "gcp:compute/routerNat:RouterNat"}
GCP_NAME_KEYS = ("name", "name_prefix", "account_id", "base_instance_name", "tags")


def _template_kind(template: dict) -> str:
    return "spot" if template["scheduling"]["provisioning_model"] == "SPOT" else "ondemand"


def _gcp_names(bodies: list[dict]) -> list[str]:
    """The physical names the resources fix (and the VMs' network tag), sorted."""
    names = [b[key] for b in bodies for key in GCP_NAME_KEYS if key in b]
    return sorted(n for found in names for n in (found if isinstance(found, list) else [found]))


@pytest.mark.parametrize("index", range(5))
def test_gcp_engines_agree(index):
    d = variants("gcp")[index]
    rec, doc, values = pulumi_record(d), render(d), tfvars(d)
    res = doc["resource"]
    assert _gcp_names([snake(r.inputs) for r in rec.resources if r.custom]) == \
        _gcp_names([body for blocks in res.values() for body in blocks.values()])
    nat, tf_nat = one(rec, GCP["nat"]), res["google_compute_router_nat"]["nat"]
    same(nat, tf_nat, "nat_ip_allocate_option", "source_subnetwork_ip_ranges_to_nat",
         "enable_dynamic_port_allocation", "enable_endpoint_independent_mapping", "log_config")
    assert [s["source_ip_ranges_to_nats"] for s in nat["subnetworks"]] == \
        [s["source_ip_ranges_to_nat"] for s in tf_nat["subnetwork"]]
    assert sorted(json.dumps(s.get("log_config"), sort_keys=True)
                  for s in inputs(rec, GCP["subnet"])) == \
        sorted(json.dumps(s.get("log_config"), sort_keys=True)
               for s in res["google_compute_subnetwork"].values())
    assert sorted((s["ip_cidr_range"], s.get("purpose")) for s in inputs(rec, GCP["subnet"])) == \
        sorted((s["ip_cidr_range"], s.get("purpose"))
               for s in res["google_compute_subnetwork"].values()) == \
        sorted([(d.network.subnet, None), (d.network.proxy_subnet, "REGIONAL_MANAGED_PROXY")])
    firewalls = sorted((f["source_ranges"], f["allows"], f["target_tags"])
                       for f in inputs(rec, GCP["firewall"]))
    assert firewalls == sorted((f["source_ranges"], f["allow"], f["target_tags"])
                               for f in res["google_compute_firewall"].values())
    assert ([d.network.proxy_subnet], [{"protocol": "tcp", "ports": [str(d.service_port)]}]) \
        in [f[:2] for f in firewalls]
    assert (list(d.ssh_cidrs), [{"protocol": "tcp", "ports": [str(d.ssh_port)]}]) \
        in [f[:2] for f in firewalls]
    same(one(rec, GCP["account"]), res["google_service_account"]["vm"], "account_id")
    # two secrets: the spec's (hf_token) and the generated API key, each read by the VMs only
    for part, secret, binding in (("-token-", "hf_token", "reader"),
                                  ("-api-key-", "api_key", "api_key_reader")):
        [pulumi_secret] = [snake(r.inputs) for r in rec.of_type(GCP["secret"]) if part in r.name]
        [pulumi_binding] = [snake(r.inputs) for r in rec.of_type(GCP["binding"])
                            if part in r.name]
        same(pulumi_secret, res["google_secret_manager_secret"][secret],
             "secret_id", "replication", "labels")
        same(pulumi_binding, res["google_secret_manager_secret_iam_binding"][binding], "role")

    health, tf_health = one(rec, GCP["health"]), res["google_compute_region_health_check"]["http"]
    same(health, tf_health, "http_health_check", "check_interval_sec", "timeout_sec",
         "healthy_threshold", "unhealthy_threshold")
    assert health["http_health_check"] == {"port": d.health.port, "request_path": d.health.path}
    assert health["check_interval_sec"] == d.health.interval_seconds

    image = [i["args"] for i in rec.invokes if i["token"] == "gcp:compute/getImage:getImage"]
    tf_image = doc.get("data", {}).get("google_compute_image", {}).get("image")
    assert image == ([tf_image] if tf_image else [])
    templates = {_template_kind(t): t for t in inputs(rec, GCP["template"])}
    tf_templates = res["google_compute_region_instance_template"]
    assert set(templates) == set(tf_templates)
    for kind, template in templates.items():
        tf_template = tf_templates[kind]
        same(template, tf_template, "machine_type", "scheduling", "tags", "labels")
        assert {k: escape(v) for k, v in template["metadata"].items()} == tf_template["metadata"]
        assert template.get("guest_accelerators") == tf_template.get("guest_accelerator")
        disk, tf_disk = template["disks"][0], tf_template["disk"][0]
        same(disk, tf_disk, "disk_size_gb", "disk_type", "boot", "auto_delete", "labels")
        if d.image.kind == "id":
            assert disk["source_image"] == tf_disk["source_image"] == d.image.id
        assert template["network_interfaces"][0].get("nic_type") == \
            tf_template["network_interface"][0].get("nic_type")
        assert "access_configs" not in template["network_interfaces"][0]
        assert "access_config" not in tf_template["network_interface"][0]
        assert template["service_account"]["scopes"] == tf_template["service_account"]["scopes"]

    mig, tf_mig = one(rec, GCP["mig"]), res["google_compute_region_instance_group_manager"]["group"]
    assert mig["target_size"] == values["desired_replicas"] == d.desired_replicas
    same(mig, tf_mig, "distribution_policy_zones", "distribution_policy_target_shape",
         "instance_flexibility_policy", "update_policy", "wait_for_instances")
    assert mig["auto_healing_policies"]["initial_delay_sec"] == \
        tf_mig["auto_healing_policies"]["initial_delay_sec"]
    assert mig["distribution_policy_zones"] == list(d.zones)
    assert [(v["name"], v.get("target_size")) for v in mig["versions"]] == \
        [(v["name"], v.get("target_size")) for v in tf_mig["version"]]
    assert mig["named_ports"] == tf_mig["named_port"] == [{"name": "http", "port": d.service_port}]
    ranked = mig.get("instance_flexibility_policy", {}).get("instance_selections", [])
    assert [s["machine_types"] for s in ranked] in \
        ([], [[c.instance_type] for c in d.instances])

    backend = one(rec, GCP["backend"])
    tf_backend = res["google_compute_region_backend_service"]["backend"]
    same(backend, tf_backend, "timeout_sec", "connection_draining_timeout_sec", "port_name",
         "load_balancing_scheme", "protocol")
    assert backend["timeout_sec"] == d.idle_timeout_seconds
    assert [(b["balancing_mode"], b["capacity_scaler"]) for b in backend["backends"]] == \
        [(b["balancing_mode"], b["capacity_scaler"]) for b in tf_backend["backend"]]
    rule, tf_rule = one(rec, GCP["rule"]), res["google_compute_forwarding_rule"]["listener"]
    same(rule, tf_rule, "port_range", "network_tier", "ip_protocol", "load_balancing_scheme")
    assert rule["port_range"] == str(d.listener_port)
    same(one(rec, GCP["address"]), res["google_compute_address"]["ip"], "network_tier",
         "address_type")
    armor = one(rec, GCP["armor"])["rules"]
    assert armor == res["google_compute_region_security_policy"]["clients"]["rules"]
    assert armor[0]["match"]["config"]["src_ip_ranges"] == list(d.allow_cidrs)


# --- Azure ------------------------------------------------------------------------------------

AZ = {"vmss": "azure-native:compute:VirtualMachineScaleSet",
      "nsg": "azure-native:network:NetworkSecurityGroup", "lb": "azure-native:network:LoadBalancer",
      "pip": "azure-native:network:PublicIPAddress", "vnet": "azure-native:network:VirtualNetwork",
      "subnet": "azure-native:network:Subnet", "vault": "azure-native:keyvault:Vault"}
TF_ONLY_RULE_KEYS = ("resource_group_name", "network_security_group_name")


def _azure_group(doc: dict) -> tuple[str, dict]:
    for kind in ("azurerm_linux_virtual_machine_scale_set",
                 "azurerm_orchestrated_virtual_machine_scale_set"):
        if kind in doc["resource"]:
            return kind, doc["resource"][kind]["group"]
    raise AssertionError("no scale set")


def _azure_os(kind: str, vmss: dict) -> dict:
    """The Terraform scale set's OS settings, wherever its resource type puts them."""
    if kind == "azurerm_linux_virtual_machine_scale_set":
        return vmss
    return {**vmss["os_profile"], **vmss["os_profile"]["linux_configuration"]}


@pytest.mark.parametrize("index", range(5))
def test_azure_engines_agree(index):
    d = variants("azure")[index]
    rec, doc, values = pulumi_record(d), render(d), tfvars(d)
    res = doc["resource"]
    rules = {r["name"]: r for r in one(rec, AZ["nsg"])["security_rules"]}
    tf_rules = {r["name"]: {k: v for k, v in r.items() if k not in TF_ONLY_RULE_KEYS}
                for r in res["azurerm_network_security_rule"].values()}
    assert rules == tf_rules
    assert rules["allow-ssh"]["destination_port_range"] == str(d.ssh_port)
    assert rules["allow-clients"]["destination_port_range"] == str(d.service_port)
    assert one(rec, AZ["vnet"])["address_space"]["address_prefixes"] == \
        res["azurerm_virtual_network"]["vnet"]["address_space"] == [d.network.vnet]
    assert [one(rec, AZ["subnet"])["address_prefix"]] == \
        res["azurerm_subnet"]["vms"]["address_prefixes"] == [d.network.subnet]
    assert one(rec, AZ["pip"]).get("zones") == res["azurerm_public_ip"]["lb"].get("zones") == \
        (list(d.zones) or None)

    lb = one(rec, AZ["lb"])
    probe = {k: v for k, v in res["azurerm_lb_probe"]["health"].items() if k != "loadbalancer_id"}
    assert lb["probes"] == [probe]
    assert (probe["port"], probe["request_path"]) == (d.health.port, d.health.path)
    [rule], tf_rule = lb["load_balancing_rules"], res["azurerm_lb_rule"]["http"]
    same(rule, tf_rule, "frontend_port", "backend_port", "idle_timeout_in_minutes", "protocol",
         "load_distribution", "disable_outbound_snat")
    assert (rule["frontend_port"], rule["backend_port"]) == (d.listener_port, d.service_port)
    [nat], tf_nat = lb["inbound_nat_rules"], res["azurerm_lb_nat_rule"]["ssh"]
    assert (nat["frontend_port_range_start"], nat["frontend_port_range_end"],
            nat["backend_port"]) == (tf_nat["frontend_port_start"], tf_nat["frontend_port_end"],
                                     tf_nat["backend_port"]) == (*d.ssh_nat_ports, d.ssh_port)
    assert one(rec, AZ["vault"])["properties"]["soft_delete_retention_in_days"] == \
        res["azurerm_key_vault"]["token"]["soft_delete_retention_days"]

    vmss = one(rec, AZ["vmss"])
    kind, tf_vmss = _azure_group(doc)
    assert (kind == "azurerm_orchestrated_virtual_machine_scale_set") is \
        (vmss["orchestration_mode"] == "Flexible")
    assert vmss["sku"]["name"] == tf_vmss.get("sku", tf_vmss.get("sku_name")) == \
        d.primary.instance_type
    assert vmss["sku"]["capacity"] == values["desired_replicas"] == d.desired_replicas
    assert vmss.get("zones") == tf_vmss.get("zones") == (list(d.zones) or None)
    profile = vmss["virtual_machine_profile"]
    assert profile["priority"] == tf_vmss["priority"]
    assert profile.get("eviction_policy") == tf_vmss.get("eviction_policy")
    assert profile.get("billing_profile", {}).get("max_price") == tf_vmss.get("max_bid_price")
    assert vmss.get("spot_restore_policy", {}).get("restore_timeout") == \
        tf_vmss.get("spot_restore", {}).get("timeout")
    assert vmss["automatic_repairs_policy"]["grace_period"] == \
        tf_vmss["automatic_instance_repair"]["grace_period"]
    mix = vmss.get("priority_mix_policy")
    assert (mix and [mix["base_regular_priority_count"]]) == \
        (tf_vmss.get("priority_mix") and [tf_vmss["priority_mix"]["base_regular_count"]])
    reference = profile["storage_profile"]["image_reference"]
    if d.image.kind == "id":
        assert tf_vmss["source_image_id"] == d.image.id and d.image.id in reference.values()
    else:
        assert reference == tf_vmss["source_image_reference"] == d.image.marketplace()
    os_disk = profile["storage_profile"]["os_disk"]
    assert (os_disk["disk_size_gb"], os_disk["managed_disk"]["storage_account_type"]) == \
        (tf_vmss["os_disk"]["disk_size_gb"], tf_vmss["os_disk"]["storage_account_type"]) == \
        (d.disk_size_gb, d.disk_type)
    os_profile, tf_os = profile["os_profile"], _azure_os(kind, tf_vmss)
    assert os_profile["admin_username"] == tf_os["admin_username"] == \
        tf_os["admin_ssh_key"][0]["username"] == d.admin_user
    assert os_profile["computer_name_prefix"] == tf_os["computer_name_prefix"] == d.scope
    # the bootstrap, with the vault's name each engine draws filled in (Pulumi's mock names
    # the vault after its resource)
    vault = rec.one(AZ["vault"]).name
    bootstrap = unpacked(base64.b64decode(os_profile["custom_data"]).decode())
    assert bootstrap == unpacked(terraform_fills_in(doc, tf_os, vault))
    assert f"SERVESTACK_SECRET_VAULT={vault}\n" in bootstrap["write_files"][0]["content"]
    assert res["azurerm_key_vault"]["token"]["name"] == \
        vault + "${random_string.vault.result}"
    assert vmss["vm_scale_set_name"] == tf_vmss["name"]
    rolling = vmss["upgrade_policy"]["rolling_upgrade_policy"]
    tf_rolling = tf_vmss["rolling_upgrade_policy"]
    assert vmss["upgrade_policy"]["mode"] == tf_vmss["upgrade_mode"] == "Rolling"
    same(rolling, tf_rolling, "max_batch_instance_percent", "max_unhealthy_instance_percent",
         "max_unhealthy_upgraded_instance_percent", "pause_time_between_batches")
    assert "max_surge" not in rolling and "maximum_surge_instances_enabled" not in tf_rolling
    assert rolling["pause_time_between_batches"] == \
        f"PT{-(-d.health.grace_period_seconds // 60)}M"
    [key] = os_profile["linux_configuration"]["ssh"]["public_keys"]
    assert key["key_data"] == values["ssh_public_key"]
    assert key["path"] == f"/home/{d.admin_user}/.ssh/authorized_keys"
    if kind == "azurerm_orchestrated_virtual_machine_scale_set":
        [extension] = profile["extension_profile"]["extensions"]
        assert extension["settings"] == json.loads(tf_vmss["extension"][0]["settings"])


# --- the stack's outputs, and a pool of a service over several pools --------------------------


def program_record(d: Deployment) -> Recording:
    """The whole Pulumi program (servestack.pulumi.program) on `d` as its stack config."""
    from servestack.pulumi.preview import PREVIEW_SECRETS
    from servestack.pulumi.program import main
    from servestack.pulumi.stackfile import flat_config, provider_config

    config = flat_config({**provider_config(d), "servestack:deployment": d.to_config()})
    return record(lambda: main(PREVIEW_SECRETS), config=config)


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_both_engines_export_the_same_outputs(cloud):
    """The same output names, the front's lb_* among them (lb_arn, lb_zone_id: AWS only)."""
    d = planned(cloud, False)
    exported = set(program_record(d).outputs)
    assert exported == set(render(d)["output"])
    assert {"lb_host", "api_key", "api_key_secret"} <= exported
    assert ({"lb_arn", "lb_zone_id"} <= exported) == (cloud == "aws")


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_a_pool_reads_the_service_s_key_in_both_engines(cloud):
    """With shared_api_key neither engine draws a key: both read the key stack's api_key."""
    d = replace(planned(cloud, False), shared_api_key="mixtral-key")
    rec, doc = program_record(d), render(d)
    assert "pulumi-python:dynamic:Resource" not in rec.types()
    assert [r.id for r in rec.reads] == ["organization/servestack/mixtral-key"]
    assert "terraform_data" not in doc["resource"]
    state = doc["data"]["terraform_remote_state"]["api_key"]
    assert "mixtral-key" in json.dumps(state)
    assert rec.outputs["api_key"] == "[secret]" and doc["output"]["api_key"]["sensitive"]
    assert set(rec.outputs) == set(doc["output"])
