"""Azure: the service as a Standard public load balancer in front of a GPU VM scale set.

`Service` is the top of the tree; the resource group and the scale set's user-assigned
identity are its direct children, each other concern is its own child component:

- `Firewall`: the network security group on the subnet. A Standard load balancer with floating
  IP off rewrites the destination to the VM's private IP and the *backend* port but keeps the
  client's source address, so the NSG must admit the allowed client CIDRs on the service port
  (not the listener port); the health probe comes from the `AzureLoadBalancer` service tag.
  SSH only from the SSH CIDRs, and an explicit deny-all below those rules shadows Azure's
  default inbound allows (VirtualNetwork, AzureLoadBalancer on every port).
- `Network`: virtual network + subnet (default outbound access off, NSG attached).
- `LoadBalancer`: static Standard public IP, Standard load balancer with one frontend, one
  backend pool, the HTTP probe, the listener -> service port rule, and an outbound rule: the
  rule disables its own SNAT and the outbound rule gives the VMs explicit egress through the
  same public IP (the subnet has no default outbound access) to download the model. With SSH
  CIDRs, an inbound NAT rule maps a frontend port range to port 22 of each VM.
- `TokenSecret`: a Key Vault whose only access policy lets the scale set's identity *get*
  secrets, with the Hugging Face token and the API key (components.apikey: drawn here, or the
  service's shared one read from its key stack; secret `api-key`) in it; it exists whenever
  the deployment keeps either, and its name reaches the VMs in the bootstrap either way.
- `ScaleSet`: the VM scale set (Uniform; Flexible only for a spot/on-demand priority mix); with
  dynamic_ondemand_fallback a second, regular-priority one in the same backend pool. No VM has
  a public IP: inbound is the balancer's (SSH through its NAT rule, only with SSH CIDRs),
  outbound its outbound rule.
- `Autoscaling` (with a replica_policy that autoscales): an autoscale setting per scale set,
  bounded by min and max replicas, on the metric the replicas publish to the spot/main scale
  set, and the role that lets the VMs' identity publish it (see servestack.clouds.azure,
  azure_autoscales, for the rules and why).
- `FrontDoor` (with a domain): the Standard balancer is L4 and terminates no TLS, so Front
  Door Standard serves the domain over HTTPS with a managed certificate and forwards plain
  HTTP to the balancer's public IP; the NSG then admits only `AzureFrontDoor.Backend` on the
  service port, so clients cannot go around it.

Every value comes from the `Deployment` (zones, image, address ranges, admin user, ports), and
how Azure spells it (API limits, rule priorities, the balancer's part names, resource names)
from servestack.clouds.azure, shared with the Terraform renderer; nothing is decided here.
Every fixed name derives from the deployment's scope (service and stack), so two services, or
two stacks of one service, share none in a subscription; the Key Vault and the Front Door
endpoint, whose names are global, are autonamed (a random suffix kept in the state).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import pulumi
import pulumi_azure_native as azure
from servestack.components import TYPE_PREFIX
from servestack.components.apikey import service_key
from servestack.components.azure_cache import WeightCache, WeightCacheArgs

from servestack.bootstrap import render_cloud_init
from servestack.clouds.azure import (
    AZURE_DNS_TTL,
    AZURE_EGRESS_PROTOCOL,
    AZURE_FLEX_FAULT_DOMAINS,
    AZURE_FRONT_DOOR_CERTIFICATE,
    AZURE_FRONT_DOOR_FORWARDING,
    AZURE_FRONT_DOOR_MIN_TLS,
    AZURE_FRONT_DOOR_PATTERNS,
    AZURE_FRONT_DOOR_PROBE_METHOD,
    AZURE_FRONT_DOOR_PROBE_SECONDS,
    AZURE_FRONT_DOOR_PROTOCOLS,
    AZURE_FRONT_DOOR_SAMPLING,
    AZURE_FRONT_DOOR_SKU,
    AZURE_FRONT_DOOR_TIMEOUT_SECONDS,
    AZURE_HEALTH_EXTENSION,
    AZURE_IDENTITY_TYPE,
    AZURE_IP_ALLOCATION,
    AZURE_IP_VERSION,
    AZURE_LOAD_DISTRIBUTION,
    AZURE_OS_DISK_CACHING,
    AZURE_OVERPROVISION,
    AZURE_PRINCIPAL_TYPE,
    AZURE_PROFILE,
    AZURE_REPAIR_ACTION,
    AZURE_ROLLING_UPGRADE,
    AZURE_SECRET_CONTENT_TYPE,
    AZURE_SKU,
    AZURE_SKU_TIER,
    AZURE_SPOT_MAX_PRICE,
    AZURE_SPOT_RESTORE_TIMEOUT,
    AZURE_STATISTIC,
    AZURE_TIME_GRAIN,
    AZURE_UPGRADE_MODE,
    AZURE_VAULT_RETENTION_DAYS,
    EGRESS,
    FRONTEND,
    POOL,
    PROBE,
    RULE,
    SSH,
    AzureAutoscale,
    azure_autoscale_tags,
    azure_autoscales,
    azure_computer_name_prefix,
    azure_dns_name,
    azure_dns_records,
    azure_fallback,
    azure_fallback_computer_name_prefix,
    azure_flexible,
    azure_has_vault,
    azure_health_settings,
    azure_idle_timeout_minutes,
    azure_ipv4,
    azure_lb_name,
    azure_name,
    azure_priority,
    azure_probe,
    azure_repair_grace_period,
    azure_role_assignment_name,
    azure_role_definition,
    azure_security_rules,
    azure_spot_restore,
    azure_upgrade_pause,
    azure_vault_prefix,
    azure_with_vault,
    azure_zone_balance,
)
from servestack.deployment.model import Deployment, HealthCheck, ImageRef
from servestack.sshkey import lock_only_ssh_key

FLEX_NETWORK_API = "2020-11-01"  # NIC API version for Flexible scale sets (NetworkApiVersion)


def _type(kind: str) -> str:
    return f"{TYPE_PREFIX}:azure:{kind}"


def _child(parent: pulumi.Resource, **extra) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **extra)


def image_reference(image: ImageRef) -> dict[str, str]:
    """The deployment's image as an ImageReference: a marketplace image, or a resource id in the
    field its kind of id goes to (community gallery, shared gallery, image or gallery image)."""
    if image.kind != "id":
        return image.marketplace()
    image_id = image.exact()
    if image_id.startswith("/CommunityGalleries/"):
        return {"community_gallery_image_id": image_id}
    if image_id.startswith("/SharedGalleries/"):
        return {"shared_gallery_image_id": image_id}
    return {"id": image_id}


def lb_child_id(subscription: str, group: str, lb_name: str, kind: str, child: str) -> str:
    """ARM id of a load balancer sub-resource, for references inside and to that balancer."""
    return (f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
            f"Microsoft.Network/loadBalancers/{lb_name}/{kind}/{child}")


@dataclass
class FirewallArgs:
    deployment: Deployment
    resource_group_name: pulumi.Input[str]


class Firewall(pulumi.ComponentResource):
    """The subnet's NSG: probe and clients on the service port, SSH if asked, nothing else."""

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Firewall"), name, None, opts)
        d = args.deployment
        self.nsg = azure.network.NetworkSecurityGroup(
            f"{name}-nsg", network_security_group_name=azure_name(d, "nsg"),
            resource_group_name=args.resource_group_name, location=d.region,
            security_rules=security_rules(d), tags=d.tags, opts=_child(self))
        self.register_outputs({"networkSecurityGroupId": self.nsg.id})


def security_rules(d: Deployment) -> list[azure.network.SecurityRuleArgs]:
    return [azure.network.SecurityRuleArgs(**rule) for rule in azure_security_rules(d).values()]


@dataclass
class NetworkArgs:
    deployment: Deployment
    resource_group_name: pulumi.Input[str]
    network_security_group_id: pulumi.Input[str]


class Network(pulumi.ComponentResource):
    """A virtual network with one subnet, guarded by the firewall's NSG."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Network"), name, None, opts)
        d = args.deployment
        self.vnet = azure.network.VirtualNetwork(
            f"{name}-vnet", virtual_network_name=azure_name(d, "vnet"),
            resource_group_name=args.resource_group_name, location=d.region,
            address_space=azure.network.AddressSpaceArgs(address_prefixes=[d.network.range_of("vnet")]),
            tags=d.tags, opts=_child(self))
        self.subnet = azure.network.Subnet(
            f"{name}-subnet", subnet_name=azure_name(d, "subnet"),
            resource_group_name=args.resource_group_name,
            virtual_network_name=self.vnet.name, address_prefix=d.network.subnet,
            default_outbound_access=False,
            network_security_group=azure.network.NetworkSecurityGroupArgs(
                id=args.network_security_group_id),
            opts=_child(self))
        self.register_outputs({"virtualNetworkId": self.vnet.id, "subnetId": self.subnet.id})


@dataclass
class LoadBalancerArgs:
    deployment: Deployment
    resource_group_name: pulumi.Input[str]
    subscription_id: pulumi.Input[str]


class LoadBalancer(pulumi.ComponentResource):
    """Public IP -> listener rule -> backend pool probed on the health path; egress rule."""

    def __init__(self, name: str, args: LoadBalancerArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("LoadBalancer"), name, None, opts)
        d = args.deployment
        self.lb_name = azure_lb_name(d)  # explicit: the rules reference it by ARM id
        self.public_ip = azure.network.PublicIPAddress(
            f"{name}-ip", public_ip_address_name=azure_name(d, "public_ip"),
            resource_group_name=args.resource_group_name, location=d.region,
            sku=azure.network.PublicIPAddressSkuArgs(name=AZURE_SKU, tier=AZURE_SKU_TIER),
            public_ip_allocation_method=AZURE_IP_ALLOCATION,
            public_ip_address_version=AZURE_IP_VERSION,
            zones=list(d.zones) or None, tags=d.tags, opts=_child(self))
        ids = pulumi.Output.all(args.subscription_id, args.resource_group_name).apply(
            lambda v: {kind: lb_child_id(v[0], v[1], self.lb_name, kind, child)
                       for kind, child in (("frontendIPConfigurations", FRONTEND),
                                           ("backendAddressPools", POOL), ("probes", PROBE))})
        self.lb = azure.network.LoadBalancer(
            f"{name}-lb", load_balancer_name=self.lb_name,
            resource_group_name=args.resource_group_name, location=d.region,
            sku=azure.network.LoadBalancerSkuArgs(name=AZURE_SKU, tier=AZURE_SKU_TIER),
            frontend_ip_configurations=[azure.network.FrontendIPConfigurationArgs(
                name=FRONTEND, public_ip_address=azure.network.PublicIPAddressArgs(
                    id=self.public_ip.id))],
            backend_address_pools=[azure.network.BackendAddressPoolArgs(name=POOL)],
            probes=[health_probe(d.health)],
            load_balancing_rules=[listener_rule(d, ids)],
            outbound_rules=[egress_rule(ids)],
            inbound_nat_rules=[ssh_nat_rule(d, ids)] if azure_ipv4(d.ssh_cidrs) else None,
            tags=d.tags, opts=_child(self))
        # Through the balancer's id, so whoever uses these waits for the balancer.
        self.backend_pool_id = pulumi.Output.all(self.lb.id, ids).apply(
            lambda v: v[1]["backendAddressPools"])
        self.probe_id = pulumi.Output.all(self.lb.id, ids).apply(lambda v: v[1]["probes"])
        self.endpoint = self.public_ip.ip_address.apply(
            lambda address: f"http://{address}:{d.listener_port}")
        self.register_outputs({"publicIp": self.public_ip.ip_address, "endpoint": self.endpoint,
                               "loadBalancerId": self.lb.id})


def health_probe(h: HealthCheck) -> azure.network.ProbeArgs:
    return azure.network.ProbeArgs(**azure_probe(h))


def listener_rule(d: Deployment, ids: pulumi.Output[dict]
                  ) -> azure.network.LoadBalancingRuleArgs:
    return azure.network.LoadBalancingRuleArgs(
        name=RULE, protocol="Tcp", frontend_port=d.listener_port, backend_port=d.service_port,
        frontend_ip_configuration=azure.network.SubResourceArgs(
            id=ids.apply(lambda i: i["frontendIPConfigurations"])),
        backend_address_pool=azure.network.SubResourceArgs(
            id=ids.apply(lambda i: i["backendAddressPools"])),
        probe=azure.network.SubResourceArgs(id=ids.apply(lambda i: i["probes"])),
        idle_timeout_in_minutes=azure_idle_timeout_minutes(d.idle_timeout_seconds),
        enable_tcp_reset=True, enable_floating_ip=False, disable_outbound_snat=True,
        load_distribution=AZURE_LOAD_DISTRIBUTION)


def egress_rule(ids: pulumi.Output[dict]) -> azure.network.OutboundRuleArgs:
    return azure.network.OutboundRuleArgs(
        name=EGRESS, protocol=AZURE_EGRESS_PROTOCOL, enable_tcp_reset=True,
        frontend_ip_configurations=[azure.network.SubResourceArgs(
            id=ids.apply(lambda i: i["frontendIPConfigurations"]))],
        backend_address_pool=azure.network.SubResourceArgs(
            id=ids.apply(lambda i: i["backendAddressPools"])))


def ssh_nat_rule(d: Deployment, ids: pulumi.Output[dict]) -> azure.network.InboundNatRuleArgs:
    first, last = d.ssh_nat_range
    return azure.network.InboundNatRuleArgs(
        name=SSH, protocol="Tcp", backend_port=d.ssh_port,
        frontend_port_range_start=first, frontend_port_range_end=last,
        frontend_ip_configuration=azure.network.SubResourceArgs(
            id=ids.apply(lambda i: i["frontendIPConfigurations"])),
        backend_address_pool=azure.network.SubResourceArgs(
            id=ids.apply(lambda i: i["backendAddressPools"])))


@dataclass
class TokenSecretArgs:
    deployment: Deployment
    resource_group_name: pulumi.Input[str]
    tenant_id: pulumi.Input[str]
    reader_principal_id: pulumi.Input[str]  # the scale set's identity
    token: pulumi.Input[str] | None
    api_key: pulumi.Input[str] | None = None  # the generated key (components.apikey)


class TokenSecret(pulumi.ComponentResource):
    """The stack's Key Vault, whenever the deployment keeps a secret: one access policy (the
    VMs' identity: get secrets), the Hugging Face token as secret `secret.name` (when given),
    and the generated API key as secret `api_key.name` (`api_key_secret`).

    An access policy rather than RBAC: "get" on secrets is exactly what the VMs need, and it
    needs no role-assignment rights from whoever runs `pulumi up`.

    The vault's name is global across Azure, so azure-native names it (autonaming: the
    resource's name, here `azure_vault_prefix`, plus 8 random hex digits, drawn once and kept
    in the state). Soft delete: azure-native cannot purge a vault on delete
    (pulumi/pulumi-azure-native#1174), and `create_mode: recover` fails when there is nothing
    to recover, so it cannot be set ahead of time; a stack created again after a destroy draws
    a new name instead, and the old vault is purged by Azure after the 7-day retention.
    """

    def __init__(self, name: str, args: TokenSecretArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("TokenSecret"), name, None, opts)
        d = args.deployment
        self.vault = azure.keyvault.Vault(
            azure_vault_prefix(d), resource_group_name=args.resource_group_name,
            location=d.region, tags=d.tags, opts=_child(self),
            properties=azure.keyvault.VaultPropertiesArgs(
                tenant_id=args.tenant_id,
                sku=azure.keyvault.SkuArgs(family=azure.keyvault.SkuFamily.A,
                                       name=azure.keyvault.SkuName.STANDARD),
                enable_rbac_authorization=False,
                soft_delete_retention_in_days=AZURE_VAULT_RETENTION_DAYS,
                access_policies=[azure.keyvault.AccessPolicyEntryArgs(
                    tenant_id=args.tenant_id, object_id=args.reader_principal_id,
                    permissions=azure.keyvault.PermissionsArgs(secrets=["get"]))]))
        self.secret = None
        if d.secret is not None and args.token is not None:
            self.secret = self._secret(f"{name}-secret", d.secret.name, args.token, args)
        self.api_key_secret = None
        if d.api_key is not None and args.api_key is not None:
            self.api_key_secret = self._secret(f"{name}-api-key", d.api_key.name, args.api_key,
                                               args)
        self.register_outputs({"vaultUri": self.vault.properties.vault_uri})

    def _secret(self, name: str, secret_name: str, value: pulumi.Input[str],
                args: TokenSecretArgs) -> azure.keyvault.Secret:
        """One secret in the vault, its value a Pulumi secret whatever came in."""
        return azure.keyvault.Secret(
            name, secret_name=secret_name, vault_name=self.vault.name,
            resource_group_name=args.resource_group_name, tags=args.deployment.tags,
            properties=azure.keyvault.SecretPropertiesArgs(
                value=pulumi.Output.secret(value), content_type=AZURE_SECRET_CONTENT_TYPE),
            opts=_child(self))


@dataclass
class FrontDoorArgs:
    deployment: Deployment
    resource_group_name: pulumi.Input[str]
    origin_address: pulumi.Input[str]  # the balancer's public IP


class FrontDoor(pulumi.ComponentResource):
    """HTTPS on the domain (the Standard balancer is L4 and terminates no TLS): a Front Door
    Standard profile whose route serves the domain with a managed certificate (TLS 1.2 or
    later), redirects HTTP to HTTPS and forwards over HTTP to the balancer's public IP on the
    listener port; nothing is cached (no cache configuration). With --dns-zone it writes the
    `_dnsauth` TXT record that validates the certificate and the domain's CNAME to the
    endpoint; without, `dns_records` lists them for the user.

    The profile is named from the scope; the endpoint's host name is global, so azure-native
    names the endpoint (autonaming: `azure_name(d, "endpoint")` plus a random suffix kept in
    the state), and two stacks never share one.
    """

    def __init__(self, name: str, args: FrontDoorArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("FrontDoor"), name, None, opts)
        d = args.deployment
        tls = d.tls
        assert tls is not None  # built only with a domain
        group = args.resource_group_name
        self.profile = azure.cdn.Profile(
            f"{name}-profile", profile_name=azure_name(d, "front_door"), location="global",
            resource_group_name=group, sku=azure.cdn.SkuArgs(name=AZURE_FRONT_DOOR_SKU),
            origin_response_timeout_seconds=AZURE_FRONT_DOOR_TIMEOUT_SECONDS,
            tags=d.tags, opts=_child(self))
        profile = self.profile.name
        self.endpoint = azure.cdn.AFDEndpoint(
            azure_name(d, "endpoint"), location="global", enabled_state="Enabled",
            resource_group_name=group, profile_name=profile, tags=d.tags, opts=_child(self))
        self.origin_group = azure.cdn.AFDOriginGroup(
            f"{name}-origins", origin_group_name=azure_name(d, "origin_group"),
            resource_group_name=group, profile_name=profile, session_affinity_state="Disabled",
            health_probe_settings=azure.cdn.HealthProbeParametersArgs(
                probe_path=d.health.path, probe_protocol=azure.cdn.ProbeProtocol.HTTP,
                probe_request_type=azure.cdn.HealthProbeRequestType(
                    AZURE_FRONT_DOOR_PROBE_METHOD),
                probe_interval_in_seconds=AZURE_FRONT_DOOR_PROBE_SECONDS),
            load_balancing_settings=azure.cdn.LoadBalancingSettingsParametersArgs(
                **AZURE_FRONT_DOOR_SAMPLING),
            opts=_child(self))
        self.origin = azure.cdn.AFDOrigin(
            f"{name}-origin", origin_name=azure_name(d, "origin"),
            resource_group_name=group, profile_name=profile,
            origin_group_name=self.origin_group.name, host_name=args.origin_address,
            http_port=d.listener_port, https_port=tls.port, enabled_state="Enabled",
            enforce_certificate_name_check=False,  # HTTP to the origin: no certificate
            opts=_child(self))
        zone = azure_dns_name(d) if tls.dns_zone else None
        self.domain = azure.cdn.AFDCustomDomain(
            f"{name}-domain", custom_domain_name=azure_name(d, "custom_domain"),
            resource_group_name=group, profile_name=profile, host_name=tls.domain,
            azure_dns_zone=azure.cdn.ResourceReferenceArgs(id=tls.dns_zone) if zone else None,
            tls_settings=azure.cdn.AFDDomainHttpsParametersArgs(
                certificate_type=AZURE_FRONT_DOOR_CERTIFICATE,
                minimum_tls_version=azure.cdn.AfdMinimumTlsVersion(AZURE_FRONT_DOOR_MIN_TLS)),
            opts=_child(self))
        # after the origin: Azure refuses a route to an origin group without origins
        self.route = azure.cdn.Route(
            f"{name}-route", route_name=azure_name(d, "route"),
            resource_group_name=group, profile_name=profile, endpoint_name=self.endpoint.name,
            origin_group=azure.cdn.ResourceReferenceArgs(id=self.origin_group.id),
            custom_domains=[azure.cdn.ActivatedResourceReferenceArgs(id=self.domain.id)],
            supported_protocols=AZURE_FRONT_DOOR_PROTOCOLS, https_redirect="Enabled",
            forwarding_protocol=AZURE_FRONT_DOOR_FORWARDING,
            patterns_to_match=AZURE_FRONT_DOOR_PATTERNS,
            # the domain is the service's one address; Front Door's own host name serves nothing
            link_to_default_domain="Disabled", enabled_state="Enabled",
            opts=_child(self, depends_on=[self.origin]))
        token = self.domain.validation_properties.apply(
            lambda v: v.validation_token if v else None)
        # names and types known now, values once deployed (so a preview lists them too)
        self.dns_records: list[dict[str, Any]] | None = None
        if zone:
            self._records(name, zone, token)
        else:
            self.dns_records = azure_dns_records(d, self.endpoint.host_name, token)
        self.register_outputs({"hostName": self.endpoint.host_name})

    def _records(self, name: str, zone: tuple[str, str, str], token: pulumi.Output) -> None:
        """The domain's records in its zone; the CNAME once the route serves the domain
        (else Front Door's validation of the CNAME fails)."""
        group, zone_name, relative = zone
        self.txt = azure.dns.RecordSet(
            f"{name}-txt", relative_record_set_name=f"_dnsauth.{relative}", record_type="TXT",
            resource_group_name=group, zone_name=zone_name, ttl=AZURE_DNS_TTL,
            txt_records=[azure.dns.TxtRecordArgs(value=[token])], opts=_child(self))
        self.cname = azure.dns.RecordSet(
            f"{name}-cname", relative_record_set_name=relative, record_type="CNAME",
            resource_group_name=group, zone_name=zone_name, ttl=AZURE_DNS_TTL,
            cname_record=azure.dns.CnameRecordArgs(cname=self.endpoint.host_name),
            opts=_child(self, depends_on=[self.route]))


@dataclass
class ScaleSetArgs:
    deployment: Deployment
    resource_group_name: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    backend_pool_id: pulumi.Input[str]
    probe_id: pulumi.Input[str]
    identity_id: pulumi.Input[str]
    ssh_public_key: str
    vault_name: pulumi.Input[str] | None  # where the VMs read the secrets, if there are any
    # Created before the scale set, deleted after it: the balancer (its probe, rules and
    # outbound rule are inline, see ScaleSet) and the token with its access policy.
    ready_first: list[pulumi.Resource]
    # The on-demand fallback scale set (dynamic_ondemand_fallback): its own names; the
    # deployment is then azure_fallback's regular-priority variant.
    fallback: bool = False


class ScaleSet(pulumi.ComponentResource):
    """The GPU VM scale set behind the balancer's pool.

    Uniform orchestration with the balancer's probe as the repair signal. Spot with on-demand
    replicas below it needs a priority mix, which only Flexible orchestration has (Azure "Spot
    Priority Mix": Flexible only, single placement group off); Flexible scale sets take their
    health from the Application Health extension, so that path probes the same path with it.
    Only the primary size is used: Azure's multi-size "instance mix" (sku_profile) is Flexible
    only and limited to the A/B/D/E/F families (no GPU sizes), so the other ranked sizes are
    left to the caller's fallback to the next candidate.

    Template changes roll through the group in both modes (Rolling upgrades, gated by the
    probe or the extension; upgrade policies on Flexible scale sets are GA since November
    2024). The scale set depends on the balancer explicitly:
    Azure refuses a scale set health probe that no rule uses yet, and refuses to delete a rule
    whose probe a scale set still uses (CannotRemoveRuleUsedByProbeUsedByVMSS); the rules are
    inline in the LoadBalancer resource, so depending on it orders both.
    """

    def __init__(self, name: str, args: ScaleSetArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("ScaleSet"), name, None, opts)
        d = args.deployment
        flexible = azure_flexible(d)
        kind = "fallback_scale_set" if args.fallback else "scale_set"
        prefix = azure_fallback_computer_name_prefix(d) if args.fallback \
            else azure_computer_name_prefix(d)
        # An autoscaled group's size belongs to its autoscale setting: an update must not set
        # it back to the deployed count.
        autoscaled = d.autoscaling is not None or args.fallback
        mode: dict[str, Any] = {
            "orchestration_mode": "Uniform", "overprovision": AZURE_OVERPROVISION}
        if flexible:
            mode = {"orchestration_mode": "Flexible",
                    "platform_fault_domain_count": AZURE_FLEX_FAULT_DOMAINS,
                    "single_placement_group": False,
                    "priority_mix_policy": azure.compute.PriorityMixPolicyArgs(
                        base_regular_priority_count=d.on_demand_base,
                        regular_priority_percentage_above_base=0)}
        self.vmss = azure.compute.VirtualMachineScaleSet(
            f"{name}-vmss", vm_scale_set_name=azure_name(d, kind),
            resource_group_name=args.resource_group_name, location=d.region,
            sku=azure.compute.SkuArgs(name=d.primary.instance_type, tier="Standard",
                                      capacity=d.desired_replicas),
            zones=list(d.zones) or None, zone_balance=azure_zone_balance(d),
            identity=azure.compute.VirtualMachineScaleSetIdentityArgs(
                type=azure.compute.ResourceIdentityType(AZURE_IDENTITY_TYPE),
                user_assigned_identities=[args.identity_id]),
            automatic_repairs_policy=azure.compute.AutomaticRepairsPolicyArgs(
                enabled=True,
                grace_period=azure_repair_grace_period(d.health.grace_period_seconds),
                repair_action=AZURE_REPAIR_ACTION),
            spot_restore_policy=azure.compute.SpotRestorePolicyArgs(
                enabled=True, restore_timeout=AZURE_SPOT_RESTORE_TIMEOUT)
            if azure_spot_restore(d) else None,
            upgrade_policy=upgrade_policy(d),
            virtual_machine_profile=vm_profile(d, args, flexible, prefix),
            tags=d.tags, opts=_child(self, depends_on=args.ready_first,
                                     ignore_changes=["sku.capacity"] if autoscaled else None),
            **mode)
        self.register_outputs({"scaleSetName": self.vmss.name, "scaleSetId": self.vmss.id})


def upgrade_policy(d: Deployment) -> azure.compute.UpgradePolicyArgs:
    """Rolling upgrades (see clouds.azure.AZURE_ROLLING_UPGRADE for the values)."""
    return azure.compute.UpgradePolicyArgs(
        mode=azure.compute.UpgradeMode(AZURE_UPGRADE_MODE),
        rolling_upgrade_policy=azure.compute.RollingUpgradePolicyArgs(
            max_batch_instance_percent=AZURE_ROLLING_UPGRADE["max_batch_instance_percent"],
            max_unhealthy_instance_percent=AZURE_ROLLING_UPGRADE[
                "max_unhealthy_instance_percent"],
            max_unhealthy_upgraded_instance_percent=AZURE_ROLLING_UPGRADE[
                "max_unhealthy_upgraded_instance_percent"],
            pause_time_between_batches=azure_upgrade_pause(d)))


def vm_profile(d: Deployment, args: ScaleSetArgs, flexible: bool, prefix: str | None = None
               ) -> azure.compute.VirtualMachineScaleSetVMProfileArgs:
    spot: dict[str, Any] = dict(azure_priority(d))
    if d.use_spot:
        spot["billing_profile"] = azure.compute.BillingProfileArgs(max_price=AZURE_SPOT_MAX_PRICE)
    # No security_profile: at the SDK's API version (2024-11-01) that means the Standard
    # security type (no Trusted Launch / Secure Boot), which every GPU size here accepts.
    return azure.compute.VirtualMachineScaleSetVMProfileArgs(
        os_profile=os_profile(d, args.ssh_public_key, args.vault_name, prefix),
        storage_profile=azure.compute.VirtualMachineScaleSetStorageProfileArgs(
            image_reference=azure.compute.ImageReferenceArgs(**image_reference(d.image)),
            os_disk=azure.compute.VirtualMachineScaleSetOSDiskArgs(
                create_option="FromImage", disk_size_gb=d.disk_size_gb,
                caching=azure.compute.CachingTypes(AZURE_OS_DISK_CACHING),
                managed_disk=azure.compute.VirtualMachineScaleSetManagedDiskParametersArgs(
                    storage_account_type=d.disk_type))),
        network_profile=network_profile(d, args, flexible),
        extension_profile=health_extension(d.health) if flexible else None,
        **spot)


def custom_data(d: Deployment, vault_name: pulumi.Input[str] | None) -> pulumi.Input[str]:
    """The bootstrap, base64; with a vault, rendered once its name is known."""
    if vault_name is None:
        return base64.b64encode(render_cloud_init(d).encode()).decode()
    return pulumi.Output.from_input(vault_name).apply(lambda vault: base64.b64encode(
        render_cloud_init(azure_with_vault(d, vault)).encode()).decode())


def os_profile(d: Deployment, ssh_public_key: str, vault_name: pulumi.Input[str] | None,
               prefix: str | None = None) -> azure.compute.VirtualMachineScaleSetOSProfileArgs:
    """SSH key login only; cloud-init reads the bootstrap from custom data (base64)."""
    return azure.compute.VirtualMachineScaleSetOSProfileArgs(
        computer_name_prefix=prefix or azure_computer_name_prefix(d), admin_username=d.admin_user,
        custom_data=custom_data(d, vault_name),
        linux_configuration=azure.compute.LinuxConfigurationArgs(
            disable_password_authentication=True, provision_vm_agent=True,
            ssh=azure.compute.SshConfigurationArgs(public_keys=[azure.compute.SshPublicKeyArgs(
                path=f"/home/{d.admin_user}/.ssh/authorized_keys", key_data=ssh_public_key)])))


def network_profile(d: Deployment, args: ScaleSetArgs, flexible: bool
                    ) -> azure.compute.VirtualMachineScaleSetNetworkProfileArgs:
    nic = azure.compute.VirtualMachineScaleSetNetworkConfigurationArgs(
        name="nic", primary=True,
        ip_configurations=[azure.compute.VirtualMachineScaleSetIPConfigurationArgs(
            name="ipconfig", primary=True,
            subnet=azure.compute.ApiEntityReferenceArgs(id=args.subnet_id),
            load_balancer_backend_address_pools=[azure.compute.SubResourceArgs(
                id=args.backend_pool_id)])])
    if flexible:
        return azure.compute.VirtualMachineScaleSetNetworkProfileArgs(
            network_api_version=FLEX_NETWORK_API, network_interface_configurations=[nic])
    return azure.compute.VirtualMachineScaleSetNetworkProfileArgs(
        health_probe=azure.compute.ApiEntityReferenceArgs(id=args.probe_id),
        network_interface_configurations=[nic])


def health_extension(h: HealthCheck) -> azure.compute.VirtualMachineScaleSetExtensionProfileArgs:
    """Application Health extension (binary states) probing what the balancer probes."""
    return azure.compute.VirtualMachineScaleSetExtensionProfileArgs(extensions=[
        azure.compute.VirtualMachineScaleSetExtensionArgs(
            **AZURE_HEALTH_EXTENSION, auto_upgrade_minor_version=True,
            settings=azure_health_settings(h))])


@dataclass
class AutoscalingArgs:
    deployment: Deployment
    resource_group_name: pulumi.Input[str]
    scale_set_id: pulumi.Input[str]  # the main (spot) scale set: its metric drives every rule
    fallback_scale_set_id: pulumi.Input[str] | None
    principal_id: pulumi.Input[str]  # the VMs' user-assigned identity
    subscription_id: pulumi.Input[str]


class Autoscaling(pulumi.ComponentResource):
    """An autoscale setting per scale set (enabled: the API's default is off), and the
    Monitoring Metrics Publisher role for the VMs' identity on each scale set, which their
    replicas publish the metric to."""

    def __init__(self, name: str, args: AutoscalingArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Autoscaling"), name, None, opts)
        d = args.deployment
        role = pulumi.Output.from_input(args.subscription_id).apply(azure_role_definition)
        for setting in azure_autoscales(d):
            target = args.fallback_scale_set_id if setting.fallback else args.scale_set_id
            suffix = "-fallback" if setting.fallback else ""
            azure.monitor.AutoscaleSetting(
                f"{name}{suffix}", autoscale_setting_name=setting.name,
                resource_group_name=args.resource_group_name, location=d.region,
                enabled=True, target_resource_uri=target, target_resource_location=d.region,
                profiles=[autoscale_profile(setting, args.scale_set_id)],
                tags=azure_autoscale_tags(d), opts=_child(self))
            azure.authorization.RoleAssignment(
                f"{name}{suffix}-publisher",
                role_assignment_name=azure_role_assignment_name(d, setting.fallback),
                scope=target, role_definition_id=role, principal_id=args.principal_id,
                principal_type=AZURE_PRINCIPAL_TYPE, opts=_child(self))
        self.register_outputs({})


def autoscale_profile(setting: AzureAutoscale, metric_source: pulumi.Input[str]
                      ) -> azure.monitor.AutoscaleProfileArgs:
    """Capacity bounds and rules; the counts are strings in this API."""
    return azure.monitor.AutoscaleProfileArgs(
        name=AZURE_PROFILE,
        capacity=azure.monitor.ScaleCapacityArgs(
            minimum=str(setting.minimum), maximum=str(setting.maximum),
            default=str(setting.default)),
        rules=[azure.monitor.ScaleRuleArgs(
            metric_trigger=azure.monitor.MetricTriggerArgs(
                metric_name=setting.metric, metric_namespace=setting.namespace,
                metric_resource_uri=metric_source, time_grain=AZURE_TIME_GRAIN,
                statistic=azure.monitor.MetricStatisticType(AZURE_STATISTIC),
                time_window=rule.time_window,
                time_aggregation=azure.monitor.TimeAggregationType(rule.time_aggregation),
                operator=azure.monitor.ComparisonOperationType(rule.operator),
                threshold=rule.threshold),
            scale_action=azure.monitor.ScaleActionArgs(
                direction=azure.monitor.ScaleDirection(rule.direction),
                type=azure.monitor.ScaleType(rule.type), value=str(rule.value),
                cooldown=rule.cooldown))
            for rule in setting.rules])


class Service(pulumi.ComponentResource):
    """The whole service on Azure; `endpoint` is the balancer's public IP and listener port."""

    def __init__(self, name: str, deployment: Deployment,
                 hf_token: pulumi.Input[str] | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_type("Service"), name, None, opts)
        d = deployment
        if len(d.instances) > 1:
            pulumi.log.info(f"Azure scale sets take one GPU size: {d.primary.instance_type}; "
                            "the other ranked sizes stay fallback candidates", self)
        client = azure.authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self))
        self.group = azure.resources.ResourceGroup(
            f"{name}-rg", resource_group_name=azure_name(d, "resource_group"),
            location=d.region, tags=d.tags, opts=_child(self))
        self.identity = azure.managedidentity.UserAssignedIdentity(
            f"{name}-id", resource_name_=azure_name(d, "identity"),
            resource_group_name=self.group.name, location=d.region, tags=d.tags,
            opts=_child(self))
        firewall = Firewall(f"{name}-fw", FirewallArgs(d, self.group.name), _child(self))
        network = Network(f"{name}-net", NetworkArgs(d, self.group.name, firewall.nsg.id),
                          _child(self))
        lb = LoadBalancer(f"{name}-lb", LoadBalancerArgs(
            d, self.group.name, client.subscription_id), _child(self))
        # drawn here, or the service's one key read from its key stack (shared_api_key)
        key = service_key(f"{name}-api-key", d, _child(self)) if d.api_key else None
        token = self._token(name, d, client.tenant_id, hf_token, key)
        cache = WeightCache(f"{name}-cache", WeightCacheArgs(
            d, self.group.name, self.identity.principal_id, client.subscription_id),
            _child(self)) if d.weight_cache else None
        scale_set_args = ScaleSetArgs(
            d, self.group.name, network.subnet.id, lb.backend_pool_id, lb.probe_id,
            self.identity.id, ssh_public_key(), token.vault.name if token else None,
            [lb.lb, *([token] if token else []), *([cache] if cache else [])])
        scale_set = ScaleSet(f"{name}-group", scale_set_args, _child(self))
        self._autoscaling(name, d, scale_set_args, scale_set, client.subscription_id)
        # the balancer's address: Static, so known once its public IP exists
        address = cast(pulumi.Output[str], lb.public_ip.ip_address)
        front = FrontDoor(f"{name}-https", FrontDoorArgs(d, self.group.name, address),
                          _child(self)) if d.tls else None
        self.endpoint = pulumi.Output.from_input(f"https://{d.tls.domain}") if d.tls \
            else lb.endpoint
        self.lb_host = address  # what a front reaches: the balancer's public IPv4
        self.group_name = scale_set.vmss.name
        self.group_id = scale_set.vmss.id
        # The key (a Pulumi secret) and where the vault keeps it (the secret's ARM id, as
        # the Terraform stack's resource_versionless_id); read by components.build_service.
        stored = token.api_key_secret if token else None
        self.api_key = key
        self.api_key_ref = stored.id if stored else None
        # Without --dns-zone, the records the user creates (see FrontDoor).
        self.front_door = front
        self.dns_records = front.dns_records if front else None
        self.register_outputs({"endpoint": self.endpoint, "groupName": self.group_name,
                               "groupId": self.group_id})

    def _autoscaling(self, name: str, d: Deployment, args: ScaleSetArgs, main: ScaleSet,
                     subscription_id: pulumi.Input[str]) -> None:
        """The autoscale settings, and the on-demand fallback scale set when asked for."""
        settings = azure_autoscales(d)
        if not settings:
            return
        fallback = None
        if any(s.fallback for s in settings):
            fallback = ScaleSet(f"{name}-fallback", replace(
                args, deployment=azure_fallback(d), fallback=True), _child(self))
        Autoscaling(f"{name}-scale", AutoscalingArgs(
            d, self.group.name, main.vmss.id, fallback.vmss.id if fallback else None,
            self.identity.principal_id, subscription_id), _child(self))

    def _token(self, name: str, d: Deployment, tenant_id: pulumi.Input[str],
               hf_token: pulumi.Input[str] | None, key: pulumi.Output[str] | None
               ) -> TokenSecret | None:
        """The vault (and the secrets in it) the VMs read at boot; none when no secret."""
        if not azure_has_vault(d):
            return None
        if d.secret is not None and hf_token is None:
            pulumi.log.warn(f"no Hugging Face token given (servestack:hfToken): the instances "
                            f"expect secret {d.secret.name} in the stack's Key Vault", self)
        return TokenSecret(f"{name}-token", TokenSecretArgs(
            d, self.group.name, tenant_id, self.identity.principal_id, hf_token, key),
            _child(self))


def ssh_public_key() -> str:
    """servestack:sshPublicKey if set, else the lock-only key (servestack.sshkey)."""
    configured = pulumi.Config("servestack").get("sshPublicKey")
    return configured.strip() if configured else lock_only_ssh_key()


# --- read-only probes (the deploy loop's engine uses these) ---
# Programs that only read (invokes); servestack.pulumi.engine runs each in a throwaway stack.
# Azure offers no quota data source here, and a scale set without capacity fails `up` itself,
# so the only probe is the sweep.

# What these probes answer: names of servestack.engine.Capabilities fields (the sweep
# reports Pulumi type tokens, so what it finds can be imported: adopt_strays).
PROBES = ("adopt_strays", "cloud_sweep", "credentials_check")
GROUP_TYPE = "azure-native:resources:ResourceGroup"


def sweep_program(deployment: Deployment, snapshot: list[dict]) -> Callable[[], None] | None:
    """Exports `found`: the resource groups the stack's state had that still exist (every
    resource of the service lives in them); None when the state had none to look for."""
    groups = [r for r in snapshot if r.get("type") == GROUP_TYPE]
    if not groups:
        return None
    return lambda: pulumi.export("found", _existing(groups))


def _existing(groups: list[dict]) -> list[dict]:
    found = []
    for group in groups:
        name = (group.get("outputs") or {}).get("name") or str(group.get("id", "")).rsplit("/")[-1]
        try:
            azure.resources.get_resource_group(resource_group_name=name)
        except Exception:  # noqa: BLE001 - a failed lookup means the group is gone
            continue
        found.append({"type": GROUP_TYPE, "name": name, "id": group.get("id")})
    return found


def identity_probe() -> tuple[dict[str, str], Callable[[], None]]:
    """`credentials_check`: exports `identity`, the subscription and tenant the credentials
    are for (the provider fails without a login or ARM_* credentials)."""

    def program() -> None:
        me = azure.authorization.get_client_config()
        pulumi.export("identity", f"subscription {me.subscription_id} (tenant {me.tenant_id}, "
                                  f"client {me.client_id})")

    return {}, program
