#!/usr/bin/env bash
# Container entry point: create the node's home on the first start, then run `trustspace "$@"`
# (the image's default command is `serve`).
#
# The first start reads the node's settings from the variables `trustspace serve` itself reads
# (docs/node.md: every setting is TRUSTSPACE_<NAME>), so the two cannot disagree:
#   TRUSTSPACE_HOME          the home folder (required)
#   TRUSTSPACE_NAME          the participant's name (required)
#   TRUSTSPACE_PUBLIC_URL    the URL other nodes use (required)
#   TRUSTSPACE_PORT          the port `serve` listens on (default 8100)
#   TRUSTSPACE_KIND          "authority" for the data space's authority, else "participant"
#   TRUSTSPACE_AUTHORITY_URL the authority's URL (participants)
#   TRUSTSPACE_DATABASE_URL  PostgreSQL (postgresql+psycopg://...); empty: SQLite in the home
#   TRUSTSPACE_KEY_PASSWORD_ENV  name of a variable holding the node key's password
# and two of its own:
#   TS_ANCHOR_FILE   the authority's public key (the trust anchor). The authority writes it
#                    there on every start; a participant waits for it (TS_ANCHOR_WAIT seconds,
#                    default 120) and copies it into its home on the first start.
#   TS_EVM_CONTRACT_FILE  with TRUSTSPACE_LEDGER=evm: a file holding the ReceiptLedger
#                    address (written by docker/evm-setup.py); waited for like the anchor.
set -euo pipefail

home=${TRUSTSPACE_HOME:?set TRUSTSPACE_HOME to the node home folder}
anchor=${TS_ANCHOR_FILE:-}
kind=${TRUSTSPACE_KIND:-participant}

wait_for_file() {  # path, what
    local waited=0 limit=${TS_ANCHOR_WAIT:-120}
    until [[ -s $1 ]]; do
        if (( waited >= limit )); then
            echo "trustspace-entrypoint: no $2 at $1 after ${limit} s" >&2
            exit 2
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

if [[ ! -f $home/trustspace.toml ]]; then
    args=(init "$home" --name "${TRUSTSPACE_NAME:?set TRUSTSPACE_NAME}"
          --public-url "${TRUSTSPACE_PUBLIC_URL:?set TRUSTSPACE_PUBLIC_URL}"
          --port "${TRUSTSPACE_PORT:-8100}")
    if [[ -n ${TRUSTSPACE_DATABASE_URL:-} ]]; then
        args+=(--database-url "$TRUSTSPACE_DATABASE_URL")
    fi
    if [[ -n ${TRUSTSPACE_KEY_PASSWORD_ENV:-} ]]; then
        args+=(--password-env "$TRUSTSPACE_KEY_PASSWORD_ENV")
    fi
    if [[ $kind == authority ]]; then
        args+=(--authority)
    else
        : "${TRUSTSPACE_AUTHORITY_URL:?set TRUSTSPACE_AUTHORITY_URL (participants)}"
        : "${anchor:?set TS_ANCHOR_FILE to the authority public key (participants)}"
        wait_for_file "$anchor" "authority public key"
        args+=(--authority-url "$TRUSTSPACE_AUTHORITY_URL" --authority-key "$anchor")
    fi
    # init prints the operator token: keep it out of the container log.
    trustspace "${args[@]}" >/dev/null
    echo "trustspace-entrypoint: created node ${TRUSTSPACE_NAME} ($kind) in $home;" \
         "the operator token is in $home/operator.token"
fi

if [[ $kind == authority && -n $anchor ]]; then
    mkdir -p "$(dirname "$anchor")"
    cp "$home/authority.pub.pem" "$anchor.tmp.$$" && mv "$anchor.tmp.$$" "$anchor"
fi

if [[ ${TRUSTSPACE_LEDGER:-auto} == evm && -z ${TRUSTSPACE_EVM_CONTRACT:-} \
      && -n ${TS_EVM_CONTRACT_FILE:-} ]]; then
    wait_for_file "$TS_EVM_CONTRACT_FILE" "ReceiptLedger address"
    TRUSTSPACE_EVM_CONTRACT=$(<"$TS_EVM_CONTRACT_FILE")
    export TRUSTSPACE_EVM_CONTRACT
fi

exec trustspace "$@"
