"""benchmarks/autoscale.py on a short trace: the replay keeps each cloud's generated rule
within its bounds, cheaper than the fixed fleet, and never serves from a VM before its cold
start; each cloud's own timing rule holds (AWS: 3 breaching minutes before a scale-out; GCP:
no scale-in below a recommendation of the stabilization window; Azure: nothing during a
cooldown)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fakes import FROZEN_CATALOG

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "autoscale.py"
SPEC = importlib.util.spec_from_file_location("autoscale_bench", PATH)
bench = importlib.util.module_from_spec(SPEC)
sys.modules["autoscale_bench"] = bench  # dataclasses look their module up there
SPEC.loader.exec_module(bench)
COLD_START_S = 600
COLD = COLD_START_S // 60


@pytest.fixture(scope="module")
def built():
    return bench.deployments(FROZEN_CATALOG)


@pytest.fixture(scope="module")
def results(built):
    # 8 hours from 04:00 (the trough) up the morning ramp: every rule has to scale out
    trace = bench.diurnal_trace(8 * 60, peak=12.0, trough=2.0, seed=3)
    return {d.cloud: bench.replay(d, trace, COLD_START_S) for d in built.values()}


def test_every_cloud_is_simulated_from_its_generated_rule(built):
    assert set(built) == {"aws", "gcp", "azure"}
    for d in built.values():
        assert (d.min_replicas, d.max_replicas) == (1, 8)
        assert d.autoscaling is not None and d.autoscaling.target == 2.0


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_bounds_cost_and_cold_start(results, cloud):
    result = results[cloud]
    series = result["series"]
    assert all(1 <= row["replicas"] <= 8 for row in series)
    assert result["peak_replicas"] > 1  # the ramp made it scale out
    assert result["cost"] <= result["fixed_fleet_cost"]
    assert result["first_scale_out_minute"] is not None
    for t, row in enumerate(series):
        # a VM serving at t was launched by minute t - COLD's decision, so the row after it
        # counts it (a row shows the group before that minute's decision; a removed VM never
        # comes back)
        earlier = series[t - COLD + 1]["replicas"] if t >= COLD else 1
        assert row["serving"] <= earlier


def test_aws_scales_out_only_after_three_breaching_minutes(results, built):
    series = results["aws"]["series"]
    target = bench.render(built["aws"])["resource"]["aws_autoscaling_policy"]["scale_out"][
        "target_tracking_configuration"]["target_value"]
    for t in range(1, len(series)):
        if series[t]["replicas"] > series[t - 1]["replicas"]:
            assert t >= 3
            for row in series[t - 3:t]:
                assert row["qps"] * 60 / max(row["serving"], 1) > target


def test_gcp_never_scales_in_below_the_window_peak(results):
    series = results["gcp"]["series"]
    for t in range(1, len(series)):
        if series[t]["replicas"] < series[t - 1]["replicas"]:
            for row in series[max(0, t - 20):t]:
                assert math.ceil(row["qps"] / 2.0) <= series[t]["replicas"]


def test_azure_acts_at_most_once_per_cooldown(results, built):
    rules = bench.azure_rules(bench.render(built["azure"]))
    cooldown = min(r.cooldown for r in rules)
    series = results["azure"]["series"]
    changes = [t for t in range(1, len(series))
               if series[t]["replicas"] != series[t - 1]["replicas"]]
    assert changes
    assert all(b - a >= cooldown for a, b in zip(changes, changes[1:], strict=False))


def test_a_higher_target_needs_fewer_replicas(built):
    """The simulated rule is read from what the deployment renders: a target of 4 requests
    per second per replica halves the replicas the GCP autoscaler asks for at the peak."""
    trace = [12.0] * 60
    d = built["gcp"]
    low = bench.replay(d, trace, COLD_START_S)
    high = bench.replay(replace(d, autoscaling=replace(d.autoscaling, target=4.0)), trace,
                        COLD_START_S)
    assert (low["peak_replicas"], high["peak_replicas"]) == (6, 3)


def test_main_prints_json_and_writes_the_series(tmp_path, capsys):
    path = tmp_path / "series.csv"
    assert bench.main(["--minutes", "120", "--catalog-dir", FROZEN_CATALOG,
                       "--series", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {c["cloud"] for c in summary["clouds"]} == {"aws", "gcp", "azure"}
    assert all("series" not in c for c in summary["clouds"])
    lines = path.read_text().splitlines()
    assert lines[0] == "cloud,minute,qps,replicas,serving,over_capacity"
    assert len(lines) == 1 + 3 * 120
