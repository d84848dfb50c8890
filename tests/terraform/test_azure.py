"""Azure on both engines: names that never collide, the order Azure accepts, rolling upgrades,
and the Key Vault's random name reaching the VMs."""

from __future__ import annotations

import base64
import gzip
import re
from dataclasses import replace

import pytest
import yaml
from pulumi.runtime import mocks as pulumi_mocks

from servestack.bootstrap import render_cloud_init
from servestack.clouds.azure import (
    AZURE_IDLE_TIMEOUT_MINUTES,
    AZURE_VAULT_NAME_LENGTH,
    AZURE_VAULT_SUFFIX_LENGTH,
    azure_idle_timeout_minutes,
    azure_vault_prefix,
    azure_with_vault,
)
from servestack.deployment.model import Deployment
from servestack.pulumi.preview import Recording
from servestack.terraform import render
from servestack.terraform.azure import VAULT_NAME_SLOT
from tests.components.test_azure import on_demand_one, run, spot_mix

VMSS = "azure-native:compute:VirtualMachineScaleSet"
LB = "azure-native:network:LoadBalancer"
VAULT = "azure-native:keyvault:Vault"
# The input that names each Pulumi resource that has a fixed name.
PULUMI_NAME = {"azure-native:resources:ResourceGroup": "resourceGroupName",
               "azure-native:managedidentity:UserAssignedIdentity": "resourceName",
               "azure-native:network:NetworkSecurityGroup": "networkSecurityGroupName",
               "azure-native:network:VirtualNetwork": "virtualNetworkName",
               "azure-native:network:Subnet": "subnetName",
               "azure-native:network:PublicIPAddress": "publicIpAddressName",
               LB: "loadBalancerName", VMSS: "vmScaleSetName"}
# Terraform resources named inside another resource (balancer parts, NSG rules, the secret in
# its vault), which may repeat across stacks; and those without a name.
TF_NAMED_INSIDE = {"azurerm_lb_backend_address_pool", "azurerm_lb_probe", "azurerm_lb_rule",
                   "azurerm_lb_outbound_rule", "azurerm_lb_nat_rule",
                   "azurerm_network_security_rule", "azurerm_key_vault_secret"}
TF_UNNAMED = {"azurerm_subnet_network_security_group_association",
              "azurerm_key_vault_access_policy", "random_string", "terraform_data"}


def side_by_side() -> list[Deployment]:
    """Two services, each as two stacks (blue/green), from one spec and candidate."""
    d = replace(on_demand_one(), ssh_cidrs=("203.0.113.0/24",))
    return [replace(d, service=service, stack=stack)
            for service in ("mixtral", "mixtral-b") for stack in ("blue", "green")]


def pulumi_names(rec: Recording) -> dict[str, str]:
    """Every fixed physical name in a Pulumi recording, by type."""
    names = {kind: rec.one(kind).inputs[key] for kind, key in PULUMI_NAME.items()}
    names["computerNamePrefix"] = \
        rec.one(VMSS).inputs["virtualMachineProfile"]["osProfile"]["computerNamePrefix"]
    return names


def terraform_names(doc: dict) -> dict[str, str]:
    """Every fixed physical name in a Terraform document, by resource type."""
    names = {kind: body["name"] for kind, blocks in doc["resource"].items()
             if kind not in TF_NAMED_INSIDE | TF_UNNAMED for body in blocks.values()}
    names["computer_name_prefix"] = \
        doc["resource"]["azurerm_linux_virtual_machine_scale_set"]["group"][
            "computer_name_prefix"]
    return names


def test_two_services_and_two_stacks_share_no_name():
    deployments = side_by_side()
    pulumi_seen, terraform_seen = [], []
    for d in deployments:
        rec = run(d)
        names = pulumi_names(rec)
        assert all(d.scope in name for name in names.values()), names
        # the vault: autonamed by azure-native (its resource's name + 8 random hex digits,
        # kept in the state), so no fixed name is given
        vault = rec.one(VAULT)
        assert "vaultName" not in vault.inputs and vault.name == azure_vault_prefix(d)
        pulumi_seen += [*names.values(), vault.name]

        doc = render(d)
        names = terraform_names(doc)
        vault_name = names.pop("azurerm_key_vault")
        assert vault_name == azure_vault_prefix(d) + "${random_string.vault.result}"
        assert all(d.scope in name for name in names.values()), names
        terraform_seen += [*names.values(), vault_name]
        assert set(names) == {"azurerm_resource_group", "azurerm_user_assigned_identity",
                              "azurerm_network_security_group", "azurerm_virtual_network",
                              "azurerm_subnet", "azurerm_public_ip", "azurerm_lb",
                              "azurerm_linux_virtual_machine_scale_set", "computer_name_prefix"}
    assert len(pulumi_seen) == len(set(pulumi_seen)) == 4 * 10
    assert len(terraform_seen) == len(set(terraform_seen)) == 4 * 10
    # the engines name each resource alike (the vault aside: each draws its own suffix)
    for d in deployments:
        assert sorted(pulumi_names(run(d)).values()) == sorted(
            n for kind, n in terraform_names(render(d)).items() if kind != "azurerm_key_vault")


@pytest.mark.parametrize("service", ["a", "mixtral", "s-2024-llama-3-70b-in"])
def test_names_follow_azures_rules(service):
    d = replace(on_demand_one(), service=service[:20], stack="x" * 100)
    vault = azure_vault_prefix(d)
    # Key Vault: 3-24 letters, digits and dashes, starting with a letter, with the suffix
    assert re.fullmatch(r"[a-z][a-z0-9]*", vault)
    assert 3 <= len(vault) + AZURE_VAULT_SUFFIX_LENGTH <= AZURE_VAULT_NAME_LENGTH
    for kind, name in terraform_names(render(d)).items():
        if kind != "azurerm_key_vault":
            # the shortest limit among them is the computer name prefix's 58 (Linux)
            assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", name) and len(name) <= 58, name


def test_scale_set_comes_after_the_balancers_probe_and_rules_on_both_engines(monkeypatch):
    """Azure refuses a scale set probe no rule uses, and deleting a rule whose probe a scale
    set uses (terraform-provider-azurerm #4398, #9076): the scale set is created after, and
    destroyed before, the probe and rules."""
    for d, kind in ((on_demand_one(), "azurerm_linux_virtual_machine_scale_set"),
                    (spot_mix(), "azurerm_orchestrated_virtual_machine_scale_set")):
        group = render(replace(d, ssh_cidrs=("203.0.113.0/24",)))["resource"][kind]["group"]
        assert {"azurerm_lb_probe.health", "azurerm_lb_rule.http",
                "azurerm_lb_outbound_rule.egress", "azurerm_lb_nat_rule.ssh",
                "azurerm_key_vault_secret.hf_token"} <= set(group["depends_on"])

    dependencies: dict[str, list[str]] = {}
    register = pulumi_mocks.MockMonitor.RegisterResource

    def recording(self, request):
        dependencies[request.type] = list(request.dependencies)
        return register(self, request)

    monkeypatch.setattr(pulumi_mocks.MockMonitor, "RegisterResource", recording)
    rec = run(on_demand_one())
    # the rules and the probe are inline in the LoadBalancer resource
    assert rec.one(LB).inputs["loadBalancingRules"][0]["probe"]["id"].endswith("/probes/health")
    assert rec.one(LB).urn in dependencies[VMSS]
    assert rec.one(VAULT).urn in dependencies[VMSS]


def test_template_changes_roll_through_both_kinds_of_scale_set():
    policy = {"max_batch_instance_percent": 20, "max_unhealthy_instance_percent": 100,
              "max_unhealthy_upgraded_instance_percent": 20,
              "pause_time_between_batches": "PT20M"}
    uniform = render(on_demand_one())["resource"]["azurerm_linux_virtual_machine_scale_set"]
    flexible = render(spot_mix())["resource"]["azurerm_orchestrated_virtual_machine_scale_set"]
    for group in (uniform["group"], flexible["group"]):
        assert group["upgrade_mode"] == "Rolling"
        assert group["rolling_upgrade_policy"] == policy
    # Uniform: the balancer's probe gates the batches; Flexible: the Application Health extension
    assert uniform["group"]["health_probe_id"] == "${azurerm_lb_probe.health.id}"
    assert flexible["group"]["extension"][0]["type"] == "ApplicationHealthLinux"
    slow = replace(on_demand_one(), health=replace(on_demand_one().health,
                                                   grace_period_seconds=1801))
    group = render(slow)["resource"]["azurerm_linux_virtual_machine_scale_set"]["group"]
    assert group["rolling_upgrade_policy"]["pause_time_between_batches"] == "PT31M"


def test_the_balancer_keeps_a_stream_open_as_long_as_the_service_allows():
    d = on_demand_one()
    assert d.idle_timeout_seconds == 900  # the stream timeout
    minutes = azure_idle_timeout_minutes(d.idle_timeout_seconds)
    assert minutes == 15 and minutes * 60 >= d.idle_timeout_seconds
    assert AZURE_IDLE_TIMEOUT_MINUTES[1] == 30  # Azure's maximum: longer streams are cut at 30
    rule = render(d)["resource"]["azurerm_lb_rule"]["http"]
    assert rule["idle_timeout_in_minutes"] == 15 and rule["tcp_reset_enabled"] is True


def test_key_vault_soft_delete_and_the_random_provider():
    doc = render(on_demand_one())
    assert doc["provider"]["azurerm"]["features"] == {"key_vault": {
        "purge_soft_delete_on_destroy": True, "recover_soft_deleted_key_vaults": True}}
    assert doc["terraform"]["required_providers"] == {
        "azurerm": {"source": "hashicorp/azurerm", "version": "~> 4.40"},
        "random": {"source": "hashicorp/random", "version": "~> 3.6"}}
    assert doc["terraform"]["required_version"] == ">= 1.11.0"
    assert doc["resource"]["random_string"]["vault"] == {
        "length": AZURE_VAULT_SUFFIX_LENGTH, "upper": False, "special": False}
    plain = render(replace(on_demand_one(), secret=None, api_key=None))
    assert "random_string" not in plain["resource"] and "locals" not in plain
    assert list(plain["terraform"]["required_providers"]) == ["azurerm"]


def terraform_fills_in(doc: dict, group: dict, vault: str) -> str:
    """What Terraform makes of custom_data: the local unescaped, the slot replaced, gzip."""
    assert group["custom_data"] == (
        f'${{base64gzip(replace(local.cloud_init, "{VAULT_NAME_SLOT}", '
        'azurerm_key_vault.token.name))}')
    text = doc["locals"]["cloud_init"].replace("$${", "${").replace("%%{", "%{")
    return gzip.decompress(gzip.compress(text.replace(VAULT_NAME_SLOT, vault).encode())).decode()


@pytest.mark.parametrize("long_setup", [False, True])
def test_terraform_puts_the_vaults_name_in_the_bootstrap(long_setup):
    """The bootstrap gzips its larger files once it is long; Terraform's copy keeps every file
    as text, so the slot for the vault's name is always there to fill."""
    d = on_demand_one()
    if long_setup:
        d = replace(d, setup="echo 'a ${HOME} %{x}'\n" * 400)
    doc = render(d)
    group = doc["resource"]["azurerm_linux_virtual_machine_scale_set"]["group"]
    filled = terraform_fills_in(doc, group, "mixtral780858ab12cd34")
    expected = render_cloud_init(azure_with_vault(d, "mixtral780858ab12cd34"))
    if long_setup:
        assert "encoding: gz+b64" in expected
    files = {f["path"]: f["content"] for f in unpacked(filled)["write_files"]}
    assert "SERVESTACK_SECRET_VAULT=mixtral780858ab12cd34\n" in \
        files["/etc/servestack/servestack.env"]
    assert unpacked(filled) == unpacked(expected)


def unpacked(text: str) -> dict:
    """A cloud-config document with every file as text."""
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    for item in document["write_files"]:
        if item.pop("encoding", None) == "gz+b64":
            item["content"] = gzip.decompress(base64.b64decode(item["content"])).decode()
    return document


def test_no_vault_means_the_bootstrap_as_is():
    d = replace(on_demand_one(), secret=None, api_key=None)
    group = render(d)["resource"]["azurerm_linux_virtual_machine_scale_set"]["group"]
    assert base64.b64decode(group["custom_data"]).decode() == render_cloud_init(d)

