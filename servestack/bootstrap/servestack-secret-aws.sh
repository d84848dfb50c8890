#!/bin/bash
# servestack: fetch the deployment's secrets (an env file) and its generated API key from
# their SSM parameters (SecureStrings, decrypted) into secret.env (0600). Either may be
# absent from the deployment (no secrets; --no-api-key): then it is not asked for. A
# parameter that is missing or unreadable stops the script with its name, never a value.
set -euo pipefail
# shellcheck source=/dev/null
. "${SERVESTACK_HOME:-/opt/servestack}/lib/common.sh"

umask 077
need python3
if ! command -v aws >/dev/null 2>&1; then
    tools="$SERVESTACK_HOME/tools"
    if [ ! -x "$tools/bin/aws" ]; then
        log "installing the AWS CLI into $tools"
        python3 -m venv --clear "$tools" ||
            { pkg_install python3-venv && python3 -m venv --clear "$tools"; }
        "$tools/bin/pip" install -q awscli
    fi
    PATH="$PATH:$tools/bin"
fi

# parameter NAME: the SSM answer (JSON) for the decrypted parameter NAME, on stdout.
parameter() {
    aws ssm get-parameter --with-decryption --region "$SERVESTACK_REGION" \
        --name "$1" --output json
}

if [ -n "$SERVESTACK_SECRET_NAME" ]; then
    log "fetching the secrets from SSM parameter $SERVESTACK_SECRET_NAME"
    parameter "$SERVESTACK_SECRET_NAME" | store_secrets Parameter.Value plain ||
        die "could not read SSM parameter $SERVESTACK_SECRET_NAME (missing, or no access?)"
fi
if [ -n "${SERVESTACK_API_KEY_NAME:-}" ]; then
    log "fetching the API key from SSM parameter $SERVESTACK_API_KEY_NAME"
    parameter "$SERVESTACK_API_KEY_NAME" | store_api_key Parameter.Value plain ||
        die "could not read SSM parameter $SERVESTACK_API_KEY_NAME (missing, or no access?)"
fi
