"""The cloud-init bootstrap: rendered text, golden files, the real validators, and the scripts
run for real against fake cloud CLIs (curl, aws, nvidia-smi, vllm, iptables, systemctl)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shlex
import shutil
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from servestack import clouds
from servestack.bootstrap import USER_DATA_LIMIT, render_cloud_init, user_data, written_files
from servestack.deployment.build import build_deployment
from servestack.errors import UserError
from servestack.inputs import load_inputs
from servestack.planner import plan
from tests.fakes import FROZEN_CATALOG

GOLDEN = Path(__file__).parent / "golden"
SKYPILOT_SPEC = Path("/work/shared/specs/skypilot-mixtral-serve.yaml")
CLOUDS = ("aws", "gcp", "azure")
TOKEN = "hf_FAKE'to$ken`x"  # a made-up value with shell metacharacters
MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def _deployments(inputs) -> dict:
    candidates = plan(inputs.spec, inputs.catalog, inputs.facts, model=inputs.model).candidates
    found = {}
    for candidate in candidates:
        if candidate.cloud not in found:
            found[candidate.cloud] = build_deployment(inputs.spec, candidate, candidates,
                                                      model=inputs.model)
    return found


@pytest.fixture(scope="module")
def mixtral():
    """One Deployment per cloud: the first candidate of each in the embedded Mixtral plan."""
    return _deployments(load_inputs(None, catalog_dir=FROZEN_CATALOG))


@pytest.fixture(scope="module")
def skypilot():
    if not SKYPILOT_SPEC.exists():
        pytest.skip(f"{SKYPILOT_SPEC} is not on this machine")
    return _deployments(load_inputs(str(SKYPILOT_SPEC), catalog_dir=FROZEN_CATALOG))["aws"]


def _settings(document: str) -> dict:
    text = written_files(document)["/etc/servestack/servestack.env"]
    return {k: shlex.split(v)[0] if v else "" for k, v in
            (line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))}


# --- what the document says --------------------------------------------------------------

@pytest.mark.parametrize("cloud", CLOUDS)
def test_mixtral_document(mixtral, cloud):
    d = mixtral[cloud]
    doc = render_cloud_init(d)
    files = written_files(doc)
    settings = _settings(doc)
    assert doc.startswith("#cloud-config\n")
    assert len(base64.b64decode(user_data(d))) <= USER_DATA_LIMIT  # what the cloud gets
    assert "SERVESTACK_PORT=8000\n" in doc  # the settings stay readable in the console
    assert settings["SERVESTACK_PORT"] == "8000" == str(d.service_port)
    assert settings["SERVESTACK_TP_PLANNED"] == str(d.primary.accelerator_count)
    assert settings["SERVESTACK_MODEL"] == MODEL
    assert settings["SERVESTACK_VLLM_VERSION"] == d.vllm_version
    assert settings["SERVESTACK_INSTALL_VLLM"] == "1"
    assert settings["SERVESTACK_SECRET_NAME"] == d.secret.name
    assert files["/opt/servestack/user/run.sh"] == d.run
    assert "--tensor-parallel-size $SKYPILOT_NUM_GPUS_PER_NODE" in d.run
    assert "ExecStartPre=/opt/servestack/bin/servestack-gate close" in \
        files["/etc/systemd/system/servestack-vllm.service"]
    assert "Restart=always" in files["/etc/systemd/system/servestack-vllm.service"]
    assert yaml.safe_load(doc)["runcmd"][-1] == [
        "systemctl", "start", "--no-block", "servestack-vllm.service", "servestack-gate.service"]
    assert '"model": "mistralai/Mixtral-8x7B-Instruct-v0.1"' in \
        files["/etc/servestack/readiness.json"]


@pytest.mark.parametrize("cloud,needles", [
    ("aws", ["aws ssm get-parameter --with-decryption", '--name "$1"',
             'parameter "$SERVESTACK_SECRET_NAME"', 'parameter "$SERVESTACK_API_KEY_NAME"']),
    ("gcp", ["computeMetadata/v1", "secretmanager.googleapis.com/v1/projects/$project/secrets/"
             "$1/versions/latest:access", 'latest "$SERVESTACK_API_KEY_NAME"']),
    ("azure", ["169.254.169.254/metadata/identity/oauth2/token", "resource=https%3A%2F%2Fvault",
               'vault="$SERVESTACK_SECRET_VAULT"', "$vault.vault.azure.net/secrets/$1"
               "?api-version=7.4", 'vault_secret "$SERVESTACK_API_KEY_NAME"']),
])
def test_secret_fetch_per_cloud(mixtral, cloud, needles):
    d = mixtral[cloud]
    files = written_files(render_cloud_init(d))
    fetch = files["/opt/servestack/bin/servestack-secret"]
    for needle in needles:
        assert needle in fetch
    settings = _settings(render_cloud_init(d))
    assert settings["SERVESTACK_SECRET_STORE"] == d.secret.store
    assert settings["SERVESTACK_SECRET_VAULT"] == (d.secret.vault or "")
    assert settings["SERVESTACK_API_KEY_STORE"] == d.api_key.store == d.secret.store
    assert settings["SERVESTACK_API_KEY_NAME"] == d.api_key.name != d.secret.name


def test_no_token_in_document(write_spec):
    spec = Path(__file__).resolve().parents[2] / "servestack" / "examples" / "mixtral.yaml"
    text = spec.read_text().replace("HF_TOKEN: null", f"HF_TOKEN: {json.dumps(TOKEN)}")
    inputs = load_inputs(str(write_spec(text)), catalog_dir=FROZEN_CATALOG)
    assert inputs.spec.secret_values  # the spec really carries the value
    for d in _deployments(inputs).values():
        doc = render_cloud_init(d)
        assert "hf_FAKE" not in doc and "to$ken" not in doc


def test_skypilot_serve_yaml(skypilot):
    doc = render_cloud_init(skypilot)
    files = written_files(doc)
    settings = _settings(doc)
    assert files["/opt/servestack/user/setup.sh"].startswith("conda activate mixtral\n")
    assert "--tensor-parallel-size $SKYPILOT_NUM_GPUS_PER_NODE" in \
        files["/opt/servestack/user/run.sh"]
    assert settings["SERVESTACK_USE_CONDA"] == "1"
    assert settings["SERVESTACK_INSTALL_VLLM"] == "0"  # its setup pip-installs vllm itself
    assert settings["SERVESTACK_TP_PLANNED"] == str(skypilot.tensor_parallel_size)
    assert settings["SERVESTACK_SECRET_STORE"] == ""  # the spec has no secrets
    assert settings["SERVESTACK_API_KEY_NAME"] == skypilot.api_key.name  # but an API key
    assert "/opt/servestack/bin/servestack-secret" in files
    bare = written_files(render_cloud_init(replace(skypilot, api_key=None)))
    assert "/opt/servestack/bin/servestack-secret" not in bare  # --no-api-key: nothing to fetch
    assert settings["SERVESTACK_READY_PATH"] == "/v1/chat/completions"
    assert "/opt/servestack/bin/servestack-gate" in files


def test_get_probe_has_no_gate(mixtral):
    d = mixtral["gcp"]
    d = replace(d, readiness=replace(d.readiness, method="GET", path="/v1/models",
                                     post_data=None))
    files = written_files(render_cloud_init(d))
    assert "/opt/servestack/bin/servestack-gate" not in files
    assert "/etc/systemd/system/servestack-gate.service" not in files
    assert "ExecStartPre" not in files["/etc/systemd/system/servestack-vllm.service"]


def test_default_command_needs_a_model(mixtral):
    with pytest.raises(UserError, match="no `run:`"):
        render_cloud_init(replace(mixtral["aws"], run=None, model=None))


def test_large_scripts_are_compressed(mixtral):
    # GCP's user data is text: a document over 16 KiB writes its largest files gzip+base64
    big = "echo " + "serving the model now " * 1000 + "\n"
    doc = render_cloud_init(replace(mixtral["gcp"], setup=big))
    assert len(doc.encode()) <= USER_DATA_LIMIT and "encoding: gz+b64" in doc
    assert written_files(doc)["/opt/servestack/user/setup.sh"] == big
    packed = [f["path"] for f in yaml.safe_load(doc)["write_files"] if "encoding" in f]
    assert "/opt/servestack/user/setup.sh" in packed  # the largest first
    assert "/etc/servestack/servestack.env" not in packed  # not needed: still readable


def test_aws_user_data_is_the_whole_document_gzipped(mixtral):
    # AWS gets the document gzip'd: every file stays text, and the same bytes on every render
    big = "echo " + "serving the model now " * 1000 + "\n"
    d = replace(mixtral["aws"], setup=big)
    doc = render_cloud_init(d)
    assert "encoding: gz+b64" not in doc and len(doc.encode()) > USER_DATA_LIMIT
    sent = base64.b64decode(user_data(d))
    assert sent[:2] == b"\x1f\x8b" and gzip.decompress(sent).decode() == doc
    assert user_data(d) == user_data(d)
    assert len(sent) <= USER_DATA_LIMIT
    # GCP and Azure get the document itself
    assert base64.b64decode(user_data(mixtral["gcp"])).decode() == \
        render_cloud_init(mixtral["gcp"])


def test_aws_checks_the_gzipped_size(mixtral, monkeypatch):
    d = mixtral["aws"]
    doc = render_cloud_init(d)
    sent = len(base64.b64decode(user_data(d)))
    assert sent < len(doc.encode())
    aws = type(clouds.get("aws"))
    monkeypatch.setattr(aws, "user_data_limit", sent)  # exactly fits
    assert render_cloud_init(d) == doc
    monkeypatch.setattr(aws, "user_data_limit", sent - 1)
    with pytest.raises(UserError, match=f"the bootstrap is {sent} bytes gzip'd, over AWS's "
                                        f"{sent - 1}-byte user data limit"):
        render_cloud_init(d)


def test_aws_refuses_a_document_that_does_not_fit_even_gzipped(mixtral):
    noise = "".join(f"echo {os.urandom(24).hex()}\n" for _ in range(1200))  # 65 KB, ~35 KB gzip'd
    with pytest.raises(UserError, match="user data limit: shorten setup/run"):
        render_cloud_init(replace(mixtral["aws"], setup=noise))


# --- golden files ---------------------------------------------------------------------------

@pytest.mark.parametrize("cloud", CLOUDS)
def test_golden(mixtral, cloud):
    path = GOLDEN / f"mixtral-{cloud}.yaml"
    doc = render_cloud_init(mixtral[cloud])
    if os.environ.get("SERVESTACK_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc)
    assert path.exists(), f"{path} missing: run with SERVESTACK_UPDATE_GOLDEN=1"
    assert doc == path.read_text(), f"{path.name} differs: SERVESTACK_UPDATE_GOLDEN=1 rewrites it"


# --- the real validators ----------------------------------------------------------------------

def _documents(mixtral, skypilot) -> dict:
    docs = {f"mixtral-{c}": render_cloud_init(d) for c, d in mixtral.items()}
    docs["skypilot"] = render_cloud_init(skypilot)
    docs["default-command"] = render_cloud_init(replace(mixtral["azure"], run=None, setup=None))
    docs["compressed"] = render_cloud_init(replace(mixtral["gcp"], setup="true\n" * 4000))
    docs.update({f"docker-{c}": render_cloud_init(d) for c, d in _in_docker(mixtral).items()})
    return docs


def test_cloud_init_schema(mixtral, skypilot, tmp_path):
    if not shutil.which("cloud-init"):
        pytest.skip("cloud-init is not installed")
    for name, doc in _documents(mixtral, skypilot).items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(doc)
        result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert "Valid cloud-config" in result.stdout


def test_shellcheck(mixtral, skypilot, tmp_path):
    """servestack's scripts strictly; the spec's own setup/run (verbatim) for errors only."""
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed")
    ours, users = [], []
    for name, doc in _documents(mixtral, skypilot).items():
        for path, text in written_files(doc).items():
            if not (text.startswith("#!/bin/bash") or path.endswith((".sh", ".env"))):
                continue
            target = tmp_path / name / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            (users if "/user/" in path else ours).append(str(target))
    assert len(ours) >= 20 and len(users) >= 4
    result = subprocess.run(["shellcheck", "-s", "bash", *ours], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    result = subprocess.run(["shellcheck", "-s", "bash", "-S", "error", *users],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- the scripts, run against fakes ------------------------------------------------------------

def _install(document: str, root: Path) -> dict:
    """Write the document's files under root; return the env that points the scripts there."""
    places = {"/opt/servestack": root / "opt", "/etc/servestack": root / "etc"}
    for path, text in written_files(document).items():
        for prefix, place in places.items():
            if path.startswith(prefix):
                target = place / path[len(prefix) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                target.chmod(0o755)
    (root / "home").mkdir()
    (root / "fake").mkdir()
    return {"PATH": f"{root / 'fake'}:/usr/bin:/bin", "HOME": str(root / "home"),
            "SERVESTACK_HOME": str(root / "opt"), "SERVESTACK_ETC": str(root / "etc"),
            "SERVESTACK_STATE": str(root / "state")}


def _fake(env: dict, name: str, body: str, folder: str | None = None) -> None:
    path = Path(folder or env["PATH"].split(":")[0]) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/bash\nprintf '%s\\n' \"$*\" >>\"$FAKE_LOG\"\n{body}\n")
    path.chmod(0o755)


def _run(env: dict, *command: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**env, "FAKE_LOG": str(tmp_path / "argv.log")}
    return subprocess.run(list(command), env=env, capture_output=True, text=True, timeout=20)


# The stores' answers: SECRET_NAME holds $SECRET, API_KEY_NAME holds $API_KEY; any other name
# is missing (curl -f: exit 22; the AWS CLI: exit 254, ParameterNotFound).
ANSWER = """import base64, json, os, sys
name, shape = sys.argv[1], sys.argv[2]
found = {os.environ.get("SECRET_NAME"): "SECRET", os.environ.get("API_KEY_NAME"): "API_KEY"}
if name not in found or found[name] not in os.environ:
    sys.exit(22 if shape != "aws" else 254)
value = os.environ[found[name]]
print(json.dumps({"aws": {"Parameter": {"Value": value}}, "azure": {"value": value},
                  "gcp": {"payload": {"data": base64.b64encode(value.encode()).decode()}}}[shape]))
"""
FAKE_CURL = f"""\
gcp="https://secretmanager.googleapis.com/v1/projects/my-project/secrets/"
vault="https://$SECRET_VAULT.vault.azure.net/secrets/"
cat >>"$FAKE_LOG.stdin" 2>/dev/null || true
url="${{*: -1}}"
case "$*" in
  *project-id*) echo my-project ;;
  *service-accounts/default/token*|*identity/oauth2/token*)
    echo '{{"access_token": "ya29.cloud-access", "expires_in": 3599}}' ;;
  *secretmanager.googleapis.com*)
    [[ "$url" == "$gcp"*"/versions/latest:access" ]] || exit 22
    name="${{url#"$gcp"}}"; exec python3 -c '{ANSWER}' "${{name%/versions/*}}" gcp ;;
  *vault.azure.net*)
    [[ "$url" == "$vault"*"?api-version=7.4" ]] || exit 22
    name="${{url#"$vault"}}"; exec python3 -c '{ANSWER}' "${{name%%\\?*}}" azure ;;
  *) exit 22 ;;
esac
"""
FAKE_AWS = f"""\
want="ssm get-parameter --with-decryption --region $REGION --name "
all="$*"
[[ "$all" == "$want"*" --output json" ]] || exit 3
name="${{all#"$want"}}"
exec python3 -c '{ANSWER}' "${{name% --output json}}" aws
"""
API_KEY = "sk-FAKEkey_0123456789abcdef"  # made up, header-safe like the generated keys


@pytest.mark.parametrize("cloud", CLOUDS)
def test_secret_fetch_runs(mixtral, cloud, tmp_path):
    d = mixtral[cloud]
    if cloud == "azure":  # the engines give the VMs the vault's name they drew
        d = replace(d, secret=replace(d.token_secret, vault="kv-of-the-stack"))
    env = _install(render_cloud_init(d), tmp_path)
    _fake(env, "curl", FAKE_CURL)
    _fake(env, "aws", FAKE_AWS)
    ref = d.token_secret
    env.update(SECRET=TOKEN, SECRET_NAME=ref.name, SECRET_VAULT=ref.vault or "",
               REGION=mixtral[cloud].region, API_KEY=API_KEY,
               API_KEY_NAME=mixtral[cloud].api_key.name)
    result = _run(env, str(tmp_path / "opt/bin/servestack-secret"), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    secret = tmp_path / "etc/secret.env"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    sourced = subprocess.run(["bash", "-c", f". {secret} && printf %s \"$HF_TOKEN\""],
                             capture_output=True, text=True)
    assert sourced.stdout == TOKEN
    assert _sourced(secret, "VLLM_API_KEY") == API_KEY
    argv = (tmp_path / "argv.log").read_text()
    assert "hf_FAKE" not in result.stdout + result.stderr + argv
    assert API_KEY not in result.stdout + result.stderr + argv
    assert "ya29" not in argv  # the access token went to curl on stdin
    if cloud != "aws":
        assert "Authorization: Bearer ya29.cloud-access" in \
            (tmp_path / "argv.log.stdin").read_text()


def _sourced(path: Path, name: str) -> str:
    """NAME's value once `path` is sourced under `set -a`, as servestack-start does."""
    script = f'set -a; . {shlex.quote(str(path))}; set +a; printf %s "${{{name}:-}}"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_api_key_alone_is_fetched_into_secret_env(mixtral, cloud, tmp_path):
    """No secrets in the spec, an API key all the same (the default)."""
    d = replace(mixtral[cloud], secret=None,
                api_key=replace(mixtral[cloud].api_key_secret, vault="kv-of-the-stack"))
    env = _install(render_cloud_init(d), tmp_path)
    _fake(env, "curl", FAKE_CURL)
    _fake(env, "aws", FAKE_AWS)
    env.update(API_KEY=API_KEY, API_KEY_NAME=d.api_key_secret.name, REGION=d.region,
               SECRET_VAULT="kv-of-the-stack")
    result = _run(env, str(tmp_path / "opt/bin/servestack-secret"), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    secret = tmp_path / "etc/secret.env"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text() == f"VLLM_API_KEY={API_KEY}\n"
    assert "API key (VLLM_API_KEY) stored" in result.stderr
    argv = (tmp_path / "argv.log").read_text()
    assert API_KEY not in result.stdout + result.stderr + argv
    assert ("--name " + d.api_key_secret.name in argv) if cloud == "aws" else \
        (f"/secrets/{d.api_key_secret.name}" in argv)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_a_missing_api_key_entry_fails_naming_it(mixtral, cloud, tmp_path):
    d = mixtral[cloud]
    if cloud == "azure":
        d = replace(d, secret=replace(d.token_secret, vault="kv-of-the-stack"))
    env = _install(render_cloud_init(d), tmp_path)
    _fake(env, "curl", FAKE_CURL)
    _fake(env, "aws", FAKE_AWS)
    env.update(SECRET=TOKEN, SECRET_NAME=d.secret.name, SECRET_VAULT=d.secret.vault or "",
               REGION=d.region, API_KEY_NAME="someone-elses-entry")
    if cloud == "azure":  # the vault's name is missing from the settings altogether
        settings = tmp_path / "etc/servestack.env"
        settings.write_text(settings.read_text().replace(
            f"SERVESTACK_SECRET_VAULT={d.secret.vault}", "SERVESTACK_SECRET_VAULT=''"))
    result = _run(env, str(tmp_path / "opt/bin/servestack-secret"), tmp_path=tmp_path)
    assert result.returncode != 0
    if cloud == "azure":
        assert "no Key Vault name in" in result.stderr
    else:
        assert f"could not read {'SSM parameter' if cloud == 'aws' else 'secret'} " \
               f"{d.api_key_secret.name}" in result.stderr
    assert "Traceback" not in result.stderr and "hf_FAKE" not in result.stderr


@pytest.mark.parametrize("key", ["", "k3y", "has spaces in it, far too long", 'q"uote' * 4])
def test_an_api_key_a_header_could_not_carry_is_refused_unechoed(mixtral, key, tmp_path):
    d = replace(mixtral["aws"], secret=None)
    env = _install(render_cloud_init(d), tmp_path)
    _fake(env, "aws", FAKE_AWS)
    env.update(API_KEY=key, API_KEY_NAME=d.api_key_secret.name, REGION=d.region)
    result = _run(env, str(tmp_path / "opt/bin/servestack-secret"), tmp_path=tmp_path)
    assert result.returncode != 0 and "could not read SSM parameter" in result.stderr
    assert not (tmp_path / "etc/secret.env").exists()
    assert not key or key not in result.stderr


def _prepare(d, tmp_path, gpus: int | None) -> dict:
    env = _install(render_cloud_init(replace(d, secret=None, api_key=None)), tmp_path)
    venv = str(tmp_path / "opt/venv/bin")
    _fake(env, "python", "exit 0", venv)  # "has vllm==<pinned>": nothing to install
    _fake(env, "vllm", 'echo "vllm $*"', venv)
    if gpus is not None:
        _fake(env, "nvidia-smi", "".join(f"echo 'GPU {i}: NVIDIA L4 (UUID: GPU-{i})'\n"
                                         for i in range(gpus)))
    return env


def _start(env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    return _run(env, str(tmp_path / "opt/bin/servestack-start"), tmp_path=tmp_path)


@pytest.mark.parametrize("gpus,expected", [(8, "8"), (None, "planned")])
def test_default_command_uses_detected_gpus(mixtral, tmp_path, gpus, expected):
    d = replace(mixtral["aws"], run=None, setup=None)
    result = _start(_prepare(d, tmp_path, gpus), tmp_path)
    assert result.returncode == 0, result.stderr
    size = str(d.tensor_parallel_size) if expected == "planned" else expected
    assert result.stdout.splitlines()[-1] == (
        f"vllm serve {MODEL} --host 0.0.0.0 --port 8000 --tensor-parallel-size {size} "
        "--middleware servestack_replica.add_replica_header")


def test_spec_run_gets_skypilot_variables(mixtral, tmp_path):
    run = ('echo "gpus=$SKYPILOT_NUM_GPUS_PER_NODE rank=$SKYPILOT_NODE_RANK '
           'nodes=$SKYPILOT_NUM_NODES id=${SKYPILOT_SERVE_REPLICA_ID:+set} '
           'ips=${SKYPILOT_NODE_IPS:+set} model=$MODEL_NAME" && command -v vllm\n')
    d = replace(mixtral["gcp"], setup='echo ran >>"$HOME/setup.log"\n', run=run)
    env = _prepare(d, tmp_path, 4)
    for _ in range(2):  # a restart must not run the setup again
        result = _start(env, tmp_path)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert f"gpus=4 rank=0 nodes=1 id=set ips=set model={MODEL}" in lines
        assert lines[-1] == str(tmp_path / "opt/venv/bin/vllm")  # the venv is first on PATH
    assert (tmp_path / "home/setup.log").read_text() == "ran\n"


def test_gate_close_and_open(mixtral, tmp_path):
    env = _install(render_cloud_init(mixtral["azure"]), tmp_path)
    _fake(env, "iptables", '[[ "$*" == *" -C "* || "$*" == *" -N "* ]] && exit 1\nexit 0')
    for action in ("close", "open"):
        result = _run(env, str(tmp_path / "opt/bin/servestack-gate"), action, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
    calls = (tmp_path / "argv.log").read_text().splitlines()
    jump = "-w -I INPUT 1 ! -i lo -p tcp --dport 8000 -j SERVESTACK-GATE"
    assert calls.count(jump) == 2
    assert "-w -A SERVESTACK-GATE -p tcp -j REJECT --reject-with tcp-reset" in calls
    assert calls[-1] == "-w -F SERVESTACK-GATE"  # open: the chain is emptied


def _wait_count(path: Path, text: str, count: int, seconds: float = 30) -> str:
    """Wait until `text` occurs `count` times in the file at path; return the file."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        log = path.read_text() if path.exists() else ""
        if log.count(text) >= count:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen {count} times in {path}")


def _gate_env(mixtral, tmp_path: Path, delay: int) -> dict:
    env = _install(render_cloud_init(mixtral["aws"]), tmp_path)
    settings = tmp_path / "etc/servestack.env"
    settings.write_text(settings.read_text().replace(
        "SERVESTACK_PROBE_INTERVAL=10", "SERVESTACK_PROBE_INTERVAL=0.1").replace(
        "SERVESTACK_READY_DELAY=1200", f"SERVESTACK_READY_DELAY={delay}"))
    (tmp_path / "invocation").write_text("first\n")
    _fake(env, "systemctl", f"cat {tmp_path / 'invocation'}")
    _fake(env, "iptables", "exit 0")
    # ready from the third probe of each vLLM start on; the body must be the spec's probe
    _fake(env, "curl", f"""n=$(( $(cat {tmp_path}/probes 2>/dev/null || echo 0) + 1 ))
echo "$n" >{tmp_path}/probes
url=http://127.0.0.1:8000/v1/chat/completions
[[ "$*" == *"-X POST"*"@$SERVESTACK_ETC/readiness.json $url" ]] || exit 7
if [ "$n" -ge 3 ] && [ "$READY" = 1 ]; then echo 200; else echo 503; fi""")
    return {**env, "FAKE_LOG": str(tmp_path / "argv.log")}


def test_gate_watch_opens_on_probe_and_rearms_on_restart(mixtral, tmp_path):
    env = _gate_env(mixtral, tmp_path, delay=60)
    log = tmp_path / "argv.log"
    gate = subprocess.Popen([str(tmp_path / "opt/bin/servestack-gate"), "watch"],
                            env={**env, "READY": "1"}, stderr=subprocess.PIPE, text=True)
    flush, reject = "-w -F SERVESTACK-GATE\n", "-j REJECT"
    try:
        _wait_count(log, reject, 1)  # closed while vLLM is not ready
        _wait_count(tmp_path / "probes", "3", 1)
        opened = _wait_count(log, flush, 2)  # the third probe passed: chain emptied
        assert opened.count(reject) == 1 and opened.rindex(flush) > opened.rindex(reject)
        (tmp_path / "probes").write_text("0\n")
        (tmp_path / "invocation").write_text("second\n")  # vLLM restarted
        _wait_count(log, reject, 2)  # closed again for the new start
        rearmed = _wait_count(log, flush, 4)  # and opened once its probe passed
        assert rearmed.rindex(flush) > rearmed.rindex(reject)
    finally:
        gate.kill()
        stderr = gate.communicate()[1]
    assert "re-arming the gate" in stderr and stderr.count("port 8000 open") == 2


def test_gate_gives_up_after_initial_delay(mixtral, tmp_path):
    env = _gate_env(mixtral, tmp_path, delay=1)
    errors = tmp_path / "gate.err"
    with errors.open("w") as stderr:
        gate = subprocess.Popen([str(tmp_path / "opt/bin/servestack-gate"), "watch"],
                                env={**env, "READY": "0"}, stderr=stderr)
        try:
            _wait_count(errors, "not ready after 1s; port stays closed", 1)
        finally:
            gate.kill()
            gate.wait()
    assert "port 8000 open" not in errors.read_text()
    assert "-w -A SERVESTACK-GATE -p tcp -j REJECT" in (tmp_path / "argv.log").read_text()


def test_default_command_names_the_replica_for_the_deploy_loop():
    from servestack.deployment.build import build_deployment
    from servestack.inputs import load_inputs
    from servestack.planner import plan

    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    result = plan(inputs.spec, inputs.catalog, inputs.facts, model=inputs.model)
    d = replace(build_deployment(inputs.spec, result.candidates[0], result.candidates,
                                 model=inputs.model), run=None, setup=None)
    files = written_files(render_cloud_init(d))
    middleware = files["/opt/servestack/lib/python/servestack_replica.py"]
    assert "X-Servestack-Replica" in middleware and "async def add_replica_header" in middleware
    compile(middleware, "servestack_replica.py", "exec")
    start = files["/opt/servestack/bin/servestack-start"]
    assert "--middleware servestack_replica.add_replica_header" in start


# --- image_id: docker:IMAGE --------------------------------------------------------------------

IMAGE = "vllm/vllm-openai:v0.9.2"


def _in_docker(mixtral) -> dict:
    """The Mixtral deployments as `image_id: docker:IMAGE` builds them, one per cloud."""
    spec_text = (Path(__file__).parents[2] / "servestack/examples/mixtral.yaml").read_text()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"servestack-docker-{os.getpid()}.yaml"
    path.write_text(spec_text.replace("resources:\n", f"resources:\n  image_id: docker:{IMAGE}\n"))
    try:
        inputs = load_inputs(str(path), catalog_dir=FROZEN_CATALOG)
    finally:
        path.unlink()
    found = _deployments(inputs)
    assert set(found) == set(mixtral)
    return found


@pytest.fixture(scope="module")
def in_docker(mixtral):
    return _in_docker(mixtral)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_docker_image_runs_in_a_container_on_the_default_gpu_image(in_docker, cloud):
    d = in_docker[cloud]
    assert d.container_image == IMAGE
    assert d.image == clouds.get(cloud).default_image  # not "docker:..." as a VM image
    files = written_files(render_cloud_init(d))
    assert _settings(render_cloud_init(d))["SERVESTACK_CONTAINER_IMAGE"] == IMAGE
    assert "servestack-container" in files["/opt/servestack/bin/servestack-start"]
    assert "docker run" in files["/opt/servestack/bin/servestack-container"]
    unit = files["/etc/systemd/system/servestack-vllm.service"]
    assert "After=network-online.target docker.service" in unit


def test_a_vm_image_has_no_container(mixtral):
    for d in mixtral.values():
        assert d.container_image is None
        assert "SERVESTACK_CONTAINER_IMAGE" not in _settings(render_cloud_init(d))
        assert "/opt/servestack/bin/servestack-container" not in \
            written_files(render_cloud_init(d))


def test_a_bad_docker_reference_is_refused(mixtral):
    from servestack.deployment.build import _container_image

    assert _container_image("docker:nvcr.io/nim/meta/llama3:1.0@sha256:abc") == \
        "nvcr.io/nim/meta/llama3:1.0@sha256:abc"
    assert _container_image("ami-0123456789abcdef0") is None
    for bad in ("docker:", "docker:vllm openai", "docker:$(reboot)"):
        with pytest.raises(UserError, match="is not docker:IMAGE"):
            _container_image(bad)


FAKE_DOCKER = """\
case "$1" in
  info) echo '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}' ;;
  image) exit 1 ;;  # not pulled yet
  run) echo "container started" ;;
esac
"""


def test_the_vm_fetches_secrets_installs_nothing_else_and_starts_the_container(in_docker,
                                                                                 tmp_path):
    d = in_docker["aws"]
    env = _install(render_cloud_init(d), tmp_path)
    _fake(env, "aws", FAKE_AWS)
    _fake(env, "docker", FAKE_DOCKER)
    _fake(env, "nvidia-ctk", "exit 0")
    _fake(env, "python3", "exit 9")  # no vLLM install on the VM: python3 is never asked
    env.update(SECRET=TOKEN, SECRET_NAME=d.secret.name, REGION=d.region, API_KEY=API_KEY,
               API_KEY_NAME=d.api_key_secret.name)
    # the scripts' python3 for the secret is the real one: put it back for servestack-secret
    (tmp_path / "fake" / "python3").unlink()
    result = _start(env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "container started"
    calls = (tmp_path / "argv.log").read_text().splitlines()
    assert calls[0].startswith("ssm get-parameter")  # the secret, fetched on the VM
    assert f"pull -q {IMAGE}" in calls
    run = shlex.split(next(c for c in calls if c.startswith("run ")))
    opt, etc = str(tmp_path / "opt"), str(tmp_path / "etc")
    for flag in (["--gpus", "all"], ["--network", "host"], ["--ipc", "host"],
                 ["-v", f"{opt}:{opt}:ro"], ["-v", f"{etc}:{etc}:ro"],
                 ["-v", f"{tmp_path / 'state/huggingface'}:/root/.cache/huggingface"],
                 ["-e", "SERVESTACK_IN_CONTAINER=1"], ["--entrypoint", "/bin/bash"]):
        assert any(run[i:i + 2] == flag for i in range(len(run))), flag
    assert run[-2:] == [IMAGE, f"{opt}/bin/servestack-start"]
    assert "hf_FAKE" not in "\n".join(calls)  # the token stays in secret.env
    assert API_KEY not in "\n".join(calls) + result.stderr  # and so does the API key
    assert calls[1] == f"ssm get-parameter --with-decryption --region {d.region} --name " \
        f"{d.api_key_secret.name} --output json"
    # secret.env reaches the container only through the read-only mount of /etc/servestack
    assert _sourced(tmp_path / "etc/secret.env", "VLLM_API_KEY") == API_KEY


def test_inside_the_container_the_spec_runs_without_fetching_or_installing(in_docker,
                                                                           tmp_path):
    d = replace(in_docker["gcp"], run=None, setup=None)
    env = _install(render_cloud_init(d), tmp_path)
    (tmp_path / "etc/secret.env").write_text(f"HF_TOKEN={shlex.quote(TOKEN)}\n"
                                              f"VLLM_API_KEY={API_KEY}\n")
    for tool in ("curl", "aws", "docker", "pip"):  # must not run inside the container
        _fake(env, tool, "exit 3")
    # vLLM takes the key from its environment (vllm/envs.py VLLM_API_KEY), not from argv
    _fake(env, "vllm", 'echo "vllm $*"; [ "$HF_TOKEN" = "$EXPECTED" ] && '
                       '[ "$VLLM_API_KEY" = "$KEY" ] && echo token-ok')
    _fake(env, "nvidia-smi", "echo 'GPU 0: NVIDIA L4 (UUID: GPU-0)'")
    env.update(SERVESTACK_IN_CONTAINER="1", EXPECTED=TOKEN, KEY=API_KEY)
    result = _start(env, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert API_KEY not in lines[-2] and "--api-key" not in lines[-2]
    assert lines[-2].startswith(f"vllm serve {MODEL} --host 0.0.0.0 --port 8000 "
                                "--tensor-parallel-size 1")
    assert lines[-1] == "token-ok"  # the mounted secret.env reached the server
    log = tmp_path / "argv.log"
    assert not log.exists() or not any(
        line.startswith(("ssm", "run", "pull")) for line in log.read_text().splitlines())


def test_gate_probe_sends_the_api_key_on_curls_stdin(mixtral, tmp_path):
    env = _gate_env(mixtral, tmp_path, delay=60)
    (tmp_path / "etc/secret.env").write_text(f"HF_TOKEN=x\nVLLM_API_KEY={API_KEY}\n")
    # curl answers 200 only when its config on stdin carries the key's header
    _fake(env, "curl", f"""config=$(cat)
printf '%s\\n' "$config" >>{tmp_path}/curl.stdin
[[ "$*" == *"-K -"* ]] || exit 7
[ "$config" = 'header = "Authorization: Bearer {API_KEY}"' ] && echo 200 || echo 401""")
    errors = tmp_path / "gate.err"
    with errors.open("w") as stderr:
        gate = subprocess.Popen([str(tmp_path / "opt/bin/servestack-gate"), "watch"],
                                env=env, stderr=stderr)
        try:
            _wait_count(errors, "port 8000 open", 1)
        finally:
            gate.kill()
            gate.wait()
    assert API_KEY in (tmp_path / "curl.stdin").read_text()
    assert API_KEY not in (tmp_path / "argv.log").read_text() + errors.read_text()


def test_gate_probe_without_a_key_sends_no_header(mixtral, tmp_path):
    env = _install(render_cloud_init(replace(mixtral["aws"], api_key=None)), tmp_path)
    settings = tmp_path / "etc/servestack.env"
    settings.write_text(settings.read_text().replace("SERVESTACK_PROBE_INTERVAL=10",
                                                     "SERVESTACK_PROBE_INTERVAL=0.1"))
    (tmp_path / "invocation").write_text("first\n")
    _fake(env, "systemctl", f"cat {tmp_path / 'invocation'}")
    _fake(env, "iptables", "exit 0")
    _fake(env, "curl", f"cat >>{tmp_path}/curl.stdin; echo 200")
    errors = tmp_path / "gate.err"
    with errors.open("w") as stderr:
        gate = subprocess.Popen([str(tmp_path / "opt/bin/servestack-gate"), "watch"],
                                env={**env, "FAKE_LOG": str(tmp_path / "argv.log")},
                                stderr=stderr)
        try:
            _wait_count(errors, "port 8000 open", 1)
        finally:
            gate.kill()
            gate.wait()
    assert (tmp_path / "curl.stdin").read_text() == ""
