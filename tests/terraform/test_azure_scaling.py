"""Azure autoscaling as Terraform: the autoscale settings, roles and fallback scale set the
renderer writes, checked against the azurerm schema's argument names and against what the
Pulumi component builds from the same deployment."""

from __future__ import annotations

from dataclasses import replace

from servestack.terraform import render, tfvars
from tests.components.test_azure_scaling import (
    FALLBACK_ID,
    MAIN_ID,
    PUBLISHER,
    autoscaled,
    by_target,
    recorded,
    with_fallback,
)

LINUX = "azurerm_linux_virtual_machine_scale_set"
FLEXIBLE = "azurerm_orchestrated_virtual_machine_scale_set"
SETTING = "azurerm_monitor_autoscale_setting"
ROLE = "azurerm_role_assignment"
# Arguments of azurerm 4.x's azurerm_monitor_autoscale_setting and azurerm_role_assignment
# (internal/services/monitor/monitor_autoscale_setting_resource.go, and the provider schema
# in @cdktf/provider-azurerm 14.23.1, generated from azurerm 4.55.0).
SETTING_ARGS = {"name", "resource_group_name", "location", "target_resource_id", "enabled",
                "predictive", "profile", "notification", "tags"}
PROFILE_ARGS = {"name", "capacity", "rule", "fixed_date", "recurrence"}
CAPACITY_ARGS = {"minimum", "maximum", "default"}
TRIGGER_ARGS = {"metric_name", "metric_resource_id", "time_grain", "statistic", "time_window",
                "time_aggregation", "operator", "threshold", "metric_namespace",
                "divide_by_instance_count", "dimensions"}
ACTION_ARGS = {"direction", "type", "value", "cooldown"}
ROLE_ARGS = {"scope", "principal_id", "role_definition_id", "role_definition_name",
             "principal_type", "name", "description", "condition", "condition_version",
             "delegated_managed_identity_resource_id", "skip_service_principal_aad_check"}
# The values the provider accepts (StringInSlice in the resource's schema).
STATISTICS = {"Average", "Max", "Min", "Sum"}
AGGREGATIONS = {"Average", "Count", "Maximum", "Minimum", "Total", "Last"}
OPERATORS = {"Equals", "NotEquals", "GreaterThan", "GreaterThanOrEqual", "LessThan",
             "LessThanOrEqual"}
ACTIONS = {"ChangeCount", "ExactCount", "PercentChangeCount", "ServiceAllowedNextValue"}


def test_autoscale_setting_uses_only_azurerm_arguments_and_values():
    for d in (autoscaled(), with_fallback()):
        doc = render(d)
        for setting in doc["resource"][SETTING].values():
            assert set(setting) <= SETTING_ARGS
            for profile in setting["profile"]:
                assert set(profile) <= PROFILE_ARGS
                assert set(profile["capacity"]) == CAPACITY_ARGS
                assert 1 <= len(profile["rule"]) <= 10
                for rule in profile["rule"]:
                    trigger, action = rule["metric_trigger"], rule["scale_action"]
                    assert set(trigger) <= TRIGGER_ARGS and set(action) == ACTION_ARGS
                    assert trigger["statistic"] in STATISTICS
                    assert trigger["time_aggregation"] in AGGREGATIONS
                    assert trigger["operator"] in OPERATORS and action["type"] in ACTIONS
                    assert isinstance(action["value"], int) and action["value"] >= 1
        for role in doc["resource"][ROLE].values():
            assert set(role) <= ROLE_ARGS


def test_autoscale_setting_bounded_by_the_replica_variables():
    d = autoscaled()
    doc, values = render(d), tfvars(d)
    [setting] = doc["resource"][SETTING].values()
    assert setting["enabled"] is True
    assert setting["target_resource_id"] == f"${{{LINUX}.group.id}}"
    [profile] = setting["profile"]
    assert profile["capacity"] == {"minimum": "${var.min_replicas}",
                                   "maximum": "${var.max_replicas}",
                                   "default": "${var.desired_replicas}"}
    assert (values["min_replicas"], values["max_replicas"]) == (2, 6)
    for rule in profile["rule"]:
        trigger = rule["metric_trigger"]
        assert trigger["metric_resource_id"] == f"${{{LINUX}.group.id}}"
        assert (trigger["metric_name"], trigger["metric_namespace"]) == \
            ("requests_per_second", "servestack/vllm")
    assert [r["metric_trigger"]["threshold"] for r in profile["rule"]] == \
        [2.5, 3.75, 5.0, 7.5, 2.5]  # the spec's target_qps_per_replica, and the ladder


def normalised(rules: list[dict], pulumi: bool) -> list[tuple]:
    """Each rule as one tuple, whichever engine's spelling it comes in."""
    if pulumi:
        return [(r["metricTrigger"]["metricName"], r["metricTrigger"]["metricNamespace"],
                 r["metricTrigger"]["timeGrain"], r["metricTrigger"]["statistic"],
                 r["metricTrigger"]["timeWindow"], r["metricTrigger"]["timeAggregation"],
                 r["metricTrigger"]["operator"], r["metricTrigger"]["threshold"],
                 r["scaleAction"]["direction"], r["scaleAction"]["type"],
                 int(r["scaleAction"]["value"]), r["scaleAction"]["cooldown"]) for r in rules]
    return [(r["metric_trigger"]["metric_name"], r["metric_trigger"]["metric_namespace"],
             r["metric_trigger"]["time_grain"], r["metric_trigger"]["statistic"],
             r["metric_trigger"]["time_window"], r["metric_trigger"]["time_aggregation"],
             r["metric_trigger"]["operator"], r["metric_trigger"]["threshold"],
             r["scale_action"]["direction"], r["scale_action"]["type"],
             r["scale_action"]["value"], r["scale_action"]["cooldown"]) for r in rules]


def test_the_engines_build_the_same_autoscalers():
    for kind, d in (("autoscaled", autoscaled()), ("fallback", with_fallback())):
        pulumi_side = by_target(recorded(kind))
        terraform_side = render(d)["resource"][SETTING]
        assert len(pulumi_side) == len(terraform_side)
        for key, pulumi_id in (("group", MAIN_ID), ("fallback", FALLBACK_ID)):
            if key not in terraform_side:
                continue
            [profile] = pulumi_side[pulumi_id]["profiles"]
            [tf_profile] = terraform_side[key]["profile"]
            assert normalised(profile["rules"], True) == normalised(tf_profile["rule"], False)
            assert pulumi_side[pulumi_id]["autoscaleSettingName"] == terraform_side[key]["name"]
            assert pulumi_side[pulumi_id]["tags"] == terraform_side[key]["tags"]


def test_the_scale_set_leaves_its_size_to_the_autoscaler():
    group = render(autoscaled())["resource"][LINUX]["group"]
    assert group["lifecycle"] == {"ignore_changes": ["instances"]}
    assert group["instances"] == "${var.desired_replicas}"
    fixed = render(replace(autoscaled(), autoscaling=None))["resource"]
    assert "lifecycle" not in fixed[LINUX]["group"]
    assert SETTING not in fixed and ROLE not in fixed


def test_the_vms_identity_may_publish_to_each_scale_set():
    roles = render(with_fallback())["resource"][ROLE]
    assert {r["scope"] for r in roles.values()} == {
        f"${{{FLEXIBLE}.group.id}}", f"${{{LINUX}.fallback.id}}"}
    for role in roles.values():
        assert role["principal_id"] == "${azurerm_user_assigned_identity.vm.principal_id}"
        assert role["principal_type"] == "ServicePrincipal"
        assert role["role_definition_id"] == (
            "/subscriptions/${data.azurerm_client_config.current.subscription_id}/providers/"
            f"Microsoft.Authorization/roleDefinitions/{PUBLISHER}")


def test_spot_group_over_every_zone_and_the_fallback_beside_it():
    d = with_fallback()
    doc, values = render(d), tfvars(d)
    resources = doc["resource"]
    spot, fallback = resources[FLEXIBLE]["group"], resources[LINUX]["fallback"]
    assert len(d.zones) > 1
    assert spot["zones"] == fallback["zones"] == list(d.zones)
    assert spot["zone_balance"] is fallback["zone_balance"] is False
    assert (spot["priority"], spot["priority_mix"]["base_regular_count"]) == ("Spot", 1)
    assert (fallback["priority"], fallback["instances"]) == ("Regular", 0)
    assert "eviction_policy" not in fallback and "spot_restore" not in fallback
    assert fallback["name"] == f"{d.scope}-vmss-od" != spot["name"]
    assert fallback["computer_name_prefix"] == f"{d.scope}-od"
    assert fallback["lifecycle"] == {"ignore_changes": ["instances"]}
    # the same VMs: size, bootstrap, disk, image, and the balancer's backend pool
    assert fallback["sku"] == spot["sku_name"]
    assert fallback["custom_data"] == spot["os_profile"]["custom_data"]
    assert fallback["os_disk"] == spot["os_disk"]
    assert fallback["network_interface"] == spot["network_interface"]
    assert fallback["source_image_reference"] == spot["source_image_reference"]
    [profile] = resources[SETTING]["fallback"]["profile"]
    assert profile["capacity"] == {"minimum": 0, "maximum": "${var.max_replicas - 1}",
                                   "default": "${var.min_replicas - 1}"}
    assert values["max_replicas"] - 1 == 5 and values["min_replicas"] - 1 == 1
    assert {r["metric_trigger"]["metric_resource_id"] for r in profile["rule"]} == \
        {f"${{{FLEXIBLE}.group.id}}"}
