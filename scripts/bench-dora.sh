#!/usr/bin/env bash
# The delivery-metrics benchmark (part 11; not part of .ci/run: timings are for reading, not
# gating). On the audit benchmark's history (scripts/bench-audit.sh generates it: 90 days ×
# 50 clusters × 40 Kustomizations × 20 commits a day, ~3% of applies failing first), starts
# the release server, waits until its outbox is drained — on a freshly generated history that
# is the generator's whole backlog of messages, every incident's group settled on the way
# (the time it took is printed) — then measures GET /api/dora (scripts/bench-dora.py).
#
#   scripts/bench-dora.sh [data dir]        # default /tmp/bench-audit/data
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-/tmp/bench-audit/data}
cargo build --release --locked --bin fluxtrail --example audit_history 2>&1 | tail -1
if [ ! -e "$data/ledger.db" ]; then
  # shellcheck disable=SC2086
  target/release/examples/audit_history "$data" ${SIZE:-}
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
t0=$SECONDS
FLUXTRAIL_LISTEN=127.0.0.1:$port FLUXTRAIL_DATA_DIR=$data FLUXTRAIL_SWEEP_INTERVAL=24h RUST_LOG=warn \
  target/release/fluxtrail serve >/tmp/bench-dora-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.05; done
echo "database: $(du -sh "$data" | cut -f1)"
# The outbox is drained when the sink stops growing (health's counts scan every object row:
# too slow to poll on this store).
sink=$data/messages.jsonl
lines() { wc -l < "$sink" 2>/dev/null || echo 0; }
last=$(lines); still=0
while [ $still -lt 4 ]; do
  sleep 5; now=$(lines)
  if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
  last=$now
done
echo "outbox drained (every incident's group settled) $((SECONDS - t0 - 20)) s after start; messages in the sink: $last"
# Then wait until the server is idle (the start-up sweep), as bench-audit.sh does.
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
last=$(cpu); idle=0; t1=$SECONDS
while [ $idle -lt 4 ] && [ $((SECONDS - t1)) -lt 300 ]; do
  sleep 0.5; now=$(cpu)
  if [ "$now" = "$last" ]; then idle=$((idle + 1)); else idle=0; fi
  last=$now
done
python3 scripts/bench-dora.py "http://127.0.0.1:$port" "$server" "${CLUSTER:-prod-07}"
