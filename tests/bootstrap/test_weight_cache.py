"""--weight-cache in the bootstrap: the document's files and settings (valid cloud-config,
shellcheck-clean, within AWS's user data limit), servestack-start's two branches (the bucket
holds the model: stream it; else the hub) run for real against fakes, and servestack_cache.py's
fill (conditional lock, marker last) against an in-memory store."""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from servestack import clouds
from servestack.bootstrap import USER_DATA_LIMIT, render_cloud_init, user_data, written_files
from servestack.bootstrap import servestack_cache as tool
from servestack.bootstrap.metrics import compact_script
from servestack.deployment.model import Autoscaling
from tests.fakes import weight_cache_deployment

CLOUDS = ("aws", "gcp", "azure")
MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
URI = f"s3://mixtral-wc-0123456789/models/{MODEL}"
UNIT = "/etc/systemd/system/servestack-cache-fill.service"


def deployment(cloud: str):
    return weight_cache_deployment(cloud, gcp_project="my-project")


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_document_carries_the_cache_tool_its_settings_and_the_fill_unit(cloud):
    d = deployment(cloud)
    doc = render_cloud_init(d)
    files = written_files(doc)
    if cloud == "aws":  # the one limit that binds: AWS's 16 KiB of user data (gzip'd)
        assert len(base64.b64decode(user_data(d))) <= USER_DATA_LIMIT
    settings = files["/etc/servestack/servestack.env"]
    assert f"SERVESTACK_CACHE_PREFIX={d.weight_cache.prefix}\n" in settings
    assert f"SERVESTACK_CACHE_PATH=models/{MODEL}\n" in settings
    assert "ExecStart=/opt/servestack/bin/servestack-cache fill" in files[UNIT]
    assert "servestack-cache-fill.service" in doc.split("runcmd:")[1]
    script = files["/opt/servestack/lib/python/servestack_cache.py"]
    own = cloud.capitalize()
    assert f"class {own}" in script
    assert all(f"class {c.capitalize()}" not in script for c in CLOUDS if c != cloud)


@pytest.mark.parametrize("metric", ["vllm-waiting", "vllm-kv-cache"])
def test_on_aws_the_cache_and_the_metrics_shipper_fit_together_with_room(metric):
    # Both used to be refused together (~21 KB of text with files packed); gzip'd whole, the
    # pair is ~10.5 KB: over a quarter of the limit is left for the spec's setup and run.
    d = replace(deployment("aws"), autoscaling=Autoscaling(metric=metric, target=5.0))
    clouds.get("aws").check(d)  # no refusal
    doc = render_cloud_init(d)
    files = written_files(doc)
    assert "/opt/servestack/lib/python/servestack_cache.py" in files
    assert any("servestack-metrics" in path for path in files)
    assert len(base64.b64decode(user_data(d))) <= USER_DATA_LIMIT * 3 // 4


def test_without_the_cache_nothing_is_added():
    doc = render_cloud_init(weight_cache_deployment("aws", cache=False))
    files = written_files(doc)
    assert "SERVESTACK_CACHE" not in files["/etc/servestack/servestack.env"]
    assert UNIT not in files and "/opt/servestack/bin/servestack-cache" not in files


def test_cache_documents_pass_cloud_init_schema_and_shellcheck(tmp_path):
    if not (shutil.which("cloud-init") and shutil.which("shellcheck")):
        pytest.skip("cloud-init and shellcheck are needed")
    scripts = []
    for cloud in CLOUDS:
        doc = render_cloud_init(deployment(cloud))
        path = tmp_path / f"{cloud}.yaml"
        path.write_text(doc)
        checked = subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                                 capture_output=True, text=True)
        assert checked.returncode == 0 and "Valid cloud-config" in checked.stdout, checked
        for name, text in written_files(doc).items():
            if text.startswith("#!/bin/bash") or name.endswith(".env"):
                target = tmp_path / cloud / name.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                scripts.append(str(target))
    result = subprocess.run(["shellcheck", "-s", "bash", *scripts], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout


# --- servestack-start's branch, run for real -------------------------------------------------

def _prepared(tmp_path: Path, run: str | None, cached: bool, gpus: int = 8) -> dict:
    d = replace(deployment("aws"), secret=None, api_key=None, run=run, setup=None)
    places = {"/opt/servestack": tmp_path / "opt", "/etc/servestack": tmp_path / "etc"}
    for path, text in written_files(render_cloud_init(d)).items():
        for prefix, place in places.items():
            if path.startswith(prefix):
                target = place / path[len(prefix) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                target.chmod(0o755)
    fake = tmp_path / "fake"
    venv, tools = tmp_path / "opt/venv/bin", tmp_path / "opt/cache-venv"
    for folder in (fake, venv, tools / "bin"):
        folder.mkdir(parents=True, exist_ok=True)
    (tools / ".ready").touch()
    answer = f"printf 'SERVESTACK_CACHE_URI=%s\\n' '{URI}' >\"$SERVESTACK_STATE/cache.env\"" \
        if cached else "true"
    scripts = {venv / "python": "exit 0",  # has the pinned vllm and the streamer
               venv / "vllm": 'echo "vllm $*"',
               tools / "bin/python": f'[ "$2" = check ] || exit 9\n{answer}',
               fake / "nvidia-smi": "".join(f"echo 'GPU {i}: L4'\n" for i in range(gpus))}
    for path, body in scripts.items():
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    (tmp_path / "home").mkdir()
    return {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
            "SERVESTACK_HOME": str(tmp_path / "opt"), "SERVESTACK_ETC": str(tmp_path / "etc"),
            "SERVESTACK_STATE": str(tmp_path / "state")}


def _started(env: dict) -> str:
    result = subprocess.run([f"{env['SERVESTACK_HOME']}/bin/servestack-start"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


def test_a_filled_cache_is_streamed_by_the_default_command(tmp_path):
    line = _started(_prepared(tmp_path, None, cached=True))
    assert line == (f"vllm serve {URI} --host 0.0.0.0 --port 8000 --tensor-parallel-size 8 "
                    "--middleware servestack_replica.add_replica_header --load-format "
                    f"runai_streamer --served-model-name {MODEL} "
                    '--model-loader-extra-config {"distributed":true}')


def test_an_empty_cache_leaves_the_hub_download(tmp_path):
    line = _started(_prepared(tmp_path, None, cached=False))
    assert line == (f"vllm serve {MODEL} --host 0.0.0.0 --port 8000 --tensor-parallel-size 8 "
                    "--middleware servestack_replica.add_replica_header")


def test_the_specs_run_is_redirected_too_one_gpu_without_distributed_streaming(tmp_path):
    run = ("vllm serve $MODEL_NAME --port 8000 --served-model-name mixtral "
           "--tensor-parallel-size $SKYPILOT_NUM_GPUS_PER_NODE\n")
    line = _started(_prepared(tmp_path, run, cached=True, gpus=1))
    assert line == (f"vllm serve {URI} --port 8000 --served-model-name mixtral "
                    "--tensor-parallel-size 1 --load-format runai_streamer")


def test_the_specs_run_without_a_filled_cache_runs_unchanged(tmp_path):
    run = "vllm serve $MODEL_NAME --tensor-parallel-size $SKYPILOT_NUM_GPUS_PER_NODE\n"
    line = _started(_prepared(tmp_path, run, cached=False))
    assert line == f"vllm serve {MODEL} --tensor-parallel-size 8"


# --- servestack_cache.py: fill once, under a lock, the marker last ----------------------------

class MemoryStore:
    """A bucket in memory with the conditional create the clouds offer."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.times: dict[str, float] = {}
        self.writes: list[str] = []
        self.deleted: list[str] = []

    def env(self, path: str) -> dict:
        return {"SERVESTACK_CACHE_URI": f"s3://bucket/{path}", "AWS_DEFAULT_REGION": "r 1"}

    def exists(self, key: str) -> bool:
        return key in self.objects

    def create_only(self, key: str, body: bytes) -> bool:
        if key in self.objects:
            return False
        self.put(key, body)
        return True

    def age(self, key: str) -> float:
        return 1000.0 - self.times[key]

    def upload(self, key: str, path: Path) -> None:
        self.put(key, path.read_bytes())

    def put(self, key: str, body: bytes) -> None:
        self.objects[key], self.times[key] = body, 1000.0
        self.writes.append(key)

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        del self.objects[key]


SETTINGS = {"SERVESTACK_MODEL": MODEL, "SERVESTACK_CACHE_PATH": f"models/{MODEL}"}
MARKER, LOCK = f"servestack/{MODEL}.complete", f"servestack/{MODEL}.lock"


def hub(tmp_path: Path, names=("config.json", "model-00001-of-00002.safetensors",
                               "model-00002-of-00002.safetensors")) -> dict:
    """A Hugging Face cache holding the model's snapshot (files linked to blobs, as the hub
    client keeps them)."""
    repo = tmp_path / "hub" / ("models--" + MODEL.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text("abc123\n")
    snapshot, blobs = repo / "snapshots/abc123", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for name in names:
        (blobs / name).write_bytes(name.encode())
        (snapshot / name).symlink_to(blobs / name)
    return {"HF_HUB_CACHE": str(tmp_path / "hub")}


def test_fill_uploads_the_snapshot_then_the_marker_and_drops_the_lock(tmp_path):
    store = MemoryStore()
    assert tool.fill(store, SETTINGS, hub(tmp_path)) == 0
    prefix = f"models/{MODEL}/"
    assert store.writes[0] == LOCK and store.writes[-1] == MARKER
    assert sorted(store.writes[1:-1]) == [prefix + "config.json",
                                         prefix + "model-00001-of-00002.safetensors",
                                         prefix + "model-00002-of-00002.safetensors"]
    assert store.objects[prefix + "config.json"] == b"config.json"  # the blob, not the link
    assert store.deleted == [LOCK] and LOCK not in store.objects


def test_a_replica_finding_the_lock_taken_does_not_fill(tmp_path):
    store = MemoryStore()
    store.put(LOCK, b"{}")  # another replica is filling, just now
    store.writes.clear()
    assert tool.fill(store, SETTINGS, hub(tmp_path)) == 0
    assert store.writes == [] and MARKER not in store.objects


def test_a_stale_lock_is_taken_over(tmp_path):
    store = MemoryStore()
    store.put(LOCK, b"{}")
    store.times[LOCK] = 1000.0 - tool.LOCK_STALE_SECONDS - 1
    assert tool.fill(store, SETTINGS, hub(tmp_path)) == 0
    assert MARKER in store.objects and store.deleted == [LOCK, LOCK]


def test_a_filled_cache_and_a_snapshot_without_safetensors_are_left_alone(tmp_path):
    store = MemoryStore()
    store.put(MARKER, b"{}")
    assert tool.fill(store, SETTINGS, hub(tmp_path)) == 0
    assert store.writes == [MARKER]
    empty = MemoryStore()
    assert tool.fill(empty, SETTINGS, hub(tmp_path / "bin", ("config.json",
                                                             "pytorch_model.bin"))) == 0
    assert empty.writes == []


def test_check_writes_the_streamers_settings_only_for_a_filled_cache(tmp_path):
    store = MemoryStore()
    assert tool.check(store, SETTINGS, tmp_path) == 0
    assert not (tmp_path / "cache.env").exists()
    store.put(MARKER, b"{}")
    tool.check(store, SETTINGS, tmp_path)
    assert (tmp_path / "cache.env").read_text() == (
        f"SERVESTACK_CACHE_URI=s3://bucket/models/{MODEL}\nAWS_DEFAULT_REGION='r 1'\n")


def test_the_per_cloud_script_keeps_its_own_store_only():
    for cloud in CLOUDS:
        text = compact_script(cloud, "servestack_cache.py")
        compile(text, "servestack_cache.py", "exec")
        assert [c for c in CLOUDS if f"class {c.capitalize()}:" in text] == [cloud]
