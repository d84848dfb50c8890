#!/usr/bin/env bash
# servestack in CI, on a schedule: one reconcile pass over a service deployed over several
# pools (deploy --max-pools N). Replicas a pool lost (spot interruptions, VMs that never came)
# move to the next pool and back when capacity returns; the front follows.
#
# Usage: examples/ci/ci-reconcile.sh [SERVICE]
#
# Environment (credentials come from the CI's secret store, never from this repository):
#   SERVESTACK_SERVICE         the service (default: $1, else the only one in the state dir)
#   SERVESTACK_ENGINE          pulumi (default) or terraform, as the deploy used
#   SERVESTACK_STATE_DIR       the deploy's journals; restore the deploy job's copy (.servestack)
#   SERVESTACK_ARTIFACTS       where the report goes (default: artifacts)
#   PULUMI_BACKEND_URL, PULUMI_CONFIG_PASSPHRASE, HF_TOKEN and the spec's other secrets: as for
#                              the deploy (a pass may bring a pool up; secrets are read from
#                              the environment by name, never written)
#
# Exit status: that of `servestack reconcile` (0 at size or moved, 2 bad input or an unknown
# service, 4 stopped, 5 cleanup failed, 6 locked: a deploy of the service is running).
set -euo pipefail

log() {
    printf 'ci-reconcile: %s\n' "$*" >&2
}

main() {
    local service=${1:-${SERVESTACK_SERVICE:-}}
    local artifacts=${SERVESTACK_ARTIFACTS:-artifacts}
    local state_dir=${SERVESTACK_STATE_DIR:-.servestack}
    local -a service_args=()

    if [ -n "$service" ]; then
        service_args=("$service")
    fi
    mkdir -p "$artifacts"
    log "one reconcile pass${service:+ of $service}"
    local status=0
    servestack reconcile "${service_args[@]}" --engine "${SERVESTACK_ENGINE:-pulumi}" \
        --state-dir "$state_dir" --report "$artifacts/reconcile-report.json" || status=$?
    if [ "$status" -ne 0 ]; then
        log "servestack reconcile exited with $status; see $artifacts/reconcile-report.json"
    fi
    return "$status"
}

main "$@"
