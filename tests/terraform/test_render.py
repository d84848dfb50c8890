"""servestack.terraform: main.tf.json from the same Deployment the Pulumi components read.

AWS output is checked by `terraform validate` with the real provider (offline mirror) and
against the Pulumi component's recorded inputs (same decisions, both engines). Azure output is
checked structurally: every argument and nested block used must be one the provider documents
for that resource type (the tables below, from the provider's published schema); GCP output
against the google provider's schema in tests/terraform/test_gcp.py.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from functools import cache

import pytest

from servestack import clouds, planner
from servestack.bootstrap import render_cloud_init
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Choices, Deployment
from servestack.inputs import load_inputs
from servestack.terraform import escape, expr, finish, render, renderer, template, tfvars
from tests.fakes import FROZEN_CATALOG, needs_terraform_aws, terraform_validate, unknown_arguments

AWS_CLOUD = clouds.get("aws")



@cache
def planned(cloud: str, spot: bool, ssh: bool = False) -> Deployment:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud=cloud, spot=spot), model=inputs.model)
    return build_deployment(inputs.spec, plan.candidates[0], plan.candidates, model=inputs.model,
                            choices=Choices(
                                ssh_cidrs=("203.0.113.0/24", "2001:db8::/32") if ssh else (),
                                allow_cidrs=("198.51.100.0/24",) if ssh else ("0.0.0.0/0",)))


def resources(doc: dict, kind: str) -> dict:
    return doc["resource"][kind]


# --- common rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_providers_pinned_token_sensitive_endpoint_output(cloud):
    d = planned(cloud, False)
    doc = render(d)
    assert doc["terraform"]["required_version"] == ">= 1.11.0"
    # the cloud's provider, and hashicorp/random where a name needs a random suffix (Azure)
    requirements = doc["terraform"]["required_providers"]
    assert set(requirements) - {"random"} == {renderer(cloud).PROVIDER[0]}
    for requirement in requirements.values():
        assert requirement["source"].startswith("hashicorp/")
        # one version constraint or several (a range), each an operator and a version
        assert re.fullmatch(r"(?:(?:~>|>=|<|<=|=|!=) ?)?\d+\.\d+(?:\.\d+)?"
                            r"(?:, (?:~>|>=|<|<=|=|!=) ?\d+\.\d+(?:\.\d+)?)*",
                            requirement["version"])
    token = doc["variable"]["hf_token"]
    assert token["sensitive"] is True and token["ephemeral"] is True and "default" not in token
    assert doc["output"]["endpoint"]["value"].startswith("http://${")
    assert doc["output"]["endpoint"]["value"].endswith(f"}}:{d.listener_port}")
    text = json.dumps(doc)
    assert text.count("${var.hf_token}") == 1  # only the write-only secret argument reads it
    values = tfvars(d)
    assert "hf_token" not in values and values["desired_replicas"] == d.desired_replicas


def test_literal_text_is_escaped_and_only_refs_are_templates():
    assert escape("echo ${HOME} %{if x}") == "echo $${HOME} %%{if x}"
    doc = finish({"a": "${HOME}", "b": expr("var.x"), "c": template("http://", expr("y"), ":80"),
                  "d": [{"e": "%{x}"}]})
    assert doc == {"a": "$${HOME}", "b": "${var.x}", "c": "http://${y}:80",
                   "d": [{"e": "%%{x}"}]}


def test_gcp_user_data_survives_terraform_templates():
    d = replace(planned("gcp", False), setup="echo ${HOME} %{not a directive}")
    metadata = next(iter(resources(render(d), "google_compute_region_instance_template")
                         .values()))["metadata"]
    expected = render_cloud_init(d)
    assert "${HOME}" in expected
    assert metadata["user-data"] == escape(expected)


def test_render_is_deterministic():
    d = planned("aws", True, ssh=True)
    assert json.dumps(render(d)) == json.dumps(render(d))


# --- AWS: the same decisions as the Pulumi component ---------------------------------------------

def test_aws_group_types_in_rank_order_and_spot_split():
    for spot in (False, True):
        d = planned("aws", spot)
        asg = resources(render(d), "aws_autoscaling_group")["group"]
        policy = asg["mixed_instances_policy"]
        overrides = [o["instance_type"] for o in policy["launch_template"]["override"]]
        assert overrides == [i.instance_type for i in d.instances] and len(overrides) >= 2
        spread = policy["instances_distribution"]
        assert spread["on_demand_base_capacity"] == d.on_demand_base
        assert spread["on_demand_percentage_above_base_capacity"] == (0 if spot else 100)
        assert ("spot_allocation_strategy" in spread) is spot
        assert asg["capacity_rebalance"] is d.capacity_rebalance
        assert asg["desired_capacity"] == "${var.desired_replicas}"


def test_aws_firewall_rules_per_cidr_and_family():
    d = planned("aws", False, ssh=True)
    doc = render(d)
    ingress = resources(doc, "aws_vpc_security_group_ingress_rule")
    assert set(ingress) == {"alb_clients_v4", "vm_from_alb", "vm_ssh_v4", "vm_ssh_v6"}
    assert ingress["alb_clients_v4"]["for_each"] == {"198.51.100.0/24": "198.51.100.0/24"}
    assert ingress["alb_clients_v4"]["from_port"] == d.listener_port
    assert ingress["vm_ssh_v6"]["cidr_ipv6"] == "${each.value}"
    assert ingress["vm_from_alb"]["from_port"] == d.service_port
    assert ingress["vm_from_alb"]["referenced_security_group_id"] == \
        "${aws_security_group.alb.id}"
    egress = resources(doc, "aws_vpc_security_group_egress_rule")
    assert egress["alb_to_vms"]["cidr_ipv4"] == d.network.vnet == VPC_CIDR


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _snaked(value, key: str = ""):
    """Pulumi's camelCase wire names as Terraform's snake_case (tag maps left alone)."""
    if isinstance(value, dict) and key != "tags":
        return {_snake(k): _snaked(v, _snake(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_snaked(v) for v in value]
    return value


ASG, LT, TG = ("aws:autoscaling/group:Group", "aws:ec2/launchTemplate:LaunchTemplate",
               "aws:lb/targetGroup:TargetGroup")
LISTENER, SG = "aws:lb/listener:Listener", "aws:ec2/securityGroup:SecurityGroup"


def pulumi_recording(d: Deployment):
    """components/aws.py's Service under Pulumi's mock runtime, with a token."""
    import pulumi
    from servestack.components.aws import Service

    from servestack.pulumi.preview import record

    def program() -> None:
        Service("svc", d, hf_token=pulumi.Output.secret("hf_unused"))

    return record(program, config={"aws:region": d.region})


@pytest.mark.parametrize("spot", [False, True])
def test_aws_matches_the_pulumi_component(spot):
    """Field for field, what both engines send for the decisions the Deployment makes."""
    pytest.importorskip("pulumi_aws")
    d = planned("aws", spot, ssh=True)
    rec, doc, values = pulumi_recording(d), render(d), tfvars(d)
    asg, tf_asg = _snaked(rec.one(ASG).inputs), resources(doc, "aws_autoscaling_group")["group"]
    assert (asg["min_size"], asg["max_size"], asg["desired_capacity"]) == \
        (values["min_replicas"], values["max_replicas"], values["desired_replicas"])
    for key in ("health_check_type", "health_check_grace_period", "capacity_rebalance",
                "wait_for_capacity_timeout"):
        assert asg[key] == tf_asg[key], key
    assert asg["tags"] == tf_asg["tag"]
    policy, tf_policy = asg["mixed_instances_policy"], tf_asg["mixed_instances_policy"]
    assert policy["instances_distribution"] == tf_policy["instances_distribution"]
    assert policy["launch_template"]["overrides"] == tf_policy["launch_template"]["override"]

    lt, tf_lt = _snaked(rec.one(LT).inputs), resources(doc, "aws_launch_template")["vm"]
    for key in ("instance_type", "user_data", "metadata_options", "tags", "tag_specifications",
                "update_default_version"):
        assert lt[key] == tf_lt[key], key
    assert lt["block_device_mappings"][0]["ebs"] == tf_lt["block_device_mappings"][0]["ebs"]

    tg, tf_tg = _snaked(rec.one(TG).inputs), resources(doc, "aws_lb_target_group")["service"]
    for key in ("port", "protocol", "target_type", "health_check", "tags"):
        assert tg[key] == tf_tg[key], key
    listener = _snaked(rec.one(LISTENER).inputs)
    tf_listener = resources(doc, "aws_lb_listener")["http"]
    assert (listener["port"], listener["protocol"]) == \
        (tf_listener["port"], tf_listener["protocol"])
    lb = _snaked(rec.one("aws:lb/loadBalancer:LoadBalancer").inputs)
    tf_lb = resources(doc, "aws_lb")["service"]
    for key in ("load_balancer_type", "internal", "idle_timeout", "tags"):
        assert lb[key] == tf_lb[key], key
    _same_firewall([_snaked(r.inputs) for r in rec.of_type(SG)], doc)


VPC_CIDR = "10.20.0.0/16"  # the stack's own VPC (clouds.aws.VPC_CIDR)


def _same_firewall(groups: list[dict], doc: dict) -> None:
    """Pulumi's inline rules and Terraform's rule resources: same ports, same sources, same
    descriptions, on the same groups."""
    pulumi: dict[tuple, tuple] = {}
    for g in groups:
        for direction in ("ingress", "egress"):
            for r in g.get(direction) or []:
                sources = tuple(r.get("cidr_blocks") or ()) + tuple(r.get("ipv6_cidr_blocks")
                                                                    or ())
                sources = ("vpc",) if sources == (VPC_CIDR,) else \
                    sources or ("security group",)
                pulumi[(direction, g["description"], r["protocol"], r["from_port"],
                         r["to_port"], r["description"])] = tuple(sorted(sources))
    terraform: dict[tuple, tuple] = {}
    groups_tf = resources(doc, "aws_security_group")
    for direction in ("ingress", "egress"):
        for r in resources(doc, f"aws_vpc_security_group_{direction}_rule").values():
            if "for_each" in r:
                sources = tuple(r["for_each"])
            elif "referenced_security_group_id" in r:
                sources = ("security group",)
            else:
                sources = ("vpc",) if r["cidr_ipv4"] == VPC_CIDR else (r["cidr_ipv4"],)
            group = groups_tf[r["security_group_id"].split(".")[1]]
            key = (direction, group["description"], r["ip_protocol"], r.get("from_port", 0),
                   r.get("to_port", 0), r["description"])
            terraform[key] = tuple(sorted(terraform.get(key, ()) + sources))
    assert pulumi == terraform


def with_zone_name(d: Deployment) -> Deployment:
    """Pinned by a spec's AWS zone name (us-east-1a) instead of a zone ID."""
    return replace(d, zones=(f"{d.region}a",))


# The AWS subnets (by zone ID or zone name, the ALB's second AZ): tests/terraform/test_aws.py.


@needs_terraform_aws
def test_aws_output_passes_terraform_validate(tmp_path):
    variants = [planned("aws", True, ssh=True),
                replace(planned("aws", False), image=AWS_CLOUD.image_ref("ami-0123456789abcdef0"),
                        secret=None, disk_type="io2", disk_iops=AWS_CLOUD.disk_iops("io2", 256)),
                with_zone_name(planned("aws", True))]
    terraform_validate([render(d) for d in variants], tmp_path)


# --- Azure: only documented arguments ------------------------------------------------------------

def args(names: str, **blocks: dict) -> dict:
    """A resource (or block) schema: argument names, and nested blocks by name."""
    return {**dict.fromkeys(names.split()), **blocks}


AZURE_NIC = args("name primary", ip_configuration=args(
    "name primary subnet_id load_balancer_backend_address_pool_ids"))
AZURE_COMMON_VMSS = ("name location resource_group_name instances zones zone_balance tags "
                     "priority eviction_policy max_bid_price source_image_id upgrade_mode")
AZURE_ROLLING = args("max_batch_instance_percent max_unhealthy_instance_percent "
                     "max_unhealthy_upgraded_instance_percent pause_time_between_batches")
AZURE_DOCUMENTED = {
    "random_string": args("length upper special"),  # hashicorp/random: the vault's suffix
    "terraform_data": args("input"),  # Terraform's own: the generated API key
    "azurerm_resource_group": args("name location tags"),
    "azurerm_user_assigned_identity": args("name location resource_group_name tags"),
    "azurerm_network_security_group": args("name location resource_group_name tags"),
    "azurerm_network_security_rule": args(
        "name priority direction access protocol source_port_range destination_port_range "
        "source_address_prefix source_address_prefixes destination_address_prefix description "
        "resource_group_name network_security_group_name"),
    "azurerm_virtual_network": args("name location resource_group_name address_space tags"),
    "azurerm_subnet": args(
        "name resource_group_name virtual_network_name address_prefixes "
        "default_outbound_access_enabled"),
    "azurerm_subnet_network_security_group_association": args(
        "subnet_id network_security_group_id"),
    "azurerm_public_ip": args(
        "name location resource_group_name allocation_method sku sku_tier ip_version zones "
        "tags"),
    "azurerm_lb": args("name location resource_group_name sku sku_tier tags",
                       frontend_ip_configuration=args("name public_ip_address_id")),
    "azurerm_lb_backend_address_pool": args("name loadbalancer_id"),
    "azurerm_lb_probe": args(
        "name loadbalancer_id protocol port request_path interval_in_seconds number_of_probes "
        "probe_threshold"),
    "azurerm_lb_rule": args(
        "name loadbalancer_id protocol frontend_port backend_port "
        "frontend_ip_configuration_name backend_address_pool_ids probe_id "
        "idle_timeout_in_minutes tcp_reset_enabled floating_ip_enabled disable_outbound_snat "
        "load_distribution"),
    "azurerm_lb_outbound_rule": args(
        "name loadbalancer_id protocol backend_address_pool_id tcp_reset_enabled",
        frontend_ip_configuration=args("name")),
    "azurerm_lb_nat_rule": args(
        "name resource_group_name loadbalancer_id protocol frontend_port_start "
        "frontend_port_end backend_port backend_address_pool_id frontend_ip_configuration_name"),
    "azurerm_key_vault": args(
        "name location resource_group_name tenant_id sku_name soft_delete_retention_days tags"),
    "azurerm_key_vault_access_policy": args("key_vault_id tenant_id object_id "
                                            "secret_permissions"),
    "azurerm_key_vault_secret": args(
        "name key_vault_id value value_wo value_wo_version content_type tags"),
    "azurerm_linux_virtual_machine_scale_set": args(
        AZURE_COMMON_VMSS + " sku admin_username disable_password_authentication "
        "provision_vm_agent computer_name_prefix custom_data overprovision health_probe_id",
        rolling_upgrade_policy=AZURE_ROLLING,
        admin_ssh_key=args("username public_key"), identity=args("type identity_ids"),
        os_disk=args("caching storage_account_type disk_size_gb"), network_interface=AZURE_NIC,
        automatic_instance_repair=args("enabled grace_period action"),
        source_image_reference=args("publisher offer sku version"),
        spot_restore=args("enabled timeout")),
    "azurerm_orchestrated_virtual_machine_scale_set": args(
        AZURE_COMMON_VMSS + " sku_name platform_fault_domain_count single_placement_group",
        rolling_upgrade_policy=AZURE_ROLLING,
        priority_mix=args("base_regular_count regular_percentage_above_base"),
        os_profile=args("custom_data", linux_configuration=args(
            "admin_username computer_name_prefix disable_password_authentication "
            "provision_vm_agent", admin_ssh_key=args("username public_key"))),
        extension=args("name publisher type type_handler_version "
                       "auto_upgrade_minor_version_enabled settings"),
        identity=args("type identity_ids"),
        os_disk=args("caching storage_account_type disk_size_gb"), network_interface=AZURE_NIC,
        automatic_instance_repair=args("enabled grace_period action"),
        source_image_reference=args("publisher offer sku version")),
}


def variants(cloud: str) -> list[Deployment]:
    base = planned(cloud, False, ssh=True)
    spot = planned(cloud, True)
    mixed = replace(spot, on_demand_base=1)
    image = "a:b:c:d" if cloud == "azure" else "projects/p/global/images/i"
    return [base, spot, mixed, replace(base, secret=None, image=clouds.get(cloud).image_ref(image))]


@pytest.mark.parametrize("cloud,documented", [("azure", AZURE_DOCUMENTED)])
def test_only_documented_arguments(cloud, documented):
    seen = set()
    for d in variants(cloud):
        for kind, blocks in render(d)["resource"].items():
            assert kind in documented, f"{kind} has no documented schema here"
            seen.add(kind)
            for name, body in blocks.items():
                assert unknown_arguments(body, documented[kind], f"{kind}.{name}") == []
    assert seen == set(documented)


def test_gcp_issue_resources_and_decisions():
    d = planned("gcp", True)
    doc = render(d)
    for kind in ("google_compute_region_instance_template",
                 "google_compute_region_instance_group_manager", "google_compute_firewall",
                 "google_compute_region_health_check", "google_compute_region_backend_service",
                 "google_compute_forwarding_rule"):
        assert kind in doc["resource"]
    mig = resources(doc, "google_compute_region_instance_group_manager")["group"]
    assert mig["distribution_policy_zones"] == list(d.zones)
    ranked = mig["instance_flexibility_policy"]["instance_selections"]
    assert [s["machine_types"] for s in ranked] == [[i.instance_type] for i in d.instances]
    assert [s["rank"] for s in ranked] == list(range(len(d.instances)))
    template_ = resources(doc, "google_compute_region_instance_template")["spot"]
    assert template_["scheduling"]["provisioning_model"] == "SPOT"
    check = resources(doc, "google_compute_region_health_check")["http"]
    assert check["http_health_check"] == {"port": d.health.port, "request_path": d.health.path}
    rule = resources(doc, "google_compute_forwarding_rule")["listener"]
    assert rule["port_range"] == str(d.listener_port)
    mixed = render(replace(d, on_demand_base=1))
    versions = resources(mixed, "google_compute_region_instance_group_manager")["group"]["version"]
    assert [(v["name"], v.get("target_size")) for v in versions] == \
        [("ondemand", {"fixed": 1}), ("spot", None)]


def test_azure_issue_resources_and_decisions():
    d = planned("azure", False, ssh=True)
    doc = render(d)
    vmss = resources(doc, "azurerm_linux_virtual_machine_scale_set")["group"]
    assert vmss["sku"] == d.primary.instance_type and vmss["instances"] == \
        "${var.desired_replicas}"
    bare = replace(d, secret=None, api_key=None)
    assert base64.b64decode(resources(render(bare), "azurerm_linux_virtual_"
                            "machine_scale_set")["group"]["custom_data"]).decode() == \
        render_cloud_init(bare)
    probe = resources(doc, "azurerm_lb_probe")["health"]
    assert (probe["port"], probe["request_path"]) == (d.health.port, d.health.path)
    rule = resources(doc, "azurerm_lb_rule")["http"]
    assert (rule["frontend_port"], rule["backend_port"]) == (d.listener_port, d.service_port)
    nsg = resources(doc, "azurerm_network_security_rule")
    assert nsg["clients"]["source_address_prefix"] == "198.51.100.0/24"
    assert nsg["ssh"]["source_address_prefix"] == "203.0.113.0/24"  # IPv6 left out
    assert "azurerm_public_ip" in doc["resource"]
    flexible = render(replace(planned("azure", True), on_demand_base=1))
    mix = resources(flexible, "azurerm_orchestrated_virtual_machine_scale_set")["group"]
    assert mix["priority_mix"] == {"base_regular_count": 1, "regular_percentage_above_base": 0}
    assert mix["priority"] == "Spot"
