"""The plan says what an autoscaled group will do: replica bounds, the on-demand/spot split,
the dynamic on-demand fallback, $/h at min and at max, the scaling signal; in the table and in
the JSON, with every earlier column and key kept."""

from __future__ import annotations

import json

import pytest

from servestack.inputs import load_inputs
from servestack.planner import Options, plan
from servestack.report import HEADERS, plan_json, plan_table, scaling_of
from tests.fakes import FROZEN_CATALOG

MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
SPEC = """\
name: mixtral
resources:
  accelerators: {A100-80GB:2, L40S:4}
  use_spot: USE_SPOT
service:
  readiness_probe: /health
  replica_policy:
    min_replicas: 1
    max_replicas: 8
    target_qps_per_replica: 2
    num_overprovision: OVER
    base_ondemand_fallback_replicas: BASE
    dynamic_ondemand_fallback: DYNAMIC
run: vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1
"""


def _plan(write_spec, *, spot=True, base=1, dynamic=True, over=0):
    text = SPEC.replace("USE_SPOT", str(spot).lower()).replace("BASE", str(base)) \
        .replace("DYNAMIC", str(dynamic).lower()).replace("OVER", str(over))
    inputs = load_inputs(str(write_spec(text)), catalog_dir=FROZEN_CATALOG, model=MODEL)
    result = plan(inputs.spec, inputs.catalog, inputs.facts, Options(), model=MODEL)
    return inputs, result


def test_json_scaling_of_a_spot_candidate(write_spec):
    inputs, result = _plan(write_spec)
    data = plan_json(result, inputs.spec, {})
    first = data["candidates"][0]
    c = result.candidates[0]
    assert first["total_price_per_hour"] == c.total_price_per_hour  # earlier keys unchanged
    scaling = first["scaling"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 8)
    assert scaling["on_demand_replicas"] == {"min": 1, "max": 1}
    assert scaling["spot_replicas"] == {"min": 0, "max": 7}
    assert scaling["dynamic_ondemand_fallback_max"] == 7
    assert scaling["price_per_hour_at_min"] == c.total_price_per_hour
    # the 7 replicas above min are spot, at the candidate's spot price
    assert scaling["price_per_hour_at_max"] == pytest.approx(
        c.total_price_per_hour + 7 * c.price_per_hour, abs=1e-3)
    assert "up to 7 on-demand while spot is short" in scaling["replicas_text"]
    assert data["scaling"]["signal"] == {"metric": "qps", "target_per_replica": 2,
                                         "upscale_delay_seconds": 300,
                                         "downscale_delay_seconds": 1200}


def test_on_demand_rows_and_overprovision(write_spec):
    """num_overprovision raises both bounds (as the deployment builds them); an on-demand
    group is on-demand throughout."""
    inputs, result = _plan(write_spec, spot=False, base=0, dynamic=False, over=1)
    c = result.candidates[0]
    s = scaling_of(c, inputs.spec)
    assert (s.min_replicas, s.max_replicas) == (2, 9)
    assert (s.on_demand_min, s.on_demand_max, s.spot_max, s.fallback_on_demand_max) == \
        (2, 9, 0, 0)
    assert s.at_min == pytest.approx(2 * c.price_per_hour, abs=1e-3)
    assert s.at_max == pytest.approx(9 * c.price_per_hour, abs=1e-3)


def test_without_dynamic_fallback_no_on_demand_stand_ins(write_spec):
    inputs, result = _plan(write_spec, base=0, dynamic=False)
    s = scaling_of(result.candidates[0], inputs.spec)
    assert (s.on_demand_min, s.spot_min, s.spot_max, s.fallback_on_demand_max) == (0, 1, 8, 0)
    assert s.column() == "1-8 spot"


def test_table_shows_bounds_split_and_cost_at_max(write_spec):
    inputs, result = _plan(write_spec)
    text = plan_table(result, inputs.spec, {})
    header = next(line for line in text.splitlines() if line.split()[:2] == ["#", "INFRA"])
    for column in (*HEADERS, "REPLICAS", "AT MAX $/h"):
        assert column in header
    assert header.rstrip().endswith("CHOSEN")
    chosen = next(line for line in text.splitlines() if "\u2714" in line)
    s = scaling_of(result.candidates[0], inputs.spec)
    assert "1 OD + 0-7 spot" in chosen and f"{s.at_max:.2f}" in chosen
    assert "Scaling: 1 to 8 replicas" in text and "target 2" in text
    assert "up to 7 on-demand while spot is short" in text


def test_fixed_group_table_is_unchanged(embedded):
    result = plan(embedded.spec, embedded.catalog, embedded.facts, model=embedded.model)
    text = plan_table(result, embedded.spec, {})
    assert "REPLICAS" not in text and "Scaling:" not in text
    data = plan_json(result, embedded.spec, {})
    assert data["scaling"]["autoscaling"] is False and data["scaling"]["signal"] is None
    assert data["candidates"][0]["scaling"]["min_replicas"] == \
        data["candidates"][0]["scaling"]["max_replicas"] == data["replicas"]


def test_cli_json_and_table(run_cli, write_spec):
    path = write_spec(SPEC.replace("USE_SPOT", "true").replace("BASE", "1")
                      .replace("DYNAMIC", "true").replace("OVER", "0"))
    result = run_cli("servestack", "plan", str(path), "--model", MODEL, "--json",
                     "--catalog-dir", str(FROZEN_CATALOG))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["scaling"]["dynamic_ondemand_fallback"] is True
    assert all(c["scaling"]["max_replicas"] == 8 for c in data["candidates"])
    table = run_cli("servestack", "plan", str(path), "--model", MODEL,
                    "--catalog-dir", str(FROZEN_CATALOG))
    assert table.returncode == 0, table.stderr
    assert "AT MAX $/h" in table.stdout
