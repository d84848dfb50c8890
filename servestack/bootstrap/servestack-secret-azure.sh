#!/bin/bash
# servestack: fetch the deployment's secrets (an env file) and its generated API key from the
# stack's Key Vault (REST API, a managed-identity token from IMDS) into secret.env (0600).
# Either may be absent from the deployment (no secrets; --no-api-key): then it is not asked
# for. A vault name missing from the settings, or a secret missing or unreadable, stops the
# script with its name, never a value.
set -euo pipefail
# shellcheck source=/dev/null
. "${SERVESTACK_HOME:-/opt/servestack}/lib/common.sh"

umask 077
need curl
need python3
vault="$SERVESTACK_SECRET_VAULT"
[ -n "$vault" ] || die "no Key Vault name in $SERVESTACK_ETC/servestack.env (SERVESTACK_SECRET_VAULT)"
token=$(curl -fsS --retry 5 --retry-connrefused -H 'Metadata: true' \
    'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net' |
    json_field access_token)

# vault_secret NAME: the Key Vault answer (JSON) for the current version of secret NAME.
vault_secret() {
    bearer_get "$token" "https://$vault.vault.azure.net/secrets/$1?api-version=7.4"
}

if [ -n "$SERVESTACK_SECRET_NAME" ]; then
    log "fetching the secrets from Key Vault $vault, secret $SERVESTACK_SECRET_NAME"
    vault_secret "$SERVESTACK_SECRET_NAME" | store_secrets value plain ||
        die "could not read secret $SERVESTACK_SECRET_NAME of Key Vault $vault (missing, or no access?)"
fi
if [ -n "${SERVESTACK_API_KEY_NAME:-}" ]; then
    log "fetching the API key from Key Vault $vault, secret $SERVESTACK_API_KEY_NAME"
    vault_secret "$SERVESTACK_API_KEY_NAME" | store_api_key value plain ||
        die "could not read secret $SERVESTACK_API_KEY_NAME of Key Vault $vault (missing, or no access?)"
fi
