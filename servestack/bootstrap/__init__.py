"""The cloud-init bootstrap: a `#cloud-config` document that turns a GPU VM into a vLLM replica.

`render_cloud_init(deployment)` returns the document; the cloud components put it in user data
(base64-encoding it where the cloud wants that; `user_data(deployment)` is the base64 form,
gzip'd first where the cloud's user data limit needs it). It is pure text, decided by the
`Deployment` only, and holds no secret: the deployment's secrets are fetched on the VM at boot.

What the document does:

- `write_files` puts static, shellcheck-clean scripts (the `*.sh` files next to this module,
  comment lines dropped to save room) under /opt/servestack, two systemd units, and the only
  generated text: the settings file /etc/servestack/servestack.env and the spec's envs in
  /etc/servestack/user.env (every value `shlex.quote`d), the readiness probe's body and
  headers, and the spec's `setup`/`run` verbatim under /opt/servestack/user/. AWS takes at most
  16 KiB of user data, so its engines send the whole document gzip'd (cloud-init unpacks it)
  and the limit bounds the gzip'd size; elsewhere a document over 16 KiB has its largest files
  written gzip+base64 instead, as many as it takes.
- `runcmd` enables the units and starts them without blocking cloud-init. On a reboot the
  enabled units come back by themselves; every step below is guarded, so nothing is redone.
- `servestack-vllm.service` (Restart=always, output to the journal) runs servestack-start on
  every (re)start: fetch the secrets, install what is missing, run the spec's `setup` once (its
  digest is recorded after it succeeds), then exec the spec's `run` or, without one,
  `vllm serve <model> --host 0.0.0.0 --port <port> --tensor-parallel-size <N>`.
  N is the GPU count `nvidia-smi -L` reports at boot (the group may mix instance types with the
  same count), falling back to the planned tensor-parallel size.
- The secrets (servestack.secrets: HF_TOKEN and any other, one env file in one secret-store
  entry): AWS `aws ssm get-parameter --with-decryption` (the AWS CLI v1 from PyPI is put in
  /opt/servestack/tools when the image has none); GCP the Secret Manager REST API with the
  metadata server's access token; Azure an IMDS managed-identity token and the Key Vault REST
  API. python3 reads the store's JSON answer, checks that it is NAME=value words (a value
  without `=` is a bare Hugging Face token), and writes them re-quoted to
  /etc/servestack/secret.env (0600, root), which servestack-start exports to setup, run and
  vLLM; no value ever sits in a shell variable, an argv or a log line. Access tokens reach
  curl on stdin (`-K -`), not on its command line.
- The API key (`Deployment.api_key`, unless --no-api-key): the same script reads it from its
  own store entry (AWS SSM parameter, decrypted; GCP Secret Manager secret, latest version;
  Azure the `api-key` secret in the stack's Key Vault) and adds it to secret.env as
  VLLM_API_KEY, which vLLM's OpenAI server reads from its environment (vllm/envs.py) and then
  asks of every /v1 request as `Authorization: Bearer <key>` (/health and /metrics stay open,
  for the load balancer's health check): the key is on no command line, vLLM's included. An
  entry that is missing or unreadable stops the script with the entry's name.
- vLLM: pinned `vllm==<vllm_version>` in /opt/servestack/venv, skipped when that venv or the
  image's python3 already has that version, and when the spec's `setup` installs vLLM itself
  (SkyPilot's Mixtral setup does, in its own conda env).
- SkyPilot compatibility: SKYPILOT_NUM_GPUS_PER_NODE, SKYPILOT_NODE_IPS (this VM's address),
  SKYPILOT_NODE_RANK=0, SKYPILOT_NUM_NODES=1, SKYPILOT_SERVE_REPLICA_ID (the cloud-init instance
  id, else the hostname) and the spec's envs are exported, and the venv's bin is first on PATH,
  so a serve.yaml's `run:` works unchanged. When `setup`/`run` mention `conda`, Miniforge
  (pinned, conda-forge, so no channel terms to accept) is installed in /opt/servestack/conda
  unless the image has a conda, and the scripts run under `bash` with BASH_ENV pointing at its
  conda.sh, which is what makes `conda activate` work in a non-interactive shell.
- `--weight-cache` (servestack.bootstrap.cache): servestack-start asks the pool's bucket
  (servestack-cache check) before vLLM starts and, when it holds the model, `vllm serve MODEL`
  serves the bucket with the Run:ai streamer; servestack-cache-fill.service fills an empty
  bucket once vLLM is healthy, under a lock, the completion marker last.
- `image_id: docker:IMAGE` (SkyPilot's form; the VM boots the cloud's default GPU image):
  servestack-start fetches the secrets and installs Docker and the NVIDIA Container Toolkit
  where the image lacks them (no vLLM, no conda on the VM), then servestack-container runs
  servestack-start again inside IMAGE with all GPUs, the host's network, the Hugging Face
  cache on the VM's disk and servestack's files (and secret.env, so VLLM_API_KEY too)
  mounted read-only, never on docker's command line: the
  spec's setup and run, or the default `vllm serve`, run in the container as SkyPilot runs
  them. The unit orders itself after docker.service.

The readiness gate (only when the spec's probe is a POST): load balancer health checks can
only GET, so they check vLLM's /health, which says the server is up, not that the spec's
request (a chat completion) gets a 200. To keep traffic away until the spec's real probe
passes, the vLLM unit's ExecStartPre runs `servestack-gate close`: an iptables chain rejects
(TCP reset) every non-loopback packet to the service port, which also fails the load
balancer's health check. `servestack-gate.service`
(Restart=always) then POSTs the probe's body to 127.0.0.1:<port><path> (with the API key's
`Authorization: Bearer` header, given to curl as a config on stdin, when there is a key) every
PROBE_INTERVAL_SECONDS with the probe's timeout per try; on HTTP 200 it flushes the chain. If
the probe has not passed after initial_delay_seconds it gives up: the port stays closed, the
group's health check (whose grace period is that same delay) replaces the VM. It watches the
vLLM unit's InvocationID, so every restart of vLLM closes the gate again and re-arms the probe.
"""

from __future__ import annotations

import base64
import gzip
import re
import shlex
from importlib import resources

import yaml

from servestack import clouds
from servestack.bootstrap.cache import cache_files, cache_settings, cache_units
from servestack.bootstrap.metrics import metrics_files, metrics_units
from servestack.deployment.model import Deployment
from servestack.errors import UserError

HOME = "/opt/servestack"
ETC = "/etc/servestack"
MINIFORGE_VERSION = "24.11.3-0"
PROBE_INTERVAL_SECONDS = 10
# bytes; AWS's limit (GCP allows 256 KiB, Azure 64 KiB). AWS gets the document gzip'd; the
# other clouds' documents over it still pack their largest files.
USER_DATA_LIMIT = 16384
COMPRESS_OVER = 512  # smaller files are never written gzip+base64 (no room to gain)
COMMENT = re.compile(r"^\s*#(?!\s*shellcheck )")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SCRIPTS = {  # packaged file -> where the document writes it
    "servestack-common.sh": f"{HOME}/lib/common.sh",
    "servestack-install.sh": f"{HOME}/bin/servestack-install",
    "servestack-start.sh": f"{HOME}/bin/servestack-start",
    "servestack-gate.sh": f"{HOME}/bin/servestack-gate",
    "servestack_replica.py": f"{HOME}/lib/python/servestack_replica.py",
}
VLLM_UNIT = """\
[Unit]
Description=servestack vLLM replica
Wants=network-online.target{docker}
After=network-online.target{docker}
StartLimitIntervalSec=0

[Service]
Type=simple
Environment=HOME=/root
{pre}ExecStart=/opt/servestack/bin/servestack-start
Restart=always
RestartSec=10
TimeoutStartSec=900
TimeoutStopSec=60
LimitNOFILE=65536
StandardOutput=journal
StandardError=journal
SyslogIdentifier=servestack-vllm

[Install]
WantedBy=multi-user.target
"""
GATE_UNIT = """\
[Unit]
Description=servestack readiness gate for the vLLM port
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart=/opt/servestack/bin/servestack-gate watch
Restart=always
RestartSec=5
StandardOutput=journal
StandardError=journal
SyslogIdentifier=servestack-gate

[Install]
WantedBy=multi-user.target
"""


def render_cloud_init(deployment: Deployment) -> str:
    """The `#cloud-config` document for one replica of `deployment` (no secret in it).

    Where the cloud takes its user data gzip'd (AWS), every file is text and the gzip'd size
    must fit the cloud's limit (gzip'd files inside would only compress worse). Elsewhere, over
    USER_DATA_LIMIT bytes, files are written gzip+base64 instead of as text, the largest first
    and only as many as it takes (the settings stay readable in the cloud's console). A
    document the cloud's limit still refuses is an error.
    """
    d = deployment
    if not d.run and not d.model:
        raise UserError("the spec has no `run:` and no model was found: pass --model NAME")
    cloud = clouds.get(d.cloud)
    files = _files(d, d.readiness.method == "POST")
    text = _render(d, files, set()) if cloud.user_data_gzip else _packed(d, files)
    size = len(_sent(text, cloud.user_data_gzip))
    limit = cloud.user_data_limit
    if limit is not None and size > limit:
        form = " gzip'd" if cloud.user_data_gzip else ""
        raise UserError(f"the bootstrap is {size} bytes{form}, over {cloud.title}'s "
                        f"{limit}-byte user data limit: shorten setup/run")
    return text


def user_data(deployment: Deployment) -> str:
    """The user data as the cloud's API takes it: base64 of the document, gzip'd first where
    the cloud wants that (cloud-init detects gzip's magic bytes and unpacks it)."""
    cloud = clouds.get(deployment.cloud)
    text = render_cloud_init(deployment)
    return base64.b64encode(_sent(text, cloud.user_data_gzip)).decode()


def _sent(text: str, gzipped: bool) -> bytes:
    """The bytes the cloud gets (before base64), whose size its limit bounds. mtime=0 keeps the
    gzip header free of the time, so every render gives the same bytes (no diff on re-runs)."""
    data = text.encode()
    return gzip.compress(data, compresslevel=9, mtime=0) if gzipped else data


def _packed(d: Deployment, files: list[tuple[str, str, str]]) -> str:
    """The document with its largest files gzip+base64, as many as it takes to fit
    USER_DATA_LIMIT bytes (all of them if it takes that; the cloud's limit is checked after)."""
    packed: set[str] = set()
    text = _render(d, files, packed)
    largest = sorted((f for f in files if len(f[1]) > COMPRESS_OVER), key=lambda f: -len(f[1]))
    for path, _, _ in largest:
        if len(text.encode()) <= USER_DATA_LIMIT:
            break
        packed.add(path)
        text = _render(d, files, packed)
    return text


def _render(d: Deployment, files: list[tuple[str, str, str]], packed: set[str]) -> str:
    """The document writing `files`, those in `packed` gzip+base64."""
    gated = d.readiness.method == "POST"
    units = ["servestack-vllm.service"] + (["servestack-gate.service"] if gated else [])
    units += metrics_units(d) + cache_units(d)
    document = {
        "write_files": [_file(*f, compress=f[0] in packed) for f in files],
        "runcmd": [["systemctl", "daemon-reload"], ["systemctl", "enable", *units],
                   ["systemctl", "start", "--no-block", *units]],
    }
    header = (f"#cloud-config\n# servestack bootstrap: service {d.service}, candidate "
              f"{d.candidate_id}.\n# Generated by servestack.bootstrap; the scripts are "
              f"servestack/bootstrap/*.sh without their comments.\n")
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000,
                              allow_unicode=True)


def _files(d: Deployment, gated: bool) -> list[tuple[str, str, str]]:
    """(path, text, permissions) of every file the document writes."""
    files = [(f"{ETC}/servestack.env", settings_env(d), "0644"),
             (f"{ETC}/user.env", user_env(d.envs), "0644")]
    files += [(path, script_text(name), "0644" if "/lib/" in path else "0755")
              for name, path in SCRIPTS.items() if gated or name != "servestack-gate.sh"]
    if d.secret or d.api_key:
        files.append((f"{HOME}/bin/servestack-secret",
                      script_text(f"servestack-secret-{d.cloud}.sh"), "0755"))
    pre = "ExecStartPre=/opt/servestack/bin/servestack-gate close\n" if gated else ""
    docker = " docker.service" if d.container_image else ""
    files.append(("/etc/systemd/system/servestack-vllm.service",
                  VLLM_UNIT.format(pre=pre, docker=docker), "0644"))
    if d.container_image:
        files.append((f"{HOME}/bin/servestack-container", script_text("servestack-container.sh"),
                      "0755"))
    if gated:
        files += [("/etc/systemd/system/servestack-gate.service", GATE_UNIT, "0644"),
                  (f"{ETC}/readiness.json", (d.readiness.post_data or "{}") + "\n", "0644"),
                  (f"{ETC}/readiness.headers", readiness_headers(d.readiness.headers), "0644")]
    for name, script in (("setup", d.setup), ("run", d.run)):
        if script:
            files.append((f"{HOME}/user/{name}.sh", _ending(script), "0755"))
    return files + metrics_files(d) + cache_files(d, script_text)


def settings_env(d: Deployment) -> str:
    """/etc/servestack/servestack.env: every setting the scripts read, shell-quoted."""
    secret, key = d.secret, d.api_key
    values = {
        "SERVESTACK_SERVICE": d.service,
        "SERVESTACK_CANDIDATE": d.candidate_id,
        "SERVESTACK_CLOUD": d.cloud,
        "SERVESTACK_REGION": d.region,
        "SERVESTACK_PORT": d.service_port,
        "SERVESTACK_MODEL": d.model or "",
        "SERVESTACK_TP_PLANNED": d.tensor_parallel_size,
        "SERVESTACK_VLLM_VERSION": d.vllm_version,
        "SERVESTACK_INSTALL_VLLM": int(not _mentions(d.setup, "vllm")),
        "SERVESTACK_USE_CONDA": int(_mentions(d.setup, "conda") or _mentions(d.run, "conda")),
        "SERVESTACK_MINIFORGE_VERSION": MINIFORGE_VERSION,
        "SERVESTACK_SECRET_STORE": secret.store if secret else "",
        "SERVESTACK_SECRET_NAME": secret.name if secret else "",
        "SERVESTACK_SECRET_VAULT": _vault(d),
        "SERVESTACK_API_KEY_STORE": key.store if key else "",
        "SERVESTACK_API_KEY_NAME": key.name if key else "",
        "SERVESTACK_GCP_PROJECT": d.gcp_project or "",
        "SERVESTACK_READY_PATH": d.readiness.path,
        "SERVESTACK_READY_TIMEOUT": d.readiness.timeout_seconds,
        "SERVESTACK_READY_DELAY": d.readiness.initial_delay_seconds,
        "SERVESTACK_PROBE_INTERVAL": PROBE_INTERVAL_SECONDS,
    }
    if d.container_image:  # absent otherwise: the scripts read it as ${...:-}
        values["SERVESTACK_CONTAINER_IMAGE"] = d.container_image
    values.update(cache_settings(d))
    lines = [f"{key}={shlex.quote(str(value))}" for key, value in values.items()]
    return "# servestack settings (no secrets); sourced by /opt/servestack/lib/common.sh\n" \
        "# shellcheck shell=bash disable=SC2034\n" + "\n".join(lines) + "\n"


def _vault(d: Deployment) -> str:
    """Azure: the stack's one Key Vault, which holds the secrets and the API key alike (the
    engine sets its name on whichever of the two references the deployment has)."""
    names = [ref.vault for ref in (d.secret, d.api_key) if ref is not None and ref.vault]
    return names[0] if names else ""


def user_env(envs: dict) -> str:
    """/etc/servestack/user.env: the spec's envs (never its secrets), exported to setup, run
    and vLLM."""
    lines = ["# the spec's envs; sourced by servestack-start", "# shellcheck shell=bash"]
    for key, value in envs.items():
        if not ENV_NAME.match(key):
            raise UserError(f"envs: {key!r} is not a valid environment variable name")
        lines.append(f"export {key}={shlex.quote(str(value))}")
    return "\n".join(lines) + "\n"


def readiness_headers(headers: dict) -> str:
    """curl's `-H @file` format: one `Name: value` per line."""
    lines = []
    for key, value in headers.items():
        if any(c in f"{key}{value}" for c in "\r\n") or ":" in str(key):
            raise UserError(f"readiness_probe.headers: {key!r} is not a valid header")
        lines.append(f"{key}: {value}")
    return "".join(f"{line}\n" for line in lines)


def script_text(name: str) -> str:
    """A packaged script without its comment lines and blank lines (user data is small).

    The shebang and `# shellcheck` directives stay. Comments are documentation for the repo.
    """
    text = resources.files(__name__).joinpath(name).read_text()
    if name.endswith(".py"):
        text = text[text.index('"""', 3) + 3:]  # the docstring is for the repo
    kept = [line for line in text.splitlines()
            if line.strip() and (not COMMENT.match(line) or line.startswith("#!"))]
    return "\n".join(kept) + "\n"


def written_files(document: str) -> dict[str, str]:
    """path -> text of every file the document writes (gzip+base64 ones decoded)."""
    files = {}
    for item in yaml.safe_load(document)["write_files"]:
        content = item["content"]
        if item.get("encoding") == "gz+b64":
            content = gzip.decompress(base64.b64decode(content)).decode()
        files[item["path"]] = content
    return files


def _mentions(script: str | None, word: str) -> bool:
    return script is not None and re.search(rf"\b{word}\b", script) is not None


def _ending(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _file(path: str, content: str, permissions: str, *, compress: bool) -> dict:
    item = {"path": path, "owner": "root:root", "permissions": permissions}
    if compress:
        data = gzip.compress(content.encode(), compresslevel=9, mtime=0)
        return {**item, "encoding": "gz+b64", "content": base64.b64encode(data).decode()}
    return {**item, "content": content}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the document reads like the files it writes."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
