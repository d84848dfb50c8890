#!/usr/bin/env bash
# servestack in CI: plan -> offline preview artefact -> deploy with fallback -> endpoint output.
#
# Usage: examples/ci/ci-deploy.sh [SPEC]
#
# Steps, each leaving a file in $SERVESTACK_ARTIFACTS for review:
#   1. servestack plan        -> plan.json            (ranked candidates, what was dropped, why)
#   2. servestack generate    -> stacks/Pulumi.<stack>.yaml (the first candidate's stack file)
#   3. servestack preview     -> preview.json         (every resource, offline, no credentials)
#   4. servestack deploy      -> deploy-report.json   (every attempt; the endpoint on success)
#   5. endpoint=<url> appended to $GITHUB_OUTPUT when it is set, and printed last on stdout.
#
# Environment (credentials come from the CI's secret store, never from this repository):
#   SERVESTACK_SPEC            service YAML (default: $1, else the embedded Mixtral example)
#   SERVESTACK_STACK           name of the generated stack file (default: ci)
#   SERVESTACK_PLAN_ARGS       filters for plan, generate and deploy, e.g. "--cloud gcp --spot"
#   SERVESTACK_GENERATE_ARGS   generate-only flags, e.g. "--gcp-project p --allow-cidr 10.0.0.0/8"
#   SERVESTACK_POOL_ARGS       deploy over several pools, e.g. "--max-pools 2 --spread
#                              --front route53 --domain api.example.com --hosted-zone-id Z..."
#                              (steps 2-4 then take the service's stacks: one per pool, a key
#                              stack and a front stack; keep it at size with ci-reconcile.sh);
#                              SERVESTACK_GENERATE_ARGS then go to deploy too, so they must
#                              be deployment flags (--gcp-project, --allow-cidr, ...)
#   SERVESTACK_MAX_ATTEMPTS    stop after this many attempts (default: walk every candidate)
#   SERVESTACK_ATTEMPT_TIMEOUT per-attempt limit (default 20m)
#   SERVESTACK_STATE_DIR       deploy journal and lock; keep it between runs to resume (.servestack)
#   SERVESTACK_ARTIFACTS       where the artefacts go (default: artifacts)
#   PULUMI_BACKEND_URL         Pulumi state: s3://, gs://, azblob://, https://api.pulumi.com, or
#                              unset for a local file backend inside the state dir
#   PULUMI_CONFIG_PASSPHRASE   encrypts stack secrets on the self-managed backends
#   HF_TOKEN                   Hugging Face token, stored as a Pulumi secret only
#
# Exit status: that of `servestack deploy` (0 deployed, 3 exhausted, 4 stopped, 5 cleanup
# failed, 6 locked), or 2 when an earlier step fails on its input.
set -euo pipefail

log() {
    printf 'ci-deploy: %s\n' "$*" >&2
}

report_endpoint() {
    local report=$1
    python3 - "$report" <<'PY'
import json, sys
try:
    with open(sys.argv[1], encoding="utf-8") as handle:
        print(json.load(handle).get("endpoint") or "")
except (OSError, ValueError):
    print("")
PY
}

main() {
    local spec=${1:-${SERVESTACK_SPEC:-}}
    local stack=${SERVESTACK_STACK:-ci}
    local artifacts=${SERVESTACK_ARTIFACTS:-artifacts}
    local state_dir=${SERVESTACK_STATE_DIR:-.servestack}
    local stacks_dir="$artifacts/stacks"
    local -a spec_args=() plan_args=() generate_args=() deploy_args=() pool_args=()

    if [ -n "$spec" ]; then
        spec_args=("$spec")
    fi
    read -r -a plan_args <<< "${SERVESTACK_PLAN_ARGS:-}"
    read -r -a generate_args <<< "${SERVESTACK_GENERATE_ARGS:-}"
    read -r -a pool_args <<< "${SERVESTACK_POOL_ARGS:-}"
    if [ -n "${SERVESTACK_MAX_ATTEMPTS:-}" ]; then
        deploy_args+=(--max-attempts "$SERVESTACK_MAX_ATTEMPTS")
    fi
    deploy_args+=(--attempt-timeout "${SERVESTACK_ATTEMPT_TIMEOUT:-20m}")
    if [ -z "${PULUMI_BACKEND_URL:-}" ]; then
        log "PULUMI_BACKEND_URL is not set: Pulumi state stays in $state_dir (keep it between runs)"
    fi
    mkdir -p "$artifacts"

    log "1/4 plan"
    servestack plan "${spec_args[@]}" "${plan_args[@]}" --json -o "$artifacts/plan.json" \
        > /dev/null

    local status=0
    if [ "${#pool_args[@]}" -gt 0 ]; then
        log "2/4 generate the stacks of the service over several pools (for review)"
        servestack generate "${spec_args[@]}" "${plan_args[@]}" "${generate_args[@]}" \
            "${pool_args[@]}" --stack "$stack" --stacks-dir "$stacks_dir" >&2

        log "3/4 offline preview: skipped (one stack per pool; preview them one by one)"

        log "4/4 hedged deploy over several pools"
        servestack deploy "${spec_args[@]}" "${plan_args[@]}" "${generate_args[@]}" \
            "${pool_args[@]}" "${deploy_args[@]}" --state-dir "$state_dir" \
            --report "$artifacts/deploy-report.json" || status=$?
    else
        log "2/4 generate the stack file of the first candidate"
        servestack generate "${spec_args[@]}" "${plan_args[@]}" "${generate_args[@]}" \
            --stack "$stack" --stacks-dir "$stacks_dir" >&2

        log "3/4 offline preview (no credentials used)"
        servestack preview "$stack" --offline --json --stacks-dir "$stacks_dir" \
            > "$artifacts/preview.json"

        log "4/4 deploy with fallback"
        servestack deploy "$stack" --stacks-dir "$stacks_dir" "${plan_args[@]}" \
            "${deploy_args[@]}" --state-dir "$state_dir" \
            --report "$artifacts/deploy-report.json" || status=$?
    fi

    local endpoint
    endpoint=$(report_endpoint "$artifacts/deploy-report.json")
    if [ -n "${GITHUB_OUTPUT:-}" ]; then
        printf 'endpoint=%s\n' "$endpoint" >> "$GITHUB_OUTPUT"
    fi
    if [ "$status" -eq 0 ]; then
        log "deployed: $endpoint"
        printf '%s\n' "$endpoint"
    else
        log "servestack deploy exited with $status; see $artifacts/deploy-report.json"
    fi
    return "$status"
}

main "$@"
