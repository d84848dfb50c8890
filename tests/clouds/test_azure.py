"""Azure's check of a deployment with a domain: what Front Door can serve, refused plainly
otherwise, through the real build (servestack.deployment.build calls Cloud.check)."""

from __future__ import annotations

from functools import cache

import pytest

from servestack import planner
from servestack.cli.main import main
from servestack.clouds.azure import azure_dns_name
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Choices, Deployment
from servestack.errors import UserError
from servestack.inputs import load_inputs
from tests.fakes import FROZEN_CATALOG

ZONE = ("/subscriptions/00000000-0000-0000-0000-000000000003/resourceGroups/dns-rg/providers/"
        "Microsoft.Network/dnszones/example.com")


@cache
def _plan() -> tuple:
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    found = planner.plan(inputs.spec, inputs.catalog, inputs.facts,
                         planner.Options(cloud="azure"), model=inputs.model)
    return inputs, found.candidates


def built(choices: Choices) -> Deployment:
    inputs, candidates = _plan()
    return build_deployment(inputs.spec, candidates[0], candidates, model=inputs.model,
                            choices=choices)


@pytest.mark.parametrize("domain, zone, relative", [
    ("llm.example.com", ZONE, "llm"),
    ("a.b.Example.com.", ZONE.replace("dnszones", "dnsZones"), "a.b"),
])
def test_a_domain_inside_its_zone_is_built(domain, zone, relative):
    d = built(Choices(domain=domain, dns_zone=zone))
    assert d.tls is not None and d.tls.dns_zone == zone
    assert azure_dns_name(d) == ("dns-rg", "example.com", relative)
    assert built(Choices(domain=domain)).tls is not None  # no zone: the records are listed


@pytest.mark.parametrize("zone, message", [
    ("example.com", "expected a DNS zone's resource id"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/privateDnsZones/x.com",
     "expected a DNS zone's resource id"),
    (ZONE.replace("example.com", "example.org"), "not a name inside DNS zone example.org"),
    (ZONE.replace("example.com", "llm.example.com"), "not a name inside DNS zone"),  # apex
])
def test_a_zone_that_cannot_hold_the_domains_records_is_refused(zone, message):
    with pytest.raises(UserError, match=message):
        built(Choices(domain="llm.example.com", dns_zone=zone))


def test_clients_cannot_be_limited_to_cidrs_behind_front_door():
    with pytest.raises(UserError, match="--allow-cidr cannot limit them"):
        built(Choices(domain="llm.example.com", allow_cidrs=("198.51.100.0/24",)))
    # the world, spelled out, is what Front Door serves
    assert built(Choices(domain="llm.example.com", allow_cidrs=("0.0.0.0/0",))).tls
    assert built(Choices(allow_cidrs=("198.51.100.0/24",))).tls is None


def test_the_cli_refuses_it_in_one_line(tmp_path, capsys):
    code = main(["generate", "--catalog-dir", FROZEN_CATALOG, "--cloud", "azure",
                 "--stacks-dir", str(tmp_path / "stacks"), "--domain", "llm.example.com",
                 "--dns-zone", "example.com"])
    lines = capsys.readouterr().err.strip().splitlines()
    # the refusal is the last line, whole (warnings about the spec may come before it)
    assert code == 2 and "expected a DNS zone's resource id" in lines[-1]
    assert lines[-1].endswith("/dnszones/<zone>") and "Traceback" not in "".join(lines)
    assert not (tmp_path / "stacks").exists()
