#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, unit and integration tests on
# the embedded store, the same integration suite on Azure Table Storage (Azurite, installed
# from npm with the lockfile and started here on a free port), the Flux suite against the
# Service Bus stand-in, the README's newcomer path (start the server, send a signed push
# and a signed Flux event with curl, read the evidence back), and schemathesis against the
# running server with openapi.yaml, the evidence UI in Chromium (Debian's package, installed
# here when missing) with playwright.
set -euo pipefail
cd "$(dirname "$0")/.."

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # host port what
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && { exec 3>&- 3<&-; return 0; }
    sleep 0.05
  done
  echo "$3 did not start on $1:$2"; return 1
}
pids=()
work=$(mktemp -d)
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== rustls only: no openssl in the dependency tree"
if cargo tree --locked -e normal,build -i openssl-sys >/dev/null 2>&1; then
  echo "openssl-sys is in the dependency tree"; cargo tree --locked -i openssl-sys; exit 1
fi

echo "== cargo fetch: every package in Cargo.lock, for every platform"
# Builds here download only this platform's packages; `cargo deny --offline` (below) runs
# `cargo metadata`, which needs all of them (Windows, Android, wasm ones included). Without
# this a machine with an empty cargo cache fails the deny step.
cargo fetch --locked

echo "== cargo deny: licenses, bans, sources (deny.toml; advisories need GitHub, see deny.toml)"
cargo deny --version 2>/dev/null | grep -qx 'cargo-deny 0.20.2' || cargo install cargo-deny --version 0.20.2 --locked
cargo deny --offline --log-level error check licenses bans sources

echo "== cargo test (embedded store, local sink)"
cargo test --all-targets --locked

echo "== the integration suite at RUST_LOG=trace, its log searched for secrets, signatures and keys"
FLUXTRAIL_TEST_LOG="$work/trace.log" RUST_LOG=trace cargo test --locked --test it -q 2>&1 | tail -3
python3 scripts/check-trace-log.py "$work/trace.log"

echo "== the Flux suite again, publishing to Service Bus (a local stand-in) instead of the local sink"
FLUXTRAIL_TEST_PUBLISHER=servicebus cargo test --locked --test it flux::

echo "== Azurite (Table Storage emulator) from npm"
npm ci --prefix scripts/azurite --no-audit --no-fund --loglevel=error
azport=$(free_port)
scripts/azurite/node_modules/.bin/azurite-table --inMemoryPersistence --disableTelemetry \
  --tableHost 127.0.0.1 --tablePort "$azport" >"$work/azurite.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$azport" Azurite
export FLUXTRAIL_TEST_TABLES="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;TableEndpoint=http://127.0.0.1:$azport/devstoreaccount1;"

export FLUXTRAIL_TEST_AZURITE="$PWD/scripts/azurite/node_modules/.bin/azurite-table"
echo "== Table Storage: the store conformance suite and the Azurite-only tests (outage, two processes)"
cargo test --locked --test it -- --ignored --skip scaleout::

echo "== Scale-out harness (part 9): 2-3 instances on Azurite behind the fault proxy vs one instance"
# Brief here (FLUXTRAIL_SCALEOUT_RUNS randomized logs, default 3); RELIABILITY.md has a long run.
cargo test --locked --test it scaleout:: -- --ignored --nocapture

echo "== Table Storage: the whole HTTP integration suite on Azurite"
FLUXTRAIL_TEST_STORE=tables cargo test --locked --test it

echo "== Python tools (checkov, PyYAML, schemathesis), pinned in scripts/requirements-ci.txt"
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-ci.txt

echo "== infra/flux agrees with the server (routes, headers, cluster names)"
python3 scripts/check-flux.py

echo "== checkov on infra/ (every failed check fixed or skipped with a reason in main.bicep)"
checkov -d infra --framework bicep --compact --quiet --skip-download

echo "== Functions package: scripts/package.sh, then the zip opened and the handler run as the host runs it"
OUT="$work/fluxtrail-functions.zip" scripts/package.sh
python3 scripts/check-package.py "$work/fluxtrail-functions.zip"
mkdir -p "$work/pkg" && python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(i, sys.argv[2]) for i in z.infolist()]' "$work/fluxtrail-functions.zip" "$work/pkg"
chmod +x "$work/pkg/handler"  # zipfile.extract does not restore modes; the check above read them
hport=$(free_port)
(cd "$work/pkg" && FUNCTIONS_CUSTOMHANDLER_PORT=$hport FLUXTRAIL_DATA_DIR="$work/pkgdata" exec ./handler serve >"$work/handler.log" 2>&1) &
handler=$!
pids+=($handler)
# The host polls GET / every 25 ms; any answer is ready.
start=$(date +%s%N)
until curl -sf -o /dev/null "http://127.0.0.1:$hport/"; do sleep 0.025; done
echo "handler ready after $(( ($(date +%s%N) - start) / 1000000 )) ms"
sweep=$(curl -sf -X POST -H 'Content-Type: application/json' \
  -d '{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"Sweep","UtcNow":"2026-01-01T10:05:00.0887Z"}}}' \
  "http://127.0.0.1:$hport/Sweep")
echo "$sweep"
echo "$sweep" | grep -q '"ReturnValue":null' || { echo "timer invocation answered wrongly"; exit 1; }
kill -TERM $handler; wait $handler || true
echo "handler: 1 passed, 0 failed"

echo "== newcomer path: server + scripts/send-github-push.sh + scripts/send-flux-event.sh"
cargo build --locked --bin fluxtrail
port=$(free_port)
FLUXTRAIL_LISTEN=127.0.0.1:$port FLUXTRAIL_DATA_DIR=$work/data FLUXTRAIL_GITHUB_SECRET=demo-secret FLUXTRAIL_FLUX_HMAC_KEY=demo-key \
  target/debug/fluxtrail serve >"$work/server.log" 2>&1 &
server=$!
pids+=($server)
wait_port 127.0.0.1 "$port" fluxtrail
out=$(FLUXTRAIL_URL=http://127.0.0.1:$port FLUXTRAIL_GITHUB_SECRET=demo-secret DELIVERY_ID=demo-1 scripts/send-github-push.sh)
echo "$out"
echo "$out" | grep -q 'HTTP 202' || { echo "push was not accepted"; cat "$work/server.log"; exit 1; }
echo "$out" | grep -q '"repository":"github.com/acme/fleet-infra"' || { echo "evidence missing"; exit 1; }
out=$(FLUXTRAIL_URL=http://127.0.0.1:$port FLUXTRAIL_FLUX_HMAC_KEY=demo-key scripts/send-flux-event.sh)
echo "$out"
echo "$out" | grep -q 'HTTP 202' || { echo "flux event was not accepted"; cat "$work/server.log"; exit 1; }
echo "$out" | grep -q '"state":"applied"' || { echo "target missing from the evidence"; exit 1; }
kill -TERM $server
wait $server || { echo "server did not stop cleanly on SIGTERM"; cat "$work/server.log"; exit 1; }
grep -q "stopped" "$work/server.log" || { echo "no graceful shutdown in the log"; cat "$work/server.log"; exit 1; }
echo "newcomer: 1 passed, 0 failed"

echo "== schemathesis: openapi.yaml against the running server (no 5xx, every answer matches its schema)"
scripts/schemathesis.sh target/debug/fluxtrail

echo "== the evidence UI in a real browser: Debian's chromium driven by PyPI's playwright (scripts/ui-test.py)"
command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
python3 scripts/ui-test.py target/debug/fluxtrail "$work/screenshots"

echo "== SIGKILL in a loop under load (short run; RELIABILITY.md reports a long one)"
python3 scripts/kill-loop.py --kills 8 --binary target/debug/fluxtrail
