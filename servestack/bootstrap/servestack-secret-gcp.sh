#!/bin/bash
# servestack: fetch the deployment's secrets (an env file) and its generated API key from
# Secret Manager (REST API, latest version, the VM service account's token from the metadata
# server) into secret.env (0600). Either may be absent from the deployment (no secrets;
# --no-api-key): then it is not asked for. A secret that is missing or unreadable stops the
# script with its name, never a value.
set -euo pipefail
# shellcheck source=/dev/null
. "${SERVESTACK_HOME:-/opt/servestack}/lib/common.sh"

umask 077
need curl
need python3
metadata=http://metadata.google.internal/computeMetadata/v1
project="$SERVESTACK_GCP_PROJECT"
if [ -z "$project" ]; then
    project=$(curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' \
        "$metadata/project/project-id")
fi
token=$(curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' \
    "$metadata/instance/service-accounts/default/token" | json_field access_token)

# latest NAME: the Secret Manager answer (JSON) for the latest version of secret NAME.
latest() {
    bearer_get "$token" "https://secretmanager.googleapis.com/v1/projects/$project/secrets/$1/versions/latest:access"
}

if [ -n "$SERVESTACK_SECRET_NAME" ]; then
    log "fetching the secrets from Secret Manager secret $SERVESTACK_SECRET_NAME"
    latest "$SERVESTACK_SECRET_NAME" | store_secrets payload.data base64 ||
        die "could not read secret $SERVESTACK_SECRET_NAME of project $project (missing, or no access?)"
fi
if [ -n "${SERVESTACK_API_KEY_NAME:-}" ]; then
    log "fetching the API key from Secret Manager secret $SERVESTACK_API_KEY_NAME"
    latest "$SERVESTACK_API_KEY_NAME" | store_api_key payload.data base64 ||
        die "could not read secret $SERVESTACK_API_KEY_NAME of project $project (missing, or no access?)"
fi
