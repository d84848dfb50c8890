#!/bin/bash
# servestack: ExecStart of servestack-vllm.service. On every (re)start: fetch the secrets,
# make sure vLLM (and conda, if used) is installed, run the spec's setup once, then exec the
# spec's run script or the default `vllm serve`, with SkyPilot's runtime variables exported.
set -euo pipefail
# shellcheck source=/dev/null
. "${SERVESTACK_HOME:-/opt/servestack}/lib/common.sh"

bin="$SERVESTACK_HOME/bin"
user="$SERVESTACK_HOME/user"
mkdir -p "$SERVESTACK_STATE"
# image_id: docker:IMAGE runs this script twice: on the VM, to fetch the secrets and install
# Docker, then inside IMAGE (servestack-container) for the rest, where the secrets are already
# in the mounted secret.env.
# The API key reaches vLLM the same way as the secrets: as VLLM_API_KEY in secret.env, which
# vLLM reads from its environment (vllm/envs.py), so it is never on vLLM's command line.
in_container="${SERVESTACK_IN_CONTAINER:-}"
if [ -z "$in_container" ] && [ -n "$SERVESTACK_SECRET_STORE${SERVESTACK_API_KEY_NAME:-}" ]; then
    "$bin/servestack-secret"
fi
"$bin/servestack-install"
if [ -n "${SERVESTACK_CONTAINER_IMAGE:-}" ] && [ -z "$in_container" ]; then
    exec "$bin/servestack-container"
fi

# gpu_count: GPUs this VM really has (`nvidia-smi -L`), else the planned count.
gpu_count() {
    local found=0
    if command -v nvidia-smi >/dev/null 2>&1; then
        found=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
    fi
    if [ "${found:-0}" -gt 0 ]; then
        [ "$found" = "$SERVESTACK_TP_PLANNED" ] ||
            log "warning: $found GPUs found, $SERVESTACK_TP_PLANNED planned; using $found"
        printf '%s\n' "$found"
    else
        log "warning: nvidia-smi found no GPU; using the planned $SERVESTACK_TP_PLANNED"
        printf '%s\n' "$SERVESTACK_TP_PLANNED"
    fi
}

replica_id() {
    if [ -s /var/lib/cloud/data/instance-id ]; then
        cat /var/lib/cloud/data/instance-id
    else
        hostname
    fi
}

node_ip() {
    local ip
    ip=$(hostname -I 2>/dev/null | awk '{print $1}')
    printf '%s\n' "${ip:-127.0.0.1}"
}

if [ -s "$SERVESTACK_ETC/secret.env" ]; then
    set -a
    # shellcheck source=/dev/null
    . "$SERVESTACK_ETC/secret.env"
    set +a
fi
# shellcheck source=/dev/null
. "$SERVESTACK_ETC/user.env"

gpus=$(gpu_count)
SKYPILOT_NUM_GPUS_PER_NODE="$gpus"
SKYPILOT_NODE_IPS=$(node_ip)
SKYPILOT_NODE_RANK=0
SKYPILOT_NUM_NODES=1
SKYPILOT_SERVE_REPLICA_ID=$(replica_id)
export SKYPILOT_NUM_GPUS_PER_NODE SKYPILOT_NODE_IPS SKYPILOT_NODE_RANK SKYPILOT_NUM_NODES \
    SKYPILOT_SERVE_REPLICA_ID
export HOME="${HOME:-/root}"
export PATH="$SERVESTACK_VENV/bin:$PATH"
cd "$HOME"

# --weight-cache: serve the bucket's copy when it is filled (see servestack-cache).
if [ -n "${SERVESTACK_CACHE_PATH:-}" ]; then
    # shellcheck source=/dev/null
    . "$bin/servestack-cache"
    use_weight_cache
fi

# User scripts run in a plain non-interactive bash, as SkyPilot runs them; BASH_ENV loads
# conda.sh first so that `conda activate` works there.
bash_env=""
if [ "$SERVESTACK_USE_CONDA" = 1 ]; then
    bash_env=$(conda_sh)
    [ -n "$bash_env" ] || die "the spec uses conda but no conda.sh was found"
fi

if [ -f "$user/setup.sh" ]; then
    digest=$(sha256sum "$user/setup.sh" | awk '{print $1}')
    if [ "$(cat "$SERVESTACK_STATE/setup.done" 2>/dev/null || true)" != "$digest" ]; then
        log "running the spec's setup"
        BASH_ENV="$bash_env" bash "$user/setup.sh" || die "the spec's setup failed"
        printf '%s\n' "$digest" >"$SERVESTACK_STATE/setup.done"
    fi
fi

if [ -f "$user/run.sh" ]; then
    log "starting the spec's run with $gpus GPUs per node"
    export BASH_ENV="$bash_env"
    exec bash "$user/run.sh"
fi

vllm="$SERVESTACK_VENV/bin/vllm"
[ -x "$vllm" ] || vllm=$(command -v vllm) || die "vllm is not installed"
log "starting vllm serve $SERVESTACK_MODEL on port $SERVESTACK_PORT, tensor parallel $gpus"
# servestack_replica names this replica in a response header (servestack deploy counts them).
export PYTHONPATH="$SERVESTACK_HOME/lib/python${PYTHONPATH:+:$PYTHONPATH}"
served=(serve "$SERVESTACK_MODEL" --host 0.0.0.0 --port "$SERVESTACK_PORT"
    --tensor-parallel-size "$gpus" --middleware servestack_replica.add_replica_header)
[ -z "${SERVESTACK_CACHE_URI:-}" ] || cache_args "${served[@]}"
exec "$vllm" "${served[@]}"
