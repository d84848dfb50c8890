#!/bin/bash
# servestack: install the pinned vLLM into /opt/servestack/venv unless the image (or an earlier
# boot) already has that version, and a conda when the spec's scripts use one. Idempotent.
set -euo pipefail
# shellcheck source=/dev/null
. "${SERVESTACK_HOME:-/opt/servestack}/lib/common.sh"

# has_vllm PYTHON: true when PYTHON imports vllm at exactly the pinned version, and with
# --weight-cache the Run:ai streamer (vllm[runai]) that reads the bucket.
extras="${SERVESTACK_CACHE_PATH:+[runai]}"
has_vllm() {
    [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1
    "$1" -c 'import importlib.metadata as m, sys
if sys.argv[2]:
    import runai_model_streamer
sys.exit(m.version("vllm") != sys.argv[1])' "$SERVESTACK_VLLM_VERSION" "$extras" 2>/dev/null
}

install_vllm() {
    if has_vllm "$SERVESTACK_VENV/bin/python"; then
        log "vllm $SERVESTACK_VLLM_VERSION already in $SERVESTACK_VENV"
        return
    fi
    if command -v vllm >/dev/null 2>&1 && has_vllm python3; then
        log "the image already has vllm $SERVESTACK_VLLM_VERSION; not installing it"
        return
    fi
    need python3
    if [ ! -x "$SERVESTACK_VENV/bin/pip" ]; then
        python3 -m venv --clear "$SERVESTACK_VENV" || { pkg_install python3-venv &&
            python3 -m venv --clear "$SERVESTACK_VENV"; }
    fi
    log "installing vllm$extras==$SERVESTACK_VLLM_VERSION into $SERVESTACK_VENV"
    "$SERVESTACK_VENV/bin/pip" install -q --no-cache-dir --upgrade pip
    "$SERVESTACK_VENV/bin/pip" install -q --no-cache-dir "vllm$extras==$SERVESTACK_VLLM_VERSION"
}

install_conda() {
    if [ -n "$(conda_sh)" ]; then
        return
    fi
    local installer
    installer=$(mktemp)
    need curl
    log "installing Miniforge $SERVESTACK_MINIFORGE_VERSION into $SERVESTACK_HOME/conda"
    curl -fsSL --retry 5 -o "$installer" \
        "https://github.com/conda-forge/miniforge/releases/download/$SERVESTACK_MINIFORGE_VERSION/Miniforge3-$SERVESTACK_MINIFORGE_VERSION-Linux-$(uname -m).sh"
    rm -rf "$SERVESTACK_HOME/conda"
    bash "$installer" -b -p "$SERVESTACK_HOME/conda"
    rm -f "$installer"
}

# docker:IMAGE: the image brings vLLM and conda; servestack-container installs Docker.
[ -z "${SERVESTACK_CONTAINER_IMAGE:-}" ] || exit 0
if [ "$SERVESTACK_INSTALL_VLLM" = 1 ]; then
    install_vllm
fi
if [ "$SERVESTACK_USE_CONDA" = 1 ]; then
    install_conda
fi
