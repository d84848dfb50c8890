"""servestack.clouds.gcp: what GCP refuses before anything is built (a --dns-zone that is no
managed zone name, dynamic on-demand fallback without autoscaling), and the spellings of the
API key and TLS pieces both engines share."""

from __future__ import annotations

from dataclasses import replace

import pytest

from servestack import clouds
from servestack.clouds.gcp import gcp_fqdn
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Autoscaling, Choices, Tls
from servestack.errors import UserError
from tests.fakes import INPUTS, PLAN, build


def _gcp_deployment():
    gcp = [c for c in PLAN.candidates if c.cloud == "gcp"]
    return build(gcp[0], gcp)


@pytest.mark.parametrize("zone", ["example-zone", "z", "prod-llm-zone-2", "a" * 63])
def test_a_cloud_dns_managed_zone_name_is_taken(zone):
    d = _gcp_deployment()
    clouds.get("gcp").check(replace(d, tls=Tls("llm.example.com", zone)))


@pytest.mark.parametrize("zone", [
    "Z0123456789ABCDEFGHIJ",  # a Route 53 hosted zone id
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Network/dnszones/example.com",
    "example.com.",  # the zone's DNS name, not its name
    "example-zone-", "9zone", "a" * 64, ""])
def test_anything_else_as_dns_zone_is_refused_in_one_line(zone):
    d = _gcp_deployment()
    with pytest.raises(UserError, match="--dns-zone") as refused:
        clouds.get("gcp").check(replace(d, tls=Tls("llm.example.com", zone)))
    assert refused.value.exit_code == 2 and "Cloud DNS managed zone" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_without_a_zone_or_without_tls_nothing_is_refused():
    d = _gcp_deployment()
    clouds.get("gcp").check(replace(d, tls=Tls("llm.example.com")))  # records as an output
    clouds.get("gcp").check(d)


def test_building_the_deployment_runs_the_check():
    gcp = [c for c in PLAN.candidates if c.cloud == "gcp"]
    with pytest.raises(UserError, match="Cloud DNS managed zone"):
        build_deployment(INPUTS.spec, gcp[0], gcp, model=INPUTS.model,
                         choices=Choices(domain="llm.example.com", dns_zone="Z0123ABC"))


def test_api_key_secret_id_fits_secret_manager_and_differs_from_the_token():
    gcp = clouds.get("gcp")
    key, token = gcp.api_key_ref("mixtral", "blue"), gcp.secret_ref("mixtral", "blue")
    assert key.store == token.store == "secret-manager" and key.name != token.name
    assert gcp.api_key_ref("mixtral", "green").name != key.name
    assert len(key.name) <= 255 and key.name.replace("-", "").replace("_", "").isalnum()


def test_record_names_are_fully_qualified():
    assert gcp_fqdn("llm.example.com") == gcp_fqdn("llm.example.com.") == "llm.example.com."


def test_the_zone_and_the_fallback_are_both_checked_on_one_deployment():
    d = replace(_gcp_deployment(), tls=Tls("llm.example.com", "example-zone"), use_spot=True,
                dynamic_ondemand_fallback=True)
    with pytest.raises(UserError, match="dynamic_ondemand_fallback"):
        clouds.get("gcp").check(d)  # a valid zone does not let a fixed-size fallback pass
    scaled = replace(d, min_replicas=1, max_replicas=4, autoscaling=Autoscaling("qps", 4.0))
    clouds.get("gcp").check(scaled)  # both features together are built
    with pytest.raises(UserError, match="--dns-zone"):
        clouds.get("gcp").check(replace(scaled, tls=Tls("llm.example.com", "example.com.")))
