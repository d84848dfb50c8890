"""checkov scans the Terraform output of every cloud; each finding is fixed or justified.

checkov's Terraform-JSON parser fails on a top-level `terraform` block and then reports zero
resources and exit 0, which reads like a clean scan (shared/reference/machine-facts.md). So the
scan runs on a copy without that block, and the test asserts that resources were scanned.
`.ci/run` installs checkov in its own virtualenv and points SERVESTACK_CHECKOV at it; without it
the test is skipped with the reason.

JUSTIFIED holds the checks servestack fails on purpose; README.md ("Security review: checkov")
gives the reason for each. A new finding fails the test until it is fixed or justified there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from servestack.deployment.build import build_deployment
from servestack.deployment.model import Autoscaling, Choices, Tls
from servestack.inputs import load_inputs
from servestack.planner import Options, plan
from servestack.terraform import render
from tests.fakes import FROZEN_CATALOG

CHECKOV = os.environ.get("SERVESTACK_CHECKOV") or shutil.which("checkov")
JUSTIFIED: dict[str, set[str]] = {
    "aws": {"CKV2_AWS_20", "CKV_AWS_2", "CKV_AWS_103", "CKV_AWS_378",  # no TLS without a domain
            "CKV2_AWS_28",  # no WAF: --allow-cidr decides who reaches the listener
            "CKV_AWS_150",  # no deletion protection: the fallback loop destroys failed stacks
            "CKV_AWS_91",  # no access logs: they need an S3 bucket the user chooses
            "CKV2_AWS_11",  # no VPC flow logs: they need a log destination the user chooses
            "CKV_AWS_88"},  # public IPs on the VMs only with --ssh-cidr, the user's choice
    "gcp": set(),
    "azure": {"CKV_AZURE_110", "CKV_AZURE_42",  # purge protection would block purge on destroy
              # Terraform writes the secret from the deployer's address: not a private vault
              "CKV_AZURE_109", "CKV_AZURE_189", "CKV2_AZURE_32",
              "CKV_AZURE_97",  # encryption at host needs a subscription feature registered
              "CKV_AZURE_41"},  # the secrets have no expiry: an expired token stops the service
}


def variants(cloud: str) -> list:
    """On-demand and spot, with a token and SSH, so every resource kind appears."""
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    found = []
    for spot in (False, True):
        result = plan(inputs.spec, inputs.catalog, inputs.facts,
                      Options(cloud=cloud, spot=spot), model=inputs.model)
        d = build_deployment(inputs.spec, result.candidates[0], result.candidates,
                             model=inputs.model,
                             choices=Choices(ssh_cidrs=("203.0.113.0/24",),
                                             allow_cidrs=("198.51.100.0/24",)))
        found.append(replace(d, gcp_project="acme-prod") if cloud == "gcp" else d)
    return found + [secured(found[1])]


DNS_ZONES = {"aws": "Z0123456789ABCDEFGHIJ", "gcp": "llm-zone",
             "azure": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/dns/"
                      "providers/Microsoft.Network/dnszones/example.com"}


def secured(spot) -> object:
    """The spot variant with HTTPS on a domain, an autoscaler on vLLM's queue and the
    on-demand fallback group: every resource kind of the closed, scaled stack."""
    return replace(spot, tls=Tls(domain="llm.example.com", dns_zone=DNS_ZONES[spot.cloud]),
                   allow_cidrs=("0.0.0.0/0",), min_replicas=1, max_replicas=4,
                   autoscaling=Autoscaling(metric="vllm-waiting", target=5.0),
                   dynamic_ondemand_fallback=True, on_demand_base=0)


def scan(document: dict, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in document.items() if k != "terraform"}
    (folder / "main.tf.json").write_text(json.dumps(body, indent=1))
    result = subprocess.run(
        [str(CHECKOV), "-d", str(folder), "--framework", "terraform_json", "--skip-download",
         "--quiet", "-o", "json"], capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.skipif(not CHECKOV, reason="checkov is not installed (SERVESTACK_CHECKOV)")
@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_checkov_findings_are_fixed_or_justified(cloud, tmp_path):
    failed: dict[str, str] = {}
    for n, deployment in enumerate(variants(cloud)):
        report = scan(render(deployment), tmp_path / str(n))
        summary = report.get("summary", report)
        # terraform_json scans report resource_count 0 even when they ran: count the checks
        ran = summary.get("passed", 0) + summary.get("failed", 0)
        assert ran > 10, f"checkov parsed nothing: {summary}"
        assert summary.get("parsing_errors", 0) == 0, summary
        for check in report.get("results", {}).get("failed_checks", []):
            failed[check["check_id"]] = f"{check['check_id']} {check['resource']}: " \
                                        f"{check['check_name']}"
    unexplained = sorted(v for k, v in failed.items() if k not in JUSTIFIED[cloud])
    assert not unexplained, "new checkov findings:\n" + "\n".join(unexplained)
    stale = JUSTIFIED[cloud] - set(failed)
    assert not stale, f"justified checks that no longer fail (remove them): {sorted(stale)}"


@pytest.mark.skipif(not CHECKOV, reason="checkov is not installed (SERVESTACK_CHECKOV)")
def test_with_a_domain_the_aws_listener_findings_are_gone(tmp_path):
    """The HTTP-only findings are justified by "no domain": with one they must pass."""
    report = scan(render(variants("aws")[-1]), tmp_path)
    failed = {c["check_id"] for c in report.get("results", {}).get("failed_checks", [])}
    assert not failed & {"CKV2_AWS_20", "CKV_AWS_2", "CKV_AWS_103"}, sorted(failed)
