"""Azure autoscaling under Pulumi's mock runtime: the autoscale settings, the metric publisher
role, the spot group's zones and the on-demand fallback scale set, as real resource inputs of
deployments built from specs with a replica_policy."""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from pulumi.runtime import mocks as pulumi_mocks

from servestack import clouds, planner
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Choices, Deployment
from servestack.errors import UserError
from servestack.inputs import load_inputs
from servestack.pulumi.preview import Recording
from tests.components.test_azure import run
from tests.fakes import FROZEN_CATALOG

VMSS = "azure-native:compute:VirtualMachineScaleSet"
AUTOSCALE = "azure-native:monitor:AutoscaleSetting"
ROLE = "azure-native:authorization:RoleAssignment"
PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"  # built-in "Monitoring Metrics Publisher"
MAIN_ID, FALLBACK_ID = "svc-group-vmss-id", "svc-fallback-vmss-id"  # the mock's resource ids
SPEC = """\
name: mixtral
envs:
  MODEL_NAME: mistralai/Mixtral-8x7B-Instruct-v0.1
secrets:
  HF_TOKEN: null
resources:
  accelerators: A100-80GB:2
  ports: 8000
  disk_size: 256
  use_spot: {spot}
service:
  readiness_probe:
    path: /health
    initial_delay_seconds: 1200
  replica_policy:
{policy}
run: vllm serve $MODEL_NAME --tensor-parallel-size 2
"""
AUTOSCALED = """\
    min_replicas: 2
    max_replicas: 6
    target_qps_per_replica: 2.5
    upscale_delay_seconds: 420
    downscale_delay_seconds: 900
"""
FALLBACK = AUTOSCALED + """\
    base_ondemand_fallback_replicas: 1
    dynamic_ondemand_fallback: true
"""


@cache
def deployment(policy: str, spot: bool = False, metric: str | None = None) -> Deployment:
    """The first Azure candidate of a spec with this replica_policy, as `generate` builds it."""
    folder = Path(tempfile.mkdtemp(prefix="servestack-azure-scaling-"))
    path = folder / "serve.yaml"
    path.write_text(SPEC.format(spot=str(spot).lower(), policy=policy))
    inputs = load_inputs(str(path), catalog_dir=FROZEN_CATALOG, secrets={"HF_TOKEN": "hf_x"})
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud="azure", spot=spot), model=inputs.model)
    return build_deployment(inputs.spec, plan.candidates[0], plan.candidates, model=inputs.model,
                            choices=Choices(scale_metric=metric))


def autoscaled() -> Deployment:
    return deployment(AUTOSCALED)


def with_fallback() -> Deployment:
    return deployment(FALLBACK, spot=True)


@cache
def recorded(kind: str) -> Recording:
    return run({"autoscaled": autoscaled, "fallback": with_fallback}[kind]())


def by_target(rec: Recording) -> dict[str, dict]:
    return {a.inputs["targetResourceUri"]: a.inputs for a in rec.of_type(AUTOSCALE)}


def rules(setting: dict) -> list[tuple]:
    """(direction, operator, threshold, aggregation, window, cooldown, type, value) each."""
    [profile] = setting["profiles"]
    return [(r["scaleAction"]["direction"], r["metricTrigger"]["operator"],
             r["metricTrigger"]["threshold"], r["metricTrigger"]["timeAggregation"],
             r["metricTrigger"]["timeWindow"], r["scaleAction"]["cooldown"],
             r["scaleAction"]["type"], r["scaleAction"]["value"]) for r in profile["rules"]]


def test_the_spec_becomes_an_autoscaling_deployment():
    d = autoscaled()
    assert (d.min_replicas, d.max_replicas, d.desired_replicas) == (2, 6, 2)
    scaling = d.autoscaling
    assert scaling is not None and (scaling.metric, scaling.target) == ("qps", 2.5)
    assert (scaling.upscale_delay_seconds, scaling.downscale_delay_seconds) == (420, 900)
    # Azure's L4 balancer counts no requests: the replicas publish their own rate
    assert clouds.get("azure").shipped_metric(d) == "requests_per_second"
    assert d.health.grace_period_seconds == 1200


def test_autoscale_setting_bounded_by_min_and_max_targeting_the_specs_rate():
    [setting] = recorded("autoscaled").of_type(AUTOSCALE)
    inputs = setting.inputs
    d = autoscaled()
    assert inputs["enabled"] is True  # the API's default is off
    assert inputs["targetResourceUri"] == MAIN_ID
    assert inputs["autoscaleSettingName"] == f"{d.scope}-autoscale"
    assert inputs["location"] == inputs["targetResourceLocation"] == d.region
    [profile] = inputs["profiles"]
    assert profile["capacity"] == {"minimum": "2", "maximum": "6", "default": "2"}
    for rule in profile["rules"]:
        trigger = rule["metricTrigger"]
        assert (trigger["metricName"], trigger["metricNamespace"]) == \
            ("requests_per_second", "servestack/vllm")
        assert trigger["metricResourceUri"] == MAIN_ID
        assert (trigger["timeGrain"], trigger["statistic"]) == ("PT1M", "Average")
    # scale out: above 2.5 qps per replica add one, above 1.5x/2x/3x add 50/100/200%, judged
    # over the upscale delay (7 min), then wait for the model load (20 min) and one more
    # upscale window before judging again; scale in: one replica below 2.5 over the
    # downscale delay (15 min)
    assert rules(inputs) == [
        ("Increase", "GreaterThan", 2.5, "Average", "PT7M", "PT27M", "ChangeCount", "1"),
        ("Increase", "GreaterThan", 3.75, "Average", "PT7M", "PT27M", "PercentChangeCount", "50"),
        ("Increase", "GreaterThan", 5.0, "Average", "PT7M", "PT27M", "PercentChangeCount", "100"),
        ("Increase", "GreaterThan", 7.5, "Average", "PT7M", "PT27M", "PercentChangeCount", "200"),
        ("Decrease", "LessThan", 2.5, "Average", "PT15M", "PT15M", "ChangeCount", "1")]
    assert len(profile["rules"]) <= 10  # Azure's limit per profile
    assert set(inputs["tags"]) == set(d.tags) and len(inputs["tags"]) <= 15


def test_vllm_gauges_are_the_metric_when_asked():
    d = deployment(AUTOSCALED, metric="vllm-waiting")
    [setting] = run(d).of_type(AUTOSCALE)
    [profile] = setting.inputs["profiles"]
    assert {r["metricTrigger"]["metricName"] for r in profile["rules"]} == {"requests_waiting"}
    assert [r["metricTrigger"]["threshold"] for r in profile["rules"]] == [5, 7.5, 10, 15, 5]


def test_the_vms_identity_may_publish_the_metric_to_the_scale_set():
    [role] = recorded("autoscaled").of_type(ROLE)
    assert role.inputs["scope"] == MAIN_ID
    assert role.inputs["roleDefinitionId"] == (
        "/subscriptions/00000000-0000-0000-0000-000000000003/providers/"
        f"Microsoft.Authorization/roleDefinitions/{PUBLISHER}")
    assert role.inputs["principalType"] == "ServicePrincipal"
    name = role.inputs["roleAssignmentName"]
    assert str(uuid.UUID(name)) == name  # Azure takes a GUID
    other = run(replace(autoscaled(), stack="green")).one(ROLE).inputs["roleAssignmentName"]
    assert other != name


def ignored_changes(monkeypatch, d: Deployment) -> dict[str, list[str]]:
    """ignoreChanges of each scale set, as the engine would be told."""
    found: dict[str, list[str]] = {}
    register = pulumi_mocks.MockMonitor.RegisterResource

    def recording(self, request):
        if request.type == VMSS:
            found[request.name] = list(request.ignoreChanges)
        return register(self, request)

    monkeypatch.setattr(pulumi_mocks.MockMonitor, "RegisterResource", recording)
    run(d)
    return found


def test_an_autoscaled_scale_set_leaves_its_size_to_the_autoscaler(monkeypatch):
    assert ignored_changes(monkeypatch, autoscaled()) == {"svc-group-vmss": ["sku.capacity"]}
    fixed = replace(autoscaled(), autoscaling=None)
    assert ignored_changes(monkeypatch, fixed) == {"svc-group-vmss": []}
    assert ignored_changes(monkeypatch, with_fallback()) == {
        "svc-group-vmss": ["sku.capacity"], "svc-fallback-vmss": ["sku.capacity"]}


def test_a_fixed_group_has_no_autoscaler_and_no_publisher_role():
    rec = run(replace(autoscaled(), autoscaling=None))
    assert not rec.of_type(AUTOSCALE) and not rec.of_type(ROLE)
    assert rec.one(VMSS).inputs["sku"]["capacity"] == 2


def test_spot_group_spans_every_zone_of_the_region():
    d = with_fallback()
    assert d.use_spot and len(d.zones) > 1
    main = next(v.inputs for v in recorded("fallback").of_type(VMSS)
                if v.inputs["vmScaleSetName"] == f"{d.scope}-vmss")
    assert main["zones"] == list(d.zones)
    assert main["zoneBalance"] is False  # best effort: whichever zone has spot capacity
    assert main["virtualMachineProfile"]["priority"] == "Spot"
    assert main["priorityMixPolicy"] == {"baseRegularPriorityCount": 1,
                                         "regularPriorityPercentageAboveBase": 0}
    # one zone: Azure refuses zoneBalance, so it is left out
    pinned = run(replace(autoscaled(), zones=("2",))).one(VMSS).inputs
    assert pinned["zones"] == ["2"] and "zoneBalance" not in pinned


def test_dynamic_fallback_is_a_regular_scale_set_in_the_same_pool():
    d = with_fallback()
    assert d.dynamic_ondemand_fallback and d.on_demand_base == 1
    groups = {v.inputs["vmScaleSetName"]: v.inputs for v in recorded("fallback").of_type(VMSS)}
    main, fallback = groups[f"{d.scope}-vmss"], groups[f"{d.scope}-vmss-od"]
    assert fallback["sku"] == {**main["sku"], "capacity": 0}
    assert fallback["orchestrationMode"] == "Uniform"
    profile = fallback["virtualMachineProfile"]
    assert profile["priority"] == "Regular" and "evictionPolicy" not in profile
    assert profile["osProfile"]["computerNamePrefix"] == f"{d.scope}-od"
    assert profile["osProfile"]["customData"] == \
        main["virtualMachineProfile"]["osProfile"]["customData"]
    pool = [c["ipConfigurations"][0]["loadBalancerBackendAddressPools"]
            for c in profile["networkProfile"]["networkInterfaceConfigurations"]]
    assert pool == [c["ipConfigurations"][0]["loadBalancerBackendAddressPools"] for c in
                    main["virtualMachineProfile"]["networkProfile"][
                        "networkInterfaceConfigurations"]]
    assert fallback["zones"] == list(d.zones) and fallback["zoneBalance"] is False


def test_dynamic_fallback_scales_on_the_spot_sets_metric():
    settings = by_target(recorded("fallback"))
    assert set(settings) == {MAIN_ID, FALLBACK_ID}
    fallback = settings[FALLBACK_ID]
    [profile] = fallback["profiles"]
    # none kept; at most the spot replicas (max - base); the spot floor while no spot
    # replica publishes (Azure's default capacity when the metric has no data)
    assert profile["capacity"] == {"minimum": "0", "maximum": "5", "default": "1"}
    assert {r["metricTrigger"]["metricResourceUri"] for r in profile["rules"]} == {MAIN_ID}
    # out: the load stayed above 1x/3x/5x the target for 7 + 20 + 7 minutes (1, 2, 4
    # stand-ins); in: below 0.8x the target for 7 minutes
    assert rules(fallback) == [
        ("Increase", "GreaterThan", 2.5, "Minimum", "PT34M", "PT27M", "ChangeCount", "1"),
        ("Increase", "GreaterThan", 7.5, "Minimum", "PT34M", "PT27M", "ChangeCount", "2"),
        ("Increase", "GreaterThan", 12.5, "Minimum", "PT34M", "PT27M", "ChangeCount", "4"),
        ("Decrease", "LessThan", 2.0, "Average", "PT7M", "PT7M", "ChangeCount", "1")]
    roles = {r.inputs["scope"] for r in recorded("fallback").of_type(ROLE)}
    assert roles == {MAIN_ID, FALLBACK_ID}  # both sets' replicas publish to their own set


def test_dynamic_fallback_without_autoscaling_is_refused():
    with pytest.raises(UserError, match="dynamic_ondemand_fallback needs an autoscaling"):
        deployment("""\
    min_replicas: 2
    max_replicas: 2
    base_ondemand_fallback_replicas: 1
    dynamic_ondemand_fallback: true
""", spot=True)


def test_delays_outside_azures_ranges_are_clamped():
    scaling = autoscaled().autoscaling
    assert scaling is not None
    quick = replace(autoscaled(), autoscaling=replace(scaling, upscale_delay_seconds=60,
                                                       downscale_delay_seconds=90000))
    [setting] = run(quick).of_type(AUTOSCALE)
    windows = [r[4] for r in rules(setting.inputs)]
    # a window is 5 minutes to 12 hours: one minute of SkyServe's delay becomes five
    assert windows == ["PT5M"] * 4 + ["PT720M"]
    assert [r[5] for r in rules(setting.inputs)] == ["PT21M"] * 4 + ["PT1500M"]
