#!/bin/bash
# servestack: fetch the deployment's secrets (an env file) from Secret Manager (REST API,
# the VM service account's token from the metadata server) into secret.env (0600).
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
log "fetching the secrets from Secret Manager secret $SERVESTACK_SECRET_NAME"
bearer_get "$token" "https://secretmanager.googleapis.com/v1/projects/$project/secrets/$SERVESTACK_SECRET_NAME/versions/latest:access" |
    store_secrets payload.data base64
