"""The metrics shipper: Prometheus parsing, the gauges, and the exact requests it sends to each
cloud's API, against a real HTTP server on 127.0.0.1 standing in for vLLM, the metadata
servers and the monitoring APIs; the bootstrap document that installs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from servestack.bootstrap import render_cloud_init, written_files
from servestack.bootstrap import servestack_metrics as sm
from servestack.bootstrap.metrics import SCRIPT_PATH, UNIT
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Autoscaling
from servestack.inputs import load_inputs
from servestack.planner import plan
from tests.fakes import FROZEN_CATALOG

# What vLLM's V1 /metrics looks like (abridged): HELP/TYPE comments, one series per engine,
# a histogram whose le="+Inf" bucket must not confuse the parser, the instrumentator's counter
# with handlers outside /v1 that must not count, and an escaped label value.
VLLM_METRICS = r"""# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="mistralai/Mixtral-8x7B-Instruct-v0.1"} 3.0
vllm:num_requests_waiting{engine="1",model_name="mistralai/Mixtral-8x7B-Instruct-v0.1"} 4.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 12.0
vllm:e2e_request_latency_seconds_sum{model_name="m"} NaN
# HELP http_requests_total Total number of requests by method, status and handler.
# TYPE http_requests_total counter
http_requests_total{handler="/v1/chat/completions",method="POST",status="2xx"} 100.0
http_requests_total{handler="/v1/completions",method="POST",status="4xx"} 20.0
http_requests_total{handler="/health",method="GET",status="2xx"} 5000.0
http_requests_total{handler="/metrics",method="GET",status="2xx"} 40.0
odd_metric{path="a \"quoted\" \\ value, with {braces}"} -Inf 1700000000000
"""
OLD_VLLM = """# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
"""


# --- parsing -------------------------------------------------------------------------------

def test_parse_reads_labels_values_and_escapes():
    samples = sm.parse(VLLM_METRICS)
    assert len(samples) == 11  # comment lines are not samples
    name, labels, value = samples[-1]
    assert name == "odd_metric" and value == float("-inf")
    assert labels == {"path": 'a "quoted" \\ value, with {braces}'}
    assert samples[4] == ("vllm:e2e_request_latency_seconds_bucket",
                          {"le": "+Inf", "model_name": "m"}, 12.0)


def test_parse_refuses_a_line_that_is_not_a_sample():
    with pytest.raises(ValueError, match="not a Prometheus sample"):
        sm.parse("vllm:num_requests_waiting{engine=\"0\" 3\n")


def test_gauges():
    samples = sm.parse(VLLM_METRICS)
    assert sm.requests_waiting(samples) == 7.0  # summed over the engines
    assert sm.kv_cache_percent(samples) == pytest.approx(60.0)  # averaged, in percent
    assert sm.api_requests(samples) == 120.0  # /v1 handlers only, any status
    assert sm.kv_cache_percent(sm.parse(OLD_VLLM)) == 25.0  # the deprecated name
    assert sm.requests_waiting(sm.parse(OLD_VLLM)) is None


def test_rate_between_two_reads_and_after_a_restart():
    assert sm.rate(None, (10.0, 100.0)) is None
    assert sm.rate((10.0, 100.0), (70.0, 220.0)) == 2.0
    assert sm.rate((10.0, 100.0), (70.0, 30.0)) == 0.5  # reset: counts from zero


def test_rate_gauge_needs_two_reads():
    gauge = sm.Gauge("requests_per_second")
    assert gauge.read(VLLM_METRICS, 0.0) is None
    later = VLLM_METRICS.replace("} 100.0", "} 160.0")
    assert gauge.read(later, 60.0) == 1.0


# --- a local stand-in for every endpoint ------------------------------------------------------

class Fake(BaseHTTPRequestHandler):
    """Answers GETs from `routes` (path -> body), records every request."""

    routes: dict[str, bytes] = {}
    seen: list[dict] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append({"method": self.command, "path": unquote(self.path),
                          "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        found = self.routes.get(unquote(self.path).split("?")[0])
        if found is None and self.command == "GET":
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(found or b"{}")

    do_GET = do_PUT = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    Fake.routes, Fake.seen = {"/metrics": VLLM_METRICS.encode()}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _settings(base: str, cloud: str, metric: str, namespace: str) -> dict:
    return sm.settings_from({
        "SERVESTACK_CLOUD": cloud, "SERVESTACK_REGION": "eastus", "SERVESTACK_METRIC": metric,
        "SERVESTACK_METRICS_NAMESPACE": namespace,
        "SERVESTACK_VLLM_METRICS_URL": f"{base}/metrics", "SERVESTACK_AWS_IMDS_URL": base,
        "SERVESTACK_GCP_METADATA_URL": f"{base}/computeMetadata/v1",
        "SERVESTACK_GCP_MONITORING_URL": base, "SERVESTACK_AZURE_IMDS_URL": base,
        "SERVESTACK_AZURE_MONITOR_URL": base + "/{region}", "SERVESTACK_AWS_ENDPOINT_URL": base})


def _posts() -> list[dict]:
    return [r for r in Fake.seen if r["method"] == "POST"]


def test_gcp_time_series_request(server):
    Fake.routes.update({
        "/computeMetadata/v1/project/project-id": b"my-project",
        "/computeMetadata/v1/instance/id": b"4520031799277581759",
        "/computeMetadata/v1/instance/zone": b"projects/123456/zones/us-central1-a",
        "/computeMetadata/v1/instance/service-accounts/default/token":
            b'{"access_token": "ya29.fake", "expires_in": 3599, "token_type": "Bearer"}'})
    settings = _settings(server, "gcp", "requests_waiting", "custom.googleapis.com/servestack/")
    assert sm.tick(settings, sm.Gauge("requests_waiting"), sm.Gcp(settings)) == 7.0
    metadata = [r for r in Fake.seen if r["path"].startswith("/computeMetadata")]
    assert all(r["headers"]["metadata-flavor"] == "Google" for r in metadata)
    [post] = _posts()
    assert post["path"] == "/v3/projects/my-project/timeSeries"
    assert post["headers"]["authorization"] == "Bearer ya29.fake"
    [series] = json.loads(post["body"])["timeSeries"]
    assert series["metric"] == {"type": "custom.googleapis.com/servestack/requests_waiting"}
    assert series["resource"] == {"type": "gce_instance", "labels": {
        "project_id": "my-project", "instance_id": "4520031799277581759", "zone": "us-central1-a"}}
    assert (series["metricKind"], series["valueType"]) == ("GAUGE", "DOUBLE")
    [point] = series["points"]
    assert point["value"] == {"doubleValue": 7.0}
    assert point["interval"]["endTime"].endswith("Z") and "startTime" not in point["interval"]


AZURE_COMPUTE = {"name": "svc-vmss_3f2a1b", "location": "eastus", "vmScaleSetName": "svc-vmss",
                 "subscriptionId": "0000-sub", "resourceGroupName": "svc-rg"}


def test_azure_custom_metric_request(server):
    Fake.routes.update({
        "/metadata/instance/compute": json.dumps(AZURE_COMPUTE).encode(),
        "/metadata/identity/oauth2/token": b'{"access_token": "eyJ.fake"}'})
    settings = _settings(server, "azure", "kv_cache_usage_percent", "servestack/vllm")
    assert sm.tick(settings, sm.Gauge("kv_cache_usage_percent"), sm.Azure(settings)) == \
        pytest.approx(60.0)
    token = next(r for r in Fake.seen if r["path"].startswith("/metadata/identity"))
    assert token["headers"]["metadata"] == "true"
    assert "resource=https://monitoring.azure.com/" in token["path"]  # the trailing slash
    [post] = _posts()
    assert post["path"] == ("/eastus/subscriptions/0000-sub/resourceGroups/svc-rg/providers/"
                            "Microsoft.Compute/virtualMachineScaleSets/svc-vmss/metrics")
    assert post["headers"]["authorization"] == "Bearer eyJ.fake"
    assert post["headers"]["content-type"] == "application/json"
    body = json.loads(post["body"])
    assert body["time"].endswith("Z")
    assert body["data"]["baseData"] == {
        "metric": "kv_cache_usage_percent", "namespace": "servestack/vllm",
        "dimNames": ["instance"], "series": [{"dimValues": ["svc-vmss_3f2a1b"], "min": 60.0,
                                              "max": 60.0, "sum": 60.0, "count": 1}]}


def test_azure_vm_outside_a_scale_set_is_refused():
    with pytest.raises(RuntimeError, match="no scale set"):
        sm.azure_scale_set({**AZURE_COMPUTE, "vmScaleSetName": ""})


def _fake_aws(tmp_path: Path) -> Path:
    record = tmp_path / "aws.argv"
    cli = tmp_path / "bin" / "aws"
    cli.parent.mkdir()
    cli.write_text(f"#!{sys.executable}\nimport json, sys\n"
                   f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    cli.chmod(0o755)
    return record


def test_aws_put_metric_data_with_the_group_from_imds(server, tmp_path, monkeypatch):
    Fake.routes.update({"/latest/api/token": b"imds-token",
                        "/latest/meta-data/tags/instance/aws:autoscaling:groupName": b"svc-asg"})
    record = _fake_aws(tmp_path)
    monkeypatch.setenv("PATH", f"{record.parent / 'bin'}:{os.environ['PATH']}")
    settings = _settings(server, "aws", "requests_waiting", "Servestack/vLLM")
    assert sm.tick(settings, sm.Gauge("requests_waiting"), sm.Aws(settings)) == 7.0
    put = Fake.seen[1]  # IMDSv2: a PUT for the session token first, then the tag with it
    assert put["method"] == "PUT" and put["path"] == "/latest/api/token"
    assert Fake.seen[2]["headers"]["x-aws-ec2-metadata-token"] == "imds-token"
    argv = json.loads(record.read_text())
    assert argv[:6] == ["cloudwatch", "put-metric-data", "--region", "eastus",
                        "--namespace", "Servestack/vLLM"]
    data = json.loads(argv[argv.index("--metric-data") + 1])
    assert data == [{"MetricName": "requests_waiting", "Value": 7.0, "Unit": "Count",
                     "Dimensions": [{"Name": "AutoScalingGroupName", "Value": "svc-asg"}]}]


def test_aws_real_cli_sends_put_metric_data(server, tmp_path, monkeypatch):
    """The real AWS CLI against the stand-in: the request CloudWatch would get."""
    if not shutil.which("aws"):
        pytest.skip("the aws CLI is not installed")
    for key, value in {"AWS_ACCESS_KEY_ID": "AKIAFAKE", "AWS_SECRET_ACCESS_KEY": "fake",
                       "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    settings = _settings(server, "aws", "kv_cache_usage_percent", "Servestack/vLLM")
    command = sm.aws_command(settings, "svc-asg", 61.5)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    [post] = _posts()
    assert done.returncode == 0, done.stderr
    assert "monitoring" in post["headers"]["authorization"]  # signed for CloudWatch
    body = post["body"]
    assert b"PutMetricData" in body + str(post["headers"]).encode()
    for needle in (b"kv_cache_usage_percent", b"svc-asg", b"AutoScalingGroupName", b"Percent"):
        assert needle in body


def test_vllm_not_up_publishes_nothing(server):
    settings = {**_settings(server, "gcp", "requests_waiting", "x/"),
                "SERVESTACK_VLLM_METRICS_URL": f"{server}/not-there"}
    assert sm.tick(settings, sm.Gauge("requests_waiting"), sm.Gcp(settings)) is None
    assert _posts() == []


# --- the document ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deployments():
    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    candidates = plan(inputs.spec, inputs.catalog, inputs.facts, model=inputs.model).candidates
    found = {}
    for candidate in candidates:
        if candidate.cloud not in found:
            found[candidate.cloud] = build_deployment(inputs.spec, candidate, candidates,
                                                      model=inputs.model)
    return found


def _scaled(d, metric: str):
    return replace(d, min_replicas=1, max_replicas=8,
                   autoscaling=Autoscaling(metric=metric, target=5.0))


@pytest.mark.parametrize(("cloud", "metric", "shipped"), [
    ("aws", "vllm-waiting", "requests_waiting"), ("gcp", "vllm-kv-cache", "kv_cache_usage_percent"),
    ("azure", "qps", "requests_per_second"), ("azure", "vllm-waiting", "requests_waiting")])
def test_document_installs_the_shipper(deployments, cloud, metric, shipped):
    doc = render_cloud_init(_scaled(deployments[cloud], metric))
    files = written_files(doc)
    env = dict(line.split("=", 1) for line in files["/etc/servestack/metrics.env"].splitlines()
               if not line.startswith("#"))
    assert env["SERVESTACK_METRIC"] == shipped
    assert env["SERVESTACK_CLOUD"] == cloud and env["SERVESTACK_METRICS_INTERVAL"] == "60"
    assert env["SERVESTACK_PORT"] == str(deployments[cloud].service_port)
    assert "EnvironmentFile=/etc/servestack/metrics.env" in files[f"/etc/systemd/system/{UNIT}"]
    assert "def publish" in files[SCRIPT_PATH]
    runcmd = yaml.safe_load(doc)["runcmd"]
    assert UNIT in runcmd[1] and UNIT in runcmd[2]


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_no_shipper_when_the_balancer_counts(deployments, cloud):
    """qps on AWS and GCP: the autoscaler reads the load balancer; a fixed group: nothing."""
    for d in (_scaled(deployments[cloud], "qps"), deployments[cloud]):
        doc = render_cloud_init(d)
        assert UNIT not in doc and SCRIPT_PATH not in written_files(doc)


GCP_METADATA = {
    "/computeMetadata/v1/project/project-id": b"my-project",
    "/computeMetadata/v1/instance/id": b"4520031799277581759",
    "/computeMetadata/v1/instance/zone": b"projects/123456/zones/us-central1-a",
    "/computeMetadata/v1/instance/service-accounts/default/token": b'{"access_token": "t"}'}
STAND_INS = {
    "aws": {"/latest/api/token": b"imds-token",
            "/latest/meta-data/tags/instance/aws:autoscaling:groupName": b"svc-asg"},
    "gcp": GCP_METADATA,
    "azure": {"/metadata/instance/compute": json.dumps(AZURE_COMPUTE).encode(),
              "/metadata/identity/oauth2/token": b'{"access_token": "eyJ.fake"}'}}


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_the_shipped_script_runs_as_written(deployments, server, tmp_path, cloud):
    """The script as the document writes it (one cloud's part, re-printed without comments
    and docstrings) reads vLLM and publishes one value when run."""
    doc = render_cloud_init(_scaled(deployments[cloud], "vllm-waiting"))
    script = tmp_path / "servestack_metrics.py"
    script.write_text(written_files(doc)[SCRIPT_PATH])
    Fake.routes.update(STAND_INS[cloud])
    record = _fake_aws(tmp_path)
    env = {**os.environ, **_settings(server, cloud, "requests_waiting", "ns/"),
           "PATH": f"{record.parent / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, str(script), "--once"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    if cloud == "aws":
        argv = json.loads(record.read_text())
        assert json.loads(argv[argv.index("--metric-data") + 1])[0]["Value"] == 7.0
        return
    [post] = _posts()
    body = json.loads(post["body"])
    value = body["timeSeries"][0]["points"][0]["value"]["doubleValue"] if cloud == "gcp" \
        else body["data"]["baseData"]["series"][0]["sum"]
    assert value == 7.0


def test_a_failed_publish_is_reported(deployments, server, tmp_path):
    """An API that refuses (here: no token route) makes `--once` exit 1 with the reason."""
    doc = render_cloud_init(_scaled(deployments["gcp"], "vllm-waiting"))
    script = tmp_path / "servestack_metrics.py"
    script.write_text(written_files(doc)[SCRIPT_PATH])
    env = {**os.environ, **_settings(server, "gcp", "requests_waiting", "ns/")}
    done = subprocess.run([sys.executable, str(script), "--once"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1 and "publishing requests_waiting failed" in done.stderr


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_the_document_carries_only_its_cloud(deployments, cloud):
    text = written_files(render_cloud_init(_scaled(deployments[cloud], "vllm-waiting")))[
        SCRIPT_PATH]
    classes = {"aws": "class Aws", "gcp": "class Gcp", "azure": "class Azure"}
    assert [c for c, line in classes.items() if line in text] == [cloud]
    assert '"""' not in text and "\n#" not in text  # no docstring, no comment line


def test_cloud_init_schema_and_shellcheck(deployments, tmp_path):
    if not (shutil.which("cloud-init") and shutil.which("shellcheck")):
        pytest.skip("cloud-init or shellcheck is not installed")
    for cloud, metric in (("aws", "vllm-waiting"), ("gcp", "vllm-kv-cache"), ("azure", "qps")):
        doc = render_cloud_init(_scaled(deployments[cloud], metric))
        path = tmp_path / f"{cloud}.yaml"
        path.write_text(doc)
        result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                                capture_output=True, text=True, check=False)
        assert "Valid cloud-config" in result.stdout, result.stdout + result.stderr
        env = tmp_path / f"{cloud}.env"
        env.write_text(written_files(doc)["/etc/servestack/metrics.env"])
        result = subprocess.run(["shellcheck", "-s", "bash", str(env)], capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, result.stdout
