"""components/azure.py under Pulumi's mock runtime: the real inputs of each Azure resource."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
from dataclasses import replace
from functools import cache

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from servestack.catalog import azure_zones
from servestack.components import azure as az
from servestack.components import build_service

from servestack import clouds, planner
from servestack.bootstrap import render_cloud_init
from servestack.clouds.azure import (
    AZURE_VAULT_SUFFIX_LENGTH,
    azure_idle_timeout_minutes,
    azure_repair_grace_period,
    azure_vault_prefix,
    azure_with_vault,
)
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Deployment, Tls
from servestack.inputs import load_inputs
from servestack.pulumi.preview import SECRET_MASK, Recording, preview_json, record
from servestack.sshkey import RSA_2048, lock_only_ssh_key
from tests.fakes import FROZEN_CATALOG

TOKEN = "hf_AZUREtokenMustNeverLeak0123456789"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNlcnZlc3RhY2stdGVzdC1rZXk= test@servestack"
ALLOCATED_IP = "203.0.113.10"  # what servestack.pulumi.preview's mock allocates to a public IP
SERVICE = "servestack:azure:Service"
VMSS = "azure-native:compute:VirtualMachineScaleSet"
NSG = "azure-native:network:NetworkSecurityGroup"
LB = "azure-native:network:LoadBalancer"
PIP = "azure-native:network:PublicIPAddress"
SUBNET = "azure-native:network:Subnet"
VAULT = "azure-native:keyvault:Vault"
SECRET = "azure-native:keyvault:Secret"
IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
DYNAMIC = "pulumi-python:dynamic:Resource"  # components.apikey.ApiKey
NO_ZONE_REGION = "northcentralus"  # a real Azure region without availability zones
# Rolling upgrades, one VM per batch below five replicas, pausing for the readiness delay
# (1200 s) between batches; no max surge (it needs a subscription feature registered).
ROLLING = {"mode": "Rolling", "rollingUpgradePolicy": {
    "maxBatchInstancePercent": 20, "maxUnhealthyInstancePercent": 100,
    "maxUnhealthyUpgradedInstancePercent": 20, "pauseTimeBetweenBatches": "PT20M"}}


@cache
def _planned(spot: bool) -> Deployment:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="azure", spot=spot), model=inputs.model)
    return build_deployment(inputs.spec, plan.candidates[0], plan.candidates, model=inputs.model)


def on_demand_one() -> Deployment:
    """On-demand, one replica, in a region with zones."""
    d = replace(_planned(False), min_replicas=1, max_replicas=1, desired_replicas=1)
    assert not d.use_spot and d.zones == ("1", "2", "3") and d.secret is not None
    return d


def spot_three() -> Deployment:
    """All spot, three replicas, in a region without zones."""
    assert azure_zones(NO_ZONE_REGION) == ()
    d = replace(_planned(True), region=NO_ZONE_REGION, zones=(), min_replicas=3, max_replicas=3,
                desired_replicas=3, on_demand_base=0)
    assert d.use_spot and d.capacity_rebalance
    return d


def spot_mix() -> Deployment:
    """Spot above one on-demand replica: needs Azure's priority mix."""
    return replace(spot_three(), on_demand_base=1)


def run(d: Deployment, token: str | None = TOKEN, config: dict | None = None,
        wrap: bool = True) -> Recording:
    def program() -> None:
        hf_token = pulumi.Output.secret(token) if token and wrap else token
        service = az.Service("svc", d, hf_token=hf_token)
        pulumi.export("endpoint", service.endpoint)
        pulumi.export("groupName", service.group_name)
        pulumi.export("groupId", service.group_id)

    return record(program, config=config)


@cache
def recorded(kind: str) -> Recording:
    return run({"on_demand": on_demand_one, "spot": spot_three, "mix": spot_mix}[kind]())


def vmss(kind: str) -> dict:
    return recorded(kind).one(VMSS).inputs


def secrets_by_name(rec: Recording) -> dict[str, dict]:
    """The Key Vault secrets' inputs by secret name."""
    return {r.inputs["secretName"]: r.inputs for r in rec.of_type(SECRET)}


def rules_by_name(rec: Recording) -> dict[str, dict]:
    return {r["name"]: r for r in rec.one(NSG).inputs["securityRules"]}


def custom_data(inputs: dict) -> str:
    return base64.b64decode(inputs["virtualMachineProfile"]["osProfile"]["customData"]).decode()


def settings(text: str) -> str:
    """/etc/servestack/servestack.env of a bootstrap (unpacked when the bootstrap gzips it)."""
    for item in yaml.safe_load(text)["write_files"]:
        if item["path"] == "/etc/servestack/servestack.env":
            if item.get("encoding") == "gz+b64":
                return gzip.decompress(base64.b64decode(item["content"])).decode()
            return item["content"]
    raise AssertionError("no servestack.env in the bootstrap")


def test_nsg_admits_probe_and_clients_on_the_service_port_and_nothing_else():
    d = on_demand_one()
    rules = rules_by_name(recorded("on_demand"))
    assert set(rules) == {"allow-probe", "allow-clients", "deny-all-inbound"}
    probe, clients, deny = rules["allow-probe"], rules["allow-clients"], rules["deny-all-inbound"]
    assert (probe["priority"], probe["sourceAddressPrefix"], probe["destinationPortRange"]) == \
        (100, "AzureLoadBalancer", str(d.health.port))
    # the backend port, not the listener's: a Standard LB keeps the client's source address
    assert (clients["priority"], clients["sourceAddressPrefix"],
            clients["destinationPortRange"]) == (110, "0.0.0.0/0", "8000")
    assert d.listener_port == 80 and str(d.listener_port) not in \
        {r.get("destinationPortRange") for r in rules.values()}
    for rule in (probe, clients):
        assert (rule["direction"], rule["access"], rule["protocol"]) == ("Inbound", "Allow", "Tcp")
    assert (deny["priority"], deny["access"], deny["protocol"], deny["sourceAddressPrefix"],
            deny["destinationPortRange"]) == (4096, "Deny", "*", "*", "*")
    subnet = recorded("on_demand").one(SUBNET).inputs
    assert subnet["networkSecurityGroup"]["id"] == "svc-fw-nsg-id"
    assert subnet["defaultOutboundAccess"] is False


def test_ssh_only_from_the_ssh_cidrs_through_a_nat_rule():
    d = replace(on_demand_one(), allow_cidrs=("198.51.100.0/24", "192.0.2.0/24", "2001:db8::/32"),
                ssh_cidrs=("192.0.2.7/32",))
    rec = run(d, config={"servestack:sshPublicKey": SSH_KEY})
    rules = rules_by_name(rec)
    assert rules["allow-clients"]["sourceAddressPrefixes"] == ["192.0.2.0/24", "198.51.100.0/24"]
    ssh = rules["allow-ssh"]
    assert (ssh["priority"], ssh["sourceAddressPrefix"], ssh["destinationPortRange"]) == \
        (120, "192.0.2.7/32", "22")
    nat = rec.one(LB).inputs["inboundNatRules"]
    assert [(n["name"], n["backendPort"], n["frontendPortRangeStart"],
             n["frontendPortRangeEnd"]) for n in nat] == [("ssh", 22, 50000, 50099)]
    assert nat[0]["backendAddressPool"]["id"].endswith(f"/loadBalancers/{d.scope}-lb/"
                                                       "backendAddressPools/backend")
    linux = rec.one(VMSS).inputs["virtualMachineProfile"]["osProfile"]["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"] == [{"keyData": SSH_KEY,
                                           "path": "/home/servestack/.ssh/authorized_keys"}]
    assert "inboundNatRules" not in recorded("on_demand").one(LB).inputs


def test_without_a_configured_key_the_vms_get_a_key_nobody_holds(tmp_path):
    profile = vmss("on_demand")["virtualMachineProfile"]["osProfile"]
    assert "adminPassword" not in profile
    assert profile["linuxConfiguration"]["disablePasswordAuthentication"] is True
    key = profile["linuxConfiguration"]["ssh"]["publicKeys"][0]["keyData"]
    assert key == lock_only_ssh_key() and key.endswith(" servestack-no-login")
    (tmp_path / "lock.pub").write_text(key + "\n")
    described = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "lock.pub")],
                               capture_output=True, text=True, check=True).stdout
    assert described.startswith("2048 ") and described.rstrip().endswith("(RSA)")
    assert RSA_2048.bit_length() == 2048


def test_load_balancer_probe_rule_and_egress():
    d = on_demand_one()
    lb = recorded("on_demand").one(LB).inputs
    prefix = ("/subscriptions/00000000-0000-0000-0000-000000000003/resourceGroups/svc-rg/"
              f"providers/Microsoft.Network/loadBalancers/{d.scope}-lb/")
    assert lb["loadBalancerName"] == "mixtral-780858-lb" == f"{d.scope}-lb"
    assert lb["sku"]["name"] == "Standard"
    assert [p for p in lb["probes"]] == [{
        "name": "health", "protocol": "Http", "port": 8000, "requestPath": d.health.path,
        "intervalInSeconds": d.health.interval_seconds, "probeThreshold": 3,
        "numberOfProbes": 3}]
    assert d.health.path == "/health" and d.health.interval_seconds == 10
    [rule] = lb["loadBalancingRules"]
    assert (rule["frontendPort"], rule["backendPort"], rule["protocol"]) == (80, 8000, "Tcp")
    assert rule["idleTimeoutInMinutes"] == 15  # 900 s
    assert rule["enableTcpReset"] is True and rule["enableFloatingIP"] is False
    assert rule["disableOutboundSnat"] is True
    assert rule["probe"]["id"] == prefix + "probes/health"
    assert rule["backendAddressPool"]["id"] == prefix + "backendAddressPools/backend"
    assert rule["frontendIPConfiguration"]["id"] == prefix + "frontendIPConfigurations/frontend"
    [egress] = lb["outboundRules"]
    assert egress["protocol"] == "All"
    assert egress["backendAddressPool"]["id"] == prefix + "backendAddressPools/backend"
    assert lb["frontendIPConfigurations"] == [{"name": "frontend",
                                               "publicIPAddress": {"id": "svc-lb-ip-id"}}]
    ip = recorded("on_demand").one(PIP).inputs
    assert (ip["sku"]["name"], ip["publicIPAllocationMethod"]) == ("Standard", "Static")
    assert ip["zones"] == ["1", "2", "3"]


def test_on_demand_scale_set_in_a_zonal_region():
    d = on_demand_one()
    v = vmss("on_demand")
    assert v["sku"] == {"name": "Standard_NC48ads_A100_v4", "tier": "Standard", "capacity": 1}
    assert d.primary.instance_type == "Standard_NC48ads_A100_v4"
    assert v["orchestrationMode"] == "Uniform" and v["overprovision"] is False
    assert v["upgradePolicy"] == ROLLING
    assert v["zones"] == ["1", "2", "3"] and v["location"] == d.region
    assert v["automaticRepairsPolicy"] == {"enabled": True, "gracePeriod": "PT20M",
                                           "repairAction": "Replace"}
    profile = v["virtualMachineProfile"]
    assert profile["priority"] == "Regular"
    assert "evictionPolicy" not in profile and "billingProfile" not in profile
    assert "spotRestorePolicy" not in v and "priorityMixPolicy" not in v
    network = profile["networkProfile"]
    assert network["healthProbe"]["id"].endswith(f"/loadBalancers/{d.scope}-lb/probes/health")
    [nic] = network["networkInterfaceConfigurations"]
    [ipconfig] = nic["ipConfigurations"]
    assert ipconfig["subnet"]["id"] == "svc-net-subnet-id"
    assert ipconfig["loadBalancerBackendAddressPools"][0]["id"].endswith(
        f"/loadBalancers/{d.scope}-lb/backendAddressPools/backend")
    storage = profile["storageProfile"]
    assert storage["imageReference"] == {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc",
                                         "sku": "2204", "version": "latest"}
    assert storage["osDisk"]["diskSizeGB"] == 256 == d.disk_size_gb
    assert storage["osDisk"]["managedDisk"]["storageAccountType"] == "Premium_LRS" == d.disk_type
    assert v["identity"] == {"type": "UserAssigned", "userAssignedIdentities": ["svc-id-id"]}


def test_spot_scale_set_of_three_in_a_region_without_zones():
    v = vmss("spot")
    assert v["sku"]["capacity"] == 3 and v["location"] == NO_ZONE_REGION
    assert "zones" not in v and "zones" not in recorded("spot").one(PIP).inputs
    profile = v["virtualMachineProfile"]
    assert (profile["priority"], profile["evictionPolicy"]) == ("Spot", "Delete")
    assert profile["billingProfile"] == {"maxPrice": -1}
    assert v["spotRestorePolicy"] == {"enabled": True, "restoreTimeout": "PT1H"}
    assert v["orchestrationMode"] == "Uniform" and "priorityMixPolicy" not in v
    assert v["automaticRepairsPolicy"]["gracePeriod"] == "PT20M"


def test_spot_above_an_on_demand_base_is_a_flexible_priority_mix():
    v = vmss("mix")
    assert v["orchestrationMode"] == "Flexible" and v["singlePlacementGroup"] is False
    assert v["platformFaultDomainCount"] == 1
    assert v["priorityMixPolicy"] == {"baseRegularPriorityCount": 1,
                                      "regularPriorityPercentageAboveBase": 0}
    profile = v["virtualMachineProfile"]
    assert (profile["priority"], profile["evictionPolicy"]) == ("Spot", "Delete")
    network = profile["networkProfile"]
    assert "healthProbe" not in network and network["networkApiVersion"] == "2020-11-01"
    [health] = profile["extensionProfile"]["extensions"]
    assert (health["publisher"], health["type"], health["typeHandlerVersion"]) == \
        ("Microsoft.ManagedServices", "ApplicationHealthLinux", "1.0")
    assert health["settings"] == {"protocol": "http", "port": 8000, "requestPath": "/health",
                                  "intervalInSeconds": 10, "numberOfProbes": 3}
    assert v["automaticRepairsPolicy"]["enabled"] is True
    assert v["upgradePolicy"] == ROLLING and "overprovision" not in v


def test_repair_grace_period_is_clamped_to_azures_range():
    assert azure_repair_grace_period(60) == "PT10M"
    assert azure_repair_grace_period(1200) == "PT20M"
    assert azure_repair_grace_period(1201) == "PT21M"
    assert azure_repair_grace_period(4 * 3600) == "PT90M"
    d = replace(on_demand_one(), health=replace(on_demand_one().health,
                                                grace_period_seconds=3 * 3600))
    assert run(d).one(VMSS).inputs["automaticRepairsPolicy"]["gracePeriod"] == "PT90M"


def test_idle_timeout_stays_within_4_to_30_minutes():
    assert [azure_idle_timeout_minutes(s) for s in (60, 900, 901, 3600)] == [4, 15, 16, 30]


def test_custom_data_is_the_bootstrap_with_the_vault_name_and_no_token():
    for kind, deployment in (("on_demand", on_demand_one()), ("spot", spot_three())):
        text = custom_data(vmss(kind))
        # the bootstrap as rendered with the vault's name, once azure-native has drawn it
        vault = recorded(kind).one(VAULT).name
        assert text == render_cloud_init(azure_with_vault(deployment, vault))
        assert text.startswith("#cloud-config\n")
        env = settings(text)
        assert f"SERVESTACK_TP_PLANNED={deployment.tensor_parallel_size}\n" in env
        assert deployment.tensor_parallel_size == 2
        assert f"SERVESTACK_SECRET_VAULT={vault}\n" in env
        assert vault == azure_vault_prefix(deployment)
        assert TOKEN not in text


def test_token_is_a_secret_everywhere_and_in_plain_text_nowhere():
    d = on_demand_one()
    for kind, deployment in (("on_demand", d), ("spot", spot_three()), ("mix", spot_mix())):
        rec = recorded(kind)
        secret = secrets_by_name(rec)["hf-token"]
        assert secret["properties"] == SECRET_MASK
        # the mock names the vault after its resource; azure-native adds 8 random hex digits
        assert (secret["secretName"], secret["vaultName"]) == \
            ("hf-token", azure_vault_prefix(deployment))
        dumped = json.dumps(preview_json(rec)) + json.dumps([r.inputs for r in rec.resources])
        assert TOKEN not in dumped
        assert TOKEN not in base64.b64encode(dumped.encode()).decode()
    plain = run(d, wrap=False)  # a plain string in: the component still marks it secret
    assert secrets_by_name(plain)["hf-token"]["properties"] == SECRET_MASK
    assert TOKEN not in json.dumps([r.inputs for r in plain.resources])
    vault = recorded("on_demand").one(VAULT)
    assert "vaultName" not in vault.inputs  # autonamed: a random suffix kept in the state
    assert vault.name == azure_vault_prefix(d) == f"mixtral{d.scope[-6:]}"
    assert len(vault.name) + AZURE_VAULT_SUFFIX_LENGTH <= 24  # Key Vault names: 3-24
    props = vault.inputs["properties"]
    assert props["tenantId"] == "00000000-0000-0000-0000-000000000004"
    assert props["enableRbacAuthorization"] is False
    [policy] = props["accessPolicies"]
    assert policy["permissions"] == {"secrets": ["get"]}
    assert policy["tenantId"] == props["tenantId"]


def test_no_secret_and_no_api_key_means_no_vault_but_still_an_identity():
    rec = run(replace(on_demand_one(), secret=None, api_key=None), token=None)
    assert not rec.of_type(VAULT) and not rec.of_type(SECRET) and not rec.of_type(DYNAMIC)
    assert len(rec.of_type(IDENTITY)) == 1
    env = settings(custom_data(rec.one(VMSS).inputs))
    assert "SERVESTACK_SECRET_STORE=''\n" in env and "SERVESTACK_SECRET_VAULT=''\n" in env


def test_secret_without_a_token_keeps_the_vault_and_its_access_policy():
    rec = run(on_demand_one(), token=None)
    assert len(rec.of_type(VAULT)) == 1
    assert set(secrets_by_name(rec)) == {"api-key"}  # the key is drawn here, so it is there


def test_outputs_and_every_resource_inside_the_component_tree():
    rec = recorded("on_demand")
    assert rec.outputs == {"endpoint": f"http://{ALLOCATED_IP}:80",
                           "groupName": "svc-group-vmss", "groupId": "svc-group-vmss-id"}
    urns = {r.urn: r for r in rec.resources}
    [root] = rec.of_type(SERVICE)
    assert root.parent.endswith("::pulumi:pulumi:Stack::servestack-preview")
    for resource in rec.resources:
        if resource is root:
            continue
        parent = urns[resource.parent]  # KeyError: parented outside the tree
        assert parent.type.startswith("servestack:azure:") and not parent.custom
    components = {r.type for r in rec.resources if not r.custom}
    assert components == {SERVICE, "servestack:azure:Firewall", "servestack:azure:Network",
                          "servestack:azure:LoadBalancer", "servestack:azure:TokenSecret",
                          "servestack:azure:ScaleSet"}
    tags = on_demand_one().tags
    for resource in rec.resources:
        if resource.custom and resource.type not in (SUBNET, SECRET, DYNAMIC):
            assert resource.inputs["tags"] == tags, resource.type
        if "location" in resource.inputs:
            assert resource.inputs["location"] == "eastus"


def test_image_id_forms():
    def reference(image_id: str) -> dict:
        return az.image_reference(clouds.get("azure").image_ref(image_id))

    assert reference("Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest") == {
        "publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy",
        "sku": "22_04-lts-gen2", "version": "latest"}
    gallery = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/x/images/y"
    assert reference(gallery) == {"id": gallery}
    assert reference("/CommunityGalleries/c/Images/i/Versions/latest") == {
        "community_gallery_image_id": "/CommunityGalleries/c/Images/i/Versions/latest"}
    assert reference("/SharedGalleries/s/Images/i/Versions/1.0.0") == {
        "shared_gallery_image_id": "/SharedGalleries/s/Images/i/Versions/1.0.0"}
    rec = run(replace(on_demand_one(), image=clouds.get("azure").image_ref(gallery)))
    assert rec.one(VMSS).inputs["virtualMachineProfile"]["storageProfile"][
        "imageReference"] == {"id": gallery}


def test_zones_are_the_deployments():
    assert vmss("on_demand")["zones"] == list(on_demand_one().zones)
    rec = run(replace(on_demand_one(), zones=("2",)))
    assert rec.one(VMSS).inputs["zones"] == ["2"] and rec.one(PIP).inputs["zones"] == ["2"]


# --- the API key, TLS through Front Door, no public IPs on the VMs ---------------------------

PROFILE = "azure-native:cdn:Profile"
ENDPOINT = "azure-native:cdn:AFDEndpoint"
ORIGIN_GROUP = "azure-native:cdn:AFDOriginGroup"
ORIGIN = "azure-native:cdn:AFDOrigin"
CUSTOM_DOMAIN = "azure-native:cdn:AFDCustomDomain"
ROUTE = "azure-native:cdn:Route"
RECORD = "azure-native:dns:RecordSet"
DOMAIN = "llm.example.com"
ZONE = ("/subscriptions/00000000-0000-0000-0000-000000000003/resourceGroups/dns/providers/"
        "Microsoft.Network/dnszones/example.com")


def with_tls(d: Deployment, zone: str | None = ZONE) -> Deployment:
    return replace(d, tls=Tls(domain=DOMAIN, dns_zone=zone))


def run_service(d: Deployment, token: str | None = TOKEN) -> Recording:
    """The program as servestack runs it (components.build_service), exporting what the
    Service gives back."""
    def program() -> None:
        hf_token = pulumi.Output.secret(token) if token else None
        outputs = build_service("svc", d, hf_token=hf_token)
        pulumi.export("endpoint", outputs.endpoint)
        pulumi.export("api_key_ref", outputs.api_key_ref)
        pulumi.export("has_api_key", outputs.api_key is not None)

    return record(program)


def test_the_api_key_is_a_second_secret_in_the_stacks_vault():
    rec = run_service(on_demand_one())
    [key] = rec.of_type(DYNAMIC)  # components.apikey.ApiKey, drawn once, kept in the state
    assert key.name == "svc-api-key"
    secrets = secrets_by_name(rec)
    assert set(secrets) == {"hf-token", "api-key"}
    vault = rec.one(VAULT)
    assert secrets["api-key"]["vaultName"] == secrets["hf-token"]["vaultName"] == vault.name
    assert secrets["api-key"]["properties"] == SECRET_MASK  # the value is a Pulumi secret
    # the VMs' identity may get every secret of the vault, the key included
    [policy] = vault.inputs["properties"]["accessPolicies"]
    assert policy["permissions"] == {"secrets": ["get"]}
    # where the key is kept: the api-key secret's ARM id, exported by the program
    api_key_secret = [r for r in rec.of_type(SECRET) if r.inputs["secretName"] == "api-key"][0]
    assert rec.outputs["api_key_ref"] == api_key_secret.id == "svc-token-api-key-id"
    assert rec.outputs["has_api_key"] is True


def test_the_api_key_alone_still_makes_the_vault_and_tells_the_vms_its_name():
    d = replace(on_demand_one(), secret=None)
    rec = run(d, token=None)
    vault = rec.one(VAULT).name
    assert set(secrets_by_name(rec)) == {"api-key"}
    assert len(rec.of_type(DYNAMIC)) == 1
    # the bootstrap is rendered with the vault's name on the key's reference
    text = custom_data(rec.one(VMSS).inputs)
    assert text == render_cloud_init(azure_with_vault(d, vault))
    assert azure_with_vault(d, vault).api_key_secret.vault == vault


def test_no_api_key_means_no_key_and_no_key_secret():
    rec = run_service(replace(on_demand_one(), api_key=None))
    assert not rec.of_type(DYNAMIC)
    assert set(secrets_by_name(rec)) == {"hf-token"}
    assert rec.outputs["api_key_ref"] is None and rec.outputs["has_api_key"] is False


def test_vms_have_no_public_ip_and_go_out_through_the_balancers_outbound_rule():
    for kind in ("on_demand", "spot", "mix"):
        rec = recorded(kind)
        [nic] = rec.one(VMSS).inputs["virtualMachineProfile"]["networkProfile"][
            "networkInterfaceConfigurations"]
        for ipconfig in nic["ipConfigurations"]:
            assert "publicIPAddressConfiguration" not in ipconfig
        assert len(rec.of_type(PIP)) == 1  # the balancer's frontend, nothing else
        assert rec.one(SUBNET).inputs["defaultOutboundAccess"] is False
        lb = rec.one(LB).inputs
        assert lb["loadBalancingRules"][0]["disableOutboundSnat"] is True
        [egress] = lb["outboundRules"]
        assert egress["backendAddressPool"]["id"].endswith("/backendAddressPools/backend")
        assert not rec.of_type("azure-native:network:NatGateway")
        assert "inboundNatRules" not in lb  # SSH only with ssh_cidrs


def test_tls_puts_front_door_with_a_managed_certificate_in_front_of_the_balancer():
    d = with_tls(on_demand_one())
    rec = run_service(d)
    assert rec.outputs["endpoint"] == f"https://{DOMAIN}"
    profile = rec.one(PROFILE).inputs
    assert profile["sku"] == {"name": "Standard_AzureFrontDoor"}
    assert profile["originResponseTimeoutSeconds"] == 240  # Azure's maximum (16-240)
    assert profile["profileName"] == f"{d.scope}-fd" and profile["location"] == "global"
    endpoint = rec.one(ENDPOINT)
    # autonamed: azure-native adds a random suffix kept in the state (global host names)
    assert "endpointName" not in endpoint.inputs and endpoint.name == f"{d.scope}-ep"
    group = rec.one(ORIGIN_GROUP).inputs
    assert group["healthProbeSettings"] == {
        "probePath": d.health.path, "probeProtocol": "Http", "probeRequestType": "GET",
        "probeIntervalInSeconds": 100}
    assert d.health.path == "/health" and group["sessionAffinityState"] == "Disabled"
    origin = rec.one(ORIGIN).inputs
    assert origin["hostName"] == ALLOCATED_IP  # the balancer's public IP
    assert origin["httpPort"] == d.listener_port == 80
    assert origin["enforceCertificateNameCheck"] is False
    domain = rec.one(CUSTOM_DOMAIN).inputs
    assert domain["hostName"] == DOMAIN and domain["azureDnsZone"] == {"id": ZONE}
    assert domain["tlsSettings"] == {"certificateType": "ManagedCertificate",
                                     "minimumTlsVersion": "TLS12"}
    route = rec.one(ROUTE).inputs
    assert (route["httpsRedirect"], route["forwardingProtocol"], route["patternsToMatch"],
            route["supportedProtocols"], route["linkToDefaultDomain"]) == \
        ("Enabled", "HttpOnly", ["/*"], ["Http", "Https"], "Disabled")
    assert route["customDomains"] == [{"id": rec.one(CUSTOM_DOMAIN).id}]
    assert route["originGroup"] == {"id": rec.one(ORIGIN_GROUP).id}
    assert "cacheConfiguration" not in route  # nothing cached


def test_tls_nsg_admits_only_front_door_on_the_service_port():
    d = with_tls(on_demand_one())
    rules = rules_by_name(run(d))
    clients = rules["allow-clients"]
    assert (clients["sourceAddressPrefix"], clients["destinationPortRange"]) == \
        ("AzureFrontDoor.Backend", str(d.service_port))
    assert "sourceAddressPrefixes" not in clients
    assert set(rules) == {"allow-probe", "allow-clients", "deny-all-inbound"}
    assert rules["allow-probe"]["sourceAddressPrefix"] == "AzureLoadBalancer"
    # without TLS the same rule admits the allowed CIDRs
    assert rules_by_name(recorded("on_demand"))["allow-clients"]["sourceAddressPrefix"] == \
        "0.0.0.0/0"


def test_tls_with_a_dns_zone_writes_the_validation_and_cname_records(monkeypatch):
    dependencies: dict[str, list[str]] = {}
    register = pulumi_mocks.MockMonitor.RegisterResource

    def recording(self, request):
        dependencies[request.name] = list(request.dependencies)
        return register(self, request)

    monkeypatch.setattr(pulumi_mocks.MockMonitor, "RegisterResource", recording)
    rec = run_service(with_tls(on_demand_one()))
    records = {r.inputs["recordType"]: r for r in rec.of_type(RECORD)}
    assert set(records) == {"TXT", "CNAME"}
    for record_set in records.values():
        assert (record_set.inputs["resourceGroupName"], record_set.inputs["zoneName"],
                record_set.inputs["ttl"]) == ("dns", "example.com", 3600)
    assert records["TXT"].inputs["relativeRecordSetName"] == "_dnsauth.llm"
    assert records["CNAME"].inputs["relativeRecordSetName"] == "llm"
    # the CNAME once the route serves the domain; the route once the origin exists
    assert rec.one(ROUTE).urn in dependencies[records["CNAME"].name]
    assert rec.one(ORIGIN).urn in dependencies[rec.one(ROUTE).name]


def test_tls_without_a_dns_zone_lists_the_records_to_create():
    found: dict = {}

    def program() -> None:
        service = az.Service("svc", with_tls(on_demand_one(), zone=None),
                             hf_token=pulumi.Output.secret(TOKEN))
        found["records"] = service.dns_records
        found["host"] = service.front_door.endpoint.host_name

    rec = record(program)
    assert not rec.of_type(RECORD)
    assert "azureDnsZone" not in rec.one(CUSTOM_DOMAIN).inputs
    # names and types now; the values (validation token, endpoint host) once deployed
    txt, cname = found["records"]
    assert (txt["name"], txt["type"], cname["name"], cname["type"]) == \
        (f"_dnsauth.{DOMAIN}", "TXT", DOMAIN, "CNAME")
    assert cname["value"] is found["host"]
    assert isinstance(txt["value"], pulumi.Output)
    # the program exports them as the Terraform stack does (unknown values until deployed)
    assert "dns_records" in program_outputs(with_tls(on_demand_one(), zone=None))
    assert "dns_records" not in program_outputs(with_tls(on_demand_one()))


def program_outputs(d: Deployment) -> dict:
    from servestack.pulumi.program import main

    return record(main, config={"servestack:deployment": json.dumps(d.to_config())}).outputs

