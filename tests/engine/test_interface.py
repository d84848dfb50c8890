"""The engine layer's own logic: capabilities, quota limits, stack names."""

from __future__ import annotations

import pytest

from servestack.engine import ANY, Capabilities, QuotaLimit, parse_limits, stack_name
from tests.fakes import PLAN


def test_capabilities_from_declared_names_and_combined():
    cloud = Capabilities.of(("cloud_sweep", "group_size"))
    engine = Capabilities(quota_precheck=True, group_size=True, cloud_sweep=True)
    assert engine & cloud == Capabilities(group_size=True, cloud_sweep=True)
    assert Capabilities.of(()) == Capabilities()
    with pytest.raises(TypeError):
        Capabilities.of(("teleport",))  # a probe module's typo fails at once


def test_a_quota_limit_counts_vcpus_or_gpus_of_every_replica():
    c = PLAN.candidates[0]
    assert QuotaLimit(c.cloud, c.region, "f", "vcpus", 0).need(c) == c.vcpus * c.replicas
    assert QuotaLimit(c.cloud, ANY, ANY, "gpus", 0).need(c) == \
        c.accelerator_count * c.replicas


def test_probe_output_becomes_limits_and_an_unread_one_is_no_limit():
    assert parse_limits("gcp", "gpus", {"us-central1|L4": 0, "*|*": 16, "*|A100": None}) == [
        QuotaLimit("gcp", "us-central1", "L4", "gpus", 0.0),
        QuotaLimit("gcp", ANY, ANY, "gpus", 16.0)]


def test_stack_names_are_sanitised_and_bounded():
    assert stack_name("mixtral", "azure-eastus-standard_nc48ads_a100_v4-ondemand") == \
        "mixtral-azure-eastus-standard_nc48ads_a100_v4-ondemand"
    assert stack_name("my svc", "aws/x y") == "my-svc-aws-x-y"
    long = stack_name("s" * 80, "c" * 80)
    assert len(long) == 100 and long != stack_name("s" * 80, "c" * 79 + "d")
