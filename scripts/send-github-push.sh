#!/usr/bin/env bash
# Sends a correctly signed GitHub push to a running fluxtrail and reads back the evidence.
#
#   FLUXTRAIL_GITHUB_SECRET=dev-secret cargo run --release     # in one terminal
#   FLUXTRAIL_GITHUB_SECRET=dev-secret scripts/send-github-push.sh   # in another
#
# Environment: FLUXTRAIL_URL (default http://127.0.0.1:7071), FLUXTRAIL_GITHUB_SECRET
# (required, the same value the server has), FLUXTRAIL_API_TOKEN (if the server has one),
# PAYLOAD (default: the repository's GitHub push fixture).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
url=${FLUXTRAIL_URL:-http://127.0.0.1:7071}
secret=${FLUXTRAIL_GITHUB_SECRET:?set FLUXTRAIL_GITHUB_SECRET to the secret the server was started with}
payload=${PAYLOAD:-$here/../tests/fixtures/git/github/push-forced.json}
delivery=${DELIVERY_ID:-$(cat /proc/sys/kernel/random/uuid 2>/dev/null || date +%s%N)}

# GitHub signs the raw body bytes: HMAC-SHA256 keyed with the webhook secret, hex, "sha256=".
signature="sha256=$(openssl dgst -sha256 -hmac "$secret" -r < "$payload" | cut -d' ' -f1)"

echo "POST $url/api/hooks/git/github (delivery $delivery)"
curl -sS -X POST "$url/api/hooks/git/github" \
  -H 'Content-Type: application/json' \
  -H 'X-GitHub-Event: push' \
  -H "X-GitHub-Delivery: $delivery" \
  -H "X-Hub-Signature-256: $signature" \
  --data-binary "@$payload" \
  -w '\nHTTP %{http_code}\n'

# The push's head commit: `after` of the payload.
sha=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["after"])' "$payload")
echo "GET $url/api/commits/$sha"
auth=()
if [ -n "${FLUXTRAIL_API_TOKEN:-}" ]; then auth=(-H "Authorization: Bearer $FLUXTRAIL_API_TOKEN"); fi
curl -sS "${auth[@]}" "$url/api/commits/$sha" -w '\nHTTP %{http_code}\n'
