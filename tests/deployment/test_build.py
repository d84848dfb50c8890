"""servestack.deployment: the decisions both engines read, made once, and their round trip."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache

import pytest
from servestack.catalog import azure_zones

from servestack import clouds, planner
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Choices, Deployment, ImageRef
from servestack.errors import UserError
from servestack.inputs import load_inputs
from tests.fakes import FROZEN_CATALOG

AWS_CLOUD = clouds.get("aws")
GCP_CLOUD = clouds.get("gcp")
AZURE_CLOUD = clouds.get("azure")


@cache
def planned(cloud: str, spot: bool) -> tuple:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    plan = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                        planner.Options(cloud=cloud, spot=spot), model=inputs.model)
    return inputs, plan.candidates


def deployment(cloud: str, spot: bool = False, **spec_changes) -> Deployment:
    inputs, candidates = planned(cloud, spot)
    spec = replace(inputs.spec, **spec_changes)
    return build_deployment(spec, candidates[0], candidates, model=inputs.model,
                            choices=Choices(ssh_cidrs=("203.0.113.0/24",)))


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
@pytest.mark.parametrize("spot", [False, True])
def test_round_trips_through_json(cloud, spot):
    d = deployment(cloud, spot)
    assert Deployment.from_config(json.loads(json.dumps(d.to_config()))) == d


def test_stale_or_foreign_configs_are_refused():
    config = deployment("azure").to_config()
    with pytest.raises(UserError, match="unknown keys: image_id"):
        Deployment.from_config({**config, "image_id": None})
    stale = {k: v for k, v in config.items() if k != "network"}
    with pytest.raises(UserError, match="missing keys: network"):
        Deployment.from_config(stale)
    with pytest.raises(UserError, match=r"deployment\.image has unknown keys: tag"):
        Deployment.from_config({**config, "image": {**config["image"], "tag": "x"}})


def test_cloud_decisions_per_cloud():
    aws, gcp, azure = deployment("aws"), deployment("gcp"), deployment("azure")
    assert (aws.capacity_timeout, gcp.capacity_timeout, azure.capacity_timeout) == \
        ("15m", None, None)
    assert [d.image for d in (aws, gcp, azure)] == \
        [AWS_CLOUD.default_image, GCP_CLOUD.default_image,
         AZURE_CLOUD.default_image]
    assert all(d.image.kind == "lookup" for d in (aws, gcp, azure))
    assert aws.network == AWS_CLOUD.network and aws.network.subnet is None
    assert (gcp.network.subnet, gcp.network.proxy_subnet) == ("10.64.0.0/20", "10.64.16.0/23")
    assert (azure.network.vnet, azure.network.subnet) == ("10.50.0.0/16", "10.50.0.0/24")
    assert {d.ssh_port for d in (aws, gcp, azure)} == {22}
    assert (aws.admin_user, gcp.admin_user, azure.admin_user) == (None, None, "servestack")
    assert (aws.ssh_nat_ports, azure.ssh_nat_ports) == (None, (50000, 50099))
    assert aws.secret.key == "alias/aws/ssm" and gcp.secret.key is None


def test_spec_image_overrides_the_default_per_region():
    d = deployment("gcp", image_id="projects/acme/global/images/vllm")
    assert d.image == ImageRef(kind="id", id="projects/acme/global/images/vllm")
    region = deployment("aws").region
    d = deployment("aws", image_id={region: "ami-0123456789abcdef0"})
    assert d.image == ImageRef(kind="id", id="ami-0123456789abcdef0")


def test_azure_image_ids_are_a_marketplace_urn_or_a_resource_id():
    urn = AZURE_CLOUD.image_ref("Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest")
    assert urn.kind == "lookup" and urn.marketplace() == {
        "publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy",
        "sku": "22_04-lts-gen2", "version": "latest"}
    gallery = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/x/images/y"
    assert AZURE_CLOUD.image_ref(gallery) == ImageRef(kind="id", id=gallery)
    for wrong in ("ubuntu-22.04", "a:b::d", "/tmp/image"):
        with pytest.raises(UserError, match="publisher:offer:sku:version"):
            AZURE_CLOUD.image_ref(wrong)
    with pytest.raises(UserError):
        deployment("azure", image_id="ami-0123456789abcdef0")


def test_azure_zones_come_from_the_region_table():
    inputs, candidates = planned("azure", False)
    chosen = candidates[0]
    # the catalog gives region-priced Azure offers their region's zones; the plan keeps them
    assert chosen.zones == ("1", "2", "3") == azure_zones(chosen.region)
    assert deployment("azure").zones == ("1", "2", "3")
    assert azure_zones("northcentralus") == ()  # a region without zones
    no_zones = [c for c in candidates if not azure_zones(c.region)]
    assert all(c.zones == () for c in no_zones)
    assert AZURE_CLOUD.zones_for(replace(chosen, zone="2")) == ("2",)


def test_aws_and_gcp_zones_are_the_candidates():
    for cloud in ("aws", "gcp"):
        _, candidates = planned(cloud, False)
        assert deployment(cloud).zones == tuple(candidates[0].zones)
    # an AWS spot candidate is one zone's (spot is priced per zone), but its group spreads
    # over every zone where the plan sells one of the group's types on spot in that region
    _, spot = planned("aws", True)
    chosen, spread = spot[0], deployment("aws", True)
    types = {i.instance_type for i in spread.instances}
    offered = {c.zone for c in spot if c.region == chosen.region and c.instance_type in types}
    zones = spread.zones
    assert zones[0] == chosen.zone and set(zones) == offered and len(zones) > 1


def test_provisioned_iops_only_for_io2():
    assert AWS_CLOUD.disk_iops("io2", 20) == 10000
    assert AWS_CLOUD.disk_iops("io2", 256) == 16000
    assert AWS_CLOUD.disk_iops("gp3", 256) is None
    ultra = deployment("aws", disk_tier="ultra")
    assert (ultra.disk_type, ultra.disk_iops) == ("io2", 16000)
    assert deployment("aws").disk_iops is None and deployment("gcp", disk_tier="ultra") \
        .disk_iops is None
