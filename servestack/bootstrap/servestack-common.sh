# shellcheck shell=bash
# servestack: helpers sourced by the /opt/servestack/bin scripts (installed as
# /opt/servestack/lib/common.sh). Reads the rendered, non-secret settings. The paths can be
# overridden from the environment, which the tests use.

SERVESTACK_ETC="${SERVESTACK_ETC:-/etc/servestack}"
SERVESTACK_HOME="${SERVESTACK_HOME:-/opt/servestack}"
SERVESTACK_STATE="${SERVESTACK_STATE:-/var/lib/servestack}"
SERVESTACK_VENV="$SERVESTACK_HOME/venv"
export SERVESTACK_ETC SERVESTACK_HOME SERVESTACK_STATE SERVESTACK_VENV

# shellcheck source=/dev/null
. "$SERVESTACK_ETC/servestack.env"

log() {
    printf 'servestack: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# pkg_install PACKAGE...: install distribution packages with whatever manager the image has.
pkg_install() {
    log "installing packages: $*"
    if command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 update -q &&
            apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@"
    elif command -v dnf >/dev/null 2>&1; then
        dnf install -y -q "$@"
    elif command -v yum >/dev/null 2>&1; then
        yum install -y -q "$@"
    else
        die "no package manager found to install: $*"
    fi
}

# need COMMAND [PACKAGE]: make sure COMMAND exists, installing PACKAGE (default: COMMAND).
need() {
    command -v "$1" >/dev/null 2>&1 || pkg_install "${2:-$1}"
}

# conda_sh: print the path of the conda.sh that defines `conda activate` (servestack's own
# Miniforge first, then a conda the image ships), or nothing when there is none.
conda_sh() {
    local base
    for base in "$SERVESTACK_HOME/conda" /opt/conda "${HOME:-/root}/miniconda3" \
        "${HOME:-/root}/anaconda3" "${HOME:-/root}/miniforge3"; do
        if [ -f "$base/etc/profile.d/conda.sh" ]; then
            printf '%s\n' "$base/etc/profile.d/conda.sh"
            return
        fi
    done
}

# store_secrets FIELD ENCODING: read the secret store's JSON answer on stdin; the value at the
# dotted FIELD (base64-decoded when ENCODING is "base64") is the deployment's env file of
# secrets (NAME=<shell-quoted value> words, see servestack/secrets.py); a value without any
# `=` is a bare Hugging Face token, as older deployments stored it. Every word is checked and
# re-quoted into secret.env, mode 0600, atomically; the names are logged. No value enters a
# shell variable, an argv or a log line; errors name no value.
store_secrets() {
    # shellcheck disable=SC2016
    python3 -c 'import base64, json, os, re, shlex, sys
raw = sys.stdin.read()
if not raw.strip():
    sys.exit("the secret store gave no answer for the secrets")
value = json.loads(raw)
for key in sys.argv[1].split("."):
    value = value[key]
if sys.argv[2] == "base64":
    value = base64.b64decode(value).decode()
if not value.strip():
    sys.exit("the secret is empty")
try:
    words = shlex.split(value) if "=" in value else ["HF_TOKEN=" + value.strip()]
except ValueError:
    sys.exit("the secret is not an env file")
pairs = [word.partition("=") for word in words]
if not all(p[1] and re.fullmatch("[A-Za-z_][A-Za-z0-9_]*", p[0]) for p in pairs):
    sys.exit("the secret holds a word that is not NAME=value")
tmp = sys.argv[3] + ".tmp"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as out:
    out.writelines(n + "=" + shlex.quote(v) + "\n" for n, _, v in pairs)
os.replace(tmp, sys.argv[3])
print("servestack: secrets", *[p[0] for p in pairs], "stored in", sys.argv[3], file=sys.stderr)' "$1" "$2" "$SERVESTACK_ETC/secret.env"
}

# store_api_key FIELD ENCODING: read the secret store's JSON answer on stdin; the value at the
# dotted FIELD is the service's generated API key. It is checked (header-safe characters, at
# least 16 of them: no value a shell or an HTTP header would misread) and written as
# VLLM_API_KEY into secret.env beside the secrets already there (vLLM reads VLLM_API_KEY from
# its environment and then asks every /v1 request for `Authorization: Bearer <key>`), 0600,
# atomically. The key never enters a shell variable, an argv or a log line.
store_api_key() {
    # shellcheck disable=SC2016
    python3 -c 'import base64, json, os, re, shlex, sys
raw = sys.stdin.read()
if not raw.strip():
    sys.exit("the secret store gave no answer for the API key")
value = json.loads(raw)
for key in sys.argv[1].split("."):
    value = value[key]
if sys.argv[2] == "base64":
    value = base64.b64decode(value).decode()
value = value.strip()
if not re.fullmatch("[A-Za-z0-9._~+/=-]{16,}", value):
    sys.exit("the stored API key is empty, too short or holds characters a header cannot")
path = sys.argv[3]
kept = []
if os.path.exists(path):
    with open(path) as old:
        kept = [line for line in old if not line.startswith("VLLM_API_KEY=")]
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as out:
    out.writelines(kept + ["VLLM_API_KEY=" + shlex.quote(value) + "\n"])
os.replace(path + ".tmp", path)
print("servestack: the API key (VLLM_API_KEY) stored in", path, file=sys.stderr)' "$1" "$2" "$SERVESTACK_ETC/secret.env"
}

# json_field FIELD: print the string at the dotted FIELD of the JSON document on stdin.
json_field() {
    python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[key]
print(value)' "$1"
}

# bearer_get TOKEN URL: GET URL with an access token that curl reads on stdin, not in argv.
bearer_get() {
    printf 'header = "Authorization: Bearer %s"\n' "$1" |
        curl -fsS --retry 5 --retry-delay 3 --retry-connrefused -K - "$2"
}
