#!/bin/bash
# servestack: fetch the deployment's secrets (an env file) from the SSM parameter
# (SecureString) into secret.env (0600).
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
log "fetching the secrets from SSM parameter $SERVESTACK_SECRET_NAME"
aws ssm get-parameter --with-decryption --region "$SERVESTACK_REGION" \
    --name "$SERVESTACK_SECRET_NAME" --output json | store_secrets Parameter.Value plain
