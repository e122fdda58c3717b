#!/usr/bin/env bash
# Sends a Flux notification-controller event, signed like a `generic-hmac` Provider, to a
# running fluxtrail, then reads the evidence of the commit it names.
#
#   FLUXTRAIL_FLUX_HMAC_KEY=dev-key scripts/send-flux-event.sh
#
# Environment: FLUXTRAIL_URL (default http://127.0.0.1:7071), FLUXTRAIL_FLUX_HMAC_KEY
# (required), CLUSTER (default prod-eu), EVENT (default: the Kustomization success fixture),
# FLUXTRAIL_API_TOKEN (if the server has one).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
url=${FLUXTRAIL_URL:-http://127.0.0.1:7071}
key=${FLUXTRAIL_FLUX_HMAC_KEY:?set FLUXTRAIL_FLUX_HMAC_KEY to the key the server was started with}
cluster=${CLUSTER:-prod-eu}
event=${EVENT:-$here/../tests/fixtures/flux/kustomization-succeeded.json}

# notification-controller signs the raw body: X-Signature: sha256=<hex HMAC-SHA256>.
signature="sha256=$(openssl dgst -sha256 -hmac "$key" -r < "$event" | cut -d' ' -f1)"

echo "POST $url/api/hooks/flux/$cluster"
curl -sS -X POST "$url/api/hooks/flux/$cluster" \
  -H 'Content-Type: application/json' \
  -H 'Gotk-Component: kustomize-controller' \
  -H "X-Signature: $signature" \
  --data-binary "@$event" \
  -w '\nHTTP %{http_code}\n'

sha=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["metadata"].get("revision",""); print(r.rsplit(":",1)[-1])' "$event")
auth=()
if [ -n "${FLUXTRAIL_API_TOKEN:-}" ]; then auth=(-H "Authorization: Bearer $FLUXTRAIL_API_TOKEN"); fi
echo "GET $url/api/commits/$sha"
curl -sS "${auth[@]}" "$url/api/commits/$sha" -w '\nHTTP %{http_code}\n'
