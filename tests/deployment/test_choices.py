"""The user's choices and the spec's replica_policy as the deployment carries them: the API key,
TLS, the autoscaler's signal, bounds and delays, and SkyServe's spot fallback settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servestack import planner
from servestack.cli.main import main
from servestack.deployment.build import build_deployment
from servestack.deployment.model import (
    DOWNSCALE_DELAY_SECONDS,
    UPSCALE_DELAY_SECONDS,
    Choices,
    Deployment,
)
from servestack.errors import UserError
from servestack.inputs import load_inputs
from tests.fakes import FROZEN_CATALOG

SPEC = """\
name: chat
resources:
  accelerators: {{L4: 8, A100-80GB: 2}}
  use_spot: {spot}
service:
  readiness_probe: {probe}
  replica_policy:
{policy}
run: vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1 --tensor-parallel-size 2
"""
DEFAULT_CHOICES = Choices()
AUTOSCALING = """\
    min_replicas: 1
    max_replicas: 4
    target_qps_per_replica: 2.5
"""


def built(tmp_path: Path, *, policy: str = AUTOSCALING, spot: bool = False,
          probe: str = "/v1/models", choices: Choices = DEFAULT_CHOICES,
          cloud: str = "aws") -> Deployment:
    path = tmp_path / "serve.yaml"
    path.write_text(SPEC.format(policy=policy, spot=str(spot).lower(), probe=probe))
    inputs = load_inputs(str(path), catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud=cloud), model=inputs.model)
    return build_deployment(inputs.spec, plan.candidates[0], plan.candidates,
                            model=inputs.model, choices=choices)


def test_an_autoscaling_policy_becomes_an_autoscaler_with_skyserve_defaults(tmp_path):
    d = built(tmp_path)
    assert (d.min_replicas, d.max_replicas, d.desired_replicas) == (1, 4, 1)
    scaling = d.autoscaling
    assert scaling is not None and scaling.metric == "qps" and scaling.target == 2.5
    assert (scaling.upscale_delay_seconds, scaling.downscale_delay_seconds) == \
        (UPSCALE_DELAY_SECONDS, DOWNSCALE_DELAY_SECONDS) == (300, 1200)
    assert Deployment.from_config(json.loads(json.dumps(d.to_config()))) == d


def test_the_spec_delays_and_a_per_accelerator_target_are_taken(tmp_path):
    policy = """\
    min_replicas: 2
    max_replicas: 6
    target_qps_per_replica: {L4: 1, A100-80GB: 3}
    upscale_delay_seconds: 60
    downscale_delay_seconds: 600
"""
    d = built(tmp_path, policy=policy)
    assert d.autoscaling is not None
    expected = 3.0 if d.primary.accelerator == "A100-80GB" else 1.0
    assert d.autoscaling.target == expected
    assert (d.autoscaling.upscale_delay_seconds, d.autoscaling.downscale_delay_seconds) == \
        (60, 600)


def test_a_fixed_policy_has_no_autoscaler_and_refuses_a_scale_metric(tmp_path):
    fixed = "    min_replicas: 2\n"
    assert built(tmp_path, policy=fixed).autoscaling is None
    with pytest.raises(UserError, match="fixed size"):
        built(tmp_path, policy=fixed, choices=Choices(scale_metric="vllm-waiting"))


def test_vllm_metrics_take_their_own_targets(tmp_path):
    waiting = built(tmp_path, choices=Choices(scale_metric="vllm-waiting")).autoscaling
    assert waiting is not None and (waiting.metric, waiting.target) == ("vllm-waiting", 5.0)
    assert waiting.shipped_metric == "requests_waiting"
    cache = built(tmp_path, choices=Choices(scale_metric="vllm-kv-cache",
                                            scale_target=55)).autoscaling
    assert cache is not None and (cache.target, cache.shipped_metric) == \
        (55.0, "kv_cache_usage_percent")


def test_overprovisioned_replicas_raise_both_bounds(tmp_path):
    policy = AUTOSCALING + "    num_overprovision: 1\n"
    d = built(tmp_path, policy=policy)
    assert (d.min_replicas, d.max_replicas) == (2, 5)


def test_spot_fallback_settings_reach_the_deployment(tmp_path):
    policy = AUTOSCALING + ("    base_ondemand_fallback_replicas: 1\n"
                            "    dynamic_ondemand_fallback: true\n")
    d = built(tmp_path, policy=policy, spot=True)
    assert d.use_spot and d.on_demand_base == 1 and d.dynamic_ondemand_fallback
    # a spot group short of capacity is what the fallback group covers: the apply must not
    # wait for (and fail on) the spot group's full capacity
    assert d.capacity_timeout == "0"
    assert built(tmp_path, policy=AUTOSCALING, spot=True).capacity_timeout == "15m"


def test_the_api_key_is_on_by_default_and_the_balancer_probes_an_open_path(tmp_path):
    d = built(tmp_path)
    assert d.api_key is not None and d.api_key.name.endswith("/api-key")
    # vLLM asks the key on /v1 paths and balancers cannot send it: they probe /health
    assert d.readiness.path == "/v1/models" and d.health.path == "/health"
    open_endpoint = built(tmp_path, choices=Choices(api_key=False))
    assert open_endpoint.api_key is None and open_endpoint.health.path == "/v1/models"


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_every_cloud_names_a_key_per_service_and_stack(tmp_path, cloud):
    d = built(tmp_path, cloud=cloud)
    assert d.api_key is not None and d.api_key.cloud == cloud
    assert d.secret is None  # no secrets in this spec: the key has its own entry


def test_a_domain_gives_tls_and_an_https_scheme(tmp_path):
    d = built(tmp_path, cloud="gcp", choices=Choices(domain="llm.example.com"))
    assert d.tls is not None and d.tls.domain == "llm.example.com" and d.tls.port == 443
    assert d.endpoint_scheme == "https"
    assert built(tmp_path, cloud="gcp").endpoint_scheme == "http"


@pytest.mark.parametrize("argv, message", [
    (["--domain", "not a domain"], "is not a domain name"),
    (["--domain", "localhost"], "is not a domain name"),
    (["--dns-zone", "Z123"], "--dns-zone needs --domain"),
    (["--scale-target", "3"], "--scale-target needs --scale-metric"),
    (["--scale-metric", "latency"], "invalid choice"),
    (["--scale-metric", "vllm-waiting", "--scale-target", "0"], "must be above 0"),
    (["--scale-metric", "vllm-waiting", "--scale-target", "nan"], "must be above 0"),
])
def test_bad_security_and_scaling_flags_are_one_line_and_exit_2(tmp_path, capsys, argv,
                                                                 message):
    code = main(["generate", "--catalog-dir", FROZEN_CATALOG, "--stacks-dir",
                 str(tmp_path / "stacks"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "stacks").exists()


def test_fields_servestack_does_not_use_are_said_so(tmp_path):
    path = tmp_path / "serve.yaml"
    spec = SPEC.format(policy=AUTOSCALING + "    spot_placer: dynamic_fallback\n",
                       spot="true", probe="/health")
    path.write_text(spec.replace("service:\n", "service:\n  load_balancing_policy: "
                                 "round_robin\n", 1))
    notes = load_inputs(str(path), catalog_dir=FROZEN_CATALOG).spec.notes
    assert any("spot_placer: accepted but not used" in n for n in notes)
    assert any("load_balancing_policy round_robin: accepted but not used" in n for n in notes)
