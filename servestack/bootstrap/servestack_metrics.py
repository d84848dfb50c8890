"""servestack-metrics: every 60 s, read vLLM's /metrics on this VM and publish the gauge the
cloud's autoscaler tracks, with the VM's own identity (stdlib only: it runs on any image).

The gauges (servestack.deployment.model.SHIPPED_METRICS):
- requests_waiting: vllm:num_requests_waiting, summed over its series (one per engine);
- kv_cache_usage_percent: vllm:kv_cache_usage_perc (a 0..1 fraction) x 100, averaged over its
  series; older vLLM names it vllm:gpu_cache_usage_perc (now deprecated), read when the new
  one is absent;
- requests_per_second: the per-second rate of http_requests_total (prometheus-fastapi-
  instrumentator, which vLLM's API server mounts) over the handlers under /v1, between two
  reads; a counter that went down (vLLM restarted) counts from zero.

Where it goes:
- AWS: `aws cloudwatch put-metric-data` (the DLAMI's CLI, else the one the secret fetch puts in
  /opt/servestack/tools), namespace Servestack/vLLM, dimension AutoScalingGroupName read from
  the IMDSv2 instance tag aws:autoscaling:groupName (the launch template must enable
  instance_metadata_tags), so the group's alarms average it over its VMs.
- GCP: Cloud Monitoring projects.timeSeries.create, metric custom.googleapis.com/servestack/
  <name>, GAUGE DOUBLE, on the monitored resource gce_instance (project_id, instance_id, zone),
  with the metadata server's token for the VM's service account.
- Azure: the Azure Monitor custom-metrics REST API, https://<region>.monitoring.azure.com/
  <scale set resource id>/metrics, namespace servestack/vllm, dimension instance=<VM name>, with
  a managed-identity token from IMDS for https://monitoring.azure.com/ (the identity needs the
  Monitoring Metrics Publisher role on the scale set).

Settings come from the environment (systemd's EnvironmentFile: /etc/servestack/servestack.env
and metrics.env). Every endpoint can be redirected by a SERVESTACK_*_URL setting; the tests
point them at a server on 127.0.0.1. A failed read or publish is logged and retried at the next
tick: the service never exits on a cloud's hiccup.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

TIMEOUT = 10
SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
AWS_UNITS = {"requests_waiting": "Count", "kv_cache_usage_percent": "Percent",
             "requests_per_second": "Count/Second"}


# --- Prometheus text format ----------------------------------------------------------------

def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample of a Prometheus text exposition; comment lines
    (# HELP, # TYPE) and blank lines skipped, label values unescaped."""
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = SAMPLE.match(line.strip())
        if match is None:
            raise ValueError(f"not a Prometheus sample: {line[:120]!r}")
        name, labels, value = match.groups()
        samples.append((name, _labels(labels[1:-1] if labels else ""), _number(value)))
    return samples


def _labels(text: str) -> dict[str, str]:
    labels, at = {}, 0
    while at < len(text.rstrip()):
        match = LABEL.match(text, at)
        if match is None:
            raise ValueError(f"bad labels: {text[:120]!r}")
        labels[match.group(1)] = re.sub(r'\\[\\"n]', lambda m: ESCAPES[m.group(0)],
                                        match.group(2))
        at = match.end()
    return labels


def _number(text: str) -> float:
    """Go's float spellings as Prometheus writes them (NaN, +Inf, -Inf) and plain numbers."""
    return float({"+Inf": "inf", "-Inf": "-inf", "NaN": "nan"}.get(text, text))


def values_of(samples, name: str) -> list[float]:
    return [v for n, _, v in samples if n == name and not math.isnan(v)]


def requests_waiting(samples) -> float | None:
    found = values_of(samples, "vllm:num_requests_waiting")
    return sum(found) if found else None


def kv_cache_percent(samples) -> float | None:
    found = values_of(samples, "vllm:kv_cache_usage_perc") or \
        values_of(samples, "vllm:gpu_cache_usage_perc")
    return 100.0 * sum(found) / len(found) if found else None


def api_requests(samples) -> float:
    """Requests answered so far by vLLM's OpenAI API (handlers under /v1)."""
    return sum(v for n, labels, v in samples if n == "http_requests_total"
               and labels.get("handler", "").startswith("/v1") and not math.isnan(v))


def rate(previous: tuple[float, float] | None, now: tuple[float, float]) -> float | None:
    """Per-second rate between two (time, counter) reads; None on the first read. A counter
    below the last read was reset (vLLM restarted): it counts from zero."""
    if previous is None or now[0] <= previous[0]:
        return None
    grown = now[1] - previous[1] if now[1] >= previous[1] else now[1]
    return grown / (now[0] - previous[0])


class Gauge:
    """The shipped gauge's value at each read (keeps the last counter read for the rate)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.last: tuple[float, float] | None = None

    def read(self, text: str, at: float) -> float | None:
        samples = parse(text)
        if self.metric == "requests_waiting":
            return requests_waiting(samples)
        if self.metric == "kv_cache_usage_percent":
            return kv_cache_percent(samples)
        if self.metric == "requests_per_second":
            now = (at, api_requests(samples))
            found, self.last = rate(self.last, now), now
            return found
        raise ValueError(f"unknown metric {self.metric!r}")


# --- HTTP ----------------------------------------------------------------------------------

def http(url: str, *, method: str = "GET", headers: dict | None = None,
         body: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
        return response.read()


def http_json(url: str, **kwargs) -> dict:
    return json.loads(http(url, **kwargs))


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- AWS -----------------------------------------------------------------------------------

def aws_group_name(imds: str) -> str:
    """The instance's Auto Scaling group, from its IMDSv2 instance tags."""
    token = http(f"{imds}/latest/api/token", method="PUT",
                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}).decode()
    return http(f"{imds}/latest/meta-data/tags/instance/aws:autoscaling:groupName",
                headers={"X-aws-ec2-metadata-token": token}).decode().strip()


def aws_command(settings: dict, group: str, value: float) -> list[str]:
    metric = settings["SERVESTACK_METRIC"]
    data = [{"MetricName": metric, "Value": value, "Unit": AWS_UNITS[metric],
             "Dimensions": [{"Name": "AutoScalingGroupName", "Value": group}]}]
    command = [_aws_cli(settings), "cloudwatch", "put-metric-data",
               "--region", settings["SERVESTACK_REGION"],
               "--namespace", settings["SERVESTACK_METRICS_NAMESPACE"],
               "--metric-data", json.dumps(data)]
    endpoint = settings.get("SERVESTACK_AWS_ENDPOINT_URL")
    return command + (["--endpoint-url", endpoint] if endpoint else [])


def _aws_cli(settings: dict) -> str:
    tools = os.path.join(settings.get("SERVESTACK_HOME", "/opt/servestack"), "tools", "bin")
    return shutil.which("aws") or shutil.which("aws", path=tools) or "aws"


class Aws:
    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.group: str | None = None

    def publish(self, value: float) -> None:
        if self.group is None:
            self.group = aws_group_name(self.settings["SERVESTACK_AWS_IMDS_URL"])
        done = subprocess.run(aws_command(self.settings, self.group, value),
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"aws cloudwatch put-metric-data: {done.stderr.strip()[-300:]}")


# --- GCP -----------------------------------------------------------------------------------

def gcp_series(settings: dict, where: dict, value: float, at: str) -> dict:
    """One projects.timeSeries.create body: a GAUGE DOUBLE point on this gce_instance."""
    return {"timeSeries": [{
        "metric": {"type": settings["SERVESTACK_METRICS_NAMESPACE"] +
                   settings["SERVESTACK_METRIC"]},
        "resource": {"type": "gce_instance", "labels": where},
        "metricKind": "GAUGE", "valueType": "DOUBLE",
        "points": [{"interval": {"endTime": at}, "value": {"doubleValue": value}}]}]}


class Gcp:
    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.metadata = settings["SERVESTACK_GCP_METADATA_URL"]
        self.where: dict | None = None

    def _get(self, path: str) -> str:
        return http(f"{self.metadata}/{path}",
                    headers={"Metadata-Flavor": "Google"}).decode().strip()

    def _instance(self) -> dict:
        project = self.settings.get("SERVESTACK_GCP_PROJECT") or self._get("project/project-id")
        zone = self._get("instance/zone").rsplit("/", 1)[-1]  # projects/N/zones/<zone>
        return {"project_id": project, "instance_id": self._get("instance/id"), "zone": zone}

    def publish(self, value: float) -> None:
        self.where = self.where or self._instance()
        token = json.loads(self._get("instance/service-accounts/default/token"))["access_token"]
        body = gcp_series(self.settings, self.where, value, utc_now())
        url = (f"{self.settings['SERVESTACK_GCP_MONITORING_URL']}/v3/projects/"
               f"{urllib.parse.quote(self.where['project_id'])}/timeSeries")
        http(url, method="POST", body=json.dumps(body).encode(),
             headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


# --- Azure ---------------------------------------------------------------------------------

def azure_body(settings: dict, vm: str, value: float, at: str) -> dict:
    """One custom-metric document: this VM's value as a one-sample series (min = max = sum)."""
    return {"time": at, "data": {"baseData": {
        "metric": settings["SERVESTACK_METRIC"],
        "namespace": settings["SERVESTACK_METRICS_NAMESPACE"],
        "dimNames": ["instance"],
        "series": [{"dimValues": [vm], "min": value, "max": value, "sum": value,
                    "count": 1}]}}}


def azure_scale_set(compute: dict) -> str:
    """The resource id of the scale set this VM belongs to, from IMDS's compute document."""
    if not compute.get("vmScaleSetName"):
        raise RuntimeError("this VM is in no scale set: nothing to publish against")
    return (f"/subscriptions/{compute['subscriptionId']}/resourceGroups/"
            f"{compute['resourceGroupName']}/providers/Microsoft.Compute/"
            f"virtualMachineScaleSets/{compute['vmScaleSetName']}")


class Azure:
    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.imds = settings["SERVESTACK_AZURE_IMDS_URL"]
        self.compute: dict | None = None

    def _imds(self, path: str) -> dict:
        return http_json(f"{self.imds}/metadata/{path}", headers={"Metadata": "true"})

    def publish(self, value: float) -> None:
        self.compute = self.compute or self._imds("instance/compute?api-version=2021-02-01")
        token = self._imds("identity/oauth2/token?api-version=2018-02-01&resource="
                           + urllib.parse.quote("https://monitoring.azure.com/", safe=""))
        base = self.settings["SERVESTACK_AZURE_MONITOR_URL"].format(
            region=self.compute["location"])
        body = azure_body(self.settings, self.compute["name"], value, utc_now())
        http(f"{base}{azure_scale_set(self.compute)}/metrics", method="POST",
             body=json.dumps(body).encode(),
             headers={"Authorization": f"Bearer {token['access_token']}",
                      "Content-Type": "application/json"})


# --- the loop ------------------------------------------------------------------------------

DEFAULTS = {
    "SERVESTACK_METRICS_INTERVAL": "60",
    "SERVESTACK_AWS_IMDS_URL": "http://169.254.169.254",
    "SERVESTACK_GCP_METADATA_URL": "http://metadata.google.internal/computeMetadata/v1",
    "SERVESTACK_GCP_MONITORING_URL": "https://monitoring.googleapis.com",
    "SERVESTACK_AZURE_IMDS_URL": "http://169.254.169.254",
    "SERVESTACK_AZURE_MONITOR_URL": "https://{region}.monitoring.azure.com",
}


def publisher_for(settings: dict):
    """The cloud's publisher class, found by name: the bootstrap ships only this cloud's."""
    return globals()[settings["SERVESTACK_CLOUD"].capitalize()](settings)


def settings_from(env: dict) -> dict:
    settings = {**DEFAULTS, **{k: v for k, v in env.items() if k.startswith("SERVESTACK_")}}
    settings.setdefault("SERVESTACK_VLLM_METRICS_URL",
                        f"http://127.0.0.1:{settings.get('SERVESTACK_PORT', '8000')}/metrics")
    return settings


def tick(settings: dict, gauge: Gauge, publisher) -> float | None:
    """Read vLLM once and publish the gauge; the value published (None: nothing to publish
    yet: vLLM not up, or the first read of a rate)."""
    try:
        text = http(settings["SERVESTACK_VLLM_METRICS_URL"]).decode()
    except OSError as exc:
        log(f"vLLM's metrics are not readable yet: {exc}")
        return None
    value = gauge.read(text, time.monotonic())
    if value is None:
        return None
    publisher.publish(value)
    return value


def log(text: str) -> None:
    print(f"servestack-metrics: {text}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    """Publish every SERVESTACK_METRICS_INTERVAL seconds; `--once`: one tick, exit 1 if it
    failed (the tests)."""
    settings = settings_from(dict(os.environ))
    gauge = Gauge(settings["SERVESTACK_METRIC"])
    publisher = publisher_for(settings)
    interval = float(settings["SERVESTACK_METRICS_INTERVAL"])
    while True:
        started = time.monotonic()
        try:
            tick(settings, gauge, publisher)
        except (OSError, ValueError, KeyError, RuntimeError,
                subprocess.SubprocessError) as exc:
            log(f"publishing {settings['SERVESTACK_METRIC']} failed: {exc}")
            if "--once" in argv:
                return 1
        if "--once" in argv:
            return 0
        time.sleep(max(interval - (time.monotonic() - started), 1.0))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
