#!/bin/bash
# servestack: fetch the deployment's secrets (an env file) from Key Vault (REST API, a
# managed-identity token from IMDS) into secret.env (0600).
set -euo pipefail
# shellcheck source=/dev/null
. "${SERVESTACK_HOME:-/opt/servestack}/lib/common.sh"

umask 077
need curl
need python3
token=$(curl -fsS --retry 5 --retry-connrefused -H 'Metadata: true' \
    'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net' |
    json_field access_token)
log "fetching the secrets from Key Vault $SERVESTACK_SECRET_VAULT, secret $SERVESTACK_SECRET_NAME"
bearer_get "$token" "https://$SERVESTACK_SECRET_VAULT.vault.azure.net/secrets/$SERVESTACK_SECRET_NAME?api-version=7.4" |
    store_secrets value plain
