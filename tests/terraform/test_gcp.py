"""servestack.terraform.gcp: arguments the google provider has, in the versions the pin admits;
names no other service or stack shares; VMs without public addresses behind Cloud NAT.

No google provider can be installed here, so the rendered JSON is checked against the provider's
published schema: tests/fixtures/google_provider_schema.json, the argument trees of the
resources used, from the @cdktf/provider-google package (generated from google 6.50.0).
Arguments the provider added later are listed in NEWER with the release that added them.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from servestack import clouds, planner
from servestack.clouds.gcp import gcp_has_fallback_group, gcp_network_tag
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Autoscaling, Choices, Deployment, Tls
from servestack.errors import UserError
from servestack.inputs import load_inputs
from servestack.terraform import render, tfvars
from tests.fakes import FROZEN_CATALOG, unknown_arguments

SCHEMA = json.loads((Path(__file__).parents[1] / "fixtures" / "google_provider_schema.json")
                    .read_text())["resources"]
# (resource, argument path): the first google release that has it (CHANGELOG.md).
NEWER = {("google_compute_region_backend_service", "security_policy"): (7, 8)}  # #24693
NEWER_PATHS = frozenset(f"{kind}.{argument}" for kind, argument in NEWER)
# Terraform's built-in resource (no provider): the API key (servestack.terraform).
BUILTIN = {"terraform_data": {"input": None, "triggers_replace": None}}
CLIENTS = ("198.51.100.0/24",)
SSH_FROM = ("203.0.113.0/24",)


@cache
def plan(spot: bool) -> tuple:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    found = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                         planner.Options(cloud="gcp", spot=spot), model=inputs.model)
    return inputs, found.candidates


def deployment(spot: bool = False, service: str | None = None,
               stack: str | None = None) -> Deployment:
    inputs, candidates = plan(spot)
    return build_deployment(inputs.spec, candidates[0], candidates, model=inputs.model,
                            service_name=service, stack=stack,
                            choices=Choices(allow_cidrs=CLIENTS, ssh_cidrs=SSH_FROM))


def scaled(metric: str = "qps", target: float = 4.0, *, spot: bool = False,
           fallback: bool = False, base: int = 0, low: int = 2, high: int = 6,
           up: int = 300, down: int = 1200) -> Deployment:
    """The planned deployment with a replica_policy that autoscales (as build_deployment
    makes one from min/max_replicas, target_qps_per_replica and the delays)."""
    return replace(deployment(spot=spot), min_replicas=low, max_replicas=high,
                   desired_replicas=low, on_demand_base=base,
                   dynamic_ondemand_fallback=fallback,
                   autoscaling=Autoscaling(metric, target, up, down))


def variants() -> list[Deployment]:
    spot = deployment(spot=True)
    return [deployment(), spot, replace(spot, on_demand_base=1),
            replace(deployment(), secret=None, allow_cidrs=("0.0.0.0/0",), ssh_cidrs=()),
            with_tls(None), with_tls("example-zone"), replace(deployment(), api_key=None),
            scaled(), scaled("vllm-kv-cache", 70.0, spot=True, base=1),
            scaled("vllm-waiting", 5.0, spot=True, fallback=True, base=1), secured_and_scaled()]


DOMAIN = "llm.example.com"


def with_tls(zone: str | None) -> Deployment:
    return replace(deployment(), tls=Tls(DOMAIN, zone))


def secured_and_scaled(service: str | None = None, stack: str | None = None) -> Deployment:
    """Both features at once: API key, TLS with a managed zone, and a spot group on a vLLM
    gauge with an on-demand base and the dynamic on-demand fallback group."""
    scaling = scaled("vllm-waiting", 5.0, spot=True, fallback=True, base=1)
    return replace(deployment(spot=True, service=service, stack=stack),
                   tls=Tls(DOMAIN, "example-zone"), min_replicas=scaling.min_replicas,
                   max_replicas=scaling.max_replicas, desired_replicas=scaling.desired_replicas,
                   on_demand_base=1, dynamic_ondemand_fallback=True,
                   autoscaling=scaling.autoscaling)


def test_every_argument_is_one_the_provider_has():
    for d in variants():
        for kind, blocks in render(d)["resource"].items():
            schema = SCHEMA.get(kind) or BUILTIN.get(kind)
            assert schema, kind
            for body in blocks.values():
                assert unknown_arguments(body, schema, kind, NEWER_PATHS) == []


def test_the_pin_admits_only_releases_with_every_argument():
    requirement = render(deployment())["terraform"]["required_providers"]["google"]
    assert requirement["source"] == "hashicorp/google"
    match = re.fullmatch(r"~> (\d+)\.(\d+)", requirement["version"])
    assert match, requirement["version"]  # >= that minor release, below the next major
    assert (int(match[1]), int(match[2])) >= max(NEWER.values())
    used = json.dumps(render(deployment())["resource"]["google_compute_region_backend_service"])
    assert '"security_policy"' in used  # the argument that sets the floor is really used


def test_vms_have_no_public_address_and_go_out_through_cloud_nat_of_their_subnet():
    for d in variants():
        resources = render(d)["resource"]
        for template in resources["google_compute_region_instance_template"].values():
            [nic] = template["network_interface"]
            assert "access_config" not in nic and "ipv6_access_config" not in nic
        router = resources["google_compute_router"]["nat"]
        assert router["network"] == "${google_compute_network.vpc.id}"
        assert router["region"] == d.region
        nat = resources["google_compute_router_nat"]["nat"]
        assert nat["router"] == "${google_compute_router.nat.name}"
        assert nat["region"] == d.region and nat["nat_ip_allocate_option"] == "AUTO_ONLY"
        assert nat["source_subnetwork_ip_ranges_to_nat"] == "LIST_OF_SUBNETWORKS"
        assert nat["subnetwork"] == [{"name": "${google_compute_subnetwork.vms.id}",
                                      "source_ip_ranges_to_nat": ["ALL_IP_RANGES"]}]
        vms, proxy = resources["google_compute_subnetwork"]["vms"], \
            resources["google_compute_subnetwork"]["proxy"]
        assert vms["private_ip_google_access"] and "purpose" not in vms
        assert vms["log_config"]["aggregation_interval"] == "INTERVAL_10_MIN"  # flow logs
        assert "log_config" not in proxy  # proxy-only subnets have no flow logs
        mig = resources["google_compute_region_instance_group_manager"]["group"]
        assert "google_compute_router_nat.nat" in mig["depends_on"]  # egress before boot


# A secret's version and IAM binding, the key (state only) and the metric writer's project
# IAM member have no name of their own; a DNS record's name is the user's domain.
UNNAMED = ("google_secret_manager_secret_version", "google_secret_manager_secret_iam_binding",
           "terraform_data", "google_dns_record_set", "google_project_iam_member")


def physical_names(d: Deployment) -> list[str]:
    """Every name the deployment fixes in the project (and the VMs' network tag)."""
    names = []
    for kind, blocks in render(d)["resource"].items():
        for body in blocks.values():
            fixed = [body[key] for key in ("name", "name_prefix", "account_id",
                                           "base_instance_name") if key in body]
            if kind == "google_secret_manager_secret":
                fixed.append(body["secret_id"])
            elif kind in UNNAMED:
                continue  # no name of their own
            assert fixed, f"{kind} has no name of its own"
            names += fixed + body.get("tags", [])
    return names


def test_two_services_and_two_stacks_of_one_spec_share_no_name():
    owners: dict[str, tuple[str, str]] = {}
    for service, stack in (("servestack", "blue"), ("servestack", "green"), ("other", "blue")):
        d = replace(deployment(service=service, stack=stack), tls=Tls(f"{service}.example.com"))
        for name in set(physical_names(d)):
            assert name not in owners, f"{name}: {owners.get(name)} and {(service, stack)}"
            owners[name] = (service, stack)
    # 26 named resources (the API key's secret and six for TLS too), the VMs' base name (tag =
    # account id)
    assert len(owners) == 3 * 27


def test_names_follow_gcp_rules_for_the_longest_service_and_stack():
    d = replace(deployment(service="s" * 20, stack="a-very-long-stack-name" * 4),
                tls=Tls(DOMAIN, "example-zone"))
    resources = render(d)["resource"]
    rfc1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
    for kind, blocks in resources.items():
        if kind in UNNAMED:  # a record's name is the user's domain
            continue
        for body in blocks.values():
            for key in ("name", "account_id", "base_instance_name"):
                if key in body:
                    assert rfc1035.fullmatch(body[key]) and len(body[key]) <= 63, body[key]
    assert 6 <= len(resources["google_service_account"]["vm"]["account_id"]) <= 30
    for template in resources["google_compute_region_instance_template"].values():
        assert len(template["name_prefix"]) <= 37  # longer loses the unique suffix


def test_draining_lets_streams_run_their_timeout_within_the_api_range():
    d = deployment()
    backend = render(d)["resource"]["google_compute_region_backend_service"]["backend"]
    assert backend["connection_draining_timeout_sec"] == backend["timeout_sec"] == \
        d.idle_timeout_seconds == 900
    longer = render(replace(d, idle_timeout_seconds=5400))["resource"]
    backend = longer["google_compute_region_backend_service"]["backend"]
    assert (backend["timeout_sec"], backend["connection_draining_timeout_sec"]) == (5400, 3600)


# --- API key ---------------------------------------------------------------------------------


def test_api_key_is_kept_in_its_own_secret_that_only_the_vms_read():
    d = deployment()
    resources = render(d)["resource"]
    assert "input" in resources["terraform_data"]["api_key"]  # the shared key resource
    secrets = resources["google_secret_manager_secret"]
    assert secrets["api_key"]["secret_id"] == d.api_key.name != d.secret.name
    for same in ("replication", "labels", "project"):  # placed and labelled like the token's
        assert secrets["api_key"][same] == secrets["hf_token"][same]
    version = resources["google_secret_manager_secret_version"]["api_key"]
    assert version == {"secret": "${google_secret_manager_secret.api_key.id}",
                       "secret_data_wo": "${sensitive(terraform_data.api_key.output)}",
                       "secret_data_wo_version": 1}  # write-only: not in the version's state
    binding = resources["google_secret_manager_secret_iam_binding"]["api_key_reader"]
    assert binding["secret_id"] == "${google_secret_manager_secret.api_key.secret_id}"
    assert binding["role"] == "roles/secretmanager.secretAccessor"
    assert binding["members"] == ["serviceAccount:${google_service_account.vm.email}"]
    assert "google_project_iam_member" not in resources  # no project-wide grant
    mig = resources["google_compute_region_instance_group_manager"]["group"]
    assert {"google_secret_manager_secret_iam_binding.api_key_reader",
            "google_secret_manager_secret_version.api_key"} <= set(mig["depends_on"])


def test_api_key_outputs_the_key_as_sensitive_and_where_it_is_kept():
    outputs = render(deployment())["output"]
    assert outputs["api_key"]["sensitive"] is True
    assert outputs["api_key"]["value"] == "${sensitive(terraform_data.api_key.output)}"
    assert outputs["api_key_secret"]["value"] == "${google_secret_manager_secret.api_key.id}"


def test_nothing_of_the_key_without_one():
    doc = render(replace(deployment(), api_key=None))
    resources = doc["resource"]
    assert "terraform_data" not in resources
    assert list(resources["google_secret_manager_secret"]) == ["hf_token"]
    assert list(resources["google_secret_manager_secret_iam_binding"]) == ["reader"]
    assert "api_key" not in doc["output"] and "api_key_secret" not in doc["output"]
    mig = resources["google_compute_region_instance_group_manager"]["group"]
    assert not any("api_key" in wait for wait in mig["depends_on"])


# --- TLS -------------------------------------------------------------------------------------


def test_https_on_443_with_a_managed_regional_certificate_proved_by_dns():
    d = with_tls(None)
    resources = render(d)["resource"]
    auth = resources["google_certificate_manager_dns_authorization"]["tls"]
    assert (auth["domain"], auth["location"], auth["type"]) == \
        (DOMAIN, d.region, "PER_PROJECT_RECORD")
    cert = resources["google_certificate_manager_certificate"]["tls"]
    assert cert["location"] == d.region
    assert cert["managed"] == {
        "domains": [DOMAIN],
        "dns_authorizations": ["${google_certificate_manager_dns_authorization.tls.id}"]}
    policy = resources["google_compute_region_ssl_policy"]["tls"]
    assert (policy["profile"], policy["min_tls_version"]) == ("MODERN", "TLS_1_2")
    proxy = resources["google_compute_region_target_https_proxy"]["https"]
    assert proxy["url_map"] == "${google_compute_region_url_map.urls.id}"
    assert proxy["certificate_manager_certificates"] == [
        "${google_certificate_manager_certificate.tls.id}"]
    assert proxy["ssl_policy"] == "${google_compute_region_ssl_policy.tls.self_link}"
    rules = resources["google_compute_forwarding_rule"]
    assert (rules["https"]["port_range"], rules["listener"]["port_range"]) == ("443", "80")
    assert rules["https"]["target"] == "${google_compute_region_target_https_proxy.https.id}"
    assert rules["https"]["ip_address"] == rules["listener"]["ip_address"] == \
        "${google_compute_address.ip.address}"
    assert rules["https"]["depends_on"] == ["google_compute_subnetwork.proxy"]


def test_port_80_only_redirects_to_https_with_tls():
    resources = render(with_tls(None))["resource"]
    maps = resources["google_compute_region_url_map"]
    assert maps["redirect"]["default_url_redirect"] == {
        "https_redirect": True, "strip_query": False,
        "redirect_response_code": "PERMANENT_REDIRECT"}
    assert "default_service" not in maps["redirect"]
    proxy = resources["google_compute_region_target_http_proxy"]["proxy"]
    assert proxy["url_map"] == "${google_compute_region_url_map.redirect.id}"
    plain = render(deployment())["resource"]
    assert plain["google_compute_region_target_http_proxy"]["proxy"]["url_map"] == \
        "${google_compute_region_url_map.urls.id}"
    assert list(plain["google_compute_region_url_map"]) == ["urls"]
    assert not {"google_certificate_manager_certificate", "google_compute_region_ssl_policy",
                "google_compute_region_target_https_proxy", "google_dns_record_set"} & set(plain)


def test_tls_opens_nothing_new_to_clients():
    assert render(with_tls(None))["resource"]["google_compute_firewall"] == \
        render(deployment())["resource"]["google_compute_firewall"]


def test_records_are_written_in_the_managed_zone_when_given():
    doc = render(with_tls("example-zone"))
    records = doc["resource"]["google_dns_record_set"]
    record = "google_certificate_manager_dns_authorization.tls.dns_resource_record[0]"
    assert records["authorization"] == {
        "project": "${var.project}", "managed_zone": "example-zone", "ttl": 300,
        "name": f"${{{record}.name}}", "type": "CNAME", "rrdatas": [f"${{{record}.data}}"]}
    assert records["domain"] == {
        "project": "${var.project}", "managed_zone": "example-zone", "ttl": 300,
        "name": f"{DOMAIN}.", "type": "A", "rrdatas": ["${google_compute_address.ip.address}"]}
    assert "dns_records" not in doc["output"]
    assert doc["output"]["endpoint"]["value"] == f"https://{DOMAIN}"


def test_without_a_zone_the_records_are_an_output_and_none_is_created():
    doc = render(with_tls(None))
    assert "google_dns_record_set" not in doc["resource"]
    record = "google_certificate_manager_dns_authorization.tls.dns_resource_record[0]"
    assert doc["output"]["dns_records"]["value"] == [
        {"name": f"${{{record}.name}}", "type": "CNAME", "value": f"${{{record}.data}}"},
        {"name": f"{DOMAIN}.", "type": "A", "value": "${google_compute_address.ip.address}"}]
    assert doc["output"]["endpoint"]["value"] == f"https://{DOMAIN}"
    assert "dns_records" not in render(deployment())["output"]


# --- autoscaling ----------------------------------------------------------------------------


def evaluate(value, d: Deployment):
    """A replica bound as Terraform computes it from terraform.tfvars.json: a number, or an
    expression over the min_replicas/max_replicas variables with max()."""
    if isinstance(value, int):
        return value
    text = re.fullmatch(r"\$\{(.*)\}", value)[1]
    values = tfvars(d)
    names = {f"var.{key}": str(values[key]) for key in ("min_replicas", "max_replicas")}
    for name, number in names.items():
        text = text.replace(name, number)
    assert re.fullmatch(r"[\d\s,()+\-max]+", text), text  # nothing but numbers and max()
    return eval(text, {"__builtins__": {}}, {"max": max})  # noqa: S307 - checked just above


def bounds(policy: dict, d: Deployment) -> tuple[int, int]:
    return evaluate(policy["min_replicas"], d), evaluate(policy["max_replicas"], d)


def test_qps_autoscaler_keeps_the_load_balancer_rate_per_replica_within_min_and_max():
    d = scaled("qps", 4.0, low=2, high=6)
    resources = render(d)["resource"]
    [autoscaler] = resources["google_compute_region_autoscaler"].values()
    assert autoscaler["target"] == "${google_compute_region_instance_group_manager.group.id}"
    policy = autoscaler["autoscaling_policy"]
    assert bounds(policy, d) == (2, 6)
    # 1.0 of max_rate_per_instance: GCP's ceil(load / (rate x target)) is SkyServe's
    # ceil(QPS / target_qps_per_replica).
    assert policy["load_balancing_utilization"] == {"target": 1.0}
    assert "metric" not in policy
    [backend] = resources["google_compute_region_backend_service"]["backend"]["backend"]
    assert (backend["balancing_mode"], backend["max_rate_per_instance"]) == ("RATE", 4.0)
    mig = resources["google_compute_region_instance_group_manager"]["group"]
    assert "target_size" not in mig  # the autoscaler owns the size
    assert "google_project_iam_member" not in resources  # the load balancer counts requests


def test_a_fixed_group_has_no_autoscaler_and_keeps_its_size_and_balancing_mode():
    resources = render(deployment())["resource"]
    assert "google_compute_region_autoscaler" not in resources
    mig = resources["google_compute_region_instance_group_manager"]["group"]
    assert mig["target_size"] == "${var.desired_replicas}"
    [backend] = resources["google_compute_region_backend_service"]["backend"]["backend"]
    assert backend["balancing_mode"] == "UTILIZATION" and "max_rate_per_instance" not in backend


@pytest.mark.parametrize("metric,gauge", [("vllm-waiting", "requests_waiting"),
                                          ("vllm-kv-cache", "kv_cache_usage_percent")])
def test_vllm_gauges_scale_on_the_custom_metric_the_replicas_write(metric, gauge):
    d = scaled(metric, 7.0)
    resources = render(d)["resource"]
    policy = resources["google_compute_region_autoscaler"]["group"]["autoscaling_policy"]
    assert policy["metric"] == [{"name": f"custom.googleapis.com/servestack/{gauge}",
                                 "target": 7.0, "type": "GAUGE"}]
    assert "load_balancing_utilization" not in policy
    assert clouds.get("gcp").shipped_metric(d) == gauge  # the name the bootstrap publishes
    writer = resources["google_project_iam_member"]["metric_writer"]
    assert writer == {"project": "${var.project}", "role": "roles/monitoring.metricWriter",
                      "member": "serviceAccount:${google_service_account.vm.email}"}
    mig = resources["google_compute_region_instance_group_manager"]["group"]
    assert "google_project_iam_member.metric_writer" in mig["depends_on"]  # before they ship
    [backend] = resources["google_compute_region_backend_service"]["backend"]["backend"]
    assert backend["balancing_mode"] == "UTILIZATION"


@pytest.mark.parametrize("up,down,cooldown,window", [(300, 1200, 300, 1200),
                                                     (60, 5400, 60, 3600)])
def test_delays_become_the_initialization_period_and_the_scale_in_window(
        up, down, cooldown, window):
    policy = render(scaled(up=up, down=down))["resource"][
        "google_compute_region_autoscaler"]["group"]["autoscaling_policy"]
    assert policy["cooldown_period"] == cooldown
    # 0% of the window's peak may go: the group shrinks only after `down` seconds of low load.
    assert policy["scale_in_control"] == {"max_scaled_in_replicas": {"percent": 0},
                                          "time_window_sec": window}
    assert policy["mode"] == "ON"


def test_spot_group_spreads_over_every_zone_of_the_region_that_offers_the_type():
    d = deployment(spot=True)
    _, candidates = plan(True)
    mig = render(d)["resource"]["google_compute_region_instance_group_manager"]["group"]
    assert mig["distribution_policy_zones"] == list(candidates[0].zones) == list(d.zones)
    assert len(mig["distribution_policy_zones"]) > 1
    assert mig["distribution_policy_target_shape"] == "BALANCED"


def test_on_demand_base_without_dynamic_fallback_is_a_fixed_version_of_the_one_group():
    d = scaled(spot=True, base=1, low=2, high=6)
    resources = render(d)["resource"]
    assert list(resources["google_compute_region_instance_group_manager"]) == ["group"]
    mig = resources["google_compute_region_instance_group_manager"]["group"]
    assert [(v["name"], v.get("target_size")) for v in mig["version"]] == \
        [("ondemand", {"fixed": 1}), ("spot", None)]
    [autoscaler] = resources["google_compute_region_autoscaler"].values()
    assert bounds(autoscaler["autoscaling_policy"], d) == (2, 6)  # the whole group


def test_dynamic_fallback_adds_an_on_demand_group_behind_the_same_backend():
    d = scaled("qps", 4.0, spot=True, fallback=True, base=1, low=3, high=8)
    resources = render(d)["resource"]
    migs = resources["google_compute_region_instance_group_manager"]
    spot, ondemand = migs["group"], migs["ondemand"]
    templates = resources["google_compute_region_instance_template"]
    assert spot["version"] == [{"name": "spot", "instance_template":
                                "${google_compute_region_instance_template.spot.self_link}"}]
    assert ondemand["version"] == [{"name": "ondemand", "instance_template":
                                    "${google_compute_region_instance_template.ondemand"
                                    ".self_link}"}]
    assert templates["ondemand"]["scheduling"]["provisioning_model"] == "STANDARD"
    assert templates["spot"]["scheduling"]["provisioning_model"] == "SPOT"
    assert "target_size" not in spot and "target_size" not in ondemand
    assert ondemand["distribution_policy_zones"] == spot["distribution_policy_zones"]
    assert ondemand["named_port"] == spot["named_port"]
    backends = resources["google_compute_region_backend_service"]["backend"]["backend"]
    assert [b["group"] for b in backends] == [
        "${google_compute_region_instance_group_manager.group.instance_group}",
        "${google_compute_region_instance_group_manager.ondemand.instance_group}"]
    assert {(b["balancing_mode"], b["max_rate_per_instance"]) for b in backends} == \
        {("RATE", 4.0)}
    scalers = resources["google_compute_region_autoscaler"]
    assert scalers["ondemand"]["target"] == \
        "${google_compute_region_instance_group_manager.ondemand.id}"
    spot_policy, ondemand_policy = (scalers[k]["autoscaling_policy"]
                                    for k in ("group", "ondemand"))
    assert bounds(spot_policy, d) == (2, 7)  # spot above the on-demand base
    assert bounds(ondemand_policy, d) == (1, 8)  # the base, up to all of it
    # The spot group aims lower, so the on-demand one grows only on load spot cannot carry.
    assert spot_policy["load_balancing_utilization"] == {"target": 0.5}
    assert ondemand_policy["load_balancing_utilization"] == {"target": 1.0}


def test_fallback_bounds_follow_the_replica_variables():
    d = scaled(spot=True, fallback=True, base=0, low=1, high=4)
    scalers = render(d)["resource"]["google_compute_region_autoscaler"]
    # Neither group can grow from zero VMs (no VM, no signal): each keeps one.
    assert bounds(scalers["group"]["autoscaling_policy"], d) == (1, 4)
    assert bounds(scalers["ondemand"]["autoscaling_policy"], d) == (1, 4)
    wider = replace(d, min_replicas=3, max_replicas=9)
    assert bounds(render(wider)["resource"]["google_compute_region_autoscaler"]["group"]
                  ["autoscaling_policy"], wider) == (3, 9)


def test_dynamic_fallback_without_an_autoscaling_policy_is_refused():
    with pytest.raises(UserError, match="dynamic_ondemand_fallback"):
        clouds.get("gcp").check(replace(deployment(spot=True), dynamic_ondemand_fallback=True))
    clouds.get("gcp").check(scaled(spot=True, fallback=True))  # with one it is built


def test_size_probe_adds_the_fallback_groups_size():
    from servestack.terraform.gcp import size_config

    d = scaled(spot=True, fallback=True)
    config = size_config(d, "acme", f"{d.scope}-mig")
    groups = config["data"]["google_compute_region_instance_group"]
    assert {key: body["name"] for key, body in groups.items()} == {
        "group": f"{d.scope}-mig", "ondemand": f"{d.scope}-ondemand-mig"}
    assert config["output"]["running"]["value"] == (
        "${data.google_compute_region_instance_group.group.size"
        " + data.google_compute_region_instance_group.ondemand.size}")
    alone = size_config(deployment(spot=True), "acme", f"{d.scope}-mig")
    assert list(alone["data"]["google_compute_region_instance_group"]) == ["group"]


# --- API key, TLS and autoscaling together ---------------------------------------------------


def test_every_mig_waits_for_both_secrets_the_nat_and_the_metric_writer():
    d = secured_and_scaled()
    assert d.secret and d.api_key and d.tls and gcp_has_fallback_group(d)
    migs = render(d)["resource"]["google_compute_region_instance_group_manager"]
    assert set(migs) == {"group", "ondemand"}
    # The fallback group's VMs boot the same bootstrap: they read the token and the key and
    # ship the gauge as the spot group's do.
    for mig in migs.values():
        assert set(mig["depends_on"]) == {
            "google_compute_router_nat.nat",
            "google_secret_manager_secret_iam_binding.reader",
            "google_secret_manager_secret_version.hf_token",
            "google_secret_manager_secret_iam_binding.api_key_reader",
            "google_secret_manager_secret_version.api_key",
            "google_project_iam_member.metric_writer"}


def test_https_and_the_redirect_sit_in_front_of_both_groups():
    resources = render(secured_and_scaled())["resource"]
    maps = resources["google_compute_region_url_map"]
    assert maps["urls"]["default_service"] == "${google_compute_region_backend_service.backend.id}"
    assert resources["google_compute_region_target_https_proxy"]["https"]["url_map"] == \
        "${google_compute_region_url_map.urls.id}"
    assert resources["google_compute_region_target_http_proxy"]["proxy"]["url_map"] == \
        "${google_compute_region_url_map.redirect.id}"
    backends = resources["google_compute_region_backend_service"]["backend"]["backend"]
    assert [b["group"] for b in backends] == [
        "${google_compute_region_instance_group_manager.group.instance_group}",
        "${google_compute_region_instance_group_manager.ondemand.instance_group}"]
    assert set(resources["google_compute_region_autoscaler"]) == {"group", "ondemand"}
    # The metric writer is the only project-wide grant; the key's reader is on its secret.
    assert list(resources["google_project_iam_member"]) == ["metric_writer"]
    assert set(resources["google_secret_manager_secret_iam_binding"]) == {"reader",
                                                                          "api_key_reader"}
    assert set(resources["google_dns_record_set"]) == {"authorization", "domain"}


def test_two_stacks_of_a_secured_autoscaled_service_share_no_name_and_follow_gcp_rules():
    rfc1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
    blue, green = (secured_and_scaled("s" * 20, stack * 4)
                   for stack in ("a-very-long-blue-name", "a-very-long-green-name"))
    names = {d.stack: physical_names(d) for d in (blue, green)}
    assert not set(names[blue.stack]) & set(names[green.stack])
    for d in (blue, green):
        found = names[d.stack]
        # Only the VMs' network tag repeats (on both templates, as the account's id); the
        # fallback MIG, the autoscalers and the TLS pieces are named apart.
        assert {n for n in found if found.count(n) > 1} == {gcp_network_tag(d)}
        for name in found:  # a template's name_prefix ends in "-": the provider appends
            assert rfc1035.fullmatch(name.removesuffix("-")) and len(name) <= 63, name
    assert f"{blue.scope}-ondemand-autoscaler" in names[blue.stack]
    assert f"{blue.scope}-https-listener" in names[blue.stack]
