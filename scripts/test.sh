#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, unit and integration tests,
# and the README's newcomer path (start the server, send a signed push with curl, read the
# evidence back). Installs nothing beyond the Rust toolchain the machine has; later parts
# add their services (Azurite) here so that this stays the one command.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --all-targets --locked

echo "== the Flux suite again, publishing to Service Bus (a local stand-in) instead of the local sink"
FLUXTRAIL_TEST_PUBLISHER=servicebus cargo test --locked --test it flux::

echo "== newcomer path: server + scripts/send-github-push.sh"
cargo build --locked --bin fluxtrail
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
FLUXTRAIL_LISTEN=127.0.0.1:$port FLUXTRAIL_DATA_DIR=$data FLUXTRAIL_GITHUB_SECRET=demo-secret FLUXTRAIL_FLUX_HMAC_KEY=demo-key \
  target/debug/fluxtrail serve >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
  sleep 0.05
done
out=$(FLUXTRAIL_URL=http://127.0.0.1:$port FLUXTRAIL_GITHUB_SECRET=demo-secret DELIVERY_ID=demo-1 scripts/send-github-push.sh)
echo "$out"
echo "$out" | grep -q 'HTTP 202' || { echo "push was not accepted"; cat "$data/server.log"; exit 1; }
echo "$out" | grep -q '"repository":"github.com/acme/fleet-infra"' || { echo "evidence missing"; exit 1; }
out=$(FLUXTRAIL_URL=http://127.0.0.1:$port FLUXTRAIL_FLUX_HMAC_KEY=demo-key scripts/send-flux-event.sh)
echo "$out"
echo "$out" | grep -q 'HTTP 202' || { echo "flux event was not accepted"; cat "$data/server.log"; exit 1; }
echo "$out" | grep -q '"state":"applied"' || { echo "target missing from the evidence"; exit 1; }
kill -TERM $server
wait $server || { echo "server did not stop cleanly on SIGTERM"; cat "$data/server.log"; exit 1; }
grep -q "stopped" "$data/server.log" || { echo "no graceful shutdown in the log"; cat "$data/server.log"; exit 1; }
echo "newcomer: 1 passed, 0 failed"
