"""Azure on both engines: names that never collide, the order Azure accepts, rolling upgrades,
the Key Vault's random name reaching the VMs, the API key in that vault, HTTPS through Front
Door, and Terraform arguments the azurerm provider has."""

from __future__ import annotations

import base64
import gzip
import json
import re
from dataclasses import replace
from pathlib import Path

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
from servestack.deployment.model import Deployment, Tls
from servestack.pulumi.preview import Recording
from servestack.terraform import draw_api_key, render
from servestack.terraform.azure import VAULT_NAME_SLOT
from tests.components.test_azure import on_demand_one, run, spot_mix, spot_three
from tests.fakes import unknown_arguments, weight_cache_deployment

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



# --- arguments the azurerm provider has; the API key; TLS through Front Door ---------------
# No azurerm provider can be installed here, so the rendered JSON is checked against the
# provider's published schema: tests/fixtures/azurerm_provider_schema.json, the argument trees
# (and required arguments) of the resources used, from the @cdktf/provider-azurerm 14.23.1
# package's .jsii assembly (generated from azurerm 4.55.0).

SCHEMA = json.loads((Path(__file__).parents[1] / "fixtures" / "azurerm_provider_schema.json")
                    .read_text())
ZONE = ("/subscriptions/00000000-0000-0000-0000-000000000003/resourceGroups/dns/providers/"
        "Microsoft.Network/dnszones/example.com")
DOMAIN = "llm.example.com"


def with_tls(d: Deployment, zone: str | None = ZONE) -> Deployment:
    return replace(d, tls=Tls(domain=DOMAIN, dns_zone=zone))


def schema_variants() -> list[Deployment]:
    ssh = replace(on_demand_one(), ssh_cidrs=("203.0.113.0/24",))
    return [ssh, with_tls(ssh), with_tls(spot_mix(), zone=None), spot_three(),
            replace(on_demand_one(), secret=None, api_key=None),
            weight_cache_deployment("azure")]  # the storage account, container and role


def test_every_argument_is_one_the_provider_has_and_every_required_one_is_set():
    seen = set()
    for d in schema_variants():
        for kind, blocks in render(d)["resource"].items():
            if not kind.startswith("azurerm_"):
                continue  # random_string, terraform_data: checked by the tests that use them
            seen.add(kind)
            for body in blocks.values():
                assert unknown_arguments(body, SCHEMA["resources"][kind], kind) == []
                assert set(SCHEMA["required"][kind]) <= set(body), kind
    assert seen == set(SCHEMA["resources"])  # every resource of the fixture is used


def test_the_api_key_is_a_secret_of_the_stacks_vault_on_terraform():
    doc = render(on_demand_one())
    res = doc["resource"]
    assert res["terraform_data"] == draw_api_key()["terraform_data"]
    secret = res["azurerm_key_vault_secret"]["api_key"]
    assert (secret["name"], secret["key_vault_id"], secret["value"]) == (
        "api-key", "${azurerm_key_vault.token.id}", "${sensitive(terraform_data.api_key.output)}")
    assert secret["depends_on"] == ["azurerm_key_vault_access_policy.deployer"]
    # the VMs' identity gets every secret of the vault, the key included, before they boot
    vms = res["azurerm_key_vault_access_policy"]["vms"]
    assert vms["object_id"] == "${azurerm_user_assigned_identity.vm.principal_id}"
    assert vms["secret_permissions"] == ["Get"]
    group = res["azurerm_linux_virtual_machine_scale_set"]["group"]
    assert {"azurerm_key_vault_secret.api_key", "azurerm_key_vault_access_policy.vms"} <= \
        set(group["depends_on"])
    outputs = doc["output"]
    assert outputs["api_key"]["sensitive"] is True
    assert outputs["api_key_secret"]["value"] == \
        "${azurerm_key_vault_secret.api_key.resource_versionless_id}"


def test_the_api_key_alone_makes_the_vault_and_its_name_reaches_the_vms():
    d = replace(on_demand_one(), secret=None)
    doc = render(d)
    res = doc["resource"]
    assert set(res["azurerm_key_vault_secret"]) == {"api_key"}
    assert "azurerm_key_vault" in res and "random_string" in res
    assert "hf_token" not in doc["variable"]  # no token variable without a token secret
    group = res["azurerm_linux_virtual_machine_scale_set"]["group"]
    assert "azurerm_key_vault_secret.hf_token" not in group["depends_on"]
    filled = terraform_fills_in(doc, group, "mixtral780858ab12cd34")
    assert unpacked(filled) == unpacked(render_cloud_init(
        azure_with_vault(d, "mixtral780858ab12cd34")))


def test_no_api_key_and_no_secret_means_no_vault_and_no_key_outputs():
    doc = render(replace(on_demand_one(), secret=None, api_key=None))
    assert not {"azurerm_key_vault", "azurerm_key_vault_secret", "terraform_data",
                "random_string"} & set(doc["resource"])
    assert "api_key" not in doc["output"] and "api_key_secret" not in doc["output"]
    only_token = render(replace(on_demand_one(), api_key=None))["resource"]
    assert set(only_token["azurerm_key_vault_secret"]) == {"hf_token"}
    assert "terraform_data" not in only_token


def test_vms_have_no_public_ip_and_go_out_through_the_balancers_outbound_rule():
    for d in schema_variants():
        res = render(d)["resource"]
        kind = "azurerm_orchestrated_virtual_machine_scale_set" \
            if "azurerm_orchestrated_virtual_machine_scale_set" in res \
            else "azurerm_linux_virtual_machine_scale_set"
        for nic in res[kind]["group"]["network_interface"]:
            for ipconfig in nic["ip_configuration"]:
                assert "public_ip_address" not in ipconfig
        assert list(res["azurerm_public_ip"]) == ["lb"]  # the balancer's frontend only
        assert res["azurerm_subnet"]["vms"]["default_outbound_access_enabled"] is False
        assert res["azurerm_lb_rule"]["http"]["disable_outbound_snat"] is True
        assert res["azurerm_lb_outbound_rule"]["egress"]["backend_address_pool_id"] == \
            "${azurerm_lb_backend_address_pool.pool.id}"
        assert ("azurerm_lb_nat_rule" in res) is bool(d.ssh_cidrs)


def test_tls_puts_front_door_in_front_of_the_balancer_on_terraform():
    d = with_tls(on_demand_one())
    doc = render(d)
    res = doc["resource"]
    profile = res["azurerm_cdn_frontdoor_profile"]["fd"]
    assert (profile["name"], profile["sku_name"], profile["response_timeout_seconds"]) == \
        (f"{d.scope}-fd", "Standard_AzureFrontDoor", 240)
    # the endpoint's host name is global: a random suffix kept in the state
    assert res["azurerm_cdn_frontdoor_endpoint"]["fd"]["name"] == \
        f"{d.scope}-ep${{random_string.endpoint.result}}"
    assert res["random_string"]["endpoint"] == {"length": 8, "upper": False, "special": False}
    group = res["azurerm_cdn_frontdoor_origin_group"]["fd"]
    assert group["health_probe"] == {"protocol": "Http", "path": "/health",
                                     "request_type": "GET", "interval_in_seconds": 100}
    assert group["session_affinity_enabled"] is False
    origin = res["azurerm_cdn_frontdoor_origin"]["fd"]
    assert (origin["host_name"], origin["http_port"], origin["certificate_name_check_enabled"]) \
        == ("${azurerm_public_ip.lb.ip_address}", d.listener_port, False)
    domain = res["azurerm_cdn_frontdoor_custom_domain"]["fd"]
    assert (domain["host_name"], domain["dns_zone_id"]) == (DOMAIN, ZONE)
    assert domain["tls"] == {"certificate_type": "ManagedCertificate",
                             "minimum_tls_version": "TLS12"}
    route = res["azurerm_cdn_frontdoor_route"]["fd"]
    assert (route["https_redirect_enabled"], route["forwarding_protocol"],
            route["patterns_to_match"], route["supported_protocols"],
            route["link_to_default_domain"]) == \
        (True, "HttpOnly", ["/*"], ["Http", "Https"], False)
    assert route["cdn_frontdoor_custom_domain_ids"] == \
        ["${azurerm_cdn_frontdoor_custom_domain.fd.id}"]
    assert "cache" not in route  # nothing cached
    assert res["azurerm_cdn_frontdoor_custom_domain_association"]["fd"] == {
        "cdn_frontdoor_custom_domain_id": "${azurerm_cdn_frontdoor_custom_domain.fd.id}",
        "cdn_frontdoor_route_ids": ["${azurerm_cdn_frontdoor_route.fd.id}"]}
    assert doc["output"]["endpoint"]["value"] == f"https://{DOMAIN}"
    assert "dns_records" not in doc["output"]
    # only Front Door reaches the service port
    clients = res["azurerm_network_security_rule"]["clients"]
    assert (clients["source_address_prefix"], clients["destination_port_range"]) == \
        ("AzureFrontDoor.Backend", str(d.service_port))
    assert render(on_demand_one())["resource"]["azurerm_network_security_rule"]["clients"][
        "source_address_prefix"] == "0.0.0.0/0"


def test_tls_with_a_dns_zone_writes_the_records_after_the_route():
    res = render(with_tls(on_demand_one()))["resource"]
    txt, cname = res["azurerm_dns_txt_record"]["fd"], res["azurerm_dns_cname_record"]["fd"]
    for record in (txt, cname):
        assert (record["zone_name"], record["resource_group_name"], record["ttl"]) == \
            ("example.com", "dns", 3600)
    assert txt["name"] == "_dnsauth.llm"
    assert txt["record"] == [
        {"value": "${azurerm_cdn_frontdoor_custom_domain.fd.validation_token}"}]
    assert (cname["name"], cname["record"]) == \
        ("llm", "${azurerm_cdn_frontdoor_endpoint.fd.host_name}")
    assert cname["depends_on"] == ["azurerm_cdn_frontdoor_route.fd",
                                   "azurerm_cdn_frontdoor_custom_domain_association.fd"]


def test_tls_without_a_dns_zone_outputs_the_records_to_create():
    d = with_tls(replace(on_demand_one(), secret=None, api_key=None), zone=None)
    doc = render(d)
    assert not {"azurerm_dns_txt_record", "azurerm_dns_cname_record"} & set(doc["resource"])
    assert "dns_zone_id" not in doc["resource"]["azurerm_cdn_frontdoor_custom_domain"]["fd"]
    assert doc["output"]["dns_records"]["value"] == [
        {"name": f"_dnsauth.{DOMAIN}", "type": "TXT",
         "value": "${azurerm_cdn_frontdoor_custom_domain.fd.validation_token}"},
        {"name": DOMAIN, "type": "CNAME",
         "value": "${azurerm_cdn_frontdoor_endpoint.fd.host_name}"}]
    # no vault, yet the random provider for the endpoint's suffix
    assert set(doc["terraform"]["required_providers"]) == {"azurerm", "random"}
    assert "locals" not in doc and "azurerm_key_vault" not in doc["resource"]


def test_front_door_names_never_collide_and_fit_azures_rules():
    profiles, endpoints = [], []
    for d in side_by_side():
        d = with_tls(d)
        res = render(d)["resource"]
        for kind, body in (("azurerm_cdn_frontdoor_profile", "name"),
                           ("azurerm_cdn_frontdoor_origin_group", "name"),
                           ("azurerm_cdn_frontdoor_origin", "name"),
                           ("azurerm_cdn_frontdoor_route", "name"),
                           ("azurerm_cdn_frontdoor_custom_domain", "name")):
            assert res[kind]["fd"][body].startswith(d.scope + "-")
        profiles.append(res["azurerm_cdn_frontdoor_profile"]["fd"]["name"])
        prefix = res["azurerm_cdn_frontdoor_endpoint"]["fd"]["name"].split("$")[0]
        # FrontDoorEndpointName: 2-46 letters, digits, dashes, with the 8-character suffix
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", prefix) and len(prefix) + 8 <= 46
        endpoints.append(prefix)
        rec = run(d)
        assert rec.one("azure-native:cdn:AFDEndpoint").name == prefix  # autonamed from it
    assert len(set(profiles)) == len(set(endpoints)) == 4


def test_both_engines_build_the_same_front_door():
    d = with_tls(on_demand_one())
    rec, res = run(d), render(d)["resource"]
    profile = rec.one("azure-native:cdn:Profile").inputs
    assert profile["originResponseTimeoutSeconds"] == \
        res["azurerm_cdn_frontdoor_profile"]["fd"]["response_timeout_seconds"]
    probe = rec.one("azure-native:cdn:AFDOriginGroup").inputs["healthProbeSettings"]
    tf_probe = res["azurerm_cdn_frontdoor_origin_group"]["fd"]["health_probe"]
    assert (probe["probePath"], probe["probeProtocol"], probe["probeRequestType"],
            probe["probeIntervalInSeconds"]) == (tf_probe["path"], tf_probe["protocol"],
                                                 tf_probe["request_type"],
                                                 tf_probe["interval_in_seconds"])
    route = rec.one("azure-native:cdn:Route").inputs
    tf_route = res["azurerm_cdn_frontdoor_route"]["fd"]
    assert (route["forwardingProtocol"], route["patternsToMatch"],
            route["supportedProtocols"]) == (tf_route["forwarding_protocol"],
                                            tf_route["patterns_to_match"],
                                            tf_route["supported_protocols"])
    pulumi_names = {rec.one(f"azure-native:cdn:{kind}").inputs[key] for kind, key in (
        ("Profile", "profileName"), ("AFDOriginGroup", "originGroupName"),
        ("AFDOrigin", "originName"), ("Route", "routeName"),
        ("AFDCustomDomain", "customDomainName"))}
    assert pulumi_names == {res[kind]["fd"]["name"] for kind in (
        "azurerm_cdn_frontdoor_profile", "azurerm_cdn_frontdoor_origin_group",
        "azurerm_cdn_frontdoor_origin", "azurerm_cdn_frontdoor_route",
        "azurerm_cdn_frontdoor_custom_domain")}
