#!/usr/bin/env bash
# Runs schemathesis (PyPI) against a running fluxtrail with openapi.yaml: no 5xx, every answer
# matches its schema (status code, content type, headers, body).
#
#   scripts/schemathesis.sh [path/to/fluxtrail]     # default target/debug/fluxtrail
#
# The server runs with FLUXTRAIL_INSECURE_ALLOW_UNSIGNED (no secrets) so generated bodies reach
# the parsers and the ledger instead of stopping at 401, and with a read-API token that
# schemathesis sends. It is first given a push, a pull request, and Flux successes, failures and
# drift from tests/fixtures, so the read API answers with real evidence, objects, incidents and
# messages.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/fluxtrail}
examples=${SCHEMATHESIS_EXAMPLES:-150}
work=$(mktemp -d); echo "work dir: $work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
FLUXTRAIL_LISTEN=127.0.0.1:$port FLUXTRAIL_DATA_DIR=$work/data FLUXTRAIL_INSECURE_ALLOW_UNSIGNED=true \
  FLUXTRAIL_API_TOKEN=schemathesis-token RUST_LOG=warn "$bin" serve >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done

post() { # path, file, extra headers...
  local path=$1 file=$2; shift 2
  curl -sf -o /dev/null -X POST "http://127.0.0.1:$port$path" -H 'Content-Type: application/json' "$@" --data-binary "@$file"
}
f=tests/fixtures
post /api/hooks/git/github $f/git/github/push-forced.json -H 'X-GitHub-Event: push' -H 'X-GitHub-Delivery: st-1'
post /api/hooks/git/github $f/git/github/pull-request-merged.json -H 'X-GitHub-Event: pull_request' -H 'X-GitHub-Delivery: st-2'
post /api/hooks/flux/prod-eu $f/flux/kustomization-reconciliation-failed.json
post /api/hooks/flux/prod-eu $f/flux/kustomization-succeeded.json
post /api/hooks/flux/prod-us $f/flux/kustomization-health-failed.json
post /api/hooks/flux/prod-eu $f/flux/helmrelease-drift-detected.json

set +e
schemathesis run openapi.yaml \
  --url "http://127.0.0.1:$port" \
  -H 'Authorization: Bearer schemathesis-token' \
  --checks all \
  --max-examples "$examples" \
  --seed 20261127 \
  --suppress-health-check all \
  --no-color
rc=$?
set -e
if grep -q "panicked" "$work/server.log"; then
  echo "the server panicked:"; grep -A5 panicked "$work/server.log"; rc=1
fi
kill -0 $server 2>/dev/null || { echo "the server is gone"; cat "$work/server.log"; rc=1; }
exit $rc
