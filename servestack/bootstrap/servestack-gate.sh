#!/bin/bash
# servestack: the readiness gate for the vLLM port (see servestack.bootstrap).
#   close  - reject non-local TCP traffic to the service port (ExecStartPre of vLLM's unit)
#   open   - accept it again
#   watch  - the gate's service: on every start of vLLM's unit, keep the port closed until a
#            local POST of the spec's readiness probe returns 200, then open it; give up
#            (port stays closed, the load balancer's health check fails and the group replaces
#            the VM) when it is not ready after the probe's initial delay.
set -euo pipefail
# shellcheck source=/dev/null
. "${SERVESTACK_HOME:-/opt/servestack}/lib/common.sh"

chain=SERVESTACK-GATE
unit=servestack-vllm.service

ensure_chain() {
    need iptables
    iptables -w -N "$chain" 2>/dev/null || true
    iptables -w -C INPUT ! -i lo -p tcp --dport "$SERVESTACK_PORT" -j "$chain" 2>/dev/null ||
        iptables -w -I INPUT 1 ! -i lo -p tcp --dport "$SERVESTACK_PORT" -j "$chain"
}

close_gate() {
    ensure_chain
    iptables -w -F "$chain"
    iptables -w -A "$chain" -p tcp -j REJECT --reject-with tcp-reset
    log "port $SERVESTACK_PORT closed to non-local traffic until the readiness probe passes"
}

open_gate() {
    ensure_chain
    iptables -w -F "$chain"
    log "readiness probe passed: port $SERVESTACK_PORT open"
}

# key_config: curl's config (read with `-K -`) carrying the API key's Authorization header,
# from secret.env in a subshell: the key stays out of argv and out of this shell. Nothing
# when the deployment has no key (--no-api-key).
key_config() {
    [ -n "${SERVESTACK_API_KEY_NAME:-}" ] || return 0
    (
        VLLM_API_KEY=""
        # shellcheck source=/dev/null
        [ ! -s "$SERVESTACK_ETC/secret.env" ] || . "$SERVESTACK_ETC/secret.env"
        [ -n "$VLLM_API_KEY" ] || { log "warning: no VLLM_API_KEY in secret.env"; exit 0; }
        printf 'header = "Authorization: Bearer %s"\n' "$VLLM_API_KEY"
    )
}

# probe: the spec's readiness probe, run locally; true on HTTP 200.
probe() {
    local code args=(-s -o /dev/null -w '%{http_code}' --max-time "$SERVESTACK_READY_TIMEOUT"
        -X POST -H 'Content-Type: application/json' -K -
        --data-binary "@$SERVESTACK_ETC/readiness.json")
    if [ -s "$SERVESTACK_ETC/readiness.headers" ]; then
        args+=(-H "@$SERVESTACK_ETC/readiness.headers")
    fi
    code=$(key_config | curl "${args[@]}" "http://127.0.0.1:$SERVESTACK_PORT$SERVESTACK_READY_PATH" ||
        true)
    [ "$code" = 200 ]
}

invocation() {
    systemctl show -p InvocationID --value "$unit" 2>/dev/null || true
}

# wait_ready ID: probe until ready (0), the delay runs out (1) or vLLM restarts (2).
wait_ready() {
    local deadline=$((SECONDS + SERVESTACK_READY_DELAY))
    while [ "$SECONDS" -lt "$deadline" ]; do
        [ "$(invocation)" = "$1" ] || return 2
        probe && return 0
        sleep "$SERVESTACK_PROBE_INTERVAL"
    done
    return 1
}

watch_gate() {
    local current status
    need curl
    while true; do
        current=$(invocation)
        if [ -z "$current" ]; then
            sleep "$SERVESTACK_PROBE_INTERVAL"
            continue
        fi
        if probe; then
            open_gate
        else
            close_gate
            status=0
            wait_ready "$current" || status=$?
            case "$status" in
                0) open_gate ;;
                1) log "error: not ready after ${SERVESTACK_READY_DELAY}s; port stays closed" ;;
                *) continue ;;
            esac
        fi
        while [ "$(invocation)" = "$current" ]; do
            sleep "$SERVESTACK_PROBE_INTERVAL"
        done
        log "$unit restarted: re-arming the gate"
    done
}

case "${1:-}" in
    close) close_gate ;;
    open) open_gate ;;
    watch) watch_gate ;;
    *) die "usage: servestack-gate close|open|watch" ;;
esac
