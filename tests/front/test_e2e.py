"""End to end, for real: `terraform apply` of a Route 53 front over two pool endpoints against a
local AWS API (moto in server mode, the real AWS provider 5.100 pointed at it), checked through
boto3, then `terraform destroy` leaving neither a health check nor a record.

Runs only with SERVESTACK_E2E=1 and SERVESTACK_E2E_ALL=1 (and terraform + the provider mirror
present): about a minute, most of it the provider waiting for each record change to reach
INSYNC. CI leaves it out: tests/terraform/test_e2e_pools.py applies a Route 53 front (through
the real hedged deploy) against moto too; this one keeps the weighted two-record case.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

from servestack.front.build import build_front
from servestack.front.model import PoolEndpoint
from servestack.front.terraform import render_front
from tests.e2e.moto_faults import MotoServer, terraform_override
from tests.fakes import PLUGIN_DIR, e2e_skip

ZONE = "example.com"
DOMAIN = f"llm.{ZONE}"
# Two pools' load balancers, as their stacks export them (moto resolves nothing: names will do).
POOLS = (PoolEndpoint("aws", "us-east-1", "pool-a-1234567890.us-east-1.elb.amazonaws.com", 80,
                      "/health", weight=3),
         PoolEndpoint("aws", "us-west-2", "pool-b-1234567890.us-west-2.elb.amazonaws.com", 80,
                      "/health", weight=1))


pytestmark = e2e_skip("about a minute here", extended=True)


def terraform(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "CHECKPOINT_DISABLE": "1"}
    done = subprocess.run(["terraform", *args, "-no-color"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def route53(moto: MotoServer):
    import boto3

    return boto3.client("route53", region_name="us-east-1", endpoint_url=moto.url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def our_records(client, zone_id: str) -> list[dict]:
    listed = client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return [r for r in listed if r["Name"].rstrip(".") == DOMAIN]


def test_route53_front_applies_over_two_pools_and_destroys_cleanly(tmp_path):
    with MotoServer(tmp_path) as moto:
        client = route53(moto)
        zone = client.create_hosted_zone(Name=ZONE, CallerReference=str(uuid.uuid4()))
        zone_id = zone["HostedZone"]["Id"].rsplit("/", 1)[-1]
        plan = build_front("route53", "mixtral", POOLS, domain=DOMAIN, hosted_zone_id=zone_id)
        work = tmp_path / "front"
        work.mkdir()
        (work / "main.tf.json").write_text(json.dumps(render_front(plan)))
        override = terraform_override(moto.url)
        override["provider"]["aws"]["endpoints"]["route53"] = moto.url
        (work / "moto_override.tf.json").write_text(json.dumps(override))
        terraform(work, "init", "-input=false", f"-plugin-dir={PLUGIN_DIR}")
        terraform(work, "apply", "-auto-approve", "-input=false")

        checks = client.list_health_checks()["HealthChecks"]
        by_host = {c["HealthCheckConfig"]["FullyQualifiedDomainName"]: c for c in checks}
        assert set(by_host) == {p.host for p in POOLS}
        for pool in POOLS:
            config = by_host[pool.host]["HealthCheckConfig"]
            assert (config["Type"], config["Port"], config["ResourcePath"]) == \
                ("HTTP", 80, "/health")
            assert (config["RequestInterval"], config["FailureThreshold"]) == (10, 3)
        records = {r["SetIdentifier"]: r for r in our_records(client, zone_id)}
        assert set(records) == {p.key for p in POOLS}
        for pool in POOLS:
            rec = records[pool.key]
            assert (rec["Type"], rec["TTL"], rec["Weight"]) == ("CNAME", 60, pool.weight)
            assert [v["Value"] for v in rec["ResourceRecords"]] == [pool.host]
            assert rec["HealthCheckId"] == by_host[pool.host]["Id"]  # its own pool's check
        outputs = json.loads(terraform(work, "output", "-json").stdout)
        assert outputs["endpoint"]["value"] == f"http://{DOMAIN}"

        terraform(work, "destroy", "-auto-approve", "-input=false")
        assert client.list_health_checks()["HealthChecks"] == []
        assert our_records(client, zone_id) == []
