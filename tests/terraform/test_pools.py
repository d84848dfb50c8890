"""A service over several pools as Terraform: what `generate --format terraform --max-pools 2
--spread` writes (the key stack, one folder per pool, the front), checked with `terraform
validate` against the real AWS provider 5.100, and the references that tie the stacks together
(the pools read the key stack's state, the front reads the pools')."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from servestack import planner
from servestack.cli.main import main
from servestack.deployment.choices import Choices
from servestack.deployment.model import OUTPUT_API_KEY, OUTPUT_LB_HOST, ServiceStack
from servestack.inputs import load_inputs
from servestack.placement import Pool
from servestack.service import build_layout
from servestack.terraform import render
from servestack.terraform.engine import TerraformEngine
from servestack.terraform.shared import render_key, render_shared
from tests.fakes import (
    FROZEN_CATALOG,
    PLUGIN_DIR,
    needs_terraform_aws,
    terraform_validate,
    unknown_arguments,
)

DOMAIN = "llm.example.com"
ZONE_ID = "Z0123456789ABCDEFGHIJ"
ROUTE53 = ("--front", "route53", "--domain", DOMAIN, "--hosted-zone-id", ZONE_ID)
SCHEMAS = Path(__file__).parents[1] / "fixtures"
# Terraform's built-in data source (no provider): terraform_remote_state's arguments.
REMOTE_STATE = {"backend": None, "config": None, "defaults": None, "workspace": None}


def run_generate(folder: Path, *flags: str) -> int:
    """`servestack generate --format terraform` over two AWS pools into folder/stacks."""
    return main(["generate", "--format", "terraform", "--max-pools", "2", "--spread",
                 "--cloud", "aws", "--catalog-dir", FROZEN_CATALOG,
                 "--stacks-dir", str(folder / "stacks"), *flags])


def generate(folder: Path, *flags: str) -> dict[str, Path]:
    """What a successful generate wrote: {stack: its folder}."""
    assert run_generate(folder, *flags) == 0
    return {p.name: p for p in sorted((folder / "stacks").iterdir())}


def main_tf(folder: Path) -> dict:
    return json.loads((folder / "main.tf.json").read_text())


def pools_of(folders: dict[str, Path]) -> dict[str, dict]:
    """The pool stacks' documents: those with an auto scaling group."""
    return {name: doc for name, doc in ((n, main_tf(f)) for n, f in folders.items())
            if "aws_autoscaling_group" in doc.get("resource", {})}


@pytest.fixture(scope="module")
def route53_folders(tmp_path_factory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("route53"), *ROUTE53)


@pytest.fixture(scope="module")
def accelerator_folders(tmp_path_factory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("accelerator"))


def test_two_pools_in_two_regions_each_with_its_share(route53_folders):
    pools = pools_of(route53_folders)
    assert len(pools) == 2 and len(route53_folders) == 4
    regions = {doc["provider"]["aws"]["region"] for doc in pools.values()}
    assert len(regions) == 2
    # --max-pools 2 --spread over the spec's 2 replicas: one each
    shares = [json.loads((route53_folders[name] / "terraform.tfvars.json").read_text())
              for name in pools]
    assert [(s["min_replicas"], s["desired_replicas"]) for s in shares] == [(1, 1), (1, 1)]
    assert sum(s["max_replicas"] for s in shares) >= 2
    assert set(route53_folders) == {*pools, "mixtral-key", "mixtral-front"}


def test_the_key_is_drawn_once_and_every_pool_reads_it(route53_folders):
    documents = {name: main_tf(f) for name, f in route53_folders.items()}
    drawing = [name for name, doc in documents.items()
               if "terraform_data" in doc.get("resource", {})]
    assert drawing == ["mixtral-key"]
    key = documents["mixtral-key"]
    assert key["output"][OUTPUT_API_KEY]["sensitive"] is True
    assert set(key) == {"terraform", "resource", "output"}  # no provider, no cloud resource
    for doc in pools_of(route53_folders).values():
        state = doc["data"]["terraform_remote_state"]["api_key"]
        assert state == {"backend": "local",
                         "config": {"path": "../mixtral-key/terraform.tfstate"}}
        read = "${sensitive(data.terraform_remote_state.api_key.outputs.api_key)}"
        parameter = doc["resource"]["aws_ssm_parameter"]["api_key"]
        assert parameter["value"] == read and parameter["type"] == "SecureString"
        # the pool's own sensitive output, for the deploy's readiness probe
        assert doc["output"][OUTPUT_API_KEY] == {
            "value": read, "sensitive": True,
            "description": "the API key vLLM requires (Bearer token)"}
        assert doc["output"][OUTPUT_LB_HOST]["value"] == "${aws_lb.service.dns_name}"
        assert doc["output"]["lb_arn"]["value"] == "${aws_lb.service.arn}"
        assert doc["output"]["lb_zone_id"]["value"] == "${aws_lb.service.zone_id}"


def test_no_api_key_means_no_key_stack_and_no_key_read(tmp_path):
    folders = generate(tmp_path, "--no-api-key")
    assert "mixtral-key" not in folders and len(folders) == 3
    for doc in pools_of(folders).values():
        assert "terraform_remote_state" not in doc.get("data", {})
        assert "terraform_data" not in doc["resource"] and OUTPUT_API_KEY not in doc["output"]


def test_the_route53_front_names_each_pool_by_reference(route53_folders):
    front = main_tf(route53_folders["mixtral-front"])
    pools = pools_of(route53_folders)
    states = front["data"]["terraform_remote_state"]
    assert sorted(s["config"]["path"] for s in states.values()) == \
        sorted(f"../{name}/terraform.tfstate" for name in pools)
    records = front["resource"]["aws_route53_record"]
    checks = front["resource"]["aws_route53_health_check"]
    assert set(records) == set(checks) == set(states)
    for key, record in records.items():
        outputs = f"data.terraform_remote_state.{key}.outputs"
        assert record["alias"] == {"name": f"${{{outputs}.lb_host}}",
                                   "zone_id": f"${{{outputs}.lb_zone_id}}",
                                   "evaluate_target_health": True}
        assert (record["type"], record["name"], record["zone_id"]) == ("A", DOMAIN, ZONE_ID)
        assert "ttl" not in record and "records" not in record  # alias: neither
        assert record["set_identifier"] == key
        assert record["health_check_id"] == f"${{aws_route53_health_check.{key}.id}}"
        assert record["weighted_routing_policy"] == {"weight": 1}
        assert checks[key]["fqdn"] == f"${{{outputs}.lb_host}}"
        assert (checks[key]["type"], checks[key]["resource_path"]) == ("HTTP", "/health")


def test_the_accelerator_reads_each_alb_arn_by_reference(accelerator_folders):
    front = main_tf(accelerator_folders["mixtral-front"])
    groups = front["resource"]["aws_globalaccelerator_endpoint_group"]
    pools = pools_of(accelerator_folders)
    assert set(groups) == {doc["provider"]["aws"]["region"] for doc in pools.values()}
    for region, group in groups.items():
        (endpoint,) = group["endpoint_configuration"]
        assert endpoint["endpoint_id"] == \
            f"${{data.terraform_remote_state.aws-{region}.outputs.lb_arn}}"
        assert group["listener_arn"] == "${aws_globalaccelerator_listener.front.id}"


@needs_terraform_aws
@pytest.mark.parametrize("kind", ["route53", "accelerator"])
def test_every_folder_passes_terraform_validate(kind, request, tmp_path):
    folders = request.getfixturevalue(f"{kind}_folders")
    pools = pools_of(folders)
    # the pools first: the shared init must install the AWS provider
    documents = [*pools.values(), *(main_tf(f) for n, f in folders.items() if n not in pools)]
    terraform_validate(documents, tmp_path)


def test_generate_twice_writes_the_same_bytes(tmp_path):
    first = generate(tmp_path, *ROUTE53)
    before = {p: p.read_bytes() for f in first.values() for p in sorted(f.iterdir())}
    again = generate(tmp_path, *ROUTE53)
    assert again == first
    assert {p: p.read_bytes() for f in again.values() for p in sorted(f.iterdir())} == before


def test_nothing_secret_is_written(tmp_path, monkeypatch):
    token = "hf_PoolsTokenMustNeverLeak0123456789"
    monkeypatch.setenv("HF_TOKEN", token)
    folders = generate(tmp_path, *ROUTE53)
    for folder in folders.values():
        for path in folder.iterdir():
            assert token not in path.read_text()
        assert "terraform.tfstate" in (folder / ".gitignore").read_text()


def test_the_summary_gives_apply_and_destroy_order(tmp_path, capsys):
    folders = generate(tmp_path, *ROUTE53)
    out = capsys.readouterr().out
    pools = list(pools_of(folders))
    applies = [line for line in out.splitlines() if line.rstrip().endswith(" apply")]
    destroys = [line for line in out.splitlines() if line.rstrip().endswith(" destroy")]
    order = ["mixtral-key", *pools, "mixtral-front"]
    assert [f"-chdir={folders[n]} apply" in line for n, line in zip(order, applies,
                                                                    strict=True)] == [True] * 4
    assert [f"-chdir={folders[n]} destroy" in line
            for n, line in zip(reversed(order), destroys, strict=True)] == [True] * 4
    assert "may run in parallel" in out
    # only the pools read the secrets at apply time, and the summary names them
    assert ["TF_VAR_hf_token" in line for line in applies] == [False, True, True, False]
    assert "Secrets: put HF_TOKEN in an env file" in out


@pytest.mark.parametrize(("flags", "says"), [
    (("--front", "route53", "--domain", DOMAIN), "--front route53 needs --domain NAME"),
    (("--front", "route53", "--hosted-zone-id", ZONE_ID), "--front route53 needs --domain"),
    (("--hosted-zone-id", ZONE_ID), "--hosted-zone-id is the zone of a --front route53"),
    (("--front", "global-accelerator", "--domain", DOMAIN), "takes no --domain"),
    (("--routing", "latency"), "--routing latency is a Route 53 routing policy"),
    ((*ROUTE53, "--dns-zone", "Z1"), "--dns-zone is for one pool's HTTPS"),
])
def test_bad_front_flags_exit_2_with_one_line(flags, says, tmp_path, capsys):
    assert run_generate(tmp_path, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not (tmp_path / "stacks").exists()


# --- an AWS pool and a GCP pool behind one Route 53 name ---------------------------------------

def mixed_layout(**given):
    """The frozen plan's best AWS and best GCP candidates as two pools of one replica."""
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(spot=False), model=inputs.model)
    pools = []
    for cloud in ("aws", "gcp"):
        c = next(c for c in plan.candidates if c.cloud == cloud)
        pools.append(Pool(cloud=cloud, region=c.region, use_spot=False, replicas=1,
                          instance_types=(c.instance_type,), price_per_hour=c.price_per_hour,
                          candidate_ids=(c.id,), zones=tuple(c.zones)))
    choices = Choices(front="route53", domain=DOMAIN, hosted_zone_id=ZONE_ID,
                      gcp_project="my-project", **given)
    return build_layout(inputs, plan, pools, choices)


def test_a_narrowed_allow_cidr_under_route53_says_the_health_checkers_need_it():
    assert not [n for n in mixed_layout().notes if "health checkers" in n]
    (note,) = [n for n in mixed_layout(allow_cidrs=("203.0.113.0/24",)).notes
               if "health checkers" in n]
    assert "ROUTE53_HEALTHCHECKS" in note and "--allow-cidr" in note


def test_aws_and_gcp_pools_share_one_name_alias_and_plain_a_records():
    layout = mixed_layout()
    aws_pool, gcp_pool = layout.pools
    front = render_shared(ServiceStack("front", layout.front_stack, layout.service,
                                       front=layout.front))
    records = front["resource"]["aws_route53_record"]
    checks = front["resource"]["aws_route53_health_check"]
    aws_key, gcp_key = f"aws-{aws_pool.region}", f"gcp-{gcp_pool.region}"
    assert {r["type"] for r in records.values()} == {"A"}
    assert records[aws_key]["alias"]["name"] == \
        f"${{data.terraform_remote_state.{aws_key}.outputs.lb_host}}"
    gcp_host = f"${{data.terraform_remote_state.{gcp_key}.outputs.lb_host}}"
    assert (records[gcp_key]["records"], records[gcp_key]["ttl"]) == ([gcp_host], 60)
    assert "alias" not in records[gcp_key]
    assert checks[aws_key]["fqdn"] != checks[gcp_key]["ip_address"] == gcp_host
    gcp = render(gcp_pool)
    assert gcp["output"][OUTPUT_LB_HOST]["value"] == \
        "${google_compute_forwarding_rule.listener.ip_address}"
    assert "terraform_data" not in gcp["resource"]
    assert gcp["resource"]["google_secret_manager_secret_version"]["api_key"][
        "secret_data_wo"] == "${sensitive(data.terraform_remote_state.api_key.outputs.api_key)}"
    assert gcp["data"]["terraform_remote_state"]["api_key"]["config"]["path"] == \
        f"../{layout.key_stack}/terraform.tfstate"


def test_the_mixed_stacks_use_only_arguments_their_providers_have(tmp_path):
    layout = mixed_layout()
    google = json.loads((SCHEMAS / "google_provider_schema.json").read_text())["resources"]
    gcp = render(layout.pools[1])
    for kind, blocks in gcp["resource"].items():
        for body in blocks.values():
            assert unknown_arguments(body, google[kind], kind) == []
    for body in gcp["data"]["terraform_remote_state"].values():
        assert unknown_arguments(body, REMOTE_STATE, "terraform_remote_state") == []


@needs_terraform_aws
def test_the_mixed_front_and_the_aws_pool_pass_terraform_validate(tmp_path):
    layout = mixed_layout()
    front = render_shared(ServiceStack("front", layout.front_stack, layout.service,
                                       front=layout.front))
    terraform_validate([render(layout.pools[0]), front, render_key(
        ServiceStack("key", layout.key_stack or "", layout.service))], tmp_path)


# --- the engine's key stack, with the real CLI (terraform_data needs no provider) -----------

@needs_terraform_aws
def test_the_engine_draws_keeps_and_destroys_the_key(tmp_path):
    override = {"x_override.tf.json": {"provider": {"aws": {"region": "us-east-1"}}}}
    engine = TerraformEngine(tmp_path / "work", plugin_dir=PLUGIN_DIR, overrides=override,
                             env={"TF_CLI_CONFIG_FILE": "/dev/null"})
    key = ServiceStack("key", "mixtral-key", "mixtral")
    first = engine.up_shared(key, timeout_s=120)
    assert first.ok, first.error_texts()
    value = first.outputs[OUTPUT_API_KEY]
    assert re.fullmatch(r"[0-9a-f]{64}", value)  # two UUIDs without their dashes
    folder = engine.shared_dir(key)
    assert folder == tmp_path / "work" / "stacks" / "mixtral-key"
    assert not (folder / "x_override.tf.json").exists()  # no provider to override there
    assert value not in (folder / "main.tf.json").read_text()
    again = engine.up_shared(key, timeout_s=120)  # a later apply keeps the key
    assert again.ok and again.outputs[OUTPUT_API_KEY] == value
    assert engine.shared_outputs(key) == {OUTPUT_API_KEY: value}
    gone = engine.destroy_shared(key)
    assert gone.ok, gone.error_texts()
    assert not folder.exists() and engine.shared_outputs(key) == {}
