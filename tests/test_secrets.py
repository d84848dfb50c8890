"""Secrets, SkyPilot's ways (servestack.secrets): which names are secret, where their values come
from, the env file the secret store holds and the VM reads back, and a canary token given every
way that must appear in no written file, no output and no child's command line."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import shlex
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from servestack.bootstrap import written_files
from servestack.cli.main import main
from servestack.errors import UserError
from servestack.secrets import STORE_LIMIT, env_file
from servestack.spec import SpecContext, load_spec
from tests.fakes import FROZEN_CATALOG

BOOTSTRAP = Path(__file__).resolve().parents[1] / "servestack" / "bootstrap"
CANARY = "hfCANARY7f3a9ZqWv"
ODD = "it's a \"$(id)\" `x`; \\ and\nsecond line = %s"  # every shell metacharacter
CONTEXT = SpecContext(gpus=("A100",), regions={"aws": frozenset({"us-east-1"})})


def spec_of(tmp_path: Path, text: str, **given):
    path = tmp_path / "serve.yaml"
    path.write_text(textwrap.dedent(text) + "resources: {accelerators: A100:1}\n")
    return load_spec(path, CONTEXT, **given)


# --- which names are secret, and their values ------------------------------------------------

def test_secret_names_come_from_secrets_the_flag_and_credential_named_envs(tmp_path):
    spec = spec_of(tmp_path, """
        envs: {MODEL_NAME: m, HF_TOKEN: hf_a, WANDB_API_KEY: w}
        secrets: [DB_PASSWORD]
        """, secret_overrides={"EXTRA": "e"}, environ={"DB_PASSWORD": "p"})
    assert spec.secrets == ("DB_PASSWORD", "EXTRA", "HF_TOKEN", "WANDB_API_KEY")
    assert spec.secret_values == {"DB_PASSWORD": "p", "EXTRA": "e", "HF_TOKEN": "hf_a",
                                  "WANDB_API_KEY": "w"}
    assert spec.envs == {"MODEL_NAME": "m"}  # what the bootstrap writes in clear
    assert spec.missing == ()


def test_common_credential_names_and_urls_with_a_password_are_secret(tmp_path):
    spec = spec_of(tmp_path, """
        envs: {WANDB_KEY: wb, GITHUB_PAT: gh, DB_PASS: dp, CLIENT_SECRET: cs,
               DATABASE_URL: "postgres://u:pw@h/db", PUBLIC_URL: "https://h.example/x",
               KEYBOARD_LAYOUT: us, PASSENGER_COUNT: "3", AUTHOR: me, MAX_TOKENS: "256",
               TOKENIZERS_PARALLELISM: "false", KEY_PREFIX: k, SECRETS_DIR: /s, NO_AUTH: "1"}
        """)
    assert set(spec.secrets) == {"WANDB_KEY", "GITHUB_PAT", "DB_PASS", "CLIENT_SECRET",
                                 "DATABASE_URL"}
    assert spec.envs == {"PUBLIC_URL": "https://h.example/x", "KEYBOARD_LAYOUT": "us",
                         "PASSENGER_COUNT": "3", "AUTHOR": "me", "MAX_TOKENS": "256",
                         "TOKENIZERS_PARALLELISM": "false", "KEY_PREFIX": "k",
                         "SECRETS_DIR": "/s", "NO_AUTH": "1"}


def test_precedence_flag_then_spec_then_environment(tmp_path):
    text = """
        envs: {HF_TOKEN: from_envs, MODEL_NAME: null}
        secrets: {HF_TOKEN: null}
        """
    environ = {"HF_TOKEN": "from_environ", "MODEL_NAME": "from_environ_model"}
    assert spec_of(tmp_path, text, environ=environ).secret_values["HF_TOKEN"] == "from_envs"
    assert spec_of(tmp_path, text, environ=environ,
                   env_overrides={"HF_TOKEN": "from_env_flag"}
                   ).secret_values["HF_TOKEN"] == "from_env_flag"
    assert spec_of(tmp_path, text, environ=environ, env_overrides={"HF_TOKEN": "e"},
                   secret_overrides={"HF_TOKEN": "from_secret_flag"}
                   ).secret_values["HF_TOKEN"] == "from_secret_flag"
    # a flag without a value reads the environment, over what the spec says
    assert spec_of(tmp_path, text, environ=environ, secret_overrides={"HF_TOKEN": None}
                   ).secret_values["HF_TOKEN"] == "from_environ"
    # a name without a value in the spec: the deployer's environment, envs and secrets alike
    spec = spec_of(tmp_path, "envs: {HF_TOKEN: null, MODEL_NAME: null}\n", environ=environ)
    assert spec.secret_values == {"HF_TOKEN": "from_environ"}
    assert spec.envs == {"MODEL_NAME": "from_environ_model"}


def test_names_without_a_value_are_listed_not_dropped(tmp_path):
    spec = spec_of(tmp_path, """
        envs: {MODEL_NAME: null, HF_TOKEN: null}
        secrets: {OTHER: ""}
        """, environ={})
    assert spec.missing == ("OTHER", "HF_TOKEN", "MODEL_NAME")
    assert spec.secret_values == {} and spec.envs == {}


def test_secrets_are_not_substituted_into_the_service_section(tmp_path):
    spec = spec_of(tmp_path, """
        envs: {HF_TOKEN: hf_x, MODEL_NAME: m}
        service:
          readiness_probe: {path: /v1/models, headers: {X-Model: $MODEL_NAME, X-T: $HF_TOKEN}}
        """)
    assert spec.service.readiness_probe.headers == {"X-Model": "m", "X-T": "$HF_TOKEN"}
    assert "hf_x" not in repr(spec)
    assert any(n.startswith("service: $HF_TOKEN stay as written: a secret is never put")
               for n in spec.notes)


# --- the env file, and the VM reading it back --------------------------------------------------

def test_env_file_is_sorted_shell_quoted_lines():
    assert env_file({"B": "two words", "A": "x'y"}) == "A='x'\"'\"'y'\nB='two words'\n"
    with pytest.raises(UserError, match="not a valid environment variable name"):
        env_file({"1A": "x"})
    with pytest.raises(UserError, match="SSM parameter") as info:
        env_file({"BIG": "v" * STORE_LIMIT})
    assert "vvvv" not in str(info.value)


def store(tmp_path: Path, payload: str) -> subprocess.CompletedProcess:
    """servestack-common.sh's store_secrets on a secret store's JSON answer."""
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "servestack.env").write_text("")
    script = f'. {BOOTSTRAP / "servestack-common.sh"} && store_secrets value plain'
    return subprocess.run(["bash", "-c", script], input=json.dumps({"value": payload}),
                          env={**os.environ, "SERVESTACK_ETC": str(etc)}, capture_output=True,
                          text=True, timeout=20)


def sourced(tmp_path: Path, names: list[str]) -> dict:
    """What servestack-start exports: secret.env sourced under `set -a`."""
    code = f"import json, os; print(json.dumps({{n: os.environ[n] for n in {names!r}}}))"
    script = f"set -a; . {tmp_path / 'etc' / 'secret.env'}; set +a; python3 -c {shlex.quote(code)}"
    return json.loads(subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                     check=True, timeout=20).stdout)


def test_the_vm_reads_back_exactly_what_was_stored(tmp_path):
    values = {"HF_TOKEN": "hf_plain", "ODD": ODD, "EMPTYISH": " "}
    result = store(tmp_path, env_file(values))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "etc" / "secret.env").stat().st_mode & 0o777 == 0o600
    assert sourced(tmp_path, list(values)) == values
    assert "secrets EMPTYISH HF_TOKEN ODD stored" in result.stderr  # names, never values
    assert "hf_plain" not in result.stderr + result.stdout and "$(id)" not in result.stderr


def test_a_bare_token_is_a_hugging_face_token(tmp_path):
    """What older deployments stored (and TF_VAR_hf_token=<token> still gives)."""
    assert store(tmp_path, "hf_old'style$token\n").returncode == 0
    assert sourced(tmp_path, ["HF_TOKEN"]) == {"HF_TOKEN": "hf_old'style$token"}


@pytest.mark.parametrize("payload", ["A=1 $(touch pwned)", "A='pwned", "=pwned", "   "])
def test_a_payload_that_is_not_an_env_file_is_refused_without_echoing_it(tmp_path, payload):
    result = store(tmp_path, payload)
    assert result.returncode != 0
    assert not (tmp_path / "etc" / "secret.env").exists()
    assert "pwned" not in result.stderr


# --- the Pulumi program: the env file is a Pulumi secret ---------------------------------------

def test_the_program_keeps_the_env_file_a_pulumi_secret(tmp_path, monkeypatch):
    from servestack.pulumi.preview import SECRET_MASK, record
    from servestack.pulumi.program import main as program
    from servestack.pulumi.stackfile import read_stack_file, runtime_config, stack_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", CANARY)
    assert main(["generate", "--cloud", "aws", "--catalog-dir", str(FROZEN_CATALOG)]) == 0
    config, _ = runtime_config(read_stack_file(stack_path("stacks", "mixtral")))
    recording = record(lambda: program(env_file({"HF_TOKEN": CANARY})), config=config)
    assert _parameter_values(recording) == {"hf-token": SECRET_MASK, "api-key": SECRET_MASK}
    assert CANARY not in json.dumps([r.to_json() for r in recording.resources])


def test_a_hand_run_pulumi_up_reads_the_named_secrets_from_the_environment(tmp_path,
                                                                             monkeypatch):
    """`servestack:secrets` names them in the stack file; the values come at `pulumi up`."""
    import pulumi

    from servestack.pulumi.preview import SECRET_MASK, record
    from servestack.pulumi.program import main as program
    from servestack.pulumi.stackfile import read_stack_file, runtime_config, stack_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", CANARY)
    assert main(["generate", "--cloud", "aws", "--catalog-dir", str(FROZEN_CATALOG)]) == 0
    stack = read_stack_file(stack_path("stacks", "mixtral"))
    assert stack["config"]["servestack:secrets"] == ["HF_TOKEN"]
    config, _ = runtime_config(stack)
    recording = record(program, config=config)
    assert _parameter_values(recording) == {"hf-token": SECRET_MASK, "api-key": SECRET_MASK}
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(pulumi.RunError, match="no value for HF_TOKEN: export it"):
        record(program, config=config)


def _parameter_values(recording) -> dict:
    """The stack's SSM parameters' values by the last part of their names: the env file of
    secrets and the generated API key, both secrets (masked) in the recording."""
    return {str(r.inputs["name"]).rsplit("/", 1)[-1]: r.inputs["value"]
            for r in recording.resources if r.type == "aws:ssm/parameter:Parameter"}


# --- plan warns, generate and deploy refuse ------------------------------------------------

def test_plan_warns_about_a_missing_value_and_a_gated_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert main(["plan", "--json", "--catalog-dir", str(FROZEN_CATALOG)]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert any(w.startswith("HF_TOKEN has no value: export HF_TOKEN") for w in warnings)
    assert any("mistralai/Mixtral-8x7B-Instruct-v0.1 is gated" in w for w in warnings)
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert main(["plan", "--json", "--catalog-dir", str(FROZEN_CATALOG)]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert not any("HF_TOKEN" in w or "gated" in w for w in warnings)


def test_deploy_refuses_a_missing_secret_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["deploy", "--catalog-dir", str(FROZEN_CATALOG)]) == 2
    assert "no value for HF_TOKEN: export HF_TOKEN=" in capsys.readouterr().err
    assert not (tmp_path / "stacks").exists() and not (tmp_path / ".servestack").exists()


def test_generate_without_a_secret_warns_and_writes_no_value(tmp_path, monkeypatch, capsys):
    """The stack file never holds a secret (`pulumi up` reads it from the environment or the
    secret config), so generating without one is fine: it says what `up` will need."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["generate", "--catalog-dir", str(FROZEN_CATALOG)]) == 0
    assert "warning: HF_TOKEN has no value: export HF_TOKEN=" in capsys.readouterr().err
    assert (tmp_path / "stacks" / "Pulumi.mixtral.yaml").exists()


def test_generate_refuses_a_missing_plain_env(tmp_path, monkeypatch, capsys, write_spec):
    """A plain env's value is written into the stack: without one the stack could not run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SERVESTACK_TEST_UNSET", raising=False)
    spec = write_spec("name: plain\nenvs:\n  SERVESTACK_TEST_UNSET:\nresources:\n"
                      "  accelerators: A100:4\nservice:\n  readiness_probe: /health\n"
                      "run: vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1\n")
    assert main(["generate", str(spec), "--catalog-dir", str(FROZEN_CATALOG)]) == 2
    assert "no value for SERVESTACK_TEST_UNSET" in capsys.readouterr().err
    assert not (tmp_path / "stacks").exists()


# --- the canary, given every way ------------------------------------------------------------

SPEC = """\
name: canary
envs:
  MODEL_NAME: mistralai/Mixtral-8x7B-Instruct-v0.1
{envs}
{secrets}
resources:
  accelerators: {{L4:8, A100:4}}
  ports: 8000
service:
  readiness_probe: /v1/models
run: vllm serve $MODEL_NAME --tensor-parallel-size $SKYPILOT_NUM_GPUS_PER_NODE
"""
# way -> (envs lines, secrets block, flags, environment); each gives CANARY as HF_TOKEN, and
# one also as a secret with another name.
WAYS = {
    "envs value": (f"  HF_TOKEN: {CANARY}", "", [], {}),
    "envs empty + environment": ("  HF_TOKEN:", "", [], {"HF_TOKEN": CANARY}),
    "--env": ("", "", ["--env", f"HF_TOKEN={CANARY}"], {}),
    "--secret NAME=V": ("", "", ["--secret", f"HF_TOKEN={CANARY}"], {}),
    "--secret NAME + environment": ("", "", ["--secret", "HF_TOKEN"], {"HF_TOKEN": CANARY}),
    "secrets value, any name": ("", f"secrets:\n  HF_TOKEN: null\n  DB_PASSWORD: {CANARY}x",
                                [], {"HF_TOKEN": CANARY}),
}

FAKE_PULUMI = """\
import json, os, sys
args = [a for a in sys.argv[1:] if a != "--non-interactive"]
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(json.dumps({"tool": "pulumi", "argv": sys.argv[1:]}) + "\\n")
stacks = os.path.join(os.path.dirname(os.environ["STAND_IN_LOG"]), "pulumi-stacks")
os.makedirs(stacks, exist_ok=True)
def opt(name):
    return args[args.index(name) + 1] if name in args else None
if opt("--event-log"):  # the CLI ends every event log with a cancel event
    with open(opt("--event-log"), "a") as events:
        events.write(json.dumps({"sequence": 0, "timestamp": 0, "cancelEvent": {}}) + "\\n")
if args[:1] == ["version"]:
    print("v3.200.0"); sys.exit(0)
if args[:2] == ["stack", "select"]:
    if os.path.exists(os.path.join(stacks, opt("--stack"))):
        sys.exit(0)
    sys.stderr.write("error: no stack named '" + opt("--stack") + "' found\\n"); sys.exit(255)
if args[:2] == ["stack", "init"]:
    open(os.path.join(stacks, args[2]), "w").close(); sys.exit(0)
if args[:1] == ["up"] and not opt("--stack").startswith(os.environ["CANDIDATE_STACK"]):
    sys.exit(0)  # the read-only probes (identity): no outputs, no error
if args[:1] == ["up"]:
    print("error: InvalidParameterValue: stand-in refuses every stack"); sys.exit(255)
if args[:2] == ["stack", "export"]:
    print(json.dumps({"version": 3, "deployment": {"resources": []}})); sys.exit(0)
if args[:2] == ["stack", "output"]:
    print("{}"); sys.exit(0)
if args[:2] == ["stack", "history"]:
    print(json.dumps([{"kind": "update", "startTime": "2026-11-30T00:00:00.000Z",
                       "endTime": "2026-11-30T00:00:01.000Z", "message": "", "environment": {},
                       "config": {}, "result": "succeeded", "resourceChanges": {}}]))
    sys.exit(0)
sys.exit(0)
"""
FAKE_TERRAFORM = """\
import json, os, sys
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(json.dumps({"tool": "terraform", "argv": sys.argv[1:], "cwd": os.getcwd(),
                          "var": os.environ.get("TF_VAR_hf_token") ==
                          os.environ["EXPECTED_ENV_FILE"]}) + "\\n")
if sys.argv[1] == "init":
    os.makedirs(".terraform", exist_ok=True); sys.exit(0)
if sys.argv[1] == "apply" and "/probes/" not in os.getcwd() \\
        and "-refresh-only" not in sys.argv:
    print(json.dumps({"@level": "error", "type": "diagnostic", "@message": "Error: refused",
                      "diagnostic": {"severity": "error", "summary": "InvalidParameterValue: "
                                     "stand-in refuses every stack"}}))
    sys.exit(1)
sys.exit(0)
"""


def stand_ins(root: Path, monkeypatch, pulumi: str = FAKE_PULUMI,
              terraform: str = FAKE_TERRAFORM) -> Path:
    """`pulumi` and `terraform` first on PATH, recording their argv in root/argv.jsonl."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name, code in (("pulumi", pulumi), ("terraform", terraform)):
        script = bin_dir / name
        script.write_text(f"#!{sys.executable} -S\n{code}")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STAND_IN_LOG", str(root / "argv.jsonl"))
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "stand-in")
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    return root / "argv.jsonl"


def texts(path: Path) -> list[str]:
    """A file's text and everything encoded in it: base64 strings of JSON files (user data)
    decoded (and gunzipped), gzip+base64 files of a cloud-init document unpacked."""
    text = path.read_text(errors="replace")
    found = [text]
    try:
        strings = list(_strings(json.loads(text)))
    except ValueError:
        strings = []
    for value in strings:
        try:
            raw = base64.b64decode(value, validate=True)
            if raw[:2] == b"\x1f\x8b":  # AWS's user data is gzip'd before base64
                raw = gzip.decompress(raw)
            decoded = raw.decode()
        except (binascii.Error, UnicodeDecodeError, ValueError, OSError, EOFError):
            decoded = value
        found.append(decoded)
        if decoded.startswith("#cloud-config"):
            found += written_files(decoded).values()
    return found


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.mark.parametrize("way", WAYS)
def test_the_canary_is_nowhere(way, tmp_path, monkeypatch, capsys):
    envs, secrets, flags, environ = WAYS[way]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "DB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    spec = tmp_path / "serve.yaml"  # outside `work`: the one file the user wrote it in
    spec.write_text(SPEC.format(envs=envs, secrets=secrets))
    log = stand_ins(tmp_path, monkeypatch)
    common = [str(spec), "--cloud", "aws", "--catalog-dir", str(FROZEN_CATALOG), *flags]
    expected = {"HF_TOKEN": CANARY, **({"DB_PASSWORD": CANARY + "x"} if secrets else {})}
    monkeypatch.setenv("EXPECTED_ENV_FILE", env_file(expected))

    assert main(["plan", *common, "--json", "-o", "plan.json"]) == 0
    assert main(["generate", *common]) == 0
    assert main(["preview", "canary", "--offline", "--json"]) == 0
    assert main(["generate", *common, "--format", "terraform", "--stack", "tf"]) == 0
    candidate = json.loads((work / "plan.json").read_text())["candidates"][0]["id"]
    monkeypatch.setenv("CANDIDATE_STACK", f"canary-{candidate}")
    deploy = ["deploy", *common, "--max-attempts", "1", "--no-quota-check"]
    main([*deploy, "--report", "pulumi-report.json"])
    main([*deploy, "--engine", "terraform", "--report", "terraform-report.json"])

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    applies = [c for c in calls if c["tool"] == "terraform" and c["argv"][0] == "apply"
               and "/probes/" not in c["cwd"] and "-refresh-only" not in c["argv"]]
    assert applies and all(c["var"] for c in applies)  # the env file came as TF_VAR_hf_token
    assert any(c["tool"] == "pulumi" and "up" in c["argv"] and
               f"canary-{candidate}" in " ".join(c["argv"]) for c in calls)
    assert CANARY not in log.read_text()  # on no child's command line

    out, err = capsys.readouterr()
    assert CANARY not in out + err
    written = [p for p in work.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"Pulumi.canary.yaml", "main.tf.json", "terraform.tfvars.json", "plan.json",
            "pulumi-report.json", "terraform-report.json", "journal.json"} <= names
    for path in written:
        for text in texts(path):
            assert CANARY not in text, path


# --- the API key: from the stack's outputs to the probe's header, and nowhere else ------------

API_CANARY = "sk-APIKEYCANARY4d2e8bQx0123456789"
# Stand-ins whose stacks come up: their outputs (as the real CLIs print them: the key only with
# --show-secrets / in `terraform output -json`) carry ENDPOINT and the key, which the stand-ins
# hold as their "state" (their environment).
KEYED_PULUMI = """\
import json, os, sys
args = [a for a in sys.argv[1:] if a != "--non-interactive"]
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(json.dumps({"tool": "pulumi", "argv": sys.argv[1:]}) + "\\n")
def opt(name):
    return args[args.index(name) + 1] if name in args else None
if opt("--event-log"):
    with open(opt("--event-log"), "a") as events:
        events.write(json.dumps({"sequence": 0, "timestamp": 0, "cancelEvent": {}}) + "\\n")
if args[:1] == ["version"]:
    print("v3.200.0"); sys.exit(0)
if args[:2] == ["stack", "output"]:
    if not (opt("--stack") or "").startswith(os.environ["CANDIDATE_STACK"]):
        print("{}"); sys.exit(0)
    key = os.environ["KEY_IN_STATE"] if "--show-secrets" in args else "[secret]"
    print(json.dumps({"endpoint": os.environ["ENDPOINT"], "api_key": key,
                      "api_key_secret": "/servestack/canary/0/api-key"})); sys.exit(0)
if args[:2] == ["stack", "history"]:
    print(json.dumps([{"kind": "update", "startTime": "2026-11-30T00:00:00.000Z",
                       "endTime": "2026-11-30T00:00:01.000Z", "message": "", "environment": {},
                       "config": {}, "result": "succeeded", "resourceChanges": {}}]))
sys.exit(0)
"""
KEYED_TERRAFORM = """\
import json, os, sys
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(json.dumps({"tool": "terraform", "argv": sys.argv[1:], "cwd": os.getcwd()}) + "\\n")
candidate = "/probes/" not in os.getcwd()
if sys.argv[1] == "init":
    os.makedirs(".terraform", exist_ok=True); sys.exit(0)
if sys.argv[1] == "apply" and candidate:
    open("terraform.tfstate", "w").write("{}")
    print(json.dumps({"type": "outputs", "outputs": {
        "endpoint": {"sensitive": False, "value": os.environ["ENDPOINT"]},
        "api_key": {"sensitive": True}}}))
if sys.argv[1] == "output" and candidate:
    print(json.dumps({"endpoint": {"sensitive": False, "value": os.environ["ENDPOINT"]},
                      "api_key": {"sensitive": True, "value": os.environ["KEY_IN_STATE"]},
                      "api_key_secret": {"sensitive": False,
                                         "value": "/servestack/canary/0/api-key"}},
                     indent=2))
sys.exit(0)
"""


class _KeyedService(BaseHTTPRequestHandler):
    """vLLM's rule for /v1: the Bearer key or 401; two replicas take turns."""

    authorized = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        ok = self.headers.get("Authorization") == f"Bearer {API_CANARY}"
        _KeyedService.authorized += ok
        self.send_response(200 if ok else 401)
        self.send_header("X-Servestack-Replica", f"vm-{_KeyedService.authorized % 2}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def keyed_stand_ins(root: Path, monkeypatch) -> Path:
    """The stand-ins whose state holds the API key (KEY_IN_STATE), as a real apply's does."""
    monkeypatch.setenv("KEY_IN_STATE", API_CANARY)
    return stand_ins(root, monkeypatch, KEYED_PULUMI, KEYED_TERRAFORM)


@pytest.fixture
def keyed_service(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeyedService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    _KeyedService.authorized = 0
    yield _KeyedService
    server.shutdown()


@pytest.mark.parametrize("engine", ["pulumi", "terraform"])
def test_the_api_key_is_nowhere_but_in_the_probes_header(engine, tmp_path, monkeypatch,
                                                        capsys, keyed_service):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HF_TOKEN", CANARY)
    log = keyed_stand_ins(tmp_path, monkeypatch)
    spec = tmp_path / "serve.yaml"
    spec.write_text(SPEC.format(envs="", secrets=""))
    common = [str(spec), "--cloud", "aws", "--catalog-dir", str(FROZEN_CATALOG)]
    assert main(["plan", *common, "--json", "-o", "plan.json"]) == 0
    candidate = json.loads((work / "plan.json").read_text())["candidates"][0]["id"]
    monkeypatch.setenv("CANDIDATE_STACK", f"canary-{candidate}")
    assert main(["generate", *common]) == 0
    assert main(["deploy", *common, "--engine", engine, "--max-attempts", "1",
                 "--no-quota-check", "--report", "report.json"]) == 0
    assert keyed_service.authorized >= 1  # the probe carried the key the outputs gave
    assert main(["endpoint", "canary", "--engine", engine]) == 0
    assert main(["endpoint", "canary", "--engine", engine, "--json"]) == 0
    assert main(["status", "canary", "--json"]) == 0

    out, err = capsys.readouterr()
    assert "--name /servestack/canary/0/api-key --with-decryption" in out
    assert API_CANARY not in out + err
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(c["tool"] == engine and {"up", "apply"} & set(c["argv"]) for c in calls)
    assert API_CANARY not in log.read_text()  # on no command line
    written = [p for p in work.rglob("*") if p.is_file()]
    assert {"journal.json", "report.json", "Pulumi.canary.yaml"} <= {p.name for p in written}
    for path in written:
        for text in texts(path):
            assert API_CANARY not in text, path
