"""GCP as Terraform: a regional external Application Load Balancer in front of a regional MIG.

The same service components/gcp.py builds: the service's own VPC with a subnet for the VMs and
the proxy-only subnet the regional Envoy load balancer needs; firewall rules admitting the
service port from Google's health checkers and from the proxies only (SSH from `ssh_cidrs`);
the VMs' own service account, which may read its secrets and nothing else; one regional
HTTP health check for the load balancer and autohealing; regional instance template(s) (spot
and/or on-demand) and a regional MIG with the deployment's zones, ranked machine types (instance
flexibility), spot split and rolling-update policy; a static address, backend service, URL map,
HTTP proxy and forwarding rule on `listener_port`, with a Cloud Armor policy when clients are
limited to `allow_cidrs`. The VMs have no public address: a Cloud Router's NAT carries their
egress. A replica_policy that autoscales adds a regional autoscaler per MIG, the on-demand
fallback MIG (dynamic_ondemand_fallback) and the VMs' metric writer role when they ship the
autoscaler's gauge (servestack.clouds.gcp: gcp_autoscaling_policy). Every MIG waits for the
NAT, both secrets' versions and accessor bindings, and the metric writer role (group_waits).

With an API key (`d.api_key`), the key (terraform_data, servestack.terraform.api_key_resources)
goes to a Secret Manager secret of its own that only the VMs' account may read. With TLS
(`d.tls`), HTTPS on 443 of the same address: a Google-managed regional certificate from
Certificate Manager (a DNS authorization proves the domain), an HTTPS proxy with a TLS 1.2+
policy; port 80 then redirects to https. The DNS records go into the Cloud DNS managed zone
when one is given, else to the `dns_records` output for the user to create.

Names are `<service>-<digest of the stack>-<kind>` (servestack.clouds.gcp.gcp_name, the same the
Pulumi component gives): two services, or two stacks of one, never collide in a project. Every
value comes from the `Deployment`, and how GCP spells it from servestack.clouds.gcp, shared with
the Pulumi component. The project is the variable `project` (terraform.tfvars.json).
"""

from __future__ import annotations

from typing import Any

from servestack.bootstrap import render_cloud_init
from servestack.clouds.gcp import (
    GCP_ADDRESS_TYPE,
    GCP_ARMOR_TYPE,
    GCP_CLOUD_PLATFORM_SCOPE,
    GCP_DNS_AUTHORIZATION_RECORD,
    GCP_DNS_AUTHORIZATION_TYPE,
    GCP_DNS_TTL,
    GCP_FLOW_LOGS,
    GCP_HEALTH_CHECK_RANGES,
    GCP_HTTPS_REDIRECT,
    GCP_LB_SCHEME,
    GCP_LB_TIER,
    GCP_METRIC_WRITER,
    GCP_NAMED_PORT,
    GCP_NAT,
    GCP_NAT_LOG,
    GCP_NAT_SOURCE_RANGES,
    GCP_PROXY_SUBNET,
    GCP_SECRET_ACCESSOR,
    GCP_SSL_POLICY,
    GCP_TARGET_SHAPE,
    GCP_VPC,
    gcp_autoheal_delay,
    gcp_autoscaling_policy,
    gcp_backend,
    gcp_client_rules,
    gcp_draining_seconds,
    gcp_flexible_choices,
    gcp_fqdn,
    gcp_has_fallback_group,
    gcp_labels,
    gcp_metadata,
    gcp_metric_type,
    gcp_name,
    gcp_network_tag,
    gcp_nic_type,
    gcp_scheduling,
    gcp_service_account_id,
    gcp_template_kinds,
    gcp_template_prefix,
    gcp_update_policy,
    gcp_versions,
)
from servestack.deployment.model import OUTPUT_DNS_RECORDS, Deployment
from servestack.terraform import (
    TOKEN_VAR,
    TOKEN_VERSION_VAR,
    api_key_resources,
    api_key_value,
    compact,
    expr,
    merge,
    service_outputs,
    template,
)
from servestack.terraform.gcp_cache import cache_ready, weight_cache

# (local name, requirement): the provider this renderer's arguments were checked against.
# 7.8 is the first release with every argument used: `security_policy` on
# google_compute_region_backend_service went GA in 7.8.0 (CHANGELOG, #24693); the rest are
# older (instance_flexibility_policy 6.11, secret_data_wo 6.23).
PROVIDER = ("google", {"source": "hashicorp/google", "version": "~> 7.8"})

PROJECT = expr("var.project")


def render(d: Deployment) -> dict[str, Any]:
    return {
        "variable": {"project": {"type": "string", "nullable": False,
                                 "description": "the GCP project to deploy into"}},
        "provider": {"google": {"project": PROJECT, "region": d.region}},
        "data": image_data(d),
        "resource": merge(network(d), egress(d), firewall(d), identity(d), token(d),
                          api_key(d), health_check(d), group(d), load_balancer(d), tls(d),
                          scaling(d), weight_cache(d)),
        "output": outputs(d),
    }


def labels(d: Deployment) -> dict[str, str]:
    return gcp_labels(d.tags)


def image_data(d: Deployment) -> dict[str, Any]:
    """The newest image of the deployment's family; nothing for an exact image."""
    if d.image.kind == "id":
        return {}
    project, family = d.image.gce_family()
    return {"google_compute_image": {"image": {"family": family, "project": project}}}


def network(d: Deployment) -> dict[str, Any]:
    vpc = expr("google_compute_network.vpc.id")
    return {
        "google_compute_network": {"vpc": {
            "name": gcp_name(d, "vpc"), "project": PROJECT, **GCP_VPC,
            "description": f"servestack {d.service}"}},
        "google_compute_subnetwork": {
            "vms": {"name": gcp_name(d, "vms"), "project": PROJECT, "region": d.region,
                    "network": vpc, "ip_cidr_range": d.network.subnet,
                    "private_ip_google_access": True, "log_config": GCP_FLOW_LOGS,
                    "description": f"servestack {d.service}: GPU VMs"},
            "proxy": {"name": gcp_name(d, "proxy-only"), "project": PROJECT, "region": d.region,
                      "network": vpc, "ip_cidr_range": d.network.proxy_subnet,
                      **GCP_PROXY_SUBNET,
                      "description": f"servestack {d.service}: load balancer proxies"}},
    }


def egress(d: Deployment) -> dict[str, Any]:
    """A Cloud Router and its NAT for the VMs' subnet only: their egress without public IPs."""
    return {
        "google_compute_router": {"nat": {
            "name": gcp_name(d, "router"), "project": PROJECT, "region": d.region,
            "network": expr("google_compute_network.vpc.id"),
            "description": f"servestack {d.service}: egress of the GPU VMs"}},
        "google_compute_router_nat": {"nat": {
            "name": gcp_name(d, "nat"), "project": PROJECT, "region": d.region,
            "router": expr("google_compute_router.nat.name"), **GCP_NAT,
            "subnetwork": [{"name": expr("google_compute_subnetwork.vms.id"),
                            "source_ip_ranges_to_nat": GCP_NAT_SOURCE_RANGES}],
            "log_config": GCP_NAT_LOG}},
    }


def _allow(d: Deployment, kind: str, sources: list[str], port: int, why: str) -> dict:
    return {"name": gcp_name(d, kind), "project": PROJECT,
            "network": expr("google_compute_network.vpc.id"), "direction": "INGRESS",
            "allow": [{"protocol": "tcp", "ports": [str(port)]}],
            "source_ranges": sources, "target_tags": [gcp_network_tag(d)],
            "description": f"servestack {d.service}: {why}"}


def firewall(d: Deployment) -> dict[str, Any]:
    """The service port from health checkers and the proxy-only subnet; SSH if asked."""
    rules = {
        "health_checks": _allow(d, "health-checks", list(GCP_HEALTH_CHECK_RANGES),
                                d.service_port, "Google health checkers to the service port "
                                                "(load balancer and autohealing)"),
        "lb_proxies": _allow(d, "lb-proxies", [d.network.range_of("proxy_subnet")], d.service_port,
                             "the load balancer's proxies (proxy-only subnet) to the service "
                             "port"),
    }
    if d.ssh_cidrs:
        rules["ssh"] = _allow(d, "ssh", list(d.ssh_cidrs), d.ssh_port,
                              "SSH from the operator's CIDRs")
    return {"google_compute_firewall": rules}


def identity(d: Deployment) -> dict[str, Any]:
    """The VMs' service account: no project role, only the accessor of its two secrets."""
    return {"google_service_account": {"vm": {
        "project": PROJECT, "account_id": gcp_service_account_id(d),
        "display_name": f"servestack {d.service} GPU VMs",
        "description": f"servestack candidate {d.candidate_id}"}}}


def token(d: Deployment) -> dict[str, Any]:
    """Secret Manager secret (in the region), its write-only version, the VMs' accessor."""
    if d.secret is None:
        return {}
    return {
        "google_secret_manager_secret": {"hf_token": {
            "project": PROJECT, "secret_id": d.token_secret.name, "labels": labels(d),
            "replication": {"user_managed": {"replicas": [{"location": d.region}]}}}},
        "google_secret_manager_secret_version": {"hf_token": {
            "secret": expr("google_secret_manager_secret.hf_token.id"),
            "secret_data_wo": expr(f"var.{TOKEN_VAR}"),
            "secret_data_wo_version": expr(f"var.{TOKEN_VERSION_VAR}")}},
        "google_secret_manager_secret_iam_binding": {"reader": {
            "project": PROJECT,
            "secret_id": expr("google_secret_manager_secret.hf_token.secret_id"),
            "role": GCP_SECRET_ACCESSOR,
            "members": [template("serviceAccount:",
                                 expr("google_service_account.vm.email"))]}},
    }


def api_key(d: Deployment) -> dict[str, Any]:
    """The generated API key (terraform_data), kept in its own Secret Manager secret (like the
    token's: in the region, labelled) as one write-only version, and the VMs' accessor on
    that secret only. The key reaches the version without being stored in it in the state."""
    if d.api_key is None:
        return {}
    secret = "google_secret_manager_secret.api_key"
    return merge(api_key_resources(d), {
        "google_secret_manager_secret": {"api_key": {
            "project": PROJECT, "secret_id": d.api_key_secret.name, "labels": labels(d),
            "replication": {"user_managed": {"replicas": [{"location": d.region}]}}}},
        "google_secret_manager_secret_version": {"api_key": {
            "secret": expr(f"{secret}.id"), "secret_data_wo": expr(api_key_value(d)),
            # The key never changes (terraform_data ignores later uuid()s): one version.
            "secret_data_wo_version": 1}},
        "google_secret_manager_secret_iam_binding": {"api_key_reader": {
            "project": PROJECT, "secret_id": expr(f"{secret}.secret_id"),
            "role": GCP_SECRET_ACCESSOR,
            "members": [template("serviceAccount:",
                                 expr("google_service_account.vm.email"))]}},
    })


def health_check(d: Deployment) -> dict[str, Any]:
    h = d.health
    return {"google_compute_region_health_check": {"http": {
        "name": gcp_name(d, "health"), "project": PROJECT, "region": d.region,
        "http_health_check": {"port": h.port, "request_path": h.path},
        "check_interval_sec": h.interval_seconds, "timeout_sec": h.timeout_seconds,
        "healthy_threshold": h.healthy_threshold, "unhealthy_threshold": h.unhealthy_threshold,
        "description": f"servestack {d.service}: GET {h.path} on port {h.port}"}}}


def instance_template(d: Deployment, *, spot: bool) -> dict[str, Any]:
    primary = d.primary
    accelerators = [{"type": primary.attached_gpu, "count": primary.accelerator_count}] \
        if primary.attached_gpu else None
    return compact({
        "name_prefix": gcp_template_prefix(d, "spot" if spot else "ondemand"),
        "project": PROJECT, "region": d.region,
        "description": f"servestack {d.service}: {'spot' if spot else 'on-demand'} "
                       f"{primary.instance_type}",
        "machine_type": primary.instance_type,
        "guest_accelerator": accelerators,
        "scheduling": gcp_scheduling(spot),
        "disk": [{"source_image": d.image.exact() if d.image.kind == "id"
                  else expr("data.google_compute_image.image.self_link"),
                  "boot": True, "auto_delete": True, "disk_size_gb": d.disk_size_gb,
                  "disk_type": d.disk_type, "labels": labels(d)}],
        "metadata": gcp_metadata(render_cloud_init(d)),
        # No access_config: no public address (egress goes through the router's NAT).
        "network_interface": [compact({
            "subnetwork": expr("google_compute_subnetwork.vms.id"),
            "nic_type": gcp_nic_type(d)})],
        "service_account": {"email": expr("google_service_account.vm.email"),
                            "scopes": [GCP_CLOUD_PLATFORM_SCOPE]},
        "tags": [gcp_network_tag(d)], "labels": labels(d),
        "lifecycle": {"create_before_destroy": True},
    })


def versions(d: Deployment) -> list[dict[str, Any]]:
    """One version per template (see mechanics.gcp_versions)."""
    return [compact({
        "name": kind,
        "instance_template": expr(f"google_compute_region_instance_template.{kind}.self_link"),
        "target_size": {"fixed": fixed} if fixed is not None else None})
        for kind, fixed in gcp_versions(d).items()]


def flexibility(d: Deployment) -> dict[str, Any] | None:
    choices = gcp_flexible_choices(d)
    if len(choices) < 2:
        return None
    return {"instance_selections": [
        {"name": c.instance_type, "machine_types": [c.instance_type], "rank": rank}
        for rank, c in enumerate(choices)]}


def group(d: Deployment) -> dict[str, Any]:
    # An autoscaler owns the size of the group it scales: the provider says never to set
    # target_size then (it is computed, so leaving it out changes nothing on apply).
    manager = {**mig(d, "mig", d.scope, versions(d)),
               "target_size": None if d.autoscaling else expr("var.desired_replicas")}
    return {"google_compute_region_instance_template": {k: instance_template(d, spot=k == "spot")
                                                        for k in gcp_template_kinds(d)},
            "google_compute_region_instance_group_manager": {"group": compact(manager)}}


def mig(d: Deployment, kind: str, base_name: str, version: list[dict]) -> dict[str, Any]:
    """A regional MIG of the deployment's VMs (`kind` names it), without its size."""
    return compact({
        "name": gcp_name(d, kind), "project": PROJECT, "region": d.region,
        "base_instance_name": base_name,
        "description": f"servestack {d.service}: {d.candidate_id}",
        "version": version,
        "distribution_policy_zones": list(d.zones) or None,
        "distribution_policy_target_shape": GCP_TARGET_SHAPE,
        "named_port": [{"name": GCP_NAMED_PORT, "port": d.service_port}],
        "auto_healing_policies": {
            "health_check": expr("google_compute_region_health_check.http.id"),
            "initial_delay_sec": gcp_autoheal_delay(d)},
        "instance_flexibility_policy": flexibility(d),
        "update_policy": gcp_update_policy(d),
        "wait_for_instances": False,
        # The VMs go out through the NAT, and read the token and the key, as they boot: all
        # of them come first.
        "depends_on": group_waits(d),
    })


def group_waits(d: Deployment) -> list[str]:
    """What the VMs need as they boot: the NAT (egress), each secret's version and accessor
    binding (the token, the API key), and the metric writer role when they ship the
    autoscaler's gauge."""
    waits = ["google_compute_router_nat.nat"]
    if d.secret:
        waits += ["google_secret_manager_secret_iam_binding.reader",
                  "google_secret_manager_secret_version.hf_token"]
    if d.api_key:
        waits += ["google_secret_manager_secret_iam_binding.api_key_reader",
                  "google_secret_manager_secret_version.api_key"]
    if gcp_metric_type(d):
        waits.append("google_project_iam_member.metric_writer")
    waits += cache_ready(d)
    return waits


def client_policy(d: Deployment) -> dict[str, Any]:
    """Cloud Armor: allow `allow_cidrs`, deny everyone else; nothing when open to all."""
    rules = gcp_client_rules(d)
    if rules is None:
        return {}
    return {"google_compute_region_security_policy": {"clients": {
        "name": gcp_name(d, "clients"), "project": PROJECT, "region": d.region,
        "type": GCP_ARMOR_TYPE,
        "description": f"servestack {d.service}: only allow_cidrs reach the endpoint",
        "rules": rules}}}


def load_balancer(d: Deployment) -> dict[str, Any]:
    """Address -> forwarding rule (listener port) -> proxy -> URL map -> backend service.
    With TLS the listener port's proxy takes the redirect URL map instead (see `tls`)."""
    policy = client_policy(d)
    backend = compact({
        "name": gcp_name(d, "backend"), "project": PROJECT, "region": d.region,
        "load_balancing_scheme": GCP_LB_SCHEME, "protocol": "HTTP",
        "port_name": GCP_NAMED_PORT,
        "health_checks": [expr("google_compute_region_health_check.http.id")],
        "timeout_sec": d.idle_timeout_seconds,
        "connection_draining_timeout_sec": gcp_draining_seconds(d),
        "backend": [{"group": expr(f"{group_address}.instance_group"), **gcp_backend(d)}
                    for group_address in groups(d)],
        "security_policy": expr("google_compute_region_security_policy.clients.self_link")
        if policy else None,
        "description": f"servestack {d.service}: the GPU group"})
    return merge(policy, {
        "google_compute_address": {"ip": {
            "name": gcp_name(d, "ip"), "project": PROJECT, "region": d.region,
            "address_type": GCP_ADDRESS_TYPE, "network_tier": GCP_LB_TIER, "labels": labels(d),
            "description": f"servestack {d.service}: endpoint"}},
        "google_compute_region_backend_service": {"backend": backend},
        "google_compute_region_url_map": {"urls": {
            "name": gcp_name(d, "urls"), "project": PROJECT, "region": d.region,
            "default_service": expr("google_compute_region_backend_service.backend.id")}},
        "google_compute_region_target_http_proxy": {"proxy": {
            "name": gcp_name(d, "http-proxy"), "project": PROJECT, "region": d.region,
            "url_map": expr("google_compute_region_url_map.redirect.id" if d.tls
                            else "google_compute_region_url_map.urls.id")}},
        "google_compute_forwarding_rule": {"listener": {
            "name": gcp_name(d, "listener"), "project": PROJECT, "region": d.region,
            "load_balancing_scheme": GCP_LB_SCHEME, "ip_protocol": "TCP",
            "port_range": str(d.listener_port),
            "target": expr("google_compute_region_target_http_proxy.proxy.id"),
            "ip_address": expr("google_compute_address.ip.address"),
            "network": expr("google_compute_network.vpc.id"), "network_tier": GCP_LB_TIER,
            "labels": labels(d),
            "depends_on": ["google_compute_subnetwork.proxy"]}},
    })


def tls(d: Deployment) -> dict[str, Any]:
    """HTTPS on the domain: a Google-managed regional certificate (Certificate Manager, DNS
    authorization), an HTTPS proxy with a TLS 1.2+ policy on the backend URL map, its
    forwarding rule on the same address; port 80 redirected to https. With a managed zone,
    the authorization's CNAME and the domain's A record are written there."""
    if d.tls is None:
        return {}
    where = {"project": PROJECT, "location": d.region}
    auth = "google_certificate_manager_dns_authorization.tls"
    return merge({
        "google_certificate_manager_dns_authorization": {"tls": {
            "name": gcp_name(d, "dns-auth"), **where, "domain": d.tls.domain,
            "type": GCP_DNS_AUTHORIZATION_TYPE, "labels": labels(d),
            "description": f"servestack {d.service}: proves {d.tls.domain} for its certificate"}},
        "google_certificate_manager_certificate": {"tls": {
            "name": gcp_name(d, "cert"), **where, "labels": labels(d),
            "managed": {"domains": [d.tls.domain], "dns_authorizations": [expr(f"{auth}.id")]},
            "description": f"servestack {d.service}: {d.tls.domain}"}},
        "google_compute_region_ssl_policy": {"tls": {
            "name": gcp_name(d, "tls"), "project": PROJECT, "region": d.region,
            **GCP_SSL_POLICY, "description": f"servestack {d.service}: TLS 1.2 or later"}},
        "google_compute_region_target_https_proxy": {"https": {
            "name": gcp_name(d, "https-proxy"), "project": PROJECT, "region": d.region,
            "url_map": expr("google_compute_region_url_map.urls.id"),
            "certificate_manager_certificates": [
                expr("google_certificate_manager_certificate.tls.id")],
            "ssl_policy": expr("google_compute_region_ssl_policy.tls.self_link")}},
        "google_compute_region_url_map": {"redirect": {
            "name": gcp_name(d, "redirect"), "project": PROJECT, "region": d.region,
            "default_url_redirect": GCP_HTTPS_REDIRECT,
            "description": f"servestack {d.service}: http to https"}},
        "google_compute_forwarding_rule": {"https": {
            "name": gcp_name(d, "https-listener"), "project": PROJECT, "region": d.region,
            "load_balancing_scheme": GCP_LB_SCHEME, "ip_protocol": "TCP",
            "port_range": str(d.tls.port),
            "target": expr("google_compute_region_target_https_proxy.https.id"),
            "ip_address": expr("google_compute_address.ip.address"),
            "network": expr("google_compute_network.vpc.id"), "network_tier": GCP_LB_TIER,
            "labels": labels(d),
            "depends_on": ["google_compute_subnetwork.proxy"]}},
    }, dns_records(d))


def dns_records(d: Deployment) -> dict[str, Any]:
    """The authorization's CNAME and the domain's A record, in the managed zone if given."""
    if d.tls is None or d.tls.dns_zone is None:
        return {}
    record = "google_certificate_manager_dns_authorization.tls.dns_resource_record[0]"
    zone = {"project": PROJECT, "managed_zone": d.tls.dns_zone, "ttl": GCP_DNS_TTL}
    return {"google_dns_record_set": {
        "authorization": {**zone, "name": expr(f"{record}.name"),
                          "type": GCP_DNS_AUTHORIZATION_RECORD,
                          "rrdatas": [expr(f"{record}.data")]},
        "domain": {**zone, "name": gcp_fqdn(d.tls.domain), "type": "A",
                   "rrdatas": [expr("google_compute_address.ip.address")]}}}


def groups(d: Deployment) -> list[str]:
    """The MIGs behind the backend service: the deployment's group, and the on-demand
    fallback group when there is one."""
    found = ["google_compute_region_instance_group_manager.group"]
    if gcp_has_fallback_group(d):
        found.append("google_compute_region_instance_group_manager.ondemand")
    return found


def scaling(d: Deployment) -> dict[str, Any]:
    """The regional autoscaler of each MIG, the on-demand fallback MIG, and the VMs' right
    to write the gauge they ship (roles/monitoring.metricWriter on the project: Cloud
    Monitoring grants writing no narrower). Nothing for a fixed-size deployment."""
    if d.autoscaling is None:
        return {}
    autoscalers = {"group": autoscaler(d, "group", fallback=False)}
    resources: dict[str, Any] = {}
    if gcp_has_fallback_group(d):
        autoscalers["ondemand"] = autoscaler(d, "ondemand", fallback=True)
        resources["google_compute_region_instance_group_manager"] = {
            "ondemand": fallback_group(d)}
    if gcp_metric_type(d):
        resources["google_project_iam_member"] = {"metric_writer": {
            "project": PROJECT, "role": GCP_METRIC_WRITER,
            "member": template("serviceAccount:", expr("google_service_account.vm.email"))}}
    return {"google_compute_region_autoscaler": autoscalers, **resources}


def autoscaler(d: Deployment, manager: str, *, fallback: bool) -> dict[str, Any]:
    kind = "ondemand-autoscaler" if fallback else "autoscaler"
    return {
        "name": gcp_name(d, kind), "project": PROJECT, "region": d.region,
        "target": expr(f"google_compute_region_instance_group_manager.{manager}.id"),
        "autoscaling_policy": {**gcp_autoscaling_policy(d, fallback),
                               **replica_bounds(d, fallback=fallback)},
        "description": f"servestack {d.service}: "
                       f"{'on-demand fallback' if fallback else 'replica'} autoscaler"}


def replica_bounds(d: Deployment, *, fallback: bool) -> dict[str, Any]:
    """clouds.gcp.gcp_replica_bounds on the min_replicas/max_replicas variables, so the
    operator retunes the range in terraform.tfvars.json as on the other clouds."""
    if not gcp_has_fallback_group(d):
        return {"min_replicas": expr("var.min_replicas"),
                "max_replicas": expr("var.max_replicas")}
    base = d.on_demand_base
    if fallback:
        low = max(base, 1)
        return {"min_replicas": low,
                "max_replicas": expr(f"max(var.max_replicas, {low})")}
    return {"min_replicas": expr(f"max(var.min_replicas - {base}, 1)"),
            "max_replicas": expr(f"max(var.max_replicas - {base}, var.min_replicas - {base}, 1)")}


def fallback_group(d: Deployment) -> dict[str, Any]:
    """On-demand VMs that stand in while spot capacity is missing: the on-demand template,
    sized by its own autoscaler only (see clouds.gcp.gcp_autoscaling_policy)."""
    return mig(d, "ondemand-mig", f"{d.scope}-od", [{
        "name": "ondemand",
        "instance_template": expr("google_compute_region_instance_template.ondemand.self_link")}])


def outputs(d: Deployment) -> dict[str, Any]:
    found = service_outputs(d, "google_compute_forwarding_rule.listener.ip_address",
                            "google_compute_region_instance_group_manager.group",
                            api_key_ref="google_secret_manager_secret.api_key.id")
    if d.tls is not None and d.tls.dns_zone is None:
        record = "google_certificate_manager_dns_authorization.tls.dns_resource_record[0]"
        found[OUTPUT_DNS_RECORDS] = {
            "description": "create these records where the domain's DNS is served",
            "value": [{"name": expr(f"{record}.name"), "type": GCP_DNS_AUTHORIZATION_RECORD,
                       "value": expr(f"{record}.data")},
                      {"name": gcp_fqdn(d.tls.domain), "type": "A",
                       "value": expr("google_compute_address.ip.address")}]}
    return found


def variable_values(d: Deployment) -> dict[str, Any]:
    """The project, when `--gcp-project` gave one (else the user adds it)."""
    return {"project": d.gcp_project} if d.gcp_project else {}


# --- read-only probes (the deploy loop's engine uses these) ---
# Configurations of data sources only; servestack.terraform.engine applies each in a
# throwaway directory and reads its outputs. No quota or tag-search data source is used here.

# What these probes answer: names of servestack.engine.Capabilities fields.
PROBES = ("credentials_check", "group_size")


def size_config(d: Deployment, project: str | None, group: str | None) -> dict[str, Any] | None:
    """Exports `running`: the MIG's size (its VMs that exist got capacity); None while the
    project or the group's name is not known."""
    if not project or not group:
        return None
    local, requirement = PROVIDER
    names = {"group": group}
    if gcp_has_fallback_group(d):  # the on-demand fallback MIG's VMs serve too
        names["ondemand"] = gcp_name(d, "ondemand-mig")
    sizes = " + ".join(f"data.google_compute_region_instance_group.{key}.size" for key in names)
    return {
        "terraform": {"required_providers": {local: requirement}},
        "provider": {"google": {"project": project, "region": d.region}},
        "data": {"google_compute_region_instance_group": {
            key: {"name": name, "region": d.region, "project": project}
            for key, name in names.items()}},
        "output": {"running": {"value": "${" + sizes + "}"}},
    }


def identity_config() -> dict[str, Any]:
    """`credentials_check`: exports `identity`, the default project (google_client_config,
    which fetches an access token) and the account (google_client_openid_userinfo; it needs
    the userinfo.email scope, which the provider requests by default)."""
    local, requirement = PROVIDER
    return {
        "terraform": {"required_providers": {local: requirement}},
        "provider": {"google": {}},
        "data": {"google_client_config": {"me": {}}, "google_client_openid_userinfo": {"me": {}}},
        "output": {"identity": {"value": "project ${coalesce(data.google_client_config.me.project"
                                         ", \"(none set)\")} "
                                         "(${data.google_client_openid_userinfo.me.email})"}},
    }
