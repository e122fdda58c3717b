#!/usr/bin/env bash
# The audit benchmark (part 10; not part of .ci/run: timings are for reading, not gating).
# Generates a realistic history through the ledger's real path (examples/audit_history.rs:
# 90 days × 50 clusters × 40 Kustomizations × 20 commits a day = 3.6 M target rows, about
# 30 minutes on 2 cores, 20+ GB) unless the data directory already holds one, then starts the
# release server on it and measures the audit queries over HTTP (scripts/bench-audit.py):
# first-page latencies, summary, the CSV exports' rows/s and the server's resident memory.
#
#   scripts/bench-audit.sh [data dir]        # default /tmp/bench-audit/data
#   SIZE="3 50 40 20" scripts/bench-audit.sh /tmp/small   # days clusters objects commits/day
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-/tmp/bench-audit/data}
cargo build --release --locked --bin fluxtrail --example audit_history 2>&1 | tail -1
if [ ! -e "$data/ledger.db" ]; then
  # shellcheck disable=SC2086
  target/release/examples/audit_history "$data" ${SIZE:-}
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# No sweep during the measurement (standalone servers sweep every minute by default).
FLUXTRAIL_LISTEN=127.0.0.1:$port FLUXTRAIL_DATA_DIR=$data FLUXTRAIL_SWEEP_INTERVAL=24h RUST_LOG=warn \
  FLUXTRAIL_APPROVAL_REQUIRED="prod-*" FLUXTRAIL_APPROVAL_EXEMPT=flux-image-automation \
  target/release/fluxtrail serve >/tmp/bench-audit-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.05; done
echo "database: $(du -sh "$data" | cut -f1)"
# A server starts with a sweep and an outbox scan (what a restart must catch up on); on this
# store they read every target and object row. Measure the queries once they are done: wait
# until the server used no CPU for 2 s (at most 5 minutes).
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
t0=$SECONDS; last=$(cpu); idle=0
while [ $idle -lt 4 ] && [ $((SECONDS - t0)) -lt 300 ]; do
  sleep 0.5; now=$(cpu)
  if [ "$now" = "$last" ]; then idle=$((idle + 1)); else idle=0; fi
  last=$now
done
echo "start-up work (sweep, outbox scan): $((SECONDS - t0)) s, $(cpu) ticks of CPU"
python3 scripts/bench-audit.py "http://127.0.0.1:$port" "$server" "${CLUSTER:-prod-07}"
