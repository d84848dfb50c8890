#!/bin/bash
# servestack: the weight cache (--weight-cache), in one file:
# - executed (`servestack-cache check|fill`): run servestack_cache.py in a venv of its own that
#   holds the cloud's storage SDK (whatever environment runs vLLM is left as it is); check is
#   servestack-start's question to the bucket before vLLM starts, fill is what
#   servestack-cache-fill.service runs once vLLM is healthy. The venv is made once per VM,
#   under a lock, since both may start at once.
# - sourced by servestack-start (only when the deployment has a cache): `use_weight_cache`
#   asks the bucket; when it holds the model, `vllm serve MODEL` (the default command, or the
#   spec's run through the exported `vllm` function) serves the bucket's copy with the Run:ai
#   streamer; else vLLM downloads from the hub as without a cache.

# tp_of ARG...: the tensor-parallel size a `vllm serve` command line asks for (default 1).
tp_of() {
    local size=1
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --tensor-parallel-size=*) size="${1#*=}" ;;
            --tensor-parallel-size | -tp) size="${2:-1}" ;;
        esac
        shift
    done
    printf '%s\n' "$size"
}

# cache_args ARG...: the `vllm ARG...` command line to run, in the array `served`: with the
# weight cache filled (SERVESTACK_CACHE_URI), `serve MODEL ...` becomes
# `serve <bucket URI> ... --load-format runai_streamer`, still answering to MODEL's name, with
# distributed streaming when tensor parallel (each GPU's worker reads its share).
cache_args() {
    served=("$@")
    if [ "${1:-}" != serve ] || [ "${2:-}" != "$SERVESTACK_MODEL" ] ||
        [ -z "${SERVESTACK_CACHE_URI:-}" ]; then
        return 0
    fi
    served=(serve "$SERVESTACK_CACHE_URI" "${@:3}" --load-format runai_streamer)
    case " ${*:3} " in
        *" --served-model-name"*) ;;
        *) served+=(--served-model-name "$SERVESTACK_MODEL") ;;
    esac
    case " ${*:3} " in
        *" --model-loader-extra-config"*) ;;
        *) [ "$(tp_of "${@:3}")" -le 1 ] ||
            served+=(--model-loader-extra-config '{"distributed":true}') ;;
    esac
    log "serving $SERVESTACK_MODEL from the weight cache $SERVESTACK_CACHE_URI"
}

# vllm: the spec's run calls this (exported to its bash) instead of the binary, so its
# `vllm serve $MODEL_NAME ...` reads the cache too.
vllm() {
    cache_args "$@"
    command vllm "${served[@]}"
}

# use_weight_cache: ask the bucket; when it holds the model, export what the streamer needs
# (cache.env) and the `vllm` function for the spec's run.
use_weight_cache() {
    rm -f "$SERVESTACK_STATE/cache.env"
    "$SERVESTACK_HOME/bin/servestack-cache" check ||
        log "warning: could not ask the weight cache; downloading from the Hugging Face hub"
    if [ -s "$SERVESTACK_STATE/cache.env" ]; then
        set -a
        # shellcheck source=/dev/null
        . "$SERVESTACK_STATE/cache.env"
        set +a
        export SERVESTACK_MODEL
        export -f vllm cache_args tp_of log
    fi
}



# Sourced: the functions above are all servestack-start wants.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    return 0
fi

set -euo pipefail
# shellcheck source=/dev/null
. "${SERVESTACK_HOME:-/opt/servestack}/lib/common.sh"

tools="$SERVESTACK_HOME/cache-venv"
mkdir -p "$SERVESTACK_STATE"
exec 9>"$SERVESTACK_STATE/cache-venv.lock"
flock 9
if [ ! -f "$tools/.ready" ]; then
    need python3
    log "installing the weight cache's tools into $tools"
    python3 -m venv --clear "$tools" ||
        { pkg_install python3-venv && python3 -m venv --clear "$tools"; }
    read -r -a packages <<<"$SERVESTACK_CACHE_PACKAGES"
    "$tools/bin/pip" install -q --no-cache-dir "${packages[@]}"
    touch "$tools/.ready"
fi
flock -u 9

# The spec's envs may move the Hugging Face cache (HF_HOME), where fill finds the download.
# shellcheck source=/dev/null
. "$SERVESTACK_ETC/user.env"
export HOME="${HOME:-/root}" SERVESTACK_CLOUD SERVESTACK_REGION SERVESTACK_PORT \
    SERVESTACK_MODEL SERVESTACK_CACHE_PREFIX SERVESTACK_CACHE_PATH SERVESTACK_CACHE_CONTAINER
exec "$tools/bin/python" "$SERVESTACK_HOME/lib/python/servestack_cache.py" "$@"
